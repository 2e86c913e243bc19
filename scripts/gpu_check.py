"""`make gpu-check`: what trimming buys on an NVIDIA GPU, on an offline machine, in under ten minutes.

Written to run blind on a machine lent for a few minutes (nobody watches it): it needs only Python's
standard library to start, fails at once with one line where there is no GPU, nvcc, cmake or pack, and
otherwise runs its steps within a time budget, skipping a step (with a note) rather than overrunning:

1. wheels: installs the pack's wheels that the machine lacks (pip --no-index --target WORK/site);
2. build: llama-cpp-python 0.3.36 from the pack's pruned sources with CUDA for this GPU's compute
   capability only (that keeps the nvcc part to a few minutes), in a build folder a rerun reuses;
3. synth: a Qwen2.5-7B-shaped GGUF with the qwen2 vocabulary and valid Q4_K/Q6_K blocks (4.6 GiB);
4. trim: the lossless en,vi trim of it;
5. bench: original and trimmed, every layer offloaded: prompt and decode tok/s, GPU memory (medians);
6. train-cost: `gguf-trim bench train-cost --device cuda`, where this version of gguf-trim has it.

OUT/gpu-check.json and OUT/gpu-check.md are rewritten after every step, so a run cut short still
leaves what it measured. Everything here but the GPU itself is tested on CPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CPU_FLAGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"  # never AMX: Makefile
RESERVE_S = 5  # kept back for the last report write
# the least time each step is started with (rough: a 16-core machine; the build gets whatever is left)
NEEDS = {"wheels": 20, "build": 120, "synth": 45, "trim": 45, "bench": 60, "train-cost": 60}


class Fail(Exception):
    """A pre-flight failure: one line, exit status 2, no report."""


class StepError(Exception):
    """A step that failed: its note, and the tail of its log for the report."""

    def __init__(self, note: str, log_tail: str = "") -> None:
        super().__init__(note)
        self.log_tail = log_tail


class SkipStep(StepError):
    """A step with nothing to do on this version or machine (reported as skipped, not failed)."""


# -- the machine -----------------------------------------------------------------------------------

GPU_FIELDS = ("name", "driver_version", "memory.total", "compute_cap")


def parse_gpus(text: str) -> list[dict[str, str]]:
    """`nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader,nounits`
    output, one dict per GPU line."""
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.rsplit(",", len(GPU_FIELDS) - 1)]
        if len(parts) != len(GPU_FIELDS):
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        gpus.append(dict(zip(GPU_FIELDS, parts)))
    return gpus


def cuda_arch(caps: list[str]) -> str:
    """CMAKE_CUDA_ARCHITECTURES for compute capabilities as nvidia-smi prints them ("9.0" -> "90";
    several GPUs of different kinds -> "80;90"); ValueError for anything else ("[N/A]", "")."""
    out: list[str] = []
    for c in caps:
        m = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", c)
        if not m:
            raise ValueError(f"not a compute capability: {c!r}")
        arch = m.group(1) + m.group(2)
        if arch not in out:
            out.append(arch)
    if not out:
        raise ValueError("no compute capability")
    return ";".join(out)


def detect_gpu() -> dict[str, Any]:
    """The GPUs as nvidia-smi lists them and the CUDA architecture to build for; Fail without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        raise Fail("no NVIDIA GPU: nvidia-smi not found")
    r = subprocess.run([smi, "--query-gpu=" + ",".join(GPU_FIELDS), "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not r.stdout.strip():
        raise Fail(f"no NVIDIA GPU: nvidia-smi failed: {(r.stderr or r.stdout).strip()[:200]}")
    try:
        gpus = parse_gpus(r.stdout)
        arch = cuda_arch([g["compute_cap"] for g in gpus])
    except ValueError as e:
        raise Fail(f"cannot read the GPU's compute capability from nvidia-smi ({e}): pass --arch, e.g. --arch 90") \
            from None
    return {"gpus": gpus, "arch": arch}


def find_nvcc() -> str | None:
    """nvcc on PATH, else under $CUDA_HOME, $CUDA_PATH or /usr/local/cuda."""
    found = shutil.which("nvcc")
    if found:
        return found
    for base in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if base and os.access(Path(base, "bin", "nvcc"), os.X_OK):
            return str(Path(base, "bin", "nvcc"))
    return None


def find_cmake(python: str = sys.executable) -> str | None:
    """cmake on PATH, else beside `python` (a venv's bin/, where PyPI's cmake package puts it)."""
    found = shutil.which("cmake")
    if found:
        return found
    beside = Path(python).parent / "cmake"
    return str(beside) if os.access(beside, os.X_OK) else None


def tool_version(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    return next((ln for ln in reversed(lines) if re.search(r"release|version", ln, re.I)), lines[-1] if lines else "")


def installed_version(dist: str) -> str | None:
    for name in (dist, dist.replace("-", "_")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


# -- the pack --------------------------------------------------------------------------------------

def version_tuple(v: str) -> tuple[int, ...]:
    """Leading numbers of each dotted part ("2.11.0+cu130" -> (2, 11, 0)); enough for these comparisons."""
    out = []
    for part in v.split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group(0)))
    return tuple(out)


def wheels_to_install(manifest: dict, installed: Callable[[str], str | None],
                      py: tuple[int, int] = sys.version_info[:2]) -> list[str]:
    """`dist==version` for each packed dist the machine lacks (MANIFEST.json's `install` policy:
    "==" unless that version is there, ">=X" unless X or newer is, "<3.11" only on Python 3.10)."""
    specs: dict[str, str] = {}
    for w in manifest["wheels"]:
        dist, have, policy = w["dist"], installed(w["dist"]), w["install"]
        if policy == "==":
            need = have != w["version"]
        elif policy.startswith(">="):
            need = have is None or version_tuple(have) < version_tuple(policy[2:])
        elif policy.startswith("<"):
            need = py < version_tuple(policy[1:]) and have is None
        elif policy == "runner":
            need = False
        else:
            raise ValueError(f"{w['file']}: unknown install policy {policy!r}")
        if need:
            specs[dist] = f"{dist}=={w['version']}"
    return sorted(specs.values())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


# -- the report ------------------------------------------------------------------------------------

def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows])


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "" if x is None else fmt.format(x)


