"""`make gpu-pack` and `make gpu-check` without a GPU: everything the blind run on a lent GPU machine relies on
that a CPU can check. The pruned llama-cpp-python sources keep what a CUDA build reads, the pack stays under
its size limit, the synthetic model's quantized blocks are valid (a small one loads and decodes on the CPU,
trimmed too), nvidia-smi's output is read right, the steps keep to their budget, the report is written,
and without a GPU `make gpu-check` stops at once with one line."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SDIST = ROOT / "vendor" / ".sdist" / "llama_cpp_python-0.3.36.tar.gz"
PACK = ROOT / "gpu-pack"
VOCAB = ROOT / "models" / "vocab-qwen2.gguf"
CUDA = "vendor/llama.cpp/ggml/src/ggml-cuda/"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gpu_pack = _load("gpu_pack")
gpu_check = _load("gpu_check")


@pytest.fixture(scope="module")
def sdist_names() -> list[str]:
    assert SDIST.is_file(), f"{SDIST} missing: make vendor"
    with tarfile.open(SDIST, "r:gz") as t:
        return t.getnames()


def rel(names: list[str]) -> set[str]:
    return {n.split("/", 1)[1] for n in names if "/" in n}


# -- the pack ----------------------------------------------------------------------------------------

def test_pruning_keeps_every_cuda_source_and_the_cmake_files(sdist_names):
    kept = [n for n in sdist_names if gpu_pack.keep(n)]
    assert gpu_pack.missing_required(kept) == []
    cuda = {n for n in rel(sdist_names) if n.startswith(CUDA)}
    assert len(cuda) > 100 and cuda <= rel(kept)  # ggml-cuda whole: its CMakeLists globs the folder
    kept_rel = rel(kept)
    for d in ("ggml/src/ggml-cpu/", "ggml/include/", "src/", "common/", "vendor/", "cmake/", "tools/mtmd/models/"):
        assert any(n.startswith("vendor/llama.cpp/" + d) for n in kept_rel), d
    # every CMakeLists.txt of a folder the build adds (not those of tests, tools, examples, other backends)
    cmake_dropped = {n for n in rel(sdist_names) - kept_rel if n.endswith("CMakeLists.txt")}
    built = ("src", "common", "vendor", "ggml/CMakeLists", "ggml/src/CMakeLists", "ggml/src/ggml-cpu",
             "ggml/src/ggml-cuda", "tools/mtmd")
    assert not {n for n in cmake_dropped if n.startswith(tuple("vendor/llama.cpp/" + b for b in built))}


def test_pruning_drops_docs_models_tests_web_ui_and_git(sdist_names):
    dropped = rel(sdist_names) - rel([n for n in sdist_names if gpu_pack.keep(n)])
    for prefix in ("docs/", "examples/", "tests/", ".git/", "vendor/llama.cpp/docs/", "vendor/llama.cpp/models/",
                   "vendor/llama.cpp/tests/", "vendor/llama.cpp/tools/ui/", "vendor/llama.cpp/tools/server/",
                   "vendor/llama.cpp/ggml/src/ggml-vulkan/", "vendor/llama.cpp/gguf-py/"):
        assert any(n.startswith(prefix) for n in dropped), prefix
    assert "vendor/llama.cpp/tools/mtmd/test-1.jpeg" in dropped
    assert "vendor/llama.cpp/tools/mtmd/mtmd.cpp" not in dropped


def fake_sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo("llama_cpp_python-0.3.36/" + name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


def test_prune_sdist_repacks_what_keep_accepts(tmp_path):
    files = {r: b"x" for r in gpu_pack.REQUIRED}
    files.update({CUDA + "mmq.cu": b"kernel", "docs/index.md": b"d" * 1000,
                  "vendor/llama.cpp/models/ggml-vocab-qwen2.gguf": b"v" * 5000,
                  "vendor/llama.cpp/tools/server/public/index.html.gz": b"ui"})
    src = fake_sdist(tmp_path / "src.tar.gz", files)
    counts = gpu_pack.prune_sdist(src, tmp_path / "out.tar.gz")
    with tarfile.open(tmp_path / "out.tar.gz", "r:gz") as t:
        names = rel(t.getnames())
        assert t.extractfile("llama_cpp_python-0.3.36/" + CUDA + "mmq.cu").read() == b"kernel"
    assert CUDA + "mmq.cu" in names and "docs/index.md" not in names
    assert counts["dropped_members"] == 3 and counts["dropped_bytes"] == 6002
    assert gpu_pack.missing_required(["llama_cpp_python-0.3.36/" + n for n in names]) == []
    assert "pyproject.toml" in gpu_pack.missing_required(["llama_cpp_python-0.3.36/CMakeLists.txt"])


def test_pack_size_limit(tmp_path):
    files = {r: b"x" for r in gpu_pack.REQUIRED}
    src = fake_sdist(tmp_path / "llama_cpp_python-0.3.36.tar.gz", files)
    vocab = tmp_path / "vocab-qwen2.gguf"
    vocab.write_bytes(b"\0" * 20_000)
    m = gpu_pack.build(tmp_path / "pack", src, gpu_pack.sha256(src), "0.3.36", vocab, wheels=False)
    assert m["total_size"] == gpu_pack.check_size(tmp_path / "pack") > 20_000
    assert "total" in gpu_pack.describe(m)
    with pytest.raises(SystemExit, match="over the"):
        gpu_pack.check_size(tmp_path / "pack", limit=10_000)
    with pytest.raises(SystemExit, match="sha256"):
        gpu_pack.build(tmp_path / "pack2", src, "0" * 64, "0.3.36", vocab, wheels=False)


def test_the_built_pack():
    """The real gpu-pack/ (`make gpu-pack`): every CUDA source, under 60 MB, what MANIFEST.json lists."""
    if not (PACK / "MANIFEST.json").is_file():
        pytest.skip("no gpu-pack/: make gpu-pack")
    m = json.loads((PACK / "MANIFEST.json").read_text())
    src = PACK / m["llama_cpp_python"]["file"]
    with tarfile.open(src, "r:gz") as t:
        names = t.getnames()
    assert gpu_pack.missing_required(names) == []
    with tarfile.open(SDIST, "r:gz") as t:
        assert {n for n in rel(t.getnames()) if n.startswith(CUDA)} <= rel(names)
    assert gpu_pack.check_size(PACK) <= gpu_pack.LIMIT_BYTES
    assert all((PACK / "wheels" / w["file"]).is_file() for w in m["wheels"])
    dists = {w["dist"] for w in m["wheels"]}
    assert {"gguf", "gflanguages", "scikit-build-core", "diskcache", "click", "tqdm"} <= dists
    assert gpu_pack.sha256(PACK / m["vocab"]["file"]) == m["vocab"]["sha256"]


# -- the machine -------------------------------------------------------------------------------------

H100 = "NVIDIA H100 80GB HBM3, 580.159.04, 81559, 9.0\n"


def test_compute_capability_from_nvidia_smi():
    gpus = gpu_check.parse_gpus(H100)
    assert gpus == [{"name": "NVIDIA H100 80GB HBM3", "driver_version": "580.159.04", "memory.total": "81559",
                     "compute_cap": "9.0"}]
    assert gpu_check.cuda_arch([g["compute_cap"] for g in gpus]) == "90"
    two = gpu_check.parse_gpus("NVIDIA A100-SXM4-40GB, 535.1, 40960, 8.0\n\nNVIDIA A10G, 535.1, 23028, 8.6\n"
                               "NVIDIA A10G, 535.1, 23028, 8.6\n")
    assert gpu_check.cuda_arch([g["compute_cap"] for g in two]) == "80;86"
    assert gpu_check.parse_gpus("Tesla T4, with comma, 470.1, 15360, 7.5")[0]["name"] == "Tesla T4, with comma"
    for bad in ("[N/A]", "", "9"):
        with pytest.raises(ValueError):
            gpu_check.cuda_arch([bad])


def test_detect_gpu_runs_nvidia_smi(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{H100}'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert gpu_check.detect_gpu()["arch"] == "90"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(gpu_check.Fail, match="^no NVIDIA GPU: nvidia-smi not found$"):
        gpu_check.detect_gpu()


def test_wheels_to_install_by_policy():
    manifest = {"wheels": [
        {"file": "gguf-0.19.0-py3-none-any.whl", "dist": "gguf", "version": "0.19.0", "install": "=="},
        {"file": "click-8.5.1-py3-none-any.whl", "dist": "click", "version": "8.5.1", "install": ">=8.1"},
        {"file": "regex-1-cp310.whl", "dist": "regex", "version": "2026.9.29", "install": ">=2023.0"},
        {"file": "regex-1-cp312.whl", "dist": "regex", "version": "2026.9.29", "install": ">=2023.0"},
        {"file": "protobuf-7.whl", "dist": "protobuf", "version": "7.36.2", "install": ">=6.33.0"},
        {"file": "tomli-2.5.0.whl", "dist": "tomli", "version": "2.5.0", "install": "<3.11"},
        {"file": "pip-26.3-py3-none-any.whl", "dist": "pip", "version": "26.3", "install": "runner"}]}
    have = {"gguf": "0.17.1", "click": "8.1.7", "protobuf": "5.29.3"}.get
    assert gpu_check.wheels_to_install(manifest, have, (3, 12)) == ["gguf==0.19.0", "protobuf==7.36.2",
                                                                      "regex==2026.9.29"]
    assert "tomli==2.5.0" in gpu_check.wheels_to_install(manifest, have, (3, 10))
    everything = {"gguf": "0.19.0", "click": "8.5.1", "regex": "2024.1.1", "protobuf": "6.33.0"}.get
    assert gpu_check.wheels_to_install(manifest, everything, (3, 12)) == []
    assert gpu_check.version_tuple("2.11.0+cu130") == (2, 11, 0)


# -- the measurements --------------------------------------------------------------------------------

CUDA_LOG = """load_tensors: offloading 28 repeating layers to GPU
load_tensors:        CUDA0 model buffer size =  4168.09 MiB
load_tensors:   CPU_Mapped model buffer size =   292.17 MiB
llama_kv_cache:      CUDA0 KV buffer size =    36.00 MiB
llama_context:  CUDA_Host  output buffer size =     0.58 MiB
llama_context:      CUDA0 compute buffer size =   304.00 MiB
llama_context:  CUDA_Host compute buffer size =    15.01 MiB
"""


def test_buffer_sizes_from_the_llama_cpp_log():
    from gguf_trim.bench.gpu import parse_buffers

    b = parse_buffers(CUDA_LOG)
    assert b["CUDA0 model"] == 4168.09 and b["CUDA_Host compute"] == 15.01
    assert b["gpu"] == pytest.approx(4508.09) and b["host"] == pytest.approx(307.76)


@pytest.mark.skipif(not VOCAB.is_file(), reason="models/vocab-qwen2.gguf missing: make models")
def test_small_synthetic_model_is_valid_trims_and_decodes(tmp_path):
    """The 7B builder at a small shape: valid Q4_K/Q6_K blocks (they dequantize to the N(0, 0.02) they
    encode), llama.cpp loads it and decodes finite logits, and the lossless trim of it does too."""
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    from gguf_trim import trim
    from gguf_trim.bench.gpu import Shape, bench, make_synthetic
    from gguf_trim.format.gguffile import GGUFFile

    shape = Shape(n_layer=2, n_embd=256, n_ff=512, n_head=4, n_kv=2)
    path = make_synthetic(tmp_path / "s.gguf", VOCAB, shape)
    with GGUFFile(path) as g:
        for name in ("blk.0.ffn_up.weight", "blk.1.ffn_down.weight", "output.weight"):
            t = g.tensor(name)
            rows = g.tensor_rows_as(t, t.shape[-1])[:64]
            x = dequantize(rows, GGMLQuantizationType(t.ggml_type)).astype(np.float32)
            assert np.isfinite(x).all() and 0.015 < x.std() < 0.025, name
    trim(path, tmp_path / "s.envi.gguf")
    res = bench([str(path), str(tmp_path / "s.envi.gguf")], runs=1, n_prompt=32, n_gen=4, n_gpu_layers=0,
                flash_attn=False)
    a, b = res["rows"]
    assert a["logits_finite"] and b["logits_finite"] and a["tg_tok_s"] > 0 and b["pp_tok_s"] > 0
    assert a["n_vocab"] == 151936 and b["n_vocab"] < 110_000
    assert a["buffers_mib"]["CPU_Mapped model"] > b["buffers_mib"]["CPU_Mapped model"] > 0
    assert res["ratios"][0]["size"] < 0.8


# -- the steps and the report -----------------------------------------------------------------------

def make_check(tmp_path, budget=600) -> object:
    args = argparse.Namespace(pack=str(tmp_path / "pack"), work=str(tmp_path / "work"), out=str(tmp_path / "out"),
                              budget=budget, cpu=False, python=sys.executable, train_cost_args="--tokens 10",
                              keep_samples=False)
    machine = {"gpus": gpu_check.parse_gpus(H100), "arch": "90", "python": "3.12.3", "nvcc": "release 13.0"}
    return gpu_check.Check(args, machine, {"llama_cpp_python": {"version": "0.3.36"}, "wheels": []})


def test_steps_keep_to_the_budget_and_the_report_is_written(tmp_path):
    c = make_check(tmp_path)
    assert c.cmake_args.startswith("-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 ")

    def fail():
        raise gpu_check.StepError("exited 1", "compiler said no")

    c.step("wheels", lambda: "3 installed")
    c.step("build", fail, after=("wheels",))
    c.step("synth", lambda: "never", after=("build",))
    c.step("train-cost", lambda: (_ for _ in ()).throw(gpu_check.SkipStep("no train-cost")), after=("wheels",))
    c.a.budget = 30  # 30 s: less than the bench needs
    c.step("bench", lambda: "never")
    got = {s["name"]: (s["status"], s["note"]) for s in c.report["steps"]}
    assert got["wheels"] == ("ok", "3 installed")
    assert got["build"][0] == "failed" and c.report["steps"][1]["log_tail"] == "compiler said no"
    assert got["synth"] == ("skipped", "needs step build")
    assert got["train-cost"] == ("skipped", "no train-cost")
    assert got["bench"][0] == "skipped" and "budget left" in got["bench"][1]
    saved = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert [s["status"] for s in saved["steps"]] == ["ok", "failed", "skipped", "skipped", "skipped"]
    md = (tmp_path / "out" / "gpu-check.md").read_text()
    assert "NVIDIA H100 80GB HBM3 (compute 9.0" in md and "| synth | skipped |" in md


def test_a_command_past_the_budget_is_killed_with_its_children(tmp_path):
    c = make_check(tmp_path)
    pidfile = tmp_path / "pid"
    c.t0 = time.time() - c.a.budget + gpu_check.RESERVE_S + 1.5  # 1.5 s left
    with pytest.raises(subprocess.TimeoutExpired):
        c.run(["sh", "-c", f"sleep 60 & echo $! > {pidfile}; wait"], "t.log")
    stat = Path(f"/proc/{pidfile.read_text().strip()}/stat")
    time.sleep(0.2)
    assert not stat.exists() or stat.read_text().split()[2] == "Z"  # gone (or a zombie nobody reaped)
    c.t0 = time.time()
    with pytest.raises(gpu_check.StepError, match="exited 3") as e:
        c.run(["sh", "-c", "echo compiling; echo oops >&2; exit 3"], "fail.log", capture=False)
    assert "compiling" in e.value.log_tail and "oops" in e.value.log_tail


def test_train_cost_only_where_gguf_trim_has_it(tmp_path):
    c = make_check(tmp_path)
    calls = []
    helps = {"--help": "Commands:\n  infer  ...\n  train-cost  Training cost...\n",
             "train-cost": "Options:\n  --device TEXT\n  --json PATH\n"}

    def fake_run(cmd, log, env=None):
        calls.append(cmd)
        if cmd[-2:] == ["train-cost", "--help"]:
            return helps["train-cost"]
        return helps["--help"] if cmd[-1] == "--help" else "done"

    c.run = fake_run
    helps["--help"] = "Commands:\n  infer  ...\n  vram  ...\n"
    with pytest.raises(gpu_check.SkipStep, match="no train-cost"):
        c.train_cost()
    helps["--help"] = "Commands:\n  infer  ...\n  train-cost  Training cost...\n"
    c.train_cost()
    cmd = calls[-1]
    assert cmd[cmd.index("train-cost"):] == ["train-cost", "--device", "cuda", "--json",
                                            str(tmp_path / "out" / "train-cost.json"), "--tokens", "10"]


def test_markdown_report_with_measurements(tmp_path):
    row = {"model": "/w/a.gguf", "file_size": 4934116448, "n_vocab": 151936, "runs": 3, "load_s": 2.5,
           "pp_tok_s": 9000.0, "tg_tok_s": 150.0, "gpu_delta_mib": 5200.0, "buffers_mib": {"gpu": 4508.1}}
    report = {"date": "2026-12-07", "machine": {"gpus": gpu_check.parse_gpus(H100)}, "budget_s": 540,
              "elapsed_s": 300.0, "steps": [{"name": "bench", "status": "ok", "wall_s": 60.0, "note": "a | b"}],
              "bench": {"rows": [row, {**row, "model": "/w/a.envi.gguf", "n_vocab": 104080, "tg_tok_s": 160.0}],
                        "ratios": [{"size": 0.95, "pp_speedup": 1.0, "tg_speedup": 1.067, "gpu_buffers_saved_mib": 210,
                                    "gpu_delta_saved_mib": None}],
                        "n_gpu_layers": -1, "flash_attn": True, "n_prompt": 512, "n_gen": 128, "note": ""},
              "train_cost": {"stdout_tail": "cuda: 1.2x\n"}}
    j, m = gpu_check.write_report(tmp_path, report)
    assert json.loads(j.read_text()) == report
    md = m.read_text()
    assert "| a.envi.gguf | 4.60 | 104,080 | 2.50 | 9000.0 | 160.0 | 5200 | 4508 |" in md
    assert "decode 1.067x" in md and "a / b" in md and "cuda: 1.2x" in md


def test_make_gpu_check_without_a_gpu_fails_at_once(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi")
    t0 = time.perf_counter()
    r = subprocess.run(["make", "-s", "gpu-check", f"OUT={tmp_path / 'out'}", f"PY={sys.executable}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and time.perf_counter() - t0 < 30
    assert r.stderr.splitlines()[0] == "no NVIDIA GPU: nvidia-smi not found"
    assert r.stdout == "" and not (tmp_path / "out").exists()
