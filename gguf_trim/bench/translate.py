"""Translation throughput: one segment at a time vs batched decoding vs stock llama-server
(`make bench-translate`).

Why a separate benchmark: the batched path exists for throughput, so its claim (output tokens
per second on a file of segments) is measured here, on real models, and printed as a table,
never asserted in a test. Each model is timed in the same process on the same segments,
sequential first, then batched at each --parallel, each path warmed up on one segment first (the
weights paged in, the batch context made, the shared prompt prefix evaluated: once per file in both
paths, not per segment). The outputs are compared (identical share and chrF of each path against
the references) so that speed is not bought with quality.

The peer: when stock llama-server is built (`make llama-tools`), the same segments also go through
`llama-server -np P` (--server-parallel, 16 by default; --no-server skips it), after gguf-trim's model is
closed, from a pool of P client threads posting to /completion. What is held equal, so that the ratio
measures the decoding loop and not the settings:
- the same GGUF, --threads, flash attention on/off as the gguf-trim rows, and batch size (-b 512);
- the same KV memory: `-c N_CTX --kv-unified`. llama-server's -c is the total over all slots but, without
  --kv-unified, split into N_CTX/P cells per slot (256 at 4096/16: the longer segments' prompt and budget
  would not fit one); unified, every slot draws on one pool of N_CTX cells, as gguf-trim's batch context
  does. llama-server keeps a copy of the shared prompt prefix per slot (gguf-trim keeps one for all);
- the exact prompt tokens (Translator.prompt_tokens, sent as token ids, so no template or BOS differs),
  greedy (temperature 0), stop at "\n" or an end-of-generation token, n_predict = the segment's output
  budget, cache_prompt (each slot reuses the prefix it last evaluated) and --no-cache-idle-slots (by
  default a unified cache clears every idle slot when a request starts, and the next request in that slot
  evaluates the prefix again: 1,295 prompt tokens evaluated instead of 495 for 16 segments at -np 8);
- tokens counted as gguf-trim counts them: llama-server's tokens_predicted less the end-of-generation
  token it includes (stop_type "eos"); tok/s over the wall time of the whole batch, first request to
  last answer, after a warm-up of P requests (weights paged in, the prefix in the slots).
Left as they are: llama-server takes requests in input order (gguf-trim admits longest first within
blocks), and obeys the file's suppress list where gguf-trim's script guard forbids a superset: the
identical counts show what either costs in output.

    gguf-trim bench translate MODEL [MODEL ...] --pairs prose.en-vi.tsv --n 64 [--server-parallel 16]
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gguf_trim.tables import markdown_table
from gguf_trim.translate.evaluate import read_pairs


def server_jobs(tr, texts: list[str], dst: str) -> list[tuple[list[int], int]]:
    """(prompt tokens, output budget) of each segment, as Translator.translate_many makes its jobs (the
    text's whitespace flattened, the source language detected)."""
    from gguf_trim.translate.prompts import detect_lang

    jobs = []
    for raw in texts:
        text = " ".join(raw.split())
        prompt = tr.prompt_tokens(text, detect_lang(text), dst)
        jobs.append((prompt, tr._job_budget(text, prompt)))
    return jobs


def bench_server(model: str, jobs: list[tuple[list[int], int]], parallel: int, n_ctx: int, threads: int | None,
                 flash_attn: bool, n_gpu_layers: int = 0) -> dict:
    """The jobs through stock `llama-server -np parallel` (see the module docstring for what is held
    equal): outputs, tokens as gguf-trim counts them, wall seconds, and llama-server's own counts."""
    from gguf_trim.errors import TrimError
    from gguf_trim.runtime.server import LlamaServer

    args = ["--kv-unified", "--no-cache-idle-slots", "-b", "512", "-ub", "512", "-fa", "on" if flash_attn else "off",
            "-ngl", str(n_gpu_layers)]

    def ask(server: LlamaServer, prompt: list[int], budget: int) -> dict:
        try:
            return server.complete(prompt, n_predict=budget, temperature=0, stop=["\n"], cache_prompt=True)
        except TrimError as e:  # e.g. the KV pool overflowed: counted, not fatal
            return {"error": str(e)}

    with LlamaServer(model, n_ctx=n_ctx, threads=threads, parallel=parallel, args=args) as srv, \
            ThreadPoolExecutor(parallel) as pool:
        list(pool.map(lambda _: ask(srv, jobs[0][0], 1), range(parallel)))  # warm up
        t0 = time.perf_counter()
        answers = list(pool.map(lambda j: ask(srv, *j), jobs))
        secs = time.perf_counter() - t0
    ok = [a for a in answers if "error" not in a]
    # content cut by n_predict inside a character ends in U+FFFD where gguf-trim drops the partial bytes
    return {"texts": [a.get("content", "").strip().rstrip("\ufffd").strip() for a in answers],
            "tokens": sum(a["tokens_predicted"] - (a.get("stop_type") == "eos") for a in ok),
            "seconds": secs, "errors": len(answers) - len(ok),
            "error": next((a["error"] for a in answers if "error" in a), None),
            "tokens_predicted": sum(a["tokens_predicted"] for a in ok),
            "prompt_evaluated": sum(a["timings"]["prompt_n"] for a in ok),
            "prompt_cached": sum(a["timings"]["cache_n"] for a in ok)}


def bench_model(model: str, texts: list[str], refs: list[str], dst: str, parallels: list[int | None],
                n_ctx: int, threads: int | None, n_gpu_layers: int = 0, flash_attn: bool = True,
                server_parallel: int | None = None) -> list[dict]:
    """Rows for one model: the sequential path, then batched at each parallel (None: the default), then
    stock llama-server at `server_parallel` slots (None: no server row)."""
    import sacrebleu

    from gguf_trim.translate.translator import Translator

    tr = Translator(model, n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers, flash_attn=flash_attn)
    rows = []
    outputs: dict[int, list[str]] = {}  # batched outputs by parallel
    jobs: list[tuple[list[int], int]] = []
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
            outputs[rows[-1]["parallel"]] = text
        if server_parallel:
            jobs = server_jobs(tr, texts, dst)
    finally:
        tr.close()
    if server_parallel:
        rows.append(server_row(model, jobs, refs, server_parallel, n_ctx, threads, flash_attn, rows, seq_text,
                               outputs, n_gpu_layers))
    return rows


def server_row(model: str, jobs: list[tuple[list[int], int]], refs: list[str], parallel: int, n_ctx: int,
               threads: int | None, flash_attn: bool, rows: list[dict], seq_text: list[str],
               outputs: dict[int, list[str]], n_gpu_layers: int = 0) -> dict:
    """The llama-server row, compared with the batched row at the same parallel (else the fastest)."""
    import sacrebleu

    r = bench_server(model, jobs, parallel, n_ctx, threads, flash_attn, n_gpu_layers)
    batched = [x for x in rows if x["path"] == "batched"]
    peer = next((x for x in batched if x["parallel"] == parallel), None) or max(batched, key=lambda x: x["tok_per_s"],
                                                                                default=None)
    tps = r["tokens"] / r["seconds"]
    row = {**{k: rows[0][k] for k in ("model", "prompt", "segments", "direction", "flash_attn")},
           "path": "llama-server", "parallel": parallel, "tokens": r["tokens"], "seconds": round(r["seconds"], 2),
           "tok_per_s": round(tps, 1), "speedup": round(tps / rows[0]["tok_per_s"], 2),
           "identical": sum(a == b for a, b in zip(seq_text, r["texts"])),
           "chrf": round(sacrebleu.corpus_chrf(r["texts"], [refs]).score, 2), "errors": r["errors"],
           "tokens_predicted": r["tokens_predicted"], "prompt_evaluated": r["prompt_evaluated"],
           "prompt_cached": r["prompt_cached"], "n_ctx": n_ctx, "kv_unified": True}
    if r["error"]:
        row["error"] = r["error"]
    if peer is not None:
        row.update(batched_parallel=peer["parallel"],
                   identical_batched=sum(a == b for a, b in zip(outputs[peer["parallel"]], r["texts"])),
                   batched_over_server=round(peer["tok_per_s"] / tps, 2))
    return row


def _identical(r: dict) -> str:
    """`a/n`; the server row adds its count against the batched row it is compared with (and errors)."""
    cell = f"{r['identical']}/{r['segments']}"
    if "identical_batched" in r:
        cell += f" ({r['identical_batched']}/{r['segments']} batched)"
    if r.get("errors"):
        cell += f", {r['errors']} failed"
    return cell


def markdown(rows: list[dict]) -> str:
    server = any(r["path"] == "llama-server" for r in rows)
    ratio = [[f"{r['batched_over_server']:.2f}x" if "batched_over_server" in r else ""] if server else []
             for r in rows]
    cells = [[f"{r['model']} ({r['prompt']})", {True: "on", False: "off"}.get(r.get("flash_attn"), "off"), r["path"],
              r["parallel"], r["tokens"], r["seconds"], r["tok_per_s"], f"{r['speedup']:.2f}x", _identical(r),
              r["chrf"], *x] for r, x in zip(rows, ratio)]
    head = ["model", "flash attn", "path", "parallel", "output tokens", "seconds", "tok/s", "vs sequential",
            "identical to sequential", "chrF"] + (["gguf-trim batched / llama-server"] if server else [])
    return markdown_table(head, cells, "lllrrrrrrr" + ("r" if server else ""))


FLASH = {"on": [True], "off": [False], "both": [True, False]}


def measure(models: list[str], pairs: str | Path, n_pairs: int = 64, dst: str = "vi",
            parallels: str = "4,8,16,default", n_ctx: int = 4096, threads: int | None = None, n_gpu_layers: int = 0,
            flash: str = "both", server_parallel: int | None = 16, log: Callable[[str], None] = print) -> list[dict]:
    """`gguf-trim bench translate`: bench_model for each model on `n_pairs` pairs, at each of the
    comma-separated `parallels` ('default': chosen from n_ctx), flash attention on/off/both, and stock
    llama-server at `server_parallel` slots (None or 0: not run; skipped with a note when not built)."""
    from gguf_trim.runtime.server import tool_path

    if server_parallel and tool_path("llama-server") is None:
        log("llama-server is not built (make llama-tools): no llama-server rows")
        server_parallel = None
    data = read_pairs(pairs, n_pairs)
    texts = [en if dst == "vi" else vi for en, vi in data]
    refs = [vi if dst == "vi" else en for en, vi in data]
    pars = [None if p == "default" else int(p) for p in parallels.split(",")]
    rows = []
    for m in models:
        log(f"{m}: {len(texts)} segments ...")
        for fa in FLASH[flash]:
            rows += bench_model(m, texts, refs, dst, pars, n_ctx, threads, n_gpu_layers, fa, server_parallel)
    return rows


def machine_line(n_ctx: int) -> str:
    """When and where: the line printed above the table."""
    return (f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPU cores ({platform.machine()}), "
            f"load average {os.getloadavg()[0]:.2f}, n_ctx {n_ctx}")


if __name__ == "__main__":  # the old entry point: `gguf-trim bench translate`
    # The CLI replaces this process, named in a string: the library does not import the CLI.
    import os
    import sys

    os.execv(sys.executable, [sys.executable, "-c", "from gguf_trim.cli import main; main(prog_name='gguf-trim')",
                              "bench", "translate", *sys.argv[1:]])