def markdown(report: dict[str, Any]) -> str:
    """The Markdown page of a report: the machine, each step's status and wall time, the measurements."""
    m = report.get("machine", {})
    gpus = "; ".join(f"{g['name']} (compute {g['compute_cap']}, {g['memory.total']} MiB, driver {g['driver_version']})"
                     for g in m.get("gpus", [])) or "none"
    out = [f"# GPU check ({report.get('date', '')})", "",
           f"GPU: {gpus}. nvcc: {m.get('nvcc') or '?'}. CMake: {m.get('cmake') or '?'}. Python {m.get('python', '?')}, "
           f"torch {m.get('torch') or 'not installed'}. llama-cpp-python {report.get('llama_cpp_python', '?')} built "
           f"with `CMAKE_ARGS={report.get('cmake_args', '')}`.", "",
           f"Time budget {report.get('budget_s')} s, used {_f(report.get('elapsed_s'))} s.", "",
           _md_table(["step", "status", "wall s", "note"],
                     [[s["name"], s["status"], _f(s["wall_s"]), s["note"].replace("|", "/")]
                      for s in report.get("steps", [])])]
    b = report.get("bench")
    if b:
        sh = report.get("synthetic", {}).get("shape") or {}
        shape = (f"{sh['n_layer']} layers, hidden {sh['n_embd']}, FFN {sh['n_ff']}, {sh['n_head']}/{sh['n_kv']} "
                 "heads" if sh else "")
        out += ["", f"## Synthetic qwen2 model ({shape}): original vs trimmed (lossless en,vi), "
                f"n_gpu_layers={b['n_gpu_layers']}, flash_attn={b['flash_attn']}", "",
                f"Medians of {b['rows'][0]['runs']} fresh-process runs each (original and trimmed interleaved); a run "
                f"loads the model, evaluates a {b['n_prompt']}-token prompt, then decodes {b['n_gen']} tokens greedily "
                "one at a time. GPU MiB: nvidia-smi's memory.used after the run minus before the load; buffers: what "
                "llama.cpp's log reports on the GPU (model, KV cache, compute)."
                + (f" {b['note']}." if b["note"] else ""),
                "",
                _md_table(["model", "file GiB", "n_vocab", "load s", "prompt tok/s", "decode tok/s", "GPU MiB",
                           "llama.cpp GPU buffers MiB"],
                          [[Path(r["model"]).name, f"{r['file_size'] / 2**30:.2f}", f"{r['n_vocab']:,}",
                            _f(r["load_s"], "{:.2f}"), _f(r["pp_tok_s"]), _f(r["tg_tok_s"]),
                            _f(r["gpu_delta_mib"], "{:.0f}"), _f(r["buffers_mib"]["gpu"], "{:.0f}")]
                           for r in b["rows"]])]
        for q in b["ratios"]:
            out += ["", f"Trimmed vs original: size {_f(q['size'], '{:.3f}')}x, "
                    f"prompt {_f(q['pp_speedup'], '{:.3f}')}x, decode {_f(q['tg_speedup'], '{:.3f}')}x, "
                    "llama.cpp GPU buffers "
                    f"{_f(q['gpu_buffers_saved_mib'], '{:.0f}')} MiB smaller, nvidia-smi "
                    f"{_f(q['gpu_delta_saved_mib'], '{:.0f}') or 'n/a'} MiB smaller."]
    tc = report.get("train_cost")
    if tc:
        out += ["", "## Training cost (`gguf-trim bench train-cost --device cuda`)", "", "```",
                tc.get("stdout_tail", "").strip(), "```"]
    return "\n".join(out) + "\n"


