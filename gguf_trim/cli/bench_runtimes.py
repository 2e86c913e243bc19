"""`gguf-trim bench runtimes`: foreign-script outputs of original and trimmed files in stock llama-server and
in gguf-trim's own runtime (bench/runtimes.py), as a table for the README."""

from __future__ import annotations

import click

from gguf_trim.cli.common import write_json, write_text


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


@click.command("runtimes")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--langs", default="en,vi", show_default=True,
              help="The language set to trim to and to count foreign characters against (e.g. en,ko).")
@click.option("--seeds", default=4, show_default=True, help="Seeds per prompt and temperature (0, 1, ...).")
@click.option("--temperatures", default="1.0,1.5", show_default=True, help="Comma-separated sampling temperatures.")
@click.option("--max-tokens", default=32, show_default=True, help="Output tokens per chat at most.")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["llama-server", "gguf-trim"]),
              help="Only these runtimes (default: both).")
@click.option("--threads", type=int, help="Threads (default: all cores).")
@click.option("--parallel", default=4, show_default=True, help="llama-server slots (-np): chats decoded together.")
@click.option("--json", "json_out", type=click.Path(), help="Write the rows and settings as JSON.")
@click.option("--md", "md_out", type=click.Path(), help="Write the markdown table here.")
def runtimes_cmd(models, langs, seeds, temperatures, max_tokens, runtimes, threads, parallel, json_out, md_out):
    """Outputs with characters outside the language set, on adversarial prompts (for en,vi: asking for Chinese,
    Japanese, Korean, Russian, Thai; else prompts written in the set's languages that invite other scripts), for
    each MODEL: original, trimmed without the suppress list, with it, and with it plus the allowed-character
    grammar; in stock llama-server and in llama-cpp-python with the script guard."""
    from gguf_trim.bench.runtimes import RUNTIMES, bench, markdown
    from gguf_trim.langs import language_set

    chosen = [r for r in RUNTIMES if not runtimes or r.split()[0] in runtimes]
    result = bench(list(models), langs=language_set(langs), seeds=range(seeds), temperatures=_floats(temperatures),
                   max_tokens=max_tokens, runtimes=chosen, threads=threads, parallel=parallel,
                   log=lambda m: click.echo(m, err=True))
    table = markdown(result)
    click.echo(table)
    if json_out:
        write_json(json_out, result, ensure_ascii=False)
    if md_out:
        write_text(md_out, table + "\n")
