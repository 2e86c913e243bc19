"""`refine` as one call: train the rows `extend` added (or import rows trained elsewhere) and write
them back, with the provenance the output's metadata records. The PyTorch half (extend.train) is
imported only when training, so importing this module needs no `train` extra."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError
from gguf_trim.extend.options import RefineOptions
from gguf_trim.extend.rows import (
    SELF_TEXT,
    added_rows,
    check_texts,
    import_rows,
    open_single,
    parse_mix,
    require_train_stack,
    save_rows,
    write_rows,
)
from gguf_trim.files import check_output
from gguf_trim.tune.checkpoint import Checkpointer, fingerprint


@dataclass
class RefineResult:
    """What refine wrote: the output, the rows (count, tensors), and the training report (None when
    the rows were imported from `imported_from`)."""

    output: Path
    n_rows: int
    tensors: list[str]
    seconds: float
    report: Any = None  # extend.train.RefineReport
    imported_from: str | None = None


def provenance(corpus: list[str], opts: RefineOptions, report: Any) -> dict[str, str | int | float]:
    """The gguf_trim.refined_* metadata of a trained file: what it was trained on, how, and the
    held-out bits per byte before and after."""
    return {"from": "training", "corpus": ",".join(Path(c).name for c in corpus), "tokens": report.tokens_trained,
            "steps": report.steps, "seq_len": opts.seq_len, "batch": opts.batch, "lr": float(opts.lr),
            "seed": opts.seed, "mix": ",".join(f"{c['weight']:.3g}" for c in report.corpora),
            "choice_weight": float(opts.choice_weight),
            "self_text": sum(c["train_lines"] + c["heldout_lines"] for c in report.corpora if c["path"] == SELF_TEXT),
            "heldout_bpb_before": report.before["bpb"], "heldout_bpb_after": report.after_written["bpb"]}


def refine(model: str | Path, output: str | Path, corpus: list[str], opts: RefineOptions = RefineOptions(), *,
           rows_in: str | Path | None = None, rows_out: str | Path | None = None, check: bool = True,
           log: Callable[[str], None] = print, resume_hint: str | None = None) -> RefineResult:
    """Train the added rows of `model` on `corpus` (or take them from the .npz `rows_in`) and write the
    refined model to `output`; `rows_out`: also save the trained rows there. `opts.mix` may be the
    `--mix` text (auto, lines, or weights "0.9,0.1"). Training checkpoints beside the output
    (OUTPUT.ckpt.pt, tune.checkpoint) by `opts.checkpoint_every`, continued with `opts.resume`;
    `resume_hint`: the command line that resumes, said on Ctrl-C."""
    t0 = time.perf_counter()
    check_output(output, model)
    with open_single(model) as g:
        added = added_rows(g)
    if rows_in:
        if corpus:
            raise TrimError("--import-rows writes given rows; it takes no --corpus")
        out = import_rows(model, rows_in, output, check=check)
        return RefineResult(out, len(added.ids), added.tensors, time.perf_counter() - t0,
                            imported_from=str(rows_in))
    if not corpus:
        raise TrimError("give --corpus text to train on (or --import-rows rows trained elsewhere)")
    mix = opts.mix if isinstance(opts.mix, list) else parse_mix(opts.mix, len(corpus), opts.self_text > 0)
    opts = replace(opts, mix=mix, eval_texts=list(opts.eval_texts))
    check_texts(list(corpus), opts.eval_texts)
    require_train_stack()
    from gguf_trim.extend.train import refine_rows

    fp = fingerprint(model, {"--corpus": list(corpus), "--eval-text": opts.eval_texts}, opts)
    ck = Checkpointer(output, "refine", fp, opts.checkpoint_every, opts.resume, resume_hint, log)
    rows, report = refine_rows(model, list(corpus), opts, log=log, checkpoint=ck)
    if rows_out:
        save_rows(rows_out, added, rows)
    out = write_rows(model, output, rows, provenance(corpus, opts, report), check=check)
    ck.remove()
    return RefineResult(out, report.n_added, report.tensors, time.perf_counter() - t0, report=report)
