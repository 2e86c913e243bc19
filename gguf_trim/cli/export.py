"""`gguf-trim export`: what runtimes that ignore tokenizer.ggml.suppress_tokens need (grammar, logit_bias
map, ollama Modelfile), written beside the model or into -o DIR."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click


def python_line(bias_json: Path) -> str:
    """The call a llama-cpp-python user makes to apply the list: its own sampler ignores the key, and
    create_completion adds each value to the id's logit (int() of the key), so -inf makes it impossible.
    Not together with logits_processor=: llama-cpp-python 0.3.36 then drops both (list.extend returns None)."""
    return (f"llm.create_chat_completion(messages, logit_bias={{int(i): float(\"-inf\") for i in "
            f"json.load(open({json.dumps(str(bias_json))}))}})")


@click.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output-dir", "out_dir", type=click.Path(),
              help="Folder to write into (default: the model's folder).")
@click.option("--langs", default=None,
              help="Language set of the grammar and bias (default: the one MODEL was trimmed to, else en,vi).")
def export(model, out_dir, langs):
    """Write MODEL's grammar (.gbnf), logit_bias map (.logit_bias.json) and ollama Modelfile, for runtimes
    that do not apply the file's suppress list themselves (docs/runtimes.md)."""
    from gguf_trim.export import export as do_export
    from gguf_trim.export import model_langs
    from gguf_trim.format.shards import open_model
    from gguf_trim.vocab.suppress import file_suppress

    with open_model(model) as g:  # first, so a missing or non-GGUF file fails before anything is written
        own = len(file_suppress(g)) > 0
    lset = model_langs(model, langs)
    paths = do_export(model, out_dir if out_dir is not None else Path(model).parent, lset)
    with open(paths["logit_bias"], encoding="utf-8") as f:
        n = len(json.load(f))
    where = ("the file's tokenizer.ggml.suppress_tokens" if own
             else "no list in the file: the ids the script guard never allows")
    click.echo(f"wrote {paths['grammar']}: grammar of the output characters of {lset.key} "
               "(llama.cpp --grammar-file, or \"grammar\" in a request)")
    click.echo(f"wrote {paths['logit_bias']}: {n} ids at -100 ({where})")
    name = re.sub(r"[^a-z0-9._-]+", "-", paths["grammar"].stem.lower())  # a name ollama takes
    click.echo(f"wrote {paths['modelfile']}: ollama create {name} -f {paths['modelfile']}")
    click.echo("llama-cpp-python: " + python_line(paths["logit_bias"]))
