"""`gguf-trim bench finetune` (chrF of base + LoRA adapter against the base; the train extra) and
`gguf-trim bench grammar` (the allowed-character grammar's decode cost in stock llama-server)."""

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
@click.option("--refine-to", type=click.Path(), help="Also train extend's rows into this copy of MODEL (finetune's "
                                                     "--refine-to); the adapter is evaluated on it.")
@click_options(FinetuneOptions)
@click.option("--json", "json_out", type=click.Path(), help="Write the report as JSON.")
@click.option("--md", "md_out", type=click.Path(), help="Write the table as markdown.")
def finetune_cmd(model, pairs, texts, dev, n_dev, adapter, refine_to, json_out, md_out, **flags):
    """Fine-tune MODEL on --pairs, then evaluate MODEL and MODEL + adapter on --dev, both directions."""
    from gguf_trim.extend.rows import require_train_stack

    require_train_stack()
    from gguf_trim.bench.finetune import run, table

    opts, _ = from_params(FinetuneOptions, flags, progress=sys.stderr.isatty())
    rep = run(model, list(pairs), dev, adapter, n_dev, opts, list(texts), log=lambda m: click.echo(m, err=True),
              refine_to=refine_to)
    text = table(rep)
    click.echo(text)
    if json_out:
        write_json(json_out, rep)
    if md_out:
        write_text(md_out, text)


@click.command("grammar")
@click.argument("model", type=click.Path())
@click.option("--n", default=12, show_default=True, help="Completions per mode.")
@click.option("--tokens", default=64, show_default=True, help="Max tokens per completion.")
@click.option("--temperature", default=0.8, show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--json", "json_out", type=click.Path(), help="Write the result as JSON.")
def grammar_cmd(model, n, tokens, temperature, threads, json_out):
    """Decode tok/s of stock llama-server on MODEL (a trimmed file, its suppress key) with and without the
    English/Vietnamese grammar `gguf-trim export` writes."""
    from gguf_trim.bench.grammar import measure, table

    r = measure(model, n, tokens, temperature, threads)
    click.echo(f"llama-server, {threads} threads, temperature {temperature}, 1 slot, sequential requests; "
               "tok/s = generated tokens / decode time (server timings)\n")
    click.echo(table(r))
    if json_out:
        write_json(json_out, r)
