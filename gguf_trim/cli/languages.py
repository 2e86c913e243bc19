"""`gguf-trim languages`: the codes --langs takes, and what each set keeps of a model's vocabulary."""

from __future__ import annotations

import json

import click


@click.command()
@click.option("--model", type=click.Path(), help="Also count, for this GGUF's vocabulary, the tokens each set keeps.")
@click.option("--base", default="en", show_default=True,
              help="Languages every row's set includes besides its own ('' for none).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def languages(model, base, as_json):
    """List the languages --langs knows (codes, names, scripts) and, with --model, each set's kept tokens."""
    from gguf_trim.langs.report import language_rows
    from gguf_trim.tables import markdown_table

    rows = language_rows(model, base)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
        return
    cols = ["code", "name", "autonym", "scripts", "characters", "list_stops", "list_partly"]
    cols += ["kept", "suppress_ids"] if model else []
    click.echo(markdown_table(cols, [[r[c] for c in cols] for r in rows]))
