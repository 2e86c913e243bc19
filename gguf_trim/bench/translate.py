"""Translation throughput: one segment at a time vs batched decoding (`make bench-translate`).

Why a separate benchmark: the batched path exists for throughput, so its claim (output tokens
per second on a file of segments) is measured here, on real models, and printed as a table,
never asserted in a test. Each model is timed in the same process on the same segments,
sequential first, then batched at each --parallel, each path warmed up on one segment first (the
weights paged in, the batch context made, the shared prompt prefix evaluated: once per file in both
paths, not per segment). The outputs are compared (identical share and chrF of each path against
the references) so that speed is not bought with quality.

    python -m gguf_trim.bench.translate MODEL [MODEL ...] --pairs prose.en-vi.tsv --n 64
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import click

from gguf_trim.translate.jobs import read_pairs
from gguf_trim.translate.translator import Translator


def bench_model(model: str, texts: list[str], refs: list[str], dst: str, parallels: list[int | None],
                n_ctx: int, threads: int | None, n_gpu_layers: int = 0, flash_attn: bool = True) -> list[dict]:
    """Rows for one model: the sequential path, then batched at each parallel (None: the default)."""
    import sacrebleu

    tr = Translator(model, n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, flash_attn=flash_attn)
    rows = []
    try:
        tr.translate(texts[0], dst)  # warm up (page the weights in)
        t0 = time.perf_counter()
        seq = [tr.translate(t, dst) for t in texts]
        secs = time.perf_counter() - t0
        seq_text = [t.text for t in seq]
        base = {"model": Path(model).name, "prompt": tr.prompt, "segments": len(texts), "direction": f"->{dst}",
                "flash_attn": flash_attn}
        tokens = sum(t.tokens for t in seq)
        rows.append({**base, "path": "sequential", "parallel": 1, "tokens": tokens, "seconds": round(secs, 2),
                     "tok_per_s": round(tokens / secs, 1), "speedup": 1.0, "identical": len(texts),
                     "chrf": round(sacrebleu.corpus_chrf(seq_text, [refs]).score, 2)})
        for par in parallels:
            list(tr.translate_many(texts[:1], dst, parallel=par))  # warm up too (context, shared prefix)
            t0 = time.perf_counter()
            out = list(tr.translate_many(texts, dst, parallel=par))
            secs = time.perf_counter() - t0
            tokens = sum(t.tokens for t in out)
            text = [t.text for t in out]
            rows.append({**base, "path": "batched", "parallel": par or tr._engine.parallel, "tokens": tokens,
                         "seconds": round(secs, 2), "tok_per_s": round(tokens / secs, 1),
                         "speedup": round(tokens / secs / rows[0]["tok_per_s"], 2),
                         "identical": sum(a == b for a, b in zip(seq_text, text)),
                         "chrf": round(sacrebleu.corpus_chrf(text, [refs]).score, 2)})
    finally:
        tr.close()
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| model | flash attn | path | parallel | output tokens | seconds | tok/s | vs sequential "
             "| identical to sequential | chrF |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        fa = {True: "on", False: "off"}.get(r.get("flash_attn"), "off")
        lines.append(f"| {r['model']} ({r['prompt']}) | {fa} | {r['path']} | {r['parallel']} | {r['tokens']} | "
                     f"{r['seconds']} | {r['tok_per_s']} | {r['speedup']:.2f}x | {r['identical']}/{r['segments']} "
                     f"| {r['chrf']} |")
    return "\n".join(lines)


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--pairs", required=True, type=click.Path(exists=True))
@click.option("--n", "n_pairs", default=64, show_default=True)
@click.option("--to", "dst", default="vi", show_default=True, type=click.Choice(["vi", "en"]))
@click.option("--parallel", "parallels", default="4,8,16,default", show_default=True,
              help="Comma-separated slot counts for the batched runs ('default': chosen from --n-ctx).")
@click.option("--n-ctx", default=4096, show_default=True)
@click.option("--threads", type=int)
@click.option("--n-gpu-layers", default=0, show_default=True, help="Layers to offload (CUDA build).")
@click.option("--flash-attn", "flash", default="both", show_default=True, type=click.Choice(["on", "off", "both"]),
              help="llama.cpp's flash attention in both paths ('both': each model with it on, then off).")
@click.option("--json", "json_out", type=click.Path())
def main(models, pairs, n_pairs, dst, parallels, n_ctx, threads, n_gpu_layers, flash, json_out) -> None:
    data = read_pairs(pairs, n_pairs)
    texts = [en if dst == "vi" else vi for en, vi in data]
    refs = [vi if dst == "vi" else en for en, vi in data]
    pars = [None if p == "default" else int(p) for p in parallels.split(",")]
    rows = []
    for m in models:
        click.echo(f"{m}: {len(texts)} segments ...", err=True)
        for fa in {"on": [True], "off": [False], "both": [True, False]}[flash]:
            rows += bench_model(m, texts, refs, dst, pars, n_ctx, threads, n_gpu_layers, fa)
    click.echo(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores ({platform.machine()}), "
               f"load average {os.getloadavg()[0]:.2f}, n_ctx {n_ctx}")
    click.echo(markdown(rows))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                       "load": os.getloadavg()}, f, indent=1)


if __name__ == "__main__":
    main()
