"""`gguf-trim bench`: what trimming buys and costs, measured (infer, trim, translate, refine, frontier,
vram); and `gguf-trim demo`. Results are printed as tables and written as JSON/markdown on request."""

from __future__ import annotations

import json
import os
import sys
import time

import click

from gguf_trim.cli.common import parse_size, write_json, write_text


class BenchGroup(click.Group):
    """`gguf-trim bench MODEL...` (the command before it was a group) still runs `bench infer`: an
    argument that names no subcommand goes to infer."""

    default = "infer"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)


@click.group(cls=BenchGroup)
def bench() -> None:
    """Benchmarks: inference, the trim itself, translation, refine, the compact frontier, VRAM.
    `gguf-trim bench ORIGINAL TRIMMED ...` is `bench infer`."""


@bench.command("infer")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--runs", default=5, show_default=True, help="Fresh-process runs per model (medians reported).")
@click.option("--n-prompt", default=512, show_default=True, help="Prompt tokens for prompt processing.")
@click.option("--n-gen", default=128, show_default=True, help="Greedy decode steps.")
@click.option("--threads", type=int, help="Threads (default: all cores).")
@click.option("--json", "json_out", type=click.Path(), help="Write rows and ratios as JSON.")
@click.option("--md", "md_out", type=click.Path(), help="Write the markdown tables here.")
@click.option("--png", "png_out", type=click.Path(), help="Write a bar chart here (needs matplotlib).")
def infer_cmd(models, runs, n_prompt, n_gen, threads, json_out, md_out, png_out):
    """Inference benchmark of ORIGINAL TRIMMED [ORIGINAL TRIMMED ...] pairs, runs interleaved."""
    from gguf_trim.bench.infer import bench_pairs, markdown, plot

    rows, pairs = bench_pairs(list(models), runs, n_prompt, n_gen, threads)
    table = markdown(rows, pairs)
    click.echo(table)
    if json_out:
        write_json(json_out, {"rows": rows, "pairs": pairs, "runs": runs, "n_prompt": n_prompt, "n_gen": n_gen,
                              "threads": threads or os.cpu_count()})
    if md_out:
        write_text(md_out, table + "\n")
    if png_out and not plot(rows, png_out):
        click.echo("matplotlib is not installed: no plot", err=True)


@bench.command("trim")
@click.argument("models", nargs=-1, type=click.Path())
@click.option("--synthetic-7b", "synth_dir", type=click.Path(),
              help="Also generate a Qwen2.5-7B-shaped GGUF (~4.9 GB) in this folder, benchmark it, delete it.")
@click.option("--vocab", default=None, type=click.Path(), help="qwen2 vocab GGUF for the synthetic model.")
@click.option("--synthetic-split", "synth_split", metavar="SIZE",
              help="Also benchmark the synthetic model written as a split model with shards of SIZE (e.g. 2G).")
@click.option("--runs", default=3, show_default=True)
@click.option("--json", "json_out", type=click.Path())
def trim_cmd(models, synth_dir, vocab, synth_split, runs, json_out):
    """Wall time and peak RSS of `gguf-trim trim` against `cp` of the same file (all shards of a split model)."""
    from gguf_trim.bench.trim import bench_trims, markdown

    results = bench_trims(list(models), runs, synth_dir, vocab, parse_size(synth_split) if synth_split else None,
                          log=click.echo)
    click.echo(markdown(results))
    if json_out:
        write_json(json_out, results)


@bench.command("translate")
@click.argument("models", nargs=-1, required=True)
@click.option("--pairs", required=True, type=click.Path(exists=True))
@click.option("--n", "n_pairs", default=64, show_default=True)
@click.option("--to", "dst", default="vi", show_default=True, type=click.Choice(["vi", "en"]))
@click.option("--parallel", "parallels", default="4,8,16,default", show_default=True,
              help="Comma-separated slot counts for the batched runs ('default': chosen from --n-ctx).")
@click.option("--n-ctx", default=4096, show_default=True)
@click.option("--threads", type=int)
@click.option("--n-gpu-layers", default=0, show_default=True, help="Layers to offload (CUDA build).")
@click.option("--flash-attn", "flash", default="both", show_default=True, type=click.Choice(["on", "off", "both"]),
              help="llama.cpp's flash attention in both paths ('both': each model with it on, then off).")
@click.option("--server-parallel", default=16, show_default=True, type=click.IntRange(min=1),
              help="Slots (-np) of the stock llama-server run on the same segments, when it is built.")
@click.option("--no-server", is_flag=True, help="Skip the llama-server comparison.")
@click.option("--json", "json_out", type=click.Path())
def translate_cmd(models, pairs, n_pairs, dst, parallels, n_ctx, threads, n_gpu_layers, flash, server_parallel,
                  no_server, json_out):
    """Translation throughput: one segment at a time vs batched decoding vs stock llama-server, outputs compared."""
    from gguf_trim.bench.translate import machine_line, markdown, measure

    rows = measure(list(models), pairs, n_pairs, dst, parallels, n_ctx, threads, n_gpu_layers, flash,
                   None if no_server else server_parallel, log=lambda m: click.echo(m, err=True))
    click.echo(machine_line(n_ctx))
    click.echo(markdown(rows))
    if json_out:
        write_json(json_out, {"rows": rows, "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(),
                              "load": os.getloadavg()})


