"""Translation throughput: one segment at a time vs batched decoding (`make bench-translate`).

Why a separate benchmark: the batched path exists for throughput, so its claim (output tokens
per second on a file of segments) is measured here, on real models, and printed as a table,
never asserted in a test. Each model is timed in the same process on the same segments,
sequential first, then batched at each --parallel, each path warmed up on one segment first (the
weights paged in, the batch context made, the shared prompt prefix evaluated: once per file in both
paths, not per segment). The outputs are compared (identical share and chrF of each path against
the references) so that speed is not bought with quality.

    gguf-trim bench translate MODEL [MODEL ...] --pairs prose.en-vi.tsv --n 64
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

from gguf_trim.tables import markdown_table
from gguf_trim.translate.evaluate import read_pairs


def bench_model(model: str, texts: list[str], refs: list[str], dst: str, parallels: list[int | None],
                n_ctx: int, threads: int | None, n_gpu_layers: int = 0, flash_attn: bool = True) -> list[dict]:
    """Rows for one model: the sequential path, then batched at each parallel (None: the default)."""
    import sacrebleu

    from gguf_trim.translate.translator import Translator

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
    cells = [[f"{r['model']} ({r['prompt']})", {True: "on", False: "off"}.get(r.get("flash_attn"), "off"), r["path"],
              r["parallel"], r["tokens"], r["seconds"], r["tok_per_s"], f"{r['speedup']:.2f}x",
              f"{r['identical']}/{r['segments']}", r["chrf"]] for r in rows]
    return markdown_table(["model", "flash attn", "path", "parallel", "output tokens", "seconds", "tok/s",
                           "vs sequential", "identical to sequential", "chrF"], cells, "lllrrrrrrr")


FLASH = {"on": [True], "off": [False], "both": [True, False]}


def measure(models: list[str], pairs: str | Path, n_pairs: int = 64, dst: str = "vi",
            parallels: str = "4,8,16,default", n_ctx: int = 4096, threads: int | None = None, n_gpu_layers: int = 0,
            flash: str = "both", log: Callable[[str], None] = print) -> list[dict]:
    """`gguf-trim bench translate`: bench_model for each model on `n_pairs` pairs, at each of the
    comma-separated `parallels` ('default': chosen from n_ctx), flash attention on/off/both."""
    data = read_pairs(pairs, n_pairs)
    texts = [en if dst == "vi" else vi for en, vi in data]
    refs = [vi if dst == "vi" else en for en, vi in data]
    pars = [None if p == "default" else int(p) for p in parallels.split(",")]
    rows = []
    for m in models:
        log(f"{m}: {len(texts)} segments ...")
        for fa in FLASH[flash]:
            rows += bench_model(m, texts, refs, dst, pars, n_ctx, threads, n_gpu_layers, fa)
    return rows


def machine_line(n_ctx: int) -> str:
    """When and where: the line printed above the table."""
    return (f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores ({platform.machine()}), "
            f"load average {os.getloadavg()[0]:.2f}, n_ctx {n_ctx}")


if __name__ == "__main__":  # the old entry point: `gguf-trim bench translate`
    import sys

    from gguf_trim.cli import main

    main(["bench", "translate", *sys.argv[1:]], prog_name="gguf-trim")
