"""Benchmarks: what trimming buys at inference, and what the trim itself costs.

Every measurement runs in a fresh process (`python -m gguf_trim.bench.infer worker ...`), original
and trimmed interleaved (A B A B ...) so that machine drift hits both alike; the tables report
medians. Timings live here, never in test assertions.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gguf_trim.format.gguffile import OutTensor, encode_field, pad_to, write_gguf
from gguf_trim.format.shards import model_size, open_model, output_paths, split_keys
from gguf_trim.rewrite.writer import vocab_tensors

PROMPT_SEED = ("The quick brown fox jumps over the lazy dog. Xin chào, tôi là học sinh ở Hà Nội. "
               "Please save your work before closing the window. Cảm ơn bạn rất nhiều. ")


# -- inference benchmark -----------------------------------------------------------------------

def _worker(model: str, n_prompt: int, n_gen: int, threads: int) -> dict[str, Any]:
    """One measurement in this (fresh) process: load, prompt processing, greedy decode."""
    import resource

    from gguf_trim.rewrite.verify import load_llama

    t0 = time.perf_counter()
    llm = load_llama(model, n_ctx=n_prompt + n_gen + 16, n_threads=threads)
    load_s = time.perf_counter() - t0
    ids = llm.tokenize((PROMPT_SEED * 64).encode(), add_bos=False, special=False)[:n_prompt]
    t0 = time.perf_counter()
    llm.eval(ids)
    pp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_vocab = llm.n_vocab()
    for _ in range(n_gen):  # greedy decode, one token per step, no early stop
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))
        llm.eval([int(np.argmax(logits))])
    tg_s = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"load_s": load_s, "pp_tok_s": len(ids) / pp_s, "tg_tok_s": n_gen / tg_s, "peak_rss": rss,
            "n_prompt": len(ids), "n_gen": n_gen}


def decode_bytes_per_token(path: str | Path) -> int:
    """Bytes one decode step reads: every weight once, except the embedding (one row per token)."""
    with open_model(path) as g:
        n_vocab = len(g.get("tokenizer.ggml.tokens"))
        has_output = g.tensor("output.weight") is not None
        total = 0
        for t in g.tensors:
            if t.name == "token_embd.weight":
                total += t.row_bytes if has_output else t.nbytes  # tied: read in full as the output
            elif t.name.startswith("per_layer_token_embd") and t.shape[-1] == n_vocab:
                total += t.row_bytes
            else:
                total += t.nbytes
        return total


def vocab_bytes(path: str | Path) -> int:
    with open_model(path) as g:
        return sum(t.nbytes for t in vocab_tensors(g, len(g.get("tokenizer.ggml.tokens"))))


def bench_models(models: list[str], runs: int = 5, n_prompt: int = 512, n_gen: int = 128,
                 threads: int | None = None) -> list[dict[str, Any]]:
    """Medians over `runs` fresh-process runs per model, the models interleaved."""
    threads = threads or os.cpu_count() or 1
    samples: dict[str, list[dict[str, Any]]] = {m: [] for m in models}
    for _ in range(runs):
        for m in models:
            r = subprocess.run([sys.executable, "-m", "gguf_trim.bench.infer", "worker", m, str(n_prompt), str(n_gen),
                                str(threads)], capture_output=True, text=True, check=True)
            samples[m].append(json.loads(r.stdout.strip().splitlines()[-1]))
    rows = []
    for m in models:
        s = samples[m]
        rows.append({"model": m, "file_size": model_size(m), "vocab_bytes": vocab_bytes(m),
                     "decode_bytes_per_token": decode_bytes_per_token(m), "runs": len(s),
                     **{k: statistics.median(x[k] for x in s) for k in ("load_s", "pp_tok_s", "tg_tok_s", "peak_rss")}})
    return rows


def compare(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs (original, trimmed) -> speed ratios next to the byte-ideal decode ratio."""
    out = []
    for a, b in zip(rows[0::2], rows[1::2]):
        ideal = a["decode_bytes_per_token"] / b["decode_bytes_per_token"]
        tg = b["tg_tok_s"] / a["tg_tok_s"]
        out.append({"original": a["model"], "trimmed": b["model"], "size_ratio": b["file_size"] / a["file_size"],
                    "pp_speedup": b["pp_tok_s"] / a["pp_tok_s"], "tg_speedup": tg, "byte_ideal_tg_speedup": ideal,
                    "tg_vs_ideal": tg / ideal, "rss_ratio": b["peak_rss"] / a["peak_rss"]})
    return out


