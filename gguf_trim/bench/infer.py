"""Benchmarks: what trimming buys at inference, and what the trim itself costs.

Every measurement runs in a fresh process (`python -m gguf_trim.bench.infer worker ...`), original
and trimmed interleaved (A B A B ...) so that machine drift hits both alike; the tables report
medians. Timings live here, never in test assertions.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.format.shards import model_size, open_model
from gguf_trim.rewrite.metadata import vocab_tensors
from gguf_trim.tables import markdown_table

PROMPT_SEED = ("The quick brown fox jumps over the lazy dog. Xin chào, tôi là học sinh ở Hà Nội. "
               "Please save your work before closing the window. Cảm ơn bạn rất nhiều. ")


# -- inference benchmark -----------------------------------------------------------------------

def _worker(model: str, n_prompt: int, n_gen: int, threads: int) -> dict[str, Any]:
    """One measurement in this (fresh) process: load, prompt processing, greedy decode."""
    import resource

    from gguf_trim.runtime.llama import last_logits, load_llama

    t0 = time.perf_counter()
    llm = load_llama(model, n_ctx=n_prompt + n_gen + 16, n_threads=threads)
    load_s = time.perf_counter() - t0
    ids = llm.tokenize((PROMPT_SEED * 64).encode(), add_bos=False, special=False)[:n_prompt]
    t0 = time.perf_counter()
    llm.eval(ids)
    pp_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n_gen):  # greedy decode, one token per step, no early stop
        llm.eval([int(np.argmax(last_logits(llm)))])
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


def bench_pairs(models: list[str], runs: int = 5, n_prompt: int = 512, n_gen: int = 128,
                threads: int | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`gguf-trim bench infer`: the rows of ORIGINAL TRIMMED [ORIGINAL TRIMMED ...] and each pair's ratios."""
    if len(models) % 2:
        raise TrimError("give pairs: ORIGINAL TRIMMED [ORIGINAL TRIMMED ...]")
    for m in models:
        if not os.path.isfile(m):
            raise TrimError(f"{m}: no such file")
    rows = bench_models(list(models), runs, n_prompt, n_gen, threads)
    return rows, compare(rows)


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
    models = markdown_table(
        ["model", "file MiB", "vocab MiB", "decode MiB/token", "load s", "peak RSS MiB", "pp tok/s", "tg tok/s"],
        [[Path(r["model"]).name, f"{r['file_size'] / mib:.1f}", f"{r['vocab_bytes'] / mib:.1f}",
          f"{r['decode_bytes_per_token'] / mib:.1f}", f"{r['load_s']:.2f}", f"{r['peak_rss'] / mib:.0f}",
          f"{r['pp_tok_s']:.1f}", f"{r['tg_tok_s']:.1f}"] for r in _unique(rows)], "lrrrrrrr")
    ratios = markdown_table(
        ["trimmed vs original", "size", "pp speed-up", "decode speed-up", "byte-ideal decode speed-up",
         "decode / ideal"],
        [[Path(p["trimmed"]).name, f"{p['size_ratio']:.3f}", f"{p['pp_speedup']:.3f}", f"{p['tg_speedup']:.3f}",
          f"{p['byte_ideal_tg_speedup']:.3f}", f"{p['tg_vs_ideal']:.3f}"] for p in pairs], "lrrrrr")
    return models + "\n\n" + ratios


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


def main(argv: list[str]) -> None:
    if argv and argv[0] == "worker":
        m, n_prompt, n_gen, threads = argv[1], int(argv[2]), int(argv[3]), int(argv[4])
        print(json.dumps(_worker(m, n_prompt, n_gen, threads)))
        return
    raise SystemExit("usage: python -m gguf_trim.bench.infer worker MODEL N_PROMPT N_GEN THREADS")


if __name__ == "__main__":
    main(sys.argv[1:])
