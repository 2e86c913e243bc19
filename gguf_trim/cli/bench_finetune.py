"""`gguf-trim bench finetune`: chrF of base + LoRA adapter against the base (the train extra)."""

from __future__ import annotations

import sys

import click

from gguf_trim.cli.common import write_json, write_text
from gguf_trim.options import click_options, from_params
from gguf_trim.tune.options import FinetuneOptions


@click.command("finetune")
@click.argument("model", type=click.Path())
@click.option("--pairs", multiple=True, required=True, type=click.Path(), help="Training pairs (TSV/JSONL).")
@click.option("--text", "texts", multiple=True, type=click.Path(), help="Monolingual Vietnamese text (--text-share).")
@click.option("--dev", required=True, type=click.Path(), help="Dev pairs (English<TAB>Vietnamese) never trained on.")
@click.option("--n", "n_dev", default=64, show_default=True, help="Dev pairs, spread over the file.")
@click.option("-o", "--adapter", required=True, type=click.Path(), help="Adapter GGUF to write.")
@click_options(FinetuneOptions)
@click.option("--json", "json_out", type=click.Path(), help="Write the report as JSON.")
@click.option("--md", "md_out", type=click.Path(), help="Write the table as markdown.")
def finetune_cmd(model, pairs, texts, dev, n_dev, adapter, json_out, md_out, **flags):
    """Fine-tune MODEL on --pairs, then evaluate MODEL and MODEL + adapter on --dev, both directions."""
    from gguf_trim.extend.rows import require_train_stack

    require_train_stack()
    from gguf_trim.bench.finetune import run, table

    opts, _ = from_params(FinetuneOptions, flags, progress=sys.stderr.isatty())
    rep = run(model, list(pairs), dev, adapter, n_dev, opts, list(texts), log=lambda m: click.echo(m, err=True))
    text = table(rep)
    click.echo(text)
    if json_out:
        write_json(json_out, rep)
    if md_out:
        write_text(md_out, text)