def markdown(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> str:
    mib = 1 << 20
    lines = ["| model | file MiB | vocab MiB | decode MiB/token | load s | peak RSS MiB | pp tok/s | tg tok/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in _unique(rows):
        lines.append(f"| {Path(r['model']).name} | {r['file_size'] / mib:.1f} | {r['vocab_bytes'] / mib:.1f} | "
                     f"{r['decode_bytes_per_token'] / mib:.1f} | {r['load_s']:.2f} | {r['peak_rss'] / mib:.0f} | "
                     f"{r['pp_tok_s']:.1f} | {r['tg_tok_s']:.1f} |")
    lines += ["", "| trimmed vs original | size | pp speed-up | decode speed-up | byte-ideal decode speed-up | "
                  "decode / ideal |", "|---|---:|---:|---:|---:|---:|"]
    for p in pairs:
        lines.append(f"| {Path(p['trimmed']).name} | {p['size_ratio']:.3f} | {p['pp_speedup']:.3f} | "
                     f"{p['tg_speedup']:.3f} | {p['byte_ideal_tg_speedup']:.3f} | {p['tg_vs_ideal']:.3f} |")
    return "\n".join(lines)


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows once per model (an original compared with two trims appears twice in the pairs)."""
    seen: set[str] = set()
    return [r for r in rows if not (r["model"] in seen or seen.add(r["model"]))]


def plot(rows: list[dict[str, Any]], path: str | Path) -> bool:
    """Bar chart of decode and prompt tok/s; skipped (False) when matplotlib is not installed."""
    rows = _unique(rows)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [Path(r["model"]).name.replace(".gguf", "") for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, key, title in zip(axes, ("tg_tok_s", "pp_tok_s", "file_size"),
                              ("decode tok/s", "prompt tok/s (512)", "file size (MiB)")):
        vals = [r[key] / (1 << 20) if key == "file_size" else r[key] for r in rows]
        ax.bar(range(len(rows)), vals, color=["#888", "#2a7"] * (len(rows) // 2 + 1))
        ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize=7)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


# -- trim throughput -----------------------------------------------------------------------------

def _timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process. Dirty pages are flushed first so
    that neither command pays for the other's write-back."""
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.read().decode()[-400:] if p.stderr else ''}")
    return secs, usage.ru_maxrss * 1024


def bench_trim(model: str | Path, runs: int = 3, check: bool = True, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """`gguf-trim trim [flags]` against `cp` of the same file (of all its shards, for a split
    model), interleaved, in the model's folder."""
    model = Path(model)
    with open_model(model) as m:
        files = [str(p) for p in m.paths]
        size = m.size
    with tempfile.TemporaryDirectory(dir=model.parent, prefix=".bench-") as d:
        cp_t, trim_t, trim_rss = [], [], []
        trim_cmd = [sys.executable, "-m", "gguf_trim.cli", "trim", str(model), "-o", f"{d}/t.gguf", *flags]
        if not check:
            trim_cmd.append("--no-check")
        os.mkdir(f"{d}/c")
        _timed(["cp", *files, f"{d}/c/"])  # warm the page cache for both
        shutil.rmtree(f"{d}/c")
        for _ in range(runs):
            os.mkdir(f"{d}/c")
            s, _ = _timed(["cp", *files, f"{d}/c/"])
            cp_t.append(s)
            shutil.rmtree(f"{d}/c")
            s, rss = _timed(trim_cmd)
            trim_t.append(s)
            trim_rss.append(rss)
            outs = [p for p in Path(d).iterdir() if p.name.startswith("t")]
            out_size = sum(p.stat().st_size for p in outs)
            for p in outs:  # like cp's copy: freeing the old files is not part of the next run
                p.unlink()
    cp_s, trim_s = statistics.median(cp_t), statistics.median(trim_t)
    return {"model": str(model), "size": size, "trimmed_size": out_size, "cp_s": cp_s,
            "trim_s": trim_s, "trim_vs_cp": trim_s / cp_s, "trim_peak_rss": max(trim_rss), "runs": runs,
            "load_check": check, "flags": list(flags), "cp_all_s": cp_t, "trim_all_s": trim_t,
            "shards": len(files), "outputs": len(outs)}


def make_7b_like(path: str | Path, vocab_gguf: str | Path, seed: int = 0, split_max_size: int = 0) -> Path:
    """A Qwen2.5-7B-shaped GGUF (qwen2 vocab, Q4_K_M-like types, ~4.9 GB) of valid random blocks,
    written by streaming a few quantized rows over and over: never held in memory. With
    `split_max_size`, written as llama.cpp's gguf-split would split it (returns the first shard)."""
    from gguf.constants import GGMLQuantizationType as Q
    from gguf.constants import GGUFValueType as V

    from gguf_trim.format.quant import ggml_quantize

    n_embd, n_ff, n_layer, n_head, n_kv, n_vocab_rows = 3584, 18944, 28, 28, 4, None
    rng = np.random.default_rng(seed)
    kv: list[bytes] = [encode_field("general.architecture", V.STRING, "qwen2"),
                       encode_field("general.name", V.STRING, "synthetic qwen2.5-7b-shaped")]
    with open_model(vocab_gguf) as g:
        for name, f in g.fields.items():
            if name.startswith("tokenizer."):
                kv.append(f.raw)
        n_vocab_rows = len(g.get("tokenizer.ggml.tokens"))
    for key, val in (("context_length", 32768), ("embedding_length", n_embd), ("block_count", n_layer),
                     ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                     ("attention.head_count_kv", n_kv)):
        kv.append(encode_field(f"qwen2.{key}", V.UINT32, val))
    kv.append(encode_field("qwen2.attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-6))
    patterns: dict[tuple[int, int], np.ndarray] = {}

    def qtensor(name: str, rows: int, cols: int, qt: Q) -> OutTensor:
        key = (int(qt), cols)
        if key not in patterns:
            patterns[key] = ggml_quantize((rng.standard_normal((64, cols)) * 0.02).astype(np.float32), qt)
        pat = patterns[key]

        def write(fh, pat=pat, rows=rows) -> None:
            block = np.tile(pat, (max(1, 4096 // len(pat)), 1)).tobytes()
            per = len(block) // pat.shape[1]
            done = 0
            while done < rows:
                n = min(per, rows - done)
                fh.write(block[: n * pat.shape[1]])
                done += n
        return OutTensor(name, (cols, rows), int(qt), rows * pat.shape[1], write)

    def f32(name: str, n: int) -> OutTensor:
        return OutTensor(name, (n,), int(Q.F32), 4 * n, lambda fh: fh.write(np.ones(n, np.float32).tobytes()))

    tensors = [qtensor("token_embd.weight", n_vocab_rows, n_embd, Q.Q4_K), f32("output_norm.weight", n_embd),
               qtensor("output.weight", n_vocab_rows, n_embd, Q.Q6_K)]
    kv_dim = n_embd // n_head * n_kv
    for b in range(n_layer):
        tensors += [f32(f"blk.{b}.attn_norm.weight", n_embd),
                    qtensor(f"blk.{b}.attn_q.weight", n_embd, n_embd, Q.Q4_K), f32(f"blk.{b}.attn_q.bias", n_embd),
                    qtensor(f"blk.{b}.attn_k.weight", kv_dim, n_embd, Q.Q4_K), f32(f"blk.{b}.attn_k.bias", kv_dim),
                    qtensor(f"blk.{b}.attn_v.weight", kv_dim, n_embd, Q.Q6_K), f32(f"blk.{b}.attn_v.bias", kv_dim),
                    qtensor(f"blk.{b}.attn_output.weight", n_embd, n_embd, Q.Q4_K),
                    f32(f"blk.{b}.ffn_norm.weight", n_embd),
                    qtensor(f"blk.{b}.ffn_gate.weight", n_ff, n_embd, Q.Q4_K),
                    qtensor(f"blk.{b}.ffn_up.weight", n_ff, n_embd, Q.Q4_K),
                    qtensor(f"blk.{b}.ffn_down.weight", n_embd, n_ff, Q.Q6_K)]
    path = Path(path)
    if not split_max_size:
        with open(path, "wb") as fh:
            write_gguf(fh, kv, tensors, 32)
        return path
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:  # gguf-split's rule: a new shard when the next tensor's data would not fit
        n = pad_to(t.nbytes, 32)
        if shards[-1] and size + n > split_max_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += n
    paths = output_paths(path, len(shards))
    for i, (p, ts) in enumerate(zip(paths, shards)):
        with open(p, "wb") as fh:
            write_gguf(fh, (kv if i == 0 else []) + split_keys(i, len(shards), len(tensors)), ts, 32)
    return paths[0]


def main(argv: list[str]) -> None:
    if argv and argv[0] == "worker":
        m, n_prompt, n_gen, threads = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        print(json.dumps(_worker(m, n_prompt, n_gen, threads)))
        return
    raise SystemExit("usage: python -m gguf_trim.bench.infer worker MODEL N_PROMPT N_GEN THREADS")


if __name__ == "__main__":
    main(sys.argv[1:])
