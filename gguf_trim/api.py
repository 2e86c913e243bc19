"""The library's entry points; the CLI is a thin layer over these."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.files import check_output
from gguf_trim.format import keys
from gguf_trim.format.shards import open_model
from gguf_trim.rewrite.metadata import vocab_tensors
from gguf_trim.rewrite.model import ModelWriter, TrimResult
from gguf_trim.selection.plan import read_plan, write_plan
from gguf_trim.selection.selection import Selection, read_token_list, select_lossless
from gguf_trim.vocab.charset import script_label
from gguf_trim.vocab.suppress import describe as describe_suppress
from gguf_trim.vocab.suppress import file_suppress
from gguf_trim.vocab.vocabulary import TYPE_NAMES, Vocab

PROFILES = ("lossless", "compact")


@dataclass(frozen=True, kw_only=True)
class CompactOptions:
    """What the compact profile is chosen from (see compact.py)."""
    corpus: list[str] = field(default_factory=list)  # files, folders, hf:NAME[:split][:field]
    field: str | None = None  # JSON lines / Parquet / HF field
    columns: list[int] | None = None  # TSV columns
    target_size: int | None = None  # tokens in the output, padding included (default: half)
    min_count: int | None = None  # instead of a size: keep what the corpus shows this often
    words: bool = True  # use wordfreq's common-word lists
    cache: bool = True  # reuse token counts cached by (tokenizer, corpus)
    progress: bool = False
    workers: int | None = None

# Above this many bytes of unchanged tensors the copy starts before the selection (a few MB of
# header reserve buy seconds); below it the header is sized exactly.
OVERLAP_MIN_BYTES = 1 << 30


def make_selection(vocab: Vocab, langs: str = "en,vi", profile: str = "lossless", plan: str | Path | None = None,
                   keep: str | Path | None = None, drop: str | Path | None = None,
                   compact: CompactOptions | None = None) -> Selection:
    """Choose the tokens to keep: from a plan file, or by the profile plus keep/drop lists."""
    compact_given = compact is not None and bool(compact.corpus or compact.target_size or compact.min_count)
    if plan is not None:
        if keep or drop:
            raise TrimError("--plan already lists the kept tokens; edit the plan instead of adding --keep/--drop")
        if compact_given:
            raise TrimError("--corpus, --target-size and --min-count belong to --profile compact, not to --plan")
        return read_plan(plan, vocab)
    if profile not in PROFILES:
        raise TrimError(f"unknown profile {profile!r} (available: {', '.join(PROFILES)})")
    keep_ids = read_token_list(keep, vocab) if keep else None
    drop_ids = read_token_list(drop, vocab) if drop else None
    if profile == "lossless":
        if compact_given:
            raise TrimError("--corpus, --target-size and --min-count belong to --profile compact")
        return select_lossless(vocab, langs, keep_ids, drop_ids)
    from gguf_trim.selection.compact import gather_evidence, select_compact

    c = compact or CompactOptions()
    if c.target_size is not None and c.min_count is not None:
        raise TrimError("give either --target-size or --min-count, not both")
    if c.min_count is not None and not c.corpus:
        raise TrimError("--min-count needs a --corpus to count in")
    ev = gather_evidence(vocab, vocab.source, c.corpus, c.field, c.columns, langs, c.words, c.cache, c.progress,
                         c.workers)
    return select_compact(vocab, ev, c.target_size, c.min_count, langs, keep_ids, drop_ids)


def plan(model: str | Path, plan_out: str | Path, langs: str = "en,vi", profile: str = "lossless",
         keep: str | Path | None = None, drop: str | Path | None = None,
         compact: CompactOptions | None = None) -> tuple[Selection, int]:
    """Choose the tokens and write only the plan (a reviewable file `trim --plan` applies); works on
    vocab-only GGUFs. Returns the selection and the original n_vocab."""
    with open_model(model) as g:
        vocab = Vocab.from_gguf(g)
        sel = make_selection(vocab, langs, profile, None, keep, drop, compact)
        write_plan(plan_out, sel, source=g.path.name)
    return sel, vocab.n


def trim(model: str | Path, output: str | Path, langs: str = "en,vi", profile: str = "lossless",
         plan: str | Path | None = None, keep: str | Path | None = None, drop: str | Path | None = None,
         plan_out: str | Path | None = None, check: bool = True,
         overlap: bool | None = None, compact: CompactOptions | None = None,
         hash_source: bool = False, layout: str = "same",
         split_max_size: int | None = None, suppress: bool = True,
         progress: bool = False) -> tuple[TrimResult, Selection]:
    """Trim `model` (a file, or a split model given by any shard) to the chosen tokens and write
    `output` (and optionally the plan).
    `overlap`: copy the unchanged tensors while choosing tokens (default: for files over 1 GiB).
    `hash_source`: record the source file's sha256 (one more full read, on its own core).
    `layout`: `same` (a split model stays split the same way), `merge` (one file) or `max-size`
    (shards of at most `split_max_size` bytes of tensor data, as llama.cpp's gguf-split).
    `suppress`: write tokenizer.ggml.suppress_tokens, the kept tokens that can never be part of
    allowed output, so stock llama.cpp samplers cannot emit them either (vocab/suppress.py).
    `progress`: a progress bar on stderr while a file of 1 GB or more is written (rewrite/model.py)."""
    check_output(output, model)  # before parsing the model, for a fast refusal
    if split_max_size is not None and layout == "same":
        layout = "max-size"
    with open_model(model) as g:
        vocab = Vocab.from_gguf(g)
        writer = ModelWriter(g, output, vocab.n, check, hash_source, layout, split_max_size, suppress,
                             progress)
        if overlap is None:
            overlap = writer.fixed_bytes >= OVERLAP_MIN_BYTES
        try:
            if overlap and layout != "max-size":  # big file: copy the unchanged tensors meanwhile
                writer.start()
            sel = make_selection(vocab, langs, profile, plan, keep, drop, compact)
            if plan_out is not None:
                write_plan(plan_out, sel, source=g.path.name)
            result = writer.finish(sel)
        finally:
            writer.abort()
    return result, sel


def inspect(model: str | Path) -> dict[str, Any]:
    """What the file holds: architecture, tokenizer, vocab tensors and their share, scripts."""
    with open_model(model) as g:
        vocab = Vocab.from_gguf(g)
        vt = vocab_tensors(g, vocab.n)
        tensor_bytes = sum(t.nbytes for t in g.tensors)
        scripts = collections.Counter()
        types = vocab.types.tolist()
        for i, pc in enumerate(vocab.pieces):
            ty = types[i]
            scripts[TYPE_NAMES.get(ty, str(ty)) if ty not in (0, 1) else script_label(pc)] += 1
        return {
            "path": str(g.path), "file_size": g.size, "gguf_version": g.version, "arch": g.arch,
            "shards": [{"path": str(s.path), "size": s.size, "tensors": len(s.tensors)} for s in g.shards]
            if g.is_split else None,
            "name": g.fields["general.name"].text() if "general.name" in g.fields else None,
            "tokenizer": vocab.model, "pre": vocab.pre_type, "n_vocab": vocab.n,
            "n_merges": len(vocab.merges or ()), "vocab_sha256": vocab.sha256,
            "token_types": {TYPE_NAMES.get(int(k), str(k)): int(v)
                            for k, v in zip(*np.unique(vocab.types, return_counts=True))},
            "vocab_tensors": [{"name": t.name, "type": t.type_name, "shape": list(t.shape), "bytes": t.nbytes,
                               "share_of_file": t.nbytes / g.size} for t in vt],
            "vocab_tensor_bytes": sum(t.nbytes for t in vt), "tensor_bytes": tensor_bytes,
            "vocab_share_of_file": sum(t.nbytes for t in vt) / g.size,
            "scripts": dict(scripts.most_common()),
            "trimmed_from": g.fields[keys.SOURCE_FILE].text() if keys.SOURCE_FILE in g.fields else None,
            "suppress": describe_suppress(vocab.pieces, vocab.types, ids) if len(ids := file_suppress(g)) else None,
        }


def diff_vocabs(a: str | Path, b: str | Path, show: int = 20) -> dict[str, Any]:
    """Are two vocabularies identical, and where do they differ?"""
    with open_model(a) as ga, open_model(b) as gb:
        va, vb = Vocab.from_gguf(ga), Vocab.from_gguf(gb)
    n = min(va.n, vb.n)
    diff_ids = [i for i in range(n) if va.tokens[i] != vb.tokens[i]]
    type_diff = [i for i in range(n) if va.types[i] != vb.types[i]]
    prefix = diff_ids[0] if diff_ids else n
    set_a, set_b = set(va.tokens), set(vb.tokens)
    ma, mb = va.merges or [], vb.merges or []
    merge_prefix = next((i for i, (x, y) in enumerate(zip(ma, mb)) if x != y), min(len(ma), len(mb)))
    same_scores = (va.scores is None and vb.scores is None) or (
        va.scores is not None and vb.scores is not None and va.n == vb.n and bool((va.scores == vb.scores).all()))
    differs = [what for what, same in (("model", va.model == vb.model), ("pre", va.pre == vb.pre),
                                       ("tokens", not diff_ids and va.n == vb.n), ("types", not type_diff),
                                       ("scores", same_scores), ("merges", ma == mb)) if not same]
    return {
        "a": str(a), "b": str(b), "identical": va.sha256 == vb.sha256, "differs_in": differs,
        "tokenizer": [va.model, vb.model], "pre": [va.pre, vb.pre], "n_vocab": [va.n, vb.n],
        "same_ids_prefix": prefix, "differing_ids": len(diff_ids) + abs(va.n - vb.n),
        "differing_types": len(type_diff),
        "only_in_a": len(set_a - set_b), "only_in_b": len(set_b - set_a), "common_texts": len(set_a & set_b),
        "merges": [len(ma), len(mb)], "same_merges_prefix": merge_prefix,
        "examples": [{"id": i, "a": va.display(i), "b": vb.display(i)} for i in diff_ids[:show]],
    }