@bench.command("refine")
@click.argument("trimmed")
@click.argument("extended")
@click.argument("refined")
@click.option("--vi", required=True, help="held-out Vietnamese text, a line per segment")
@click.option("--en", required=True, help="held-out English text")
@click.option("--lines", type=int, default=200, help="lines per language scored for bits per byte")
@click.option("--corpus", multiple=True,
              help="a corpus refine trained on, in refine's order: its held-out lines are scored too")
@click.option("--heldout", type=int, default=300, help="refine's --heldout")
@click.option("--seed", type=int, default=0, help="refine's --seed")
@click.option("--prompts", type=int, default=20)
@click.option("--max-tokens", type=int, default=64)
@click.option("--runs", type=int, default=3, help="timed passes per model (medians)")
@click.option("--pairs", help="English<TAB>Vietnamese pairs: the English lines are translated too")
@click.option("--n-pairs", type=int, default=20)
@click.option("--json", "json_out", help="write the results here")
def refine_cmd(trimmed, extended, refined, vi, en, lines, corpus, heldout, seed, prompts, max_tokens, runs, pairs,
               n_pairs, json_out):
    """A trimmed model, the same model extended with compound words, and the extension refined: bits per
    byte, tokens and greedy Vietnamese generation speed, through llama.cpp only."""
    from gguf_trim.bench.refine import bench as run_bench
    from gguf_trim.bench.refine import table

    r = run_bench(trimmed, extended, refined, vi, en, lines, prompts, max_tokens, list(corpus), heldout, seed, runs,
                  pairs, n_pairs)
    if json_out:
        write_json(json_out, r, ensure_ascii=False)
    click.echo(table(r))


@bench.command("frontier")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--targets", default="0.35,0.40,0.45,0.50,0.55,0.60", show_default=True,
              help="Target sizes: shares of each vocabulary (0.5) or token counts.")
@click.option("--corpus", "corpus", multiple=True, required=True, help="Text to choose tokens from (repeatable).")
@click.option("--text", "texts", multiple=True, required=True, type=click.Path(),
              help="Held-out text, one segment per line (repeatable): fidelity and bits per byte.")
@click.option("--bpb-lines", default=200, show_default=True, type=click.IntRange(min=0),
              help="Lines per text scored for bits per byte (models with weights; 0: skip).")
@click.option("--count-rates/--no-count-rates", default=True, show_default=True,
              help="Also measure how fast the corpus is counted.")
@click.option("--json", "json_out", type=click.Path())
@click.option("--md", "md_out", type=click.Path())
@click.option("--png", "png_out", type=click.Path())
def frontier_cmd(models, targets, corpus, texts, bpb_lines, count_rates, json_out, md_out, png_out):
    """Compact profile at several sizes: held-out line fidelity and bits per byte vs the original."""
    from gguf_trim.bench.frontier import frontier_doc, markdown, measure, plot, speed_markdown

    rows, speed = measure(list(models), targets, list(corpus), list(texts), bpb_lines, count_rates,
                          progress=sys.stderr.isatty(), log=lambda m: click.echo(m, err=True))
    table = markdown(rows)
    click.echo(table)
    if speed:
        speed_md = speed_markdown(speed)
        click.echo(speed_md)
        table += "\n" + speed_md
    if json_out:
        write_json(json_out, {"rows": rows, "count_rates": speed, "date": time.strftime("%Y-%m-%d")},
                   ensure_ascii=False)
    if md_out:
        write_text(md_out, frontier_doc(rows, table, models, targets, corpus, texts, bpb_lines, png_out))
    if png_out and not plot(rows, png_out):
        click.echo("matplotlib is not installed: no plot", err=True)


@bench.command("vram")
@click.argument("model", required=False, type=click.Path())
@click.option("--spec", help="A model from the shipped table instead of a file (e.g. qwen2.5-72b); 'all' for all.")
@click.option("--quant", default="Q4_K_M", show_default=True, help="Quant type for --spec ('all' for every one).")
@click.option("--n-ctx", default=8192, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def vram_cmd(model, spec, quant, n_ctx, as_json):
    """GPU memory before and after trimming, and whether it fits 24 GB / 40 GB cards."""
    from gguf_trim.bench.vram import estimate, format_table, newly_fitting

    rows = estimate(model, spec, quant, n_ctx)
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    click.echo(format_table(rows))
    newly = newly_fitting(rows)
    click.echo("\n".join(newly) if newly else "no model in this list newly fits a 24 GB or 40 GB card by trimming")


@click.command()
@click.argument("model", required=False, type=click.Path())
def demo(model):
    """Trim Gemma-3-270m (or MODEL) to English+Vietnamese and show that nothing changed: tokenization,
    logits and a greedy translation, original vs trimmed."""
    from gguf_trim.demo import run

    sys.exit(run(model))
