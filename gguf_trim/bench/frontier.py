"""The size/fidelity frontier of the compact profile, measured through llama.cpp (`make frontier`).

For each model and target size: the compact plan chosen from a corpus, the trimmed file, the share
of held-out lines that tokenize exactly as before, and (for a model with weights) bits per byte of
the trimmed model against the original on those texts. Also how fast the corpus is counted.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError
from gguf_trim.tables import markdown_table


def parse_targets(spec: str, n_vocab: int) -> list[int]:
    """"0.4,0.5,76116" -> token counts: a number below 1 is a share of the vocabulary."""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            x = float(part)
        except ValueError:
            raise TrimError(f"--targets: {part!r} is neither a share (0.5) nor a token count (76116)") from None
        out.append(round(x * n_vocab) if x < 1 else int(x))
    return sorted({t for t in out if t < n_vocab})


def frontier(model: str | Path, targets: str, corpus: list[str], texts: list[str | Path], bpb_lines: int = 200,
             work_dir: str | Path | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """One row per target size plus the lossless profile (see the module docstring)."""
    from gguf_trim.api import trim
    from gguf_trim.format.shards import open_model
    from gguf_trim.rewrite.verify import (
        bpb_summary,
        kept_ids_of,
        line_bits_per_file,
        line_fidelity,
        read_lines,
        spread_lines,
    )
    from gguf_trim.runtime.llama import load_llama
    from gguf_trim.selection.compact import gather_evidence, select_compact
    from gguf_trim.selection.plan import write_plan
    from gguf_trim.selection.selection import select_lossless
    from gguf_trim.vocab.vocabulary import Vocab

    model = Path(model)
    with open_model(model) as g:
        vocab = Vocab.from_gguf(g)
        has_weights = bool(g.tensors)
    t0 = time.perf_counter()
    ev = gather_evidence(vocab, model, corpus, progress=progress)
    evidence_s = time.perf_counter() - t0
    files = {Path(t).stem: read_lines(t) for t in texts}
    samples = [spread_lines(lines, bpb_lines) for lines in files.values()] if has_weights and bpb_lines else []
    base_bits = line_bits_per_file(model, samples) if samples else []
    rows = []
    with closing(load_llama(model, vocab_only=True)) as lo, tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for target in [*parse_targets(targets, vocab.n), None]:
            sel = select_lossless(vocab) if target is None else select_compact(vocab, ev, target=target)
            plan = Path(tmp) / "plan.jsonl"
            write_plan(plan, sel, source=model.name)
            out = Path(tmp) / "trimmed.gguf"
            t1 = time.perf_counter()
            res, _ = trim(model, out, plan=plan)
            row: dict[str, Any] = {
                "model": model.name, "profile": "lossless" if target is None else "compact", "target": target,
                "n_vocab": res.n_vocab_trimmed, "n_vocab_original": vocab.n, "share": res.n_vocab_trimmed / vocab.n,
                "size": res.size_trimmed, "size_original": res.size_original,
                "trim_seconds": round(time.perf_counter() - t1, 2), "kept_by_reason": sel.summary()}
            kept = kept_ids_of(out)
            lt = load_llama(out, vocab_only=True)
            try:
                for k, lines in files.items():
                    f = line_fidelity(lo, lt, kept, lines, worst=0)
                    row[f"fidelity_{k}"] = f["line_fidelity"]
                    row[f"lines_{k}"] = f["lines"]
                    row[f"tokens_{k}"] = [f["tokens_original"], f["tokens_trimmed"]]
            finally:
                lt.close()
            if base_bits:
                for k, a, b in zip(files, base_bits, line_bits_per_file(out, samples)):
                    s = bpb_summary(a, b)
                    row[f"bpb_{k}"] = [round(s["bpb_original"], 5), round(s["bpb_trimmed"], 5)]
                    row[f"bpb_change_{k}"] = s["bpb_change"]
            rows.append(row)
            os.unlink(out)
    for r in rows:
        r["evidence_seconds"] = round(evidence_s, 1)
        r["corpus"] = ev.info
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    keys = sorted({k[len("fidelity_"):] for r in rows for k in r if k.startswith("fidelity_")})
    bpb = sorted({k[len("bpb_change_"):] for r in rows for k in r if k.startswith("bpb_change_")})
    head = ["model", "profile", "target", "n_vocab", "share", "size MiB"] + [f"line fidelity {k}" for k in keys] \
        + [f"bits/byte {k} (orig -> trimmed)" for k in bpb]
    out = []
    for r in rows:
        cells = [r["model"].replace(".gguf", ""), r["profile"], f"{r['target']:,}" if r["target"] else "-",
                 f"{r['n_vocab']:,}", f"{r['share']:.1%}", f"{r['size'] / (1 << 20):.1f}"]
        cells += [f"{r[f'fidelity_{k}']:.2%}" if f"fidelity_{k}" in r else "" for k in keys]
        cells += [f"{r[f'bpb_{k}'][0]:.4f} -> {r[f'bpb_{k}'][1]:.4f} ({r[f'bpb_change_{k}']:+.2%})"
                  if f"bpb_{k}" in r else "" for k in bpb]
        out.append(cells)
    return markdown_table(head, out) + "\n"


def plot(rows: list[dict[str, Any]], path: str | Path) -> bool:
    """Line fidelity and bits-per-byte change against kept share, one line per model and text."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for m in sorted({r["model"] for r in rows}):
        rs = sorted((r for r in rows if r["model"] == m), key=lambda r: r["n_vocab"])
        name = m.replace(".gguf", "")
        for k in sorted({k[9:] for r in rs for k in r if k.startswith("fidelity_")}):
            a1.plot([r["share"] * 100 for r in rs], [r[f"fidelity_{k}"] * 100 for r in rs], marker="o",
                    label=f"{name} {k}")
        for k in sorted({k[11:] for r in rs for k in r if k.startswith("bpb_change_")}):
            a2.plot([r["share"] * 100 for r in rs], [r[f"bpb_change_{k}"] * 100 for r in rs], marker="o",
                    label=f"{name} {k}")
    a1.set_xlabel("tokens kept (% of the original vocabulary)")
    a1.set_ylabel("held-out lines tokenized identically (%)")
    a1.axhline(97, color="#bbb", ls="--", lw=1)
    a2.set_xlabel("tokens kept (% of the original vocabulary)")
    a2.set_ylabel("bits per byte, trimmed vs original (%)")
    a2.axhline(1, color="#bbb", ls="--", lw=1)
    a2.axhline(0, color="#ddd", lw=1)
    for a in (a1, a2):
        a.grid(alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=7)
    fig.suptitle("gguf-trim compact profile: size vs fidelity (held-out text)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def count_rates(model: str | Path, corpus: list[str], repeats: tuple[int, ...] = (1, 4, 10),
                llama_mb: float = 2.0) -> list[dict[str, Any]]:
    """Counting speed, fresh (uncached), on a text file holding the corpus r times, read as users' text
    files are (workers split the lines); and llama.cpp's own rate on a slice."""
    from gguf_trim.format.shards import open_model
    from gguf_trim.selection.corpus import open_corpus
    from gguf_trim.selection.count import count_tokens
    from gguf_trim.vocab.vocabulary import Vocab

    with open_model(model) as g:
        vocab = Vocab.from_gguf(g)
    segs = list(open_corpus(corpus).segments())

    def rate(method: str, nbytes: int, wall: float) -> dict[str, Any]:
        return {"model": Path(model).name, "method": method, "MB": round(nbytes / 1e6, 1), "seconds": round(wall, 2),
                "MB_per_s": round(nbytes / 1e6 / wall, 1)}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in repeats:
            path = Path(tmp) / f"corpus-x{r}.txt"
            with open(path, "w", encoding="utf-8") as f:
                for _ in range(r):
                    f.write("\n".join(segs) + "\n")
            c = open_corpus([str(path)])
            t0 = time.perf_counter()
            res = count_tokens(vocab, model, c.segments, f"bench-{time.time()}", use_cache=False, progress=False,
                               blocks=c.txt_blocks)
            rows.append(rate(res.method, res.bytes, time.perf_counter() - t0))
            os.unlink(path)
    budget, head = int(llama_mb * 1e6), []
    for s in segs[:: max(1, len(segs) // 20000)]:
        head.append(s)
        budget -= len(s.encode())
        if budget <= 0:
            break
    t0 = time.perf_counter()
    res = count_tokens(vocab, model, lambda: iter(head), f"bench-llama-{time.time()}", use_cache=False,
                       progress=False, force_llama=True)
    rows.append(rate("llama.cpp (reference)", res.bytes, time.perf_counter() - t0))
    return rows


def measure(models: list[str | Path], targets: str, corpus: list[str], texts: list[str | Path], bpb_lines: int = 200,
            with_count_rates: bool = True, progress: bool = False,
            log: Callable[[str], None] = print) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`gguf-trim bench frontier`: the frontier rows of every model, and (with_count_rates) how fast
    each counts the corpus."""
    rows: list[dict[str, Any]] = []
    speed: list[dict[str, Any]] = []
    for m in models:
        log(f"{m}: choosing and trimming at {targets} ...")
        rows += frontier(m, targets, list(corpus), list(texts), bpb_lines, progress=progress)
        if with_count_rates:
            speed += count_rates(m, list(corpus))
    return rows, speed


def speed_markdown(speed: list[dict[str, Any]]) -> str:
    """The counting-speed table printed under the frontier table."""
    return ("Counting speed (fresh, uncached; the corpus repeated 1, 4 and 10 times in one text file; the "
            "last row per model is llama.cpp itself on a slice):\n\n"
            + markdown_table(["model", "counted with", "MB", "seconds", "MB/s"],
                             [[r["model"], r["method"], r["MB"], r["seconds"], r["MB_per_s"]] for r in speed]) + "\n")


def frontier_doc(rows: list[dict[str, Any]], table: str, models: list[str], targets: str, corpus: list[str],
                 texts: list[str], bpb_lines: int, png_out: str | None) -> str:
    """The markdown file `make frontier` writes: what was run, the tables, the plot."""
    import platform

    cmd = ("gguf-trim frontier " + " ".join(models) + f" --targets {targets} "
           + " ".join(f"--corpus {c}" for c in corpus) + " " + " ".join(f"--text {t}" for t in texts)
           + f" --bpb-lines {bpb_lines}")
    info = rows[0]["corpus"] if rows else {}
    lines = [
        "# Compact profile: size vs fidelity", "",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores ({platform.machine()}), with:", "",
        f"```sh\n{cmd}\n```", "",
        "Tokens are chosen from the `--corpus` text (token counts) plus wordfreq's common words and the "
        "tokenizer's own order (see the README). Line fidelity: share of the held-out `--text` lines that the "
        "trimmed file tokenizes to exactly the original tokens (llama.cpp through llama-cpp-python, every line). "
        f"Bits per byte: {bpb_lines} lines of each text spread over the file, each scored on its own after BOS, "
        "original vs trimmed model. `target` includes the padding tokens that keep the logits kernel-exact; "
        "the lossless row is the default profile.", "",
        f"Corpus: {info.get('segments', 0):,} segments, {info.get('bytes', 0) / 1e6:.1f} MB.", "",
        table,
    ]
    if png_out:
        lines += ["", f"![frontier]({Path(png_out).name})"]
    return "\n".join(lines) + "\n"
