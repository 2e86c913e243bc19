"""`gguf-trim bench`: what trimming buys and costs, measured (infer, trim, translate, refine, frontier,
vram, languages, train-cost); and `gguf-trim demo`. Results are printed as tables and written as
JSON/markdown on request."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click

from gguf_trim.cli.common import parse_size, write_json, write_text
from gguf_trim.errors import TrimError


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
    """Benchmarks: inference, the trim itself, translation, refine, the compact frontier, VRAM, language sets.
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


@bench.command("scale")
@click.option("--spec", "specs", multiple=True,
              help="Model shape: qwen2.5-72b (qwen2 vocab) or llama-3.1-70b (Llama 3 vocab); repeatable "
                   "(default: qwen2.5-72b).")
@click.option("--sizes", default="2G,20G", show_default=True,
              help="Target file sizes (decimal units), each reached with as few layers as it takes.")
@click.option("--dir", "folder", default="models", show_default=True, type=click.Path(),
              help="Folder for the generated files (a hidden temp folder there, removed at the end).")
@click.option("--models", "models_dir", default="models", show_default=True, type=click.Path(),
              help="Folder holding vocab-qwen2.gguf and vocab-llama-bpe.gguf (make models).")
@click.option("--runs", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--cache", default="evict", show_default=True, type=click.Choice(["evict", "drop", "warm"]),
              help="Before every command: evict the model file from the page cache (a cold file, warm tools), drop "
                   "the whole cache (root), or keep it warm.")
@click.option("--json", "json_out", type=click.Path())
@click.option("--md", "md_out", type=click.Path())
def scale_cmd(specs, sizes, folder, models_dir, runs, cache, json_out, md_out):
    """Trim against cp at the size users run: synthetic 70B-class Q4_K_M-shaped files (real vocabulary, n_vocab x
    8192 vocab tensors, fewer layers) of each size, peak RSS of the trim, verify of the output; then deleted."""
    from gguf_trim.bench.scale import SHAPES, bench_scale, markdown

    for s in specs:
        if s not in SHAPES:
            raise TrimError(f"--spec {s}: unknown shape (known: {', '.join(SHAPES)})")
    try:
        targets = [parse_size(x) for x in sizes.split(",") if x.strip()]
    except TrimError:
        raise TrimError(f"--sizes {sizes!r}: give sizes such as 2G,20G") from None
    result = bench_scale(list(specs) or ["qwen2.5-72b"], targets, folder, runs, cache, models_dir,
                         log=lambda m: click.echo(m, err=True))
    table = markdown(result)
    click.echo(table)
    flat = ", ".join(f"{k} {v:.3f}" for k, v in result["rss_flat"].items())
    if flat:
        click.echo(f"peak RSS largest / smallest file: {flat}")
    if json_out:
        write_json(json_out, result)
    if md_out:
        write_text(md_out, table + "\n")


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


@bench.command("languages")
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--sets", default="vi,ko,ja,ru,th,hi,ar,zh-Hans,fr,de,es,uk,fa,bn", show_default=True,
              help="Comma-separated languages X: each set is en+X.")
@click.option("--texts", "texts_dir", type=click.Path(), help="Folder of X.txt and en-X.tsv (default: models/langs).")
@click.option("--lines", default=300, show_default=True, help="Lines of X.txt and of en-X.tsv checked for fidelity.")
@click.option("--logits", default=4, show_default=True, help="Lines whose logits are compared at the kept ids.")
@click.option("--runs", default=3, show_default=True, help="Fresh-process decode runs per file (0: skip decode).")
@click.option("--n-gen", default=64, show_default=True, help="Greedy tokens per decode run.")
@click.option("--prompts", "n_prompts", type=click.IntRange(min=1), help="Only the first N adversarial prompts.")
@click.option("--seeds", default=8, show_default=True, help="Seeds per adversarial prompt (0, 1, ...).")
@click.option("--temperature", default=1.2, show_default=True)
@click.option("--max-tokens", default=32, show_default=True, help="Output tokens per chat at most.")
@click.option("--column", "columns", multiple=True,
              type=click.Choice(["original", "no list", "list", "list + grammar", "guard"]),
              help="Only these adversarial columns (default: all; all but guard run in llama-server).")
@click.option("--no-adversarial", is_flag=True, help="Skip the adversarial chats.")
@click.option("--parallel", default=8, show_default=True, help="llama-server slots (-np): chats decoded together.")
@click.option("--threads", default=2, show_default=True)
@click.option("--json", "json_out", type=click.Path(), help="Written after every row, so a stopped sweep keeps them.")
@click.option("--md", "md_out", type=click.Path())
@click.option("--resume", is_flag=True, help="Keep the rows already in --json (same settings assumed) and "
              "measure the rest.")
