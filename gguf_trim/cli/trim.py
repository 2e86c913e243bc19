"""Commands of the trim itself: trim, plan, verify, inspect, diff."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from gguf_trim.cli.common import parse_size, write_json
from gguf_trim.errors import TrimError
from gguf_trim.tables import human_size

# The flags of CompactOptions' fields (all but progress), in --help order; tests/test_cli.py checks
# that they name exactly its fields, so the two cannot drift.
COMPACT_FLAGS: dict[str, tuple[tuple[str, ...], dict]] = {
    "target_size": (("--target-size",), {"type": click.IntRange(min=1), "help": (
        "compact: tokens in the output, padding included (default: half the vocabulary).")}),
    "min_count": (("--min-count",), {"type": click.IntRange(min=1), "help": (
        "compact: instead of a size, keep tokens the corpus shows at least this often (or common words use).")}),
    "corpus": (("--corpus",), {"multiple": True, "help": (
        "compact: text to count tokens in: .txt/.jsonl/.tsv/.parquet (.gz), folders, hf:NAME[:split][:field]. "
        "Repeatable.")}),
    "field": (("--field",), {"help": "compact: field of .jsonl/.parquet/hf: records (default: text)."}),
    "columns": (("--column",), {"multiple": True, "type": click.IntRange(min=0),
                                "help": "compact: TSV column (0-based) to read; repeatable (default: all)."}),
    "words": (("--words/--no-words",), {"default": True, "show_default": True, "help": (
        "compact: use wordfreq's common English/Vietnamese words (and other Latin-script languages' words to "
        "spot foreign tokens).")}),
    "cache": (("--cache/--no-cache",), {"default": True, "show_default": True,
                                        "help": "compact: reuse token counts cached by (tokenizer, corpus sha256)."}),
    "workers": (("--workers",), {"type": click.IntRange(min=1),
                                 "help": "compact: counting processes (default: all cores)."}),
}


def _compact_options(fn):
    """Options of --profile compact, shared by trim and plan."""
    for name, (decls, kw) in reversed(COMPACT_FLAGS.items()):
        fn = click.option(*decls, name, **kw)(fn)
    return fn


def _compact(params: dict):
    """The CompactOptions the compact flags in `params` give (taken out of it); make_selection refuses
    them with another profile."""
    from gguf_trim.api import CompactOptions

    given = {name: params.pop(name) for name in COMPACT_FLAGS}
    given["corpus"] = list(given["corpus"])
    given["columns"] = list(given["columns"]) or None
    return CompactOptions(**given, progress=sys.stderr.isatty())


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


@click.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="Trimmed GGUF to write.")
@click.option("--langs", default="en,vi", show_default=True,
              help="Languages to keep: comma-separated codes such as en,ja or en,ko,vi (`gguf-trim languages`).")
@click.option("--profile", default="lossless", show_default=True,
              help="lossless: every token text of the languages can use; compact: the likely ones, to a target "
                   "size.")
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
@click.option("--suppress/--no-suppress", default=True, show_default=True,
              help="Write tokenizer.ggml.suppress_tokens: the kept tokens that can never be part of output in "
                   "the languages (byte tokens of foreign lead bytes), which stock llama-server and llama-cli "
                   "never sample. --no-suppress keeps only the source's own list.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_compact_options
def trim(model, output, langs, profile, keep, drop, plan_in, plan_out, check, hash_source, merge, split_max_size,
         suppress, as_json, **compact_flags):
    """Write MODEL with only the tokens text of the chosen languages (--langs) can use.

    MODEL may be a split model (NAME-00001-of-00003.gguf...), given by any of its shards: the
    output is split the same way unless --merge or --split-max-size says otherwise."""
    from gguf_trim.api import trim as do_trim

    if merge and split_max_size:
        raise TrimError("give --merge or --split-max-size, not both")
    max_size = parse_size(split_max_size) if split_max_size else None
    t0 = time.perf_counter()
    compact = _compact(compact_flags)
    res, sel = do_trim(model, output, langs=langs, profile=profile, plan=plan_in, keep=keep, drop=drop,
                       plan_out=plan_out, check=check, compact=compact, hash_source=hash_source,
                       layout="merge" if merge else "max-size" if max_size else "same", split_max_size=max_size,
                       suppress=suppress, progress=sys.stderr.isatty())
    secs = time.perf_counter() - t0
    info = {"output": str(res.output), "outputs": [str(p) for p in res.outputs],
            "n_vocab_original": res.n_vocab_original,
            "n_vocab_trimmed": res.n_vocab_trimmed, "size_original": res.size_original,
            "size_trimmed": res.size_trimmed, "sliced_tensors": res.sliced_tensors,
            "merges": [res.merges_original, res.merges_trimmed], "kept_by_reason": sel.summary(),
            "closure_added": [sel.vocab.display(i) for i in sel.closure_added], "seconds": round(secs, 2),
            "load_checked": check, "padding_tokens": res.n_padding, "suppressed_tokens": res.n_suppressed,
            "profile": sel.profile,
            **({"selection": sel.info} if sel.info else {})}
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=1))
        return
    click.echo(f"{res.output}: {res.n_vocab_trimmed:,} of {res.n_vocab_original:,} tokens "
               f"({res.n_vocab_trimmed / res.n_vocab_original:.1%}), "
               f"{human_size(res.size_trimmed)} from {human_size(res.size_original)} in {secs:.1f} s")
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
    if res.n_suppressed:
        click.echo(f"  suppress list: {res.n_suppressed} ids stock llama.cpp samplers never emit "
                   "(tokenizer.ggml.suppress_tokens)")
    if plan_out:
        click.echo(f"  plan: {plan_out}")


@click.command()
@click.argument("model", type=click.Path())
@click.option("-o", "--output", "plan_out", required=True, type=click.Path(), help="Plan file (JSONL) to write.")
@click.option("--langs", default="en,vi", show_default=True, help="Languages to keep (see trim).")
@click.option("--profile", default="lossless", show_default=True, help="lossless or compact (see trim).")
@click.option("--keep", type=click.Path())
@click.option("--drop", type=click.Path())
@_compact_options
def plan(model, plan_out, langs, profile, keep, drop, **compact_flags):
    """Write the plan only (works on vocab-only GGUFs); apply it with `trim --plan`."""
    from gguf_trim.api import plan as do_plan

    sel, n_vocab = do_plan(model, plan_out, langs, profile, keep, drop, _compact(compact_flags))
    click.echo(f"{plan_out}: {sel.n_kept:,} of {n_vocab:,} tokens kept ("
               + ", ".join(f"{k} {v:,}" for k, v in sel.summary().items()) + ")")
    if note := _selection_note(sel):
        click.echo(f"  chosen from: {note}")


@click.command()
@click.argument("original", type=click.Path())
@click.argument("trimmed", type=click.Path())
@click.option("--text", "texts", multiple=True, type=click.Path(), help="Text file, one segment per line.")
@click.option("--logits", default=0, show_default=True, help="Compare logits on this many lines.")
@click.option("--bpb", is_flag=True, help="Also compare bits per byte of the two models on each --text file.")
@click.option("--bpb-lines", default=200, show_default=True, type=click.IntRange(min=1),
              help="Lines per file (spread over it) scored for --bpb.")
@click.option("--greedy", default=4, show_default=True, type=click.IntRange(min=0),
              help="Continue this many lines greedily and check no step wants a suppressed token (0: skip).")
@click.option("--langs", default=None,
              help="Language set to check the suppress list against (default: the one TRIMMED records).")
@click.option("--json", "json_out", type=click.Path(), help="Write the full report as JSON here.")
def verify(original, trimmed, texts, logits, bpb, bpb_lines, greedy, langs, json_out):
    """Check TRIMMED against ORIGINAL: tokenization fidelity per line, logits, bits per byte, load, sizes."""
    from gguf_trim.rewrite.verify import verify as do_verify

    if bpb and not texts:
        raise TrimError("--bpb needs --text files to score")
    rep = do_verify(original, trimmed, list(texts), logits, bpb_lines=bpb_lines if bpb else 0, greedy=greedy,
                    langs=langs)
    if json_out:
        write_json(json_out, rep, ensure_ascii=False)
    click.echo(f"loads: yes   n_vocab {rep['n_vocab_original']:,} -> {rep['n_vocab_trimmed']:,}   "
               f"size {human_size(rep['size_original'])} -> {human_size(rep['size_trimmed'])}")
    for f in rep["files"]:
        click.echo(f"{f['path']}: {f['identical_lines']:,}/{f['lines']:,} lines identical "
                   f"({f['line_fidelity']:.3%}), tokens {f['tokens_original']:,} -> {f['tokens_trimmed']:,}")
        for ex in f["worst"][:3]:
            click.echo(f"   differs: {ex['line'][:80]!r}")
        if "bpb_original" in f:
            click.echo(f"   bits per byte over {f['bpb_lines']} lines: {f['bpb_original']:.4f} -> "
                       f"{f['bpb_trimmed']:.4f} ({f['bpb_change']:+.2%})")
    if rep["suppress_count"]:
        line = (f"suppress list: {rep['suppress_count']} ids, {rep['suppress_by_guard']} of them never allowed by "
                "the script guard")
        if "greedy_steps" in rep:
            line += (f"; greedy over {rep['greedy_lines']} lines ({rep['greedy_steps']} steps) wanted a listed id "
                     f"{len(rep['greedy_suppressed_hits'])} times")
        click.echo(line)
    if rep.get("logits_max_abs_diff") is not None:
        click.echo(f"logits: max |diff| at kept ids = {rep['logits_max_abs_diff']:g} over "
                   f"{rep['logits_lines']} lines ({rep['logits_positions']} positions)")
    if rep["suppress_problems"]:
        raise TrimError(f"{trimmed}: {rep['suppress_problems'][0]}")
    if rep.get("greedy_suppressed_hits"):
        hit = rep["greedy_suppressed_hits"][0]
        raise TrimError(f"{trimmed}: greedy output of {hit['line']!r} wants suppressed id {hit['token']}")


@click.command()
@click.argument("model", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
def inspect(model, as_json):
    """Architecture, tokenizer, vocab tensors and their share of the file, scripts of the vocab."""
    from gguf_trim.api import inspect as do_inspect

    r = do_inspect(model)
    if as_json:
        click.echo(json.dumps(r, ensure_ascii=False, indent=1))
        return
    click.echo(f"{r['path']}: {r['arch']} ({r['name']}), {human_size(r['file_size'])}, GGUF v{r['gguf_version']}")
    if r["shards"]:
        click.echo(f"split model, {len(r['shards'])} shards: " + ", ".join(
            f"{Path(x['path']).name} ({human_size(x['size'])}, {x['tensors']} tensors)" for x in r["shards"]))
    click.echo(f"tokenizer: {r['tokenizer']} pre={r['pre']} n_vocab={r['n_vocab']:,} merges={r['n_merges']:,}")
    click.echo("token types: " + ", ".join(f"{k} {v:,}" for k, v in r["token_types"].items()))
    for t in r["vocab_tensors"]:
        click.echo(f"  {t['name']:<28} {t['type']:<6} {str(t['shape']):<16} {human_size(t['bytes']):>10} "
                   f"{t['share_of_file']:6.1%}")
    click.echo(f"vocab tensors: {r['vocab_share_of_file']:.1%} of the file")
    click.echo("scripts: " + ", ".join(f"{k} {v:,}" for k, v in list(r["scripts"].items())[:16]))
    if r["trimmed_from"]:
        click.echo(f"trimmed by gguf-trim from {r['trimmed_from']}")
    if s := r["suppress"]:
        click.echo(f"suppress list (tokenizer.ggml.suppress_tokens): {s['count']:,} ids; {s['byte_tokens']} byte "
                   f"tokens ({s['bytes'] or 'none'}), {s['multi_byte_tokens']} longer tokens"
                   + (": " + ", ".join(repr(x) for x in s["examples"]) if s["examples"] else ""))
    else:
        click.echo("suppress list: none (stock llama.cpp may sample every token)")


@click.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
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
