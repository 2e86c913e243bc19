"""Pack what `make gpu-check` needs on an offline NVIDIA machine into one folder (`make gpu-pack`, run online).

The folder travels with the repository (at most about 60 MB), so it holds only what such a machine may
lack: llama-cpp-python's sources pruned to what a CPU + CUDA build compiles (the sdist that `make vendor`
downloads is 77 MB, mostly llama.cpp's docs, test vocabularies and web UI), the wheels of gguf-trim's
trim path that a PyTorch/transformers image may not have (pure-python where they exist, else
manylinux wheels for CPython 3.10-3.12), the build backend for an offline `--no-build-isolation` build,
and models/vocab-qwen2.gguf for the synthetic 7B-shaped model. MANIFEST.json lists it all; the check
installs a wheel only where the machine lacks it or has it too old (`install` in the manifest).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIMIT_BYTES = 60_000_000  # what may travel beside the repository (the device tool carries 64 MiB in all)
PYTHONS = ("3.10", "3.11", "3.12")

# dist name -> (version packed, install policy): "==" installs it unless that very version is present
# (gguf-trim's pins: gflanguages' data decides which tokens a trim keeps), ">=X" only where the
# machine's copy is missing or older than X, "<3.11" only on Python 3.10 (backports the build backend needs);
# "runner": never installed, pip runs from its wheel where the machine's Python has no pip module.
PURE_WHEELS = {
    "gguf": ("0.19.0", "=="),
    "gflanguages": ("0.7.11", "=="),
    "gfmetadata": ("0.2.5", "=="),
    "click": ("8.5.1", ">=8.1"),
    "tqdm": ("4.70.1", ">=4.66"),
    "diskcache": ("5.6.3", ">=5.6.1"),
    "jinja2": ("3.1.6", ">=2.11.3"),
    "typing-extensions": ("4.16.0", ">=4.5.0"),
    "scikit-build-core": ("1.1.2", ">=0.9.2"),
    "pathspec": ("1.1.1", ">=0.12.0"),
    "packaging": ("26.4", ">=23.2"),
    "tomli": ("2.5.0", "<3.11"),
    "exceptiongroup": ("1.3.2", "<3.11"),
    "pip": ("26.3", "runner"),
}
# compiled: a wheel per CPython 3.10-3.12 (abi3 wheels once); transformers brings regex, pyyaml and
# tokenizers, torch brings markupsafe, so these are fallbacks
BINARY_WHEELS = {
    "protobuf": ("7.36.2", ">=6.33.0"),
    "regex": ("2026.9.29", ">=2023.0"),
    "pyyaml": ("6.0.4", ">=5.1"),
    "markupsafe": ("3.0.4", ">=2.0"),
    "tokenizers": ("0.23.3", ">=0.19"),
}
MANYLINUX = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64",
             "manylinux1_x86_64")

# Under vendor/llama.cpp/: what no CPU or CUDA build of llama-cpp-python reads. The tests, examples, tools
# and app are added only for a standalone llama.cpp build (LLAMA_BUILD_* default to OFF as a subproject);
# tools/mtmd is the one tool llama-cpp-python builds (LLAVA_BUILD).
DROP_LLAMA = {".git", "docs", "models", "media", "tests", "examples", "pocs", "benches", "gguf-py", "conversion",
              "scripts", "requirements", "ci", "skills", "grammars", "app", ".devops", ".github", "requirements.txt",
              "flake.nix", "build-xcframework.sh", "mypy.ini", "pyrightconfig.json", "ty.toml"}
DROP_MTMD = {"tests", "legacy-models", "tests.sh", "requirements.txt", "test-1.jpeg", "test-2.mp3", "test-3.mp4"}
# ggml backends other than CPU and CUDA (and the small BLAS, RPC, HIP, MUSA folders, HIP and MUSA build
# ggml-cuda's sources): ggml_add_backend() adds a folder only when its GGML_<NAME> option is ON
DROP_BACKENDS = {"ggml-cann", "ggml-et", "ggml-hexagon", "ggml-metal", "ggml-opencl", "ggml-openvino", "ggml-sycl",
                 "ggml-virtgpu", "ggml-vulkan", "ggml-webgpu", "ggml-zdnn", "ggml-zendnn"}
DROP_TOP = {".git", "docs", "examples", "tests", "docker", "scripts", "mkdocs.yml", "CHANGELOG.md",
            "CONTRIBUTING.md", "Makefile", ".github"}
# what the CUDA build cannot do without (tests/test_gpu_check.py checks the packed tarball for them)
REQUIRED = ("pyproject.toml", "CMakeLists.txt", "README.md", "PKG-INFO", "llama_cpp/__init__.py",
            "vendor/llama.cpp/CMakeLists.txt", "vendor/llama.cpp/cmake", "vendor/llama.cpp/include/llama.h",
            "vendor/llama.cpp/src/CMakeLists.txt", "vendor/llama.cpp/common/CMakeLists.txt",
            "vendor/llama.cpp/vendor/CMakeLists.txt", "vendor/llama.cpp/ggml/CMakeLists.txt",
            "vendor/llama.cpp/ggml/src/CMakeLists.txt", "vendor/llama.cpp/ggml/src/ggml-cpu/CMakeLists.txt",
            "vendor/llama.cpp/ggml/src/ggml-cuda/CMakeLists.txt", "vendor/llama.cpp/ggml/src/ggml-cuda/ggml-cuda.cu",
            "vendor/llama.cpp/ggml/src/ggml-cuda/template-instances", "vendor/llama.cpp/ggml/src/ggml-cuda/vendors",
            "vendor/llama.cpp/tools/mtmd/CMakeLists.txt")


def keep(name: str) -> bool:
    """Whether a member of the sdist (`llama_cpp_python-X/...`) goes into the pruned tarball."""
    parts = name.split("/")[1:]
    if not parts or not parts[0]:
        return True
    if len(parts) == 1 or parts[0] != "vendor":
        return parts[0] not in DROP_TOP
    sub = parts[2:] if parts[1] == "llama.cpp" else None
    if not sub:
        return True
    if sub[0] in DROP_LLAMA or sub[0].startswith("convert_"):
        return False
    if sub[0] == "tools" and len(sub) > 1:
        return sub[1] == "mtmd" and not (len(sub) > 2 and sub[2] in DROP_MTMD)
    if sub[:2] == ["ggml", "src"] and len(sub) > 2:
        return sub[2] not in DROP_BACKENDS
    return True


def prune_sdist(src: Path, dst: Path) -> dict:
    """Copy the members `keep` accepts into a new tar.gz (the same bytes for the same sdist: gzip's
    timestamp is 0, so a rerun of the check sees unchanged sources); what was kept and dropped."""
    kept = dropped = kept_bytes = dropped_bytes = 0
    tmp = dst.with_suffix(".part")
    with tarfile.open(src, "r:gz") as tin, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tout:
        for m in tin:
            if keep(m.name):
                tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
                kept += 1
                kept_bytes += m.size
            else:
                dropped += 1
                dropped_bytes += m.size
    tmp.replace(dst)
    return {"kept_members": kept, "dropped_members": dropped, "kept_bytes": kept_bytes,
            "dropped_bytes": dropped_bytes}


def missing_required(names: list[str]) -> list[str]:
    """The REQUIRED paths (files, or folders with something in them) absent from a tarball's member names."""
    rel = {n.split("/", 1)[1] for n in names if "/" in n}
    return [r for r in REQUIRED if r not in rel and not any(n.startswith(r + "/") for n in rel)]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def download_wheels(dest: Path) -> None:
    """pip download: the pure wheels once, the compiled ones for each CPython of PYTHONS."""
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    subprocess.run([*pip, "--python-version", PYTHONS[0], "--implementation", "py", "--abi", "none", "--platform",
                    "any", *(f"{n}=={v}" for n, (v, _) in PURE_WHEELS.items())], check=True)
    for py in PYTHONS:
        plat = [a for p in MANYLINUX for a in ("--platform", p)]
        abi = f"cp{py.replace('.', '')}"
        subprocess.run([*pip, "--python-version", py, "--implementation", "cp", "--abi", abi, "--abi", "abi3",
                        *plat, *(f"{n}=={v}" for n, (v, _) in BINARY_WHEELS.items())], check=True)