def write_report(out_dir: Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """OUT/gpu-check.json and OUT/gpu-check.md (replaced whole, never half-written)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "gpu-check.json", out_dir / "gpu-check.md")
    for p, text in zip(paths, (json.dumps(report, indent=1) + "\n", markdown(report))):
        tmp = p.with_suffix(p.suffix + ".part")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    return paths


# -- the steps -------------------------------------------------------------------------------------

class Check:
    """The steps, their budget and the report they fill."""

    def __init__(self, args: argparse.Namespace, machine: dict[str, Any], manifest: dict[str, Any]) -> None:
        self.a = args
        self.t0 = time.time()
        self.pack = Path(args.pack).resolve()
        self.work = Path(args.work).resolve()
        self.out = Path(args.out).resolve()
        self.site = self.work / "site"
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        self.status: dict[str, str] = {}
        src = manifest["llama_cpp_python"]
        arch_args = "" if args.cpu else f"-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES={machine['arch']} "
        # f16 K/V only for FlashAttention (the runs' cache type: fewer kernels to compile); no libmtmd (images)
        fa = "" if args.cpu else "-DGGML_CUDA_FA_QUANTS=f16-f16 "
        self.cmake_args = f"{arch_args}{fa}{CPU_FLAGS} -DLLAVA_BUILD=OFF"
        self.report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine,
                                       "budget_s": args.budget, "llama_cpp_python": src["version"],
                                       "cmake_args": self.cmake_args, "steps": []}
        self.synth = self.work / "qwen2.5-7b-like-q4_k_m.gguf"
        self.trimmed = self.work / "qwen2.5-7b-like-q4_k_m.envi.gguf"

    def left(self) -> float:
        return self.t0 + self.a.budget - time.time()

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.site), str(ROOT), os.environ.get("PYTHONPATH"))
                                            if p)
        return env

    def run(self, cmd: list[str], log: str, env: dict[str, str] | None = None, capture: bool = True) -> str:
        """cmd with the budget left as its timeout, its output in WORK/logs/LOG (streamed there unless
        `capture`: then also returned); StepError if it fails. On timeout its whole process group is killed
        (a build's compilers with it), and TimeoutExpired raised."""
        timeout = self.left() - RESERVE_S
        if timeout <= 0:
            raise subprocess.TimeoutExpired(cmd, 0)
        path = self.logs / log
        with open(path, "w") as fh:
            fh.write("$ " + shlex.join(cmd) + "\n")
            fh.flush()
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE if capture else fh, stderr=fh, text=True,
                                 env=env or self.env(), cwd=ROOT, start_new_session=True)
            try:
                out, _ = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                raise
            fh.write(out or "")
        if p.returncode != 0:
            tail = path.read_text(errors="replace")[-3000:]
            raise StepError(f"{Path(cmd[0]).name} {' '.join(cmd[1:4])} exited {p.returncode} (log_tail in the JSON; "
                            f"{path})", tail)
        return out or ""

    def step(self, name: str, fn: Callable[[], str | None], after: tuple[str, ...] = ()) -> None:
        """Run fn as step `name` unless a step it needs did not succeed or the budget is too short for it."""
        rec: dict[str, Any] = {"name": name, "status": "", "wall_s": 0.0, "note": ""}
        self.report["steps"].append(rec)
        missing = [s for s in after if self.status.get(s) != "ok"]
        need = NEEDS.get(name, 30)
        if missing:
            rec.update(status="skipped", note=f"needs step {', '.join(missing)}")
        elif self.left() - RESERVE_S < need:
            rec.update(status="skipped", note=f"{max(self.left(), 0):.0f} s of the {self.a.budget} s budget left; "
                                              f"this step needs about {need} s")
        else:
            print(f"[gpu-check] {name} ...", flush=True)
            t = time.perf_counter()
            try:
                rec.update(status="ok", note=fn() or "")
            except subprocess.TimeoutExpired:
                rec.update(status="failed", note="stopped: the time budget ran out")
            except SkipStep as e:
                rec.update(status="skipped", note=str(e))
            except StepError as e:
                rec.update(status="failed", note=str(e), log_tail=e.log_tail)
            except Exception as e:  # a bug or a surprise of this machine: recorded, the other steps go on
                rec.update(status="failed", note=f"{type(e).__name__}: {e}")
            rec["wall_s"] = round(time.perf_counter() - t, 1)
        self.status[name] = rec["status"]
        note = f" ({rec['note']})" if rec["note"] else ""
        print(f"[gpu-check] {name}: {rec['status']} in {rec['wall_s']:.1f} s{note}; {max(self.left(), 0):.0f} s "
              "of the budget left", flush=True)
        if rec.get("log_tail"):
            print(rec["log_tail"][-1500:], file=sys.stderr, flush=True)
        self.write()

    def write(self) -> None:
        self.report["elapsed_s"] = round(time.time() - self.t0, 1)
        write_report(self.out, self.report)

    # the steps themselves

    def pip(self) -> list[str]:
        """`python -m pip`, or pip run from the pack's wheel where this Python has no pip module."""
        r = subprocess.run([self.a.python, "-m", "pip", "--version"], capture_output=True, timeout=60)
        if r.returncode == 0:
            return [self.a.python, "-m", "pip"]
        wheel = next((self.pack / "wheels" / w["file"] for w in self.manifest["wheels"] if w["dist"] == "pip"), None)
        if wheel is None:
            raise StepError(f"{self.a.python} has no pip module and the pack no pip wheel")
        return [self.a.python, str(wheel / "pip")]

    def wheels(self) -> str:
        specs = wheels_to_install(self.manifest, installed_version)
        self.report["wheels_installed"] = specs
        if not specs:
            return "the machine has every packed dist"
        self.run([*self.pip(), "install", "--no-index", "--no-deps", "--no-cache-dir",
                  "--disable-pip-version-check", "--upgrade", "--target", str(self.site), "--find-links",
                  str(self.pack / "wheels"), *specs], "wheels.log")
        return f"{len(specs)} installed: {' '.join(s.split('==')[0] for s in specs)}"

    def build(self) -> str:
        src = self.manifest["llama_cpp_python"]
        stamp = self.site / ".llama-cpp-python-stamp"
        want = f"{src['sha256']} {self.cmake_args}"
        probe = [self.a.python, "-c",
                 "import llama_cpp; print(llama_cpp.__version__, llama_cpp.llama_supports_gpu_offload())"]
        if stamp.is_file() and stamp.read_text() == want:
            got = self.run(probe, "probe.log").split()
            return f"already built ({' '.join(got)})"
        tree = self.work / "src"
        src_dir = tree / f"llama_cpp_python-{src['version']}"
        if not (tree / ".sha256").is_file() or (tree / ".sha256").read_text() != src["sha256"]:
            shutil.rmtree(tree, ignore_errors=True)
            tree.mkdir(parents=True)
            with tarfile.open(self.pack / src["file"], "r:gz") as t:
                t.extractall(tree, filter="data") if hasattr(tarfile, "data_filter") else t.extractall(tree)
            (tree / ".sha256").write_text(src["sha256"])
        env = self.env()
        env["CMAKE_ARGS"] = self.cmake_args
        env["CMAKE_BUILD_PARALLEL_LEVEL"] = str(os.cpu_count() or 4)
        env["PATH"] = str(Path(find_cmake(self.a.python) or "cmake").parent) + os.pathsep + env.get("PATH", "")
        nvcc = find_nvcc()
        if nvcc and not self.a.cpu:
            env["CUDACXX"] = nvcc
            env["PATH"] = str(Path(nvcc).parent) + os.pathsep + env.get("PATH", "")
        print(f"[gpu-check] building llama-cpp-python {src['version']}: CMAKE_ARGS={self.cmake_args}, "
              f"{env['CMAKE_BUILD_PARALLEL_LEVEL']} jobs, log {self.logs / 'build.log'}", flush=True)
        self.run([*self.pip(), "install", "-v", "--no-index", "--no-deps", "--no-build-isolation",
                  "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(self.site),
                  f"--config-settings=build-dir={self.work / 'llama-build'}", str(src_dir)], "build.log", env,
                 capture=False)
        version, gpu = self.run(probe, "probe.log").split()[:2]
        if gpu != "True" and not self.a.cpu:
            raise StepError(f"llama-cpp-python {version} was built without GPU offload (see {self.logs / 'build.log'})")
        stamp.write_text(want)
        return f"llama-cpp-python {version}, GPU offload {gpu}"

    def synth_step(self) -> str:
        shape = [f"--{k}={v}" for k, v in zip(("n-layer", "n-embd", "n-ff", "n-head", "n-kv"), self.a.shape)]
        r = json.loads(self.run([self.a.python, "-m", "gguf_trim.bench.gpu", "synth", str(self.synth), "--vocab",
                                 str(self.pack / self.manifest["vocab"]["file"]), *shape], "synth.log"))
        self.report["synthetic"] = r
        return f"{r['size'] / 2**30:.2f} GiB in {r['seconds']:.1f} s"

    def trim(self) -> str:
        out = self.run([self.a.python, "-m", "gguf_trim.cli", "trim", str(self.synth), "-o", str(self.trimmed),
                        "--langs", "en,vi"], "trim.log")
        self.report["trim"] = {"output": out.strip(), "size": self.trimmed.stat().st_size}
        return out.strip().splitlines()[0] if out.strip() else ""

    def bench(self) -> str:
        res_path = self.work / "bench.json"
        ngl = "0" if self.a.cpu else "-1"
        self.run([self.a.python, "-m", "gguf_trim.bench.gpu", "bench", str(self.synth), str(self.trimmed), "--runs",
                  str(self.a.runs), "--n-prompt", str(self.a.n_prompt), "--n-gen", str(self.a.n_gen),
                  "--n-gpu-layers", ngl, "--deadline", str(self.t0 + self.a.budget - RESERVE_S - 2), "--json",
                  str(res_path)], "bench.log")
        b = json.loads(res_path.read_text())
        if not self.a.keep_samples:
            for r in b["rows"]:
                r.pop("samples", None)
        self.report["bench"] = b
        q = b["ratios"][0]
        return (f"decode {b['rows'][0]['tg_tok_s']:.1f} -> {b['rows'][1]['tg_tok_s']:.1f} tok/s "
                f"({q['tg_speedup']:.3f}x), {b['rows'][0]['runs']} runs each")

    def train_cost(self) -> str:
        cli = [self.a.python, "-m", "gguf_trim.cli", "bench"]
        if not re.search(r"^\s+train-cost\b", self.run([*cli, "--help"], "train-cost-help.log"), re.M):
            raise SkipStep("`gguf-trim bench` has no train-cost command in this version")
        help_text = self.run([*cli, "train-cost", "--help"], "train-cost-help.log")
        if "--device" not in help_text:
            raise SkipStep("`gguf-trim bench train-cost` has no --device option")
        cmd = [*cli, "train-cost", "--device", "cuda"]
        for opt, name in (("--json", "train-cost.json"), ("--md", "train-cost.md")):
            if re.search(rf"(^|\s){opt}\b", help_text):
                cmd += [opt, str(self.out / name)]
        cmd += shlex.split(self.a.train_cost_args)
        out = self.run(cmd, "train-cost.log")
        tc: dict[str, Any] = {"command": shlex.join(cmd[1:]), "stdout_tail": out[-3000:]}
        if (self.out / "train-cost.json").is_file():
            tc["json"] = json.loads((self.out / "train-cost.json").read_text())
        self.report["train_cost"] = tc
        return "see train-cost.json" if "json" in tc else ""


def preflight(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The machine and the pack, or Fail with the one line that says what is missing."""
    machine: dict[str, Any] = {"python": platform.python_version(), "host_cpus": os.cpu_count(),
                               "torch": installed_version("torch"), "transformers": installed_version("transformers"),
                               "peft": installed_version("peft")}
    if args.cpu:
        machine.update(gpus=[], arch="")
    else:
        machine.update(detect_gpu())
        if args.arch:
            machine["arch"] = args.arch
        nvcc = find_nvcc()
        if not nvcc:
            raise Fail("no CUDA compiler: nvcc not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin)")
        machine["nvcc"] = tool_version([nvcc, "--version"])
    cmake = find_cmake(args.python)
    if not cmake:
        raise Fail("no cmake: not on PATH nor beside " + args.python)
    machine["cmake"] = tool_version([cmake, "--version"])
    manifest_path = Path(args.pack) / "MANIFEST.json"
    if not manifest_path.is_file():
        raise Fail(f"no pack: {manifest_path} not found (run `make gpu-pack` where there is network, bring the "
                   "folder along)")
    manifest = json.loads(manifest_path.read_text())
    src = Path(args.pack) / manifest["llama_cpp_python"]["file"]
    if not src.is_file() or sha256(src) != manifest["llama_cpp_python"]["sha256"]:
        raise Fail(f"the pack is damaged: {src} is missing or differs from MANIFEST.json")
    return machine, manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu-check.json and gpu-check.md")
    ap.add_argument("--pack", default=str(ROOT / "gpu-pack"), help="what `make gpu-pack` wrote")
    ap.add_argument("--work", default=str(ROOT / "build" / "gpu-check"),
                    help="installs, build folder, models (~10 GB; a rerun reuses the build)")
    ap.add_argument("--budget", type=int, default=540, help="seconds for all the steps (default 540)")
    ap.add_argument("--runs", type=int, default=3, help="fresh-process runs per model (fewer if time is short)")
    ap.add_argument("--n-prompt", type=int, default=512)
    ap.add_argument("--n-gen", type=int, default=128)
    ap.add_argument("--arch", help="CMAKE_CUDA_ARCHITECTURES instead of nvidia-smi's compute_cap (e.g. 90)")
    ap.add_argument("--shape", type=lambda s: [int(x) for x in s.split(",")], default=[28, 3584, 18944, 28, 4],
                    help="n_layer,n_embd,n_ff,n_head,n_kv of the synthetic model (default Qwen2.5-7B's)")
    ap.add_argument("--train-cost-args", default="", help="more arguments for `gguf-trim bench train-cost`")
    ap.add_argument("--python", default=sys.executable, help="the Python with PyTorch (default: this one)")
    ap.add_argument("--keep-samples", action="store_true", help="every run's figures in the JSON, not just medians")
    ap.add_argument("--cpu", action="store_true", help="for trying this script without a GPU: a CPU build, "
                                                       "nothing offloaded, no GPU checks")
    a = ap.parse_args(argv)
    try:
        machine, manifest = preflight(a)
    except Fail as e:
        print(e, file=sys.stderr)
        return 2
    c = Check(a, machine, manifest)
    print(f"[gpu-check] {', '.join(g['name'] for g in machine['gpus']) or 'CPU only'}; CUDA arch "
          f"{machine['arch'] or '-'}; budget {a.budget} s; report in {c.out}", flush=True)
    c.step("wheels", c.wheels)
    c.step("build", c.build, after=("wheels",))
    c.step("synth", c.synth_step, after=("build",))
    c.step("trim", c.trim, after=("synth",))
    c.step("bench", c.bench, after=("trim",))
    c.step("train-cost", c.train_cost, after=("wheels",))
    json_path, md_path = write_report(c.out, {**c.report, "elapsed_s": round(time.time() - c.t0, 1)})
    print(f"[gpu-check] done in {time.time() - c.t0:.0f} s: {json_path}, {md_path}", flush=True)
    print(md_path.read_text(), flush=True)
    return 0 if all(s["status"] != "failed" for s in c.report["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