def languages_cmd(models, sets, texts_dir, lines, logits, runs, n_gen, n_prompts, seeds, temperature, max_tokens,
                  columns, no_adversarial, parallel, threads, json_out, md_out, resume):
    """Each set en+X for each MODEL: the lossless trim (kept tokens, size, suppress list), fidelity and logits on
    X and English text, decode speed, and (chat models) foreign characters on adversarial prompts in stock
    llama-server and with gguf-trim's script guard."""
    from gguf_trim.bench.languages import COLUMNS, TEXTS_DIR, bench, markdown

    chosen = () if no_adversarial else (columns or COLUMNS)
    if resume and not json_out:
        raise TrimError("--resume needs --json: the file of the rows measured so far")
    done = json.loads(Path(json_out).read_text(encoding="utf-8"))["rows"] if resume and Path(json_out).is_file() else []
    save = (lambda r: write_json(json_out, r, ensure_ascii=False)) if json_out else None
    result = bench(list(models), [c.strip() for c in sets.split(",") if c.strip()], done=done, on_row=save,
                   texts_dir=texts_dir or TEXTS_DIR,
                   lines=lines, logits=logits, runs=runs, n_gen=n_gen, n_prompts=n_prompts, seeds=seeds,
                   temperature=temperature, max_tokens=max_tokens, parallel=parallel, threads=threads,
                   columns=chosen, log=lambda m: click.echo(m, err=True))
    table = markdown(result)
    click.echo(table)
    if json_out:
        write_json(json_out, result, ensure_ascii=False)
    if md_out:
        write_text(md_out, table + "\n")


@bench.command("train-cost")
@click.argument("models", nargs=-1, type=click.Path())
@click.option("--pairs", default="../shared/corpus/train/prose.en-vi.tsv", show_default=True, type=click.Path(),
              help="Pairs finetune trains on (and refine's text: their second side).")
@click.option("--corpus", multiple=True, type=click.Path(), help="Text the compact trim counts tokens on "
              "(default ../shared/corpus/train/en.txt and vi.txt).")
@click.option("--words", default="../shared/lexicon/vi_compounds.tsv", show_default=True, type=click.Path(),
              help="Compounds `extend` adds for refine.")
@click.option("--top", default=200, show_default=True, help="How many of --words extend adds.")
@click.option("--stages", default="finetune,refine", show_default=True)
@click.option("--variants", default="original,lossless,compact", show_default=True)
@click.option("--modes", default="chunked,full,bound", show_default=True,
              help="chunked: as training runs; full: every position's logits at once; bound: a one-row head.")
@click.option("--steps", default=8, show_default=True, help="Steps per run.")
@click.option("--warmup", default=2, show_default=True, help="First steps left out of the median.")
@click.option("--tokens", default=256, show_default=True, help="Answer tokens per finetune step.")
@click.option("--batch", default=4, show_default=True, help="Sequences per refine step.")
@click.option("--seq-len", default=256, show_default=True, help="Tokens per refine sequence.")
@click.option("--lr", default=1e-3, show_default=True, help="finetune's learning rate (the adapter check).")
@click.option("--n-pairs", default=64, show_default=True, help="Pairs trained on (cycled).")
@click.option("--adapter-check", default=4, show_default=True,
              help="Held-out pairs translated with a trim's adapter on the original (0: no check).")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda", "auto"]))
@click.option("--threads", type=int, help="PyTorch CPU threads (default: all cores).")
@click.option("--work", default="build/train-cost", show_default=True, type=click.Path(),
              help="Trimmed, extended files and adapters (reused).")
@click.option("--json", "json_out", type=click.Path())
@click.option("--md", "md_out", type=click.Path())
def train_cost_cmd(models, pairs, corpus, words, stages, variants, modes, steps, warmup, tokens, batch, seq_len,
                   lr, n_pairs, top, adapter_check, device, threads, work, json_out, md_out):
    """Seconds per step and peak memory of refine and finetune on each MODEL (default Gemma-3-270m and
    Qwen2.5-Coder-0.5B in models/), its lossless and its compact trim: the LM head's share, and what trimming
    saves against what that share predicts."""
    from gguf_trim.bench.train_cost import DEFAULT_MODELS, run, table
    from gguf_trim.extend.rows import require_train_stack

    require_train_stack()
    corpus = list(corpus) or ["../shared/corpus/train/en.txt", "../shared/corpus/train/vi.txt"]
    missing = [f for f in (*(models or DEFAULT_MODELS), pairs, *corpus, words) if not Path(f).is_file()]
    if not models and missing:  # the defaults, where the GPU check calls it: a note, not a failure
        click.echo(f"train-cost: {', '.join(missing)} not here (`make models`, ../shared); nothing measured")
        return
    if missing:
        raise TrimError(f"{missing[0]}: no such file")

    def save(rep):
        if json_out:
            write_json(json_out, rep, default=str, ensure_ascii=False)
        if md_out:
            write_text(md_out, table(rep))

    split = lambda x: [p.strip() for p in x.split(",") if p.strip()]  # noqa: E731
    rep = run(list(models or DEFAULT_MODELS), pairs, corpus, words, Path(work), stages=split(stages),
              variants=split(variants), modes=split(modes), steps=steps, warmup=warmup, tokens=tokens, batch=batch,
              seq_len=seq_len, lr=lr, n_pairs=n_pairs, device=device, threads=threads, top=top,
              adapter_check=adapter_check, save=save, log=lambda m: click.echo(m, err=True))
    save(rep)
    click.echo(table(rep))


@click.command()
@click.argument("model", required=False, type=click.Path())
def demo(model):
    """Trim Gemma-3-270m (or MODEL) to English+Vietnamese and show that nothing changed: tokenization,
    logits and a greedy translation, original vs trimmed."""
    from gguf_trim.demo import run

    sys.exit(run(model))
