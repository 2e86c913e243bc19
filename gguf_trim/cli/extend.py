"""Commands that grow a trimmed vocabulary: extend (add compound words), refine (train their rows)."""

from __future__ import annotations

import sys
import time

import click

from gguf_trim.cli.common import write_json
from gguf_trim.extend.options import RefineOptions
from gguf_trim.options import click_options, from_params


@click.command()
@click.argument("model", type=click.Path())
@click.option("--words", "words_path", required=True, type=click.Path(),
              help="Compound words: one per line, or a TSV whose first column is the word.")
@click.option("-o", "--output", required=True, type=click.Path())
@click.option("--top", default=2000, show_default=True,
              help="Words to add (each adds 1-3 tokens); llama.cpp's matching cost grows with the count.")
@click.option("--corpus", type=click.Path(), help="Text that ranks the words and shows which capitalised forms occur.")
@click.option("--init", default="mean", show_default=True, type=click.Choice(["mean", "weighted", "first"]),
              help="New rows: mean of the pieces' rows; weighted toward later pieces; first piece for output.")
@click.option("--export-rows", type=click.Path(), help="Also write the new ids, texts and vectors to this .npz.")
@click.option("--check/--no-check", default=True, show_default=True)
@click.option("--suppress/--no-suppress", default=True, show_default=True,
              help="For a file trimmed to en,vi: the suppress list covers the extended vocabulary too "
                   "(--no-suppress copies the source's list as it is).")
def extend(model, words_path, output, top, corpus, init, export_rows, check, suppress):
    """Add compound words as new tokens (USER_DEFINED), rows initialised from their pieces."""
    from gguf_trim.extend.words import export_rows as do_export
    from gguf_trim.extend.words import extend_file

    t0 = time.perf_counter()
    r = extend_file(model, words_path, output, top=top, corpus=corpus, init=init, check=check, suppress=suppress)
    click.echo(f"{r.output}: {r.n_vocab_before:,} -> {r.n_vocab_after:,} tokens (+{len(r.added):,}) in "
               f"{time.perf_counter() - t0:.1f} s; e.g. " + ", ".join(repr(x) for x in r.added[:6]))
    click.echo("  skipped: " + ", ".join(f"{k} {v:,}" for k, v in r.skipped.items() if v))
    if export_rows:
        n = do_export(r.output, export_rows)
        click.echo(f"  exported {n:,} new rows to {export_rows}")


@click.command()
@click.argument("model", type=click.Path())
@click.option("--corpus", "corpus", multiple=True,
              help="Text to train on (.txt/.jsonl/.tsv/.parquet, folders, hf:NAME); repeatable. Each is split "
                   "into training and held-out lines.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Refined GGUF to write.")
@click_options(RefineOptions)
@click.option("--export-rows", type=click.Path(), help="Also write the trained rows (float32) to this .npz.")
@click.option("--import-rows", type=click.Path(), help="Write these rows (.npz) instead of training (no PyTorch).")
@click.option("--json", "json_out", type=click.Path(), help="Write the report as JSON.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Load the output with llama.cpp (weights too) before renaming it into place.")
def refine(model, corpus, output, export_rows, import_rows, json_out, check, **flags):
    """Train the rows of the tokens `extend` added (every other weight frozen) and write them back.

    A checkpoint (OUTPUT.ckpt.pt) is written every --checkpoint-every and on Ctrl-C; --resume continues
    from it. It is removed when the run succeeds and stays after a failure or a kill."""
    from dataclasses import asdict

    from gguf_trim.extend.refine import refine as do_refine
    from gguf_trim.tune.checkpoint import resume_command

    opts, _ = from_params(RefineOptions, flags, progress=sys.stderr.isatty())
    r = do_refine(model, output, list(corpus), opts, rows_in=import_rows, rows_out=export_rows, check=check,
                  log=lambda m: click.echo(m, err=True), resume_hint=resume_command("refine"))
    if r.report is None:
        click.echo(f"{r.output}: {r.n_rows:,} rows of {', '.join(r.tensors)} from {r.imported_from} "
                   f"in {r.seconds:.1f} s")
        return
    rep = r.report
    click.echo(f"{r.output}: {rep.n_added:,} rows of {', '.join(rep.tensors)} trained on {rep.tokens_trained:,} "
               f"tokens; held-out bits/byte {rep.before['bpb']:.4f} -> {rep.after_written['bpb']:.4f} "
               f"({rep.after_written['bpb'] / rep.before['bpb'] - 1:+.1%}); {r.seconds:.0f} s")
    if json_out:
        write_json(json_out, asdict(rep), ensure_ascii=False)
