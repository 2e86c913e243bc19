"""Does a LoRA adapter make the model translate better? (`make bench-finetune`)

Why a benchmark and not a test: the claim (chrF in each direction, base + adapter against the same
file without it, on dev pairs never trained on) needs real models and minutes to hours of training,
and is read from a table. One run: `finetune` on the training pairs (held-out loss every
--eval-every steps: the curve), then `eval-translate`'s evaluation of the base and of base + adapter
on the same dev pairs, both directions, batched greedy decoding, the file's own guard and prompt.

    gguf-trim bench finetune MODEL --pairs train.tsv --dev dev.tsv --n 64 --tokens 40000
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

from gguf_trim.tables import markdown_table
from gguf_trim.tune.adapter import LoraSpec
from gguf_trim.tune.options import FinetuneOptions


def run(model: str, pairs: list[str], dev: str, adapter: str, n: int, opts: FinetuneOptions,
        texts: list[str] = (), log=print, refine_to: str | None = None) -> dict[str, Any]:
    """Train, then evaluate MODEL and the adapter on MODEL (on `refine_to` when the rows were trained
    too); returns the report."""
    from gguf_trim.translate.evaluate import evaluate, read_pairs
    from gguf_trim.tune.lora import finetune

    t0 = time.perf_counter()
    tuned = finetune(model, pairs, adapter, texts, opts, log=log, refine_to=refine_to).report
    train_secs = time.perf_counter() - t0
    data = read_pairs(dev, n)
    rows = {}
    tuned_label = "refined + adapter" if refine_to else "base + adapter"
    for label, path, lora in (("base", model, ()), (tuned_label, refine_to or model, (LoraSpec(Path(adapter)),))):
        r = evaluate(path, data, lora=lora, threads=opts.threads)
        rows[label] = {d: {k: x[k] for k in ("chrf", "bleu", "wrong_lang", "outputs_with_foreign", "segments",
                                             "tok_per_s")} for d, x in r["directions"].items()}
    gain = {d: rows[tuned_label][d]["chrf"] - rows["base"][d]["chrf"] for d in rows["base"]}
    return {"model": Path(model).name, "adapter": str(adapter), "dev": str(dev), "dev_pairs": len(data),
            "train_seconds": round(train_secs, 1), "finetune": tuned, "eval": rows, "chrf_gain": gain,
            "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores"}


def table(rep: dict[str, Any]) -> str:
    rows = []
    for label, dirs in rep["eval"].items():
        for d, x in dirs.items():
            rows.append([label, d, f"{x['chrf']:.2f}", f"{x['bleu']:.2f}", f"{x['wrong_lang']}/{x['segments']}",
                         f"{x['outputs_with_foreign']}/{x['segments']}",
                         f"{rep['chrf_gain'][d]:+.2f}" if label != "base" else ""])
    ft = rep["finetune"]
    curve = ", ".join(f"{c['tokens']:,}: {c['heldout_loss']:.3f}" for c in ft["curve"])
    return (markdown_table(["model", "direction", "chrF", "BLEU", "wrong language", "foreign chars", "chrF gain"],
                           rows, "llrrrrr")
            + f"\n\n{rep['model']}: {ft['steps']} steps, {ft['tokens_trained']:,} answer tokens "
              f"({ft['train_pairs']:,} pairs, both directions) in {rep['train_seconds']:.0f} s on {rep['machine']}; "
              f"held-out loss by answer tokens trained: {curve}\n")