def dist_of(wheel: str) -> str:
    return wheel.split("-")[0].lower().replace("_", "-")


def total_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_size(folder: Path, limit: int = LIMIT_BYTES) -> int:
    """The folder's size in bytes; SystemExit when it is over `limit`."""
    size = total_size(folder)
    if size > limit:
        raise SystemExit(f"{folder}: {size / 1e6:.1f} MB is over the {limit / 1e6:.0f} MB limit")
    return size


def build(out: Path, sdist: Path, sdist_sha256: str, version: str, vocab: Path, limit: int = LIMIT_BYTES,
          wheels: bool = True) -> dict:
    """Fill `out` (emptied first) and write MANIFEST.json; SystemExit over the size limit."""
    if not sdist.is_file():
        raise SystemExit(f"{sdist} missing: run `make vendor` first")
    if sdist_sha256 and sha256(sdist) != sdist_sha256:
        raise SystemExit(f"{sdist}: sha256 differs from the pinned {sdist_sha256}")
    if not vocab.is_file():
        raise SystemExit(f"{vocab} missing: run `python scripts/fetch_models.py vocabs` (after `make vendor`)")
    if out.exists():
        shutil.rmtree(out)
    (out / "wheels").mkdir(parents=True)
    src_name = f"llama_cpp_python-{version}-cuda-src.tar.gz"
    pruned = prune_sdist(sdist, out / src_name)
    with tarfile.open(out / src_name, "r:gz") as t:
        missing = missing_required(t.getnames())
    if missing:
        raise SystemExit(f"pruning dropped what the build needs: {missing}")
    if wheels:
        download_wheels(out / "wheels")
    shutil.copyfile(vocab, out / vocab.name)
    policy = {n: p for n, (_, p) in {**PURE_WHEELS, **BINARY_WHEELS}.items()}
    manifest = {
        "llama_cpp_python": {"version": version, "file": src_name, "sdist_sha256": sdist_sha256,
                             "sha256": sha256(out / src_name), "size": (out / src_name).stat().st_size, **pruned},
        "wheels": [{"file": w.name, "dist": dist_of(w.name), "version": w.name.split("-")[1],
                    "install": policy.get(dist_of(w.name), ">=0"), "size": w.stat().st_size}
                   for w in sorted((out / "wheels").glob("*.whl"))],
        "vocab": {"file": vocab.name, "sha256": sha256(out / vocab.name), "size": (out / vocab.name).stat().st_size},
    }
    (out / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
    manifest["total_size"] = total_size(out)
    manifest["limit"] = limit
    return manifest


def describe(m: dict) -> str:
    """What the pack holds, one line per file, and the total."""
    src = m["llama_cpp_python"]
    lines = [f"{src['file']}: {src['size'] / 1e6:.1f} MB ({src['kept_members']} files, "
             f"{src['kept_bytes'] / 1e6:.0f} MB unpacked; {src['dropped_members']} files, "
             f"{src['dropped_bytes'] / 1e6:.0f} MB dropped)"]
    lines += [f"wheels/{w['file']}: {w['size'] / 1e6:.2f} MB (install {w['install']})" for w in m["wheels"]]
    lines.append(f"{m['vocab']['file']}: {m['vocab']['size'] / 1e6:.1f} MB")
    lines.append(f"total {m['total_size'] / 1e6:.1f} MB (limit {m['limit'] / 1e6:.0f} MB)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu-pack", help="the pack folder (emptied first)")
    ap.add_argument("--version", default="0.3.36", help="llama-cpp-python version")
    ap.add_argument("--sha256", default="", help="the sdist's pinned sha256")
    ap.add_argument("--sdist", help="default vendor/.sdist/llama_cpp_python-VERSION.tar.gz")
    ap.add_argument("--vocab", default=str(ROOT / "models" / "vocab-qwen2.gguf"))
    ap.add_argument("--limit-mb", type=float, default=LIMIT_BYTES / 1e6)
    a = ap.parse_args(argv)
    sdist = Path(a.sdist or ROOT / "vendor" / ".sdist" / f"llama_cpp_python-{a.version}.tar.gz")
    limit = int(a.limit_mb * 1e6)
    m = build(Path(a.out), sdist, a.sha256, a.version, Path(a.vocab), limit)
    print(describe(m))
    check_size(Path(a.out), limit)


if __name__ == "__main__":
    main()
