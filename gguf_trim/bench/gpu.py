"""The GPU check's measurements (scripts/gpu_check.py runs them as `python -m gguf_trim.bench.gpu ...`).

A synthetic model with a real vocabulary and any transformer shape (Qwen2.5-7B's by default): every
quantized tensor holds valid K-quant blocks, encoded by libggml from random normal floats, so llama.cpp's
kernels do the work they do on real weights; it is written by streaming a few encoded rows over and over,
never held in memory. Then original and trimmed are timed in fresh processes, interleaved, with every
layer offloaded, until the runs are done or the deadline comes: prompt and decode tok/s, load time and
the GPU memory each takes (nvidia-smi before and after, and llama.cpp's own buffer sizes from its log).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gguf_trim.bench.infer import PROMPT_SEED


@dataclass(frozen=True)
class Shape:
    """A qwen2-architecture transformer's sizes (the vocabulary's come from the vocab GGUF)."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_kv: int


QWEN25_7B = Shape(n_layer=28, n_embd=3584, n_ff=18944, n_head=28, n_kv=4)


def make_synthetic(path: str | Path, vocab_gguf: str | Path, shape: Shape = QWEN25_7B, seed: int = 0) -> Path:
    """A qwen2 GGUF with `vocab_gguf`'s tokenizer and `shape`, Q4_K_M-like types (Q6_K for attn_v,
    ffn_down and output, Q4_K elsewhere). Each (type, row length) gets 64 rows of N(0, 0.02) floats
    quantized by libggml, tiled over the tensor's rows."""
    import numpy as np
    from gguf.constants import GGMLQuantizationType as Q
    from gguf.constants import GGUFValueType as V

    from gguf_trim.format.gguffile import OutTensor, encode_field, write_gguf
    from gguf_trim.format.quant import ggml_quantize
    from gguf_trim.format.shards import open_model

    s = shape
    if s.n_embd % s.n_head or s.n_head % s.n_kv or s.n_embd % 256 or s.n_ff % 256:
        raise ValueError(f"{s}: n_embd and n_ff must be multiples of 256 (K-quant blocks), heads must divide")
    rng = np.random.default_rng(seed)
    kv: list[bytes] = [encode_field("general.architecture", V.STRING, "qwen2"),
                       encode_field("general.name", V.STRING, f"synthetic qwen2 {s.n_layer}x{s.n_embd}")]
    with open_model(vocab_gguf) as g:
        kv += [f.raw for name, f in g.fields.items() if name.startswith("tokenizer.")]
        n_vocab = len(g.get("tokenizer.ggml.tokens"))
    for key, val in (("context_length", 32768), ("embedding_length", s.n_embd), ("block_count", s.n_layer),
                     ("feed_forward_length", s.n_ff), ("attention.head_count", s.n_head),
                     ("attention.head_count_kv", s.n_kv)):
        kv.append(encode_field(f"qwen2.{key}", V.UINT32, val))
    kv.append(encode_field("qwen2.attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-6))
    kv.append(encode_field("qwen2.rope.freq_base", V.FLOAT32, 1e6))
    patterns: dict[tuple[int, int], np.ndarray] = {}

    def qtensor(name: str, rows: int, cols: int, qt: Q) -> OutTensor:
        key = (int(qt), cols)
        if key not in patterns:
            patterns[key] = ggml_quantize((rng.standard_normal((64, cols)) * 0.02).astype(np.float32), qt)
        pat = patterns[key]

        def write(fh, pat=pat, rows=rows) -> None:
            block = np.tile(pat, (64, 1)).tobytes()  # 4096 rows
            row_bytes = pat.shape[1]
            done = 0
            while done < rows:
                n = min(len(block) // row_bytes, rows - done)
                fh.write(block[: n * row_bytes])
                done += n
        return OutTensor(name, (cols, rows), int(qt), rows * pat.shape[1], write)

    def f32(name: str, n: int, value: float = 1.0) -> OutTensor:
        return OutTensor(name, (n,), int(Q.F32), 4 * n, lambda fh: fh.write(np.full(n, value, np.float32).tobytes()))

    kv_dim = s.n_embd // s.n_head * s.n_kv
    tensors = [qtensor("token_embd.weight", n_vocab, s.n_embd, Q.Q4_K), f32("output_norm.weight", s.n_embd),
               qtensor("output.weight", n_vocab, s.n_embd, Q.Q6_K)]
    for b in range(s.n_layer):
        tensors += [f32(f"blk.{b}.attn_norm.weight", s.n_embd),
                    qtensor(f"blk.{b}.attn_q.weight", s.n_embd, s.n_embd, Q.Q4_K),
                    f32(f"blk.{b}.attn_q.bias", s.n_embd, 0.0),
                    qtensor(f"blk.{b}.attn_k.weight", kv_dim, s.n_embd, Q.Q4_K),
                    f32(f"blk.{b}.attn_k.bias", kv_dim, 0.0),
                    qtensor(f"blk.{b}.attn_v.weight", kv_dim, s.n_embd, Q.Q6_K),
                    f32(f"blk.{b}.attn_v.bias", kv_dim, 0.0),
                    qtensor(f"blk.{b}.attn_output.weight", s.n_embd, s.n_embd, Q.Q4_K),
                    f32(f"blk.{b}.ffn_norm.weight", s.n_embd),
                    qtensor(f"blk.{b}.ffn_gate.weight", s.n_ff, s.n_embd, Q.Q4_K),
                    qtensor(f"blk.{b}.ffn_up.weight", s.n_ff, s.n_embd, Q.Q4_K),
                    qtensor(f"blk.{b}.ffn_down.weight", s.n_embd, s.n_ff, Q.Q6_K)]
    path = Path(path)
    with open(path, "wb") as fh:
        write_gguf(fh, kv, tensors, 32)
    return path


# -- measuring ------------------------------------------------------------------------------------

BUFFER_RE = re.compile(r"(\w[\w-]*)\s+(model|KV|compute|output|RS)\s+buffer size\s*=\s*([\d.]+)\s*MiB")


def parse_buffers(log: str) -> dict[str, float]:
    """llama.cpp's buffer sizes from its load log, MiB per "DEVICE kind" (e.g. "CUDA0 model",
    "CPU_Mapped model", "CUDA0 KV"), summed over repeats; plus "gpu" (devices named CUDA<n>, ROCm<n>...,
    not host buffers) and "host" totals."""
    out: dict[str, float] = {}
    for dev, kind, mib in BUFFER_RE.findall(log):
        out[f"{dev} {kind}"] = out.get(f"{dev} {kind}", 0.0) + float(mib)
    gpu = sum(v for k, v in out.items() if re.match(r"(CUDA|ROCm|Vulkan|Metal)\d*\s", k) and "_Host" not in k)
    out["gpu"] = round(gpu, 2)
    out["host"] = round(sum(v for k, v in out.items() if k not in ("gpu",)) - gpu, 2)
    return out


def smi_memory_used_mib() -> float | None:
    """memory.used of the first GPU in MiB, None without nvidia-smi (or on any failure)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        r = subprocess.run([smi, "--query-gpu=memory.used", "--format=csv,noheader,nounits"], capture_output=True,
                           text=True, timeout=20, check=True)
        return float(r.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def smi_process_mib(pid: int) -> float | None:
    """The GPU memory nvidia-smi attributes to process `pid` (None where it lists no such process:
    inside some containers the PIDs it sees are not ours)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        r = subprocess.run([smi, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in r.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            try:
                return float(parts[1])
            except ValueError:
                return None
    return None


def worker(model: str, n_prompt: int, n_gen: int, n_gpu_layers: int, flash_attn: bool) -> dict[str, Any]:
    """One run in this (fresh) process: load with `n_gpu_layers` offloaded, evaluate an `n_prompt`-token
    prompt, decode `n_gen` tokens greedily one at a time. Reading the logits synchronizes the GPU, so each
    timing ends when its work has."""
    import numpy as np
    from llama_cpp import Llama

    from gguf_trim.runtime.llama import last_logits

    mem0 = smi_memory_used_mib()
    t0 = time.perf_counter()
    llm = Llama(model, n_gpu_layers=n_gpu_layers, n_ctx=n_prompt + n_gen + 16, n_batch=max(n_prompt, 32),
                n_ubatch=max(n_prompt, 32), flash_attn=flash_attn, verbose=True)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()
    ids = llm.tokenize((PROMPT_SEED * 64).encode(), add_bos=False, special=False)[:n_prompt]
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = int(np.argmax(last_logits(llm)))
    pp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    finite = True
    for _ in range(n_gen):  # no early stop: every run decodes n_gen tokens
        llm.eval([tok])
        lg = last_logits(llm)
        tok = int(np.argmax(lg))
    tg_s = time.perf_counter() - t0
    finite = bool(np.isfinite(lg).all()) if n_gen else finite
    mem1 = smi_memory_used_mib()
    return {"load_s": load_s, "pp_tok_s": len(ids) / pp_s, "tg_tok_s": n_gen / tg_s if n_gen else None,
            "n_prompt": len(ids), "n_gen": n_gen, "n_vocab": n_vocab, "logits_finite": finite,
            "gpu_used_before_mib": mem0, "gpu_used_after_mib": mem1,
            "gpu_delta_mib": None if mem0 is None or mem1 is None else mem1 - mem0,
            "gpu_process_mib": smi_process_mib(os.getpid())}


def run_worker(model: str, n_prompt: int, n_gen: int, n_gpu_layers: int, flash_attn: bool,
               timeout: float | None = None) -> dict[str, Any]:
    """`worker` in a fresh process; its llama.cpp log gives the buffer sizes."""
    cmd = [sys.executable, "-m", "gguf_trim.bench.gpu", "worker", model, str(n_prompt), str(n_gen),
           str(n_gpu_layers), str(int(flash_attn))]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"worker on {model} failed ({r.returncode}): {r.stderr[-1500:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["buffers_mib"] = parse_buffers(r.stderr)
    return out


MEDIANS = ("load_s", "pp_tok_s", "tg_tok_s", "gpu_delta_mib", "gpu_process_mib")


def bench(models: list[str], runs: int = 3, n_prompt: int = 512, n_gen: int = 128, n_gpu_layers: int = -1,
          flash_attn: bool = True, deadline: float | None = None) -> dict[str, Any]:
    """Rounds of one fresh-process run per model (interleaved), `runs` rounds or fewer: a round starts
    only if the last one would still end before `deadline` (time.time()). Medians per model, and each
    trimmed model's ratios to the first (the original)."""
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    note = ""
    round_s = 0.0
    for r in range(runs):
        if deadline and r and time.time() + round_s * 1.2 > deadline:
            note = f"{r} of {runs} rounds: the time budget ran out"
            break
        t0 = time.time()
        try:
            done = [run_worker(m, n_prompt, n_gen, n_gpu_layers, flash_attn,
                               max(deadline - time.time(), 1) if deadline else None) for m in models]
        except subprocess.TimeoutExpired:
            if not r:
                raise
            note = f"{r} of {runs} rounds: the time budget ran out"
            break
        for m, x in zip(models, done):  # whole rounds only: every model has as many runs
            samples[m].append(x)
        round_s = time.time() - t0
    rows = []
    for m in models:
        s = samples[m]
        row: dict[str, Any] = {"model": m, "file_size": os.path.getsize(m), "n_vocab": s[0]["n_vocab"], "runs": len(s)}
        for k in MEDIANS:
            vals = [x[k] for x in s if x.get(k) is not None]
            row[k] = statistics.median(vals) if vals else None
        row["buffers_mib"] = s[-1]["buffers_mib"]
        row["logits_finite"] = all(x["logits_finite"] for x in s)
        row["samples"] = s
        rows.append(row)
    ratios = []
    for b in rows[1:]:
        a = rows[0]

        def ratio(x: Any, y: Any) -> float | None:
            return y / x if x and y is not None else None
        ratios.append({"trimmed": b["model"], "size": ratio(a["file_size"], b["file_size"]),
                       "pp_speedup": ratio(a["pp_tok_s"], b["pp_tok_s"]),
                       "tg_speedup": ratio(a["tg_tok_s"], b["tg_tok_s"]),
                       "gpu_buffers_saved_mib": a["buffers_mib"]["gpu"] - b["buffers_mib"]["gpu"],
                       "gpu_delta_saved_mib": (a["gpu_delta_mib"] - b["gpu_delta_mib"]
                                               if a["gpu_delta_mib"] is not None and b["gpu_delta_mib"] is not None
                                               else None)})
    return {"rows": rows, "ratios": ratios, "runs": runs, "n_prompt": n_prompt, "n_gen": n_gen,
            "n_gpu_layers": n_gpu_layers, "flash_attn": flash_attn, "note": note}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m gguf_trim.bench.gpu")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sy = sub.add_parser("synth", help="write a synthetic model; prints JSON")
    sy.add_argument("out")
    sy.add_argument("--vocab", required=True)
    for f, v in asdict(QWEN25_7B).items():
        sy.add_argument("--" + f.replace("_", "-"), type=int, default=v)
    w = sub.add_parser("worker", help="one run (internal)")
    w.add_argument("model")
    w.add_argument("n_prompt", type=int)
    w.add_argument("n_gen", type=int)
    w.add_argument("n_gpu_layers", type=int)
    w.add_argument("flash_attn", type=int)
    b = sub.add_parser("bench", help="time ORIGINAL TRIMMED...; prints JSON")
    b.add_argument("models", nargs="+")
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--n-prompt", type=int, default=512)
    b.add_argument("--n-gen", type=int, default=128)
    b.add_argument("--n-gpu-layers", type=int, default=-1)
    b.add_argument("--no-flash-attn", action="store_true")
    b.add_argument("--deadline", type=float, default=None, help="time.time() by which to stop starting rounds")
    b.add_argument("--json")
    a = ap.parse_args(argv)
    if a.cmd == "synth":
        t0 = time.perf_counter()
        shape = Shape(**{f: getattr(a, f) for f in asdict(QWEN25_7B)})
        p = make_synthetic(a.out, a.vocab, shape)
        print(json.dumps({"path": str(p), "size": p.stat().st_size, "shape": asdict(shape),
                          "seconds": time.perf_counter() - t0}))
    elif a.cmd == "worker":
        print(json.dumps(worker(a.model, a.n_prompt, a.n_gen, a.n_gpu_layers, bool(a.flash_attn))))
    else:
        res = bench(a.models, a.runs, a.n_prompt, a.n_gen, a.n_gpu_layers, not a.no_flash_attn, a.deadline)
        text = json.dumps(res, indent=1)
        if a.json:
            Path(a.json).write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
