"""Checking a trimmed file against its original through llama-cpp-python itself.

Tokenization fidelity: each line tokenized by both files, the trimmed ids mapped back
through the provenance (gguf_trim.kept_ids), must be the original ids. Logits: the same
token sequence fed to both models; the trimmed logits must equal the original's at the
kept ids (on CPU exactly: every output row is the same dot product over the same bytes).
Suppress list: every listed id is a kept token the script guard forbids in every state or one
the original listed itself, and greedy output on the check lines never wanted a listed id (so
stock llama.cpp, which applies the list, writes what it wrote before).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.format import keys
from gguf_trim.format.shards import model_size, open_model
from gguf_trim.langs import LanguageSet, file_langs, language_set
from gguf_trim.runtime.llama import check_loads, end_ids, last_logits, load_llama, tokenize
from gguf_trim.vocab.suppress import file_suppress, suppressible
from gguf_trim.vocab.vocabulary import Vocab


def kept_ids_of(trimmed: str | Path, original_n_vocab: int | None = None) -> np.ndarray:
    """Original id of every token of a trimmed file, from its provenance metadata."""
    with open_model(trimmed) as g:
        kept = g.get(keys.KEPT_IDS)
        src_n = g.get(keys.SOURCE_N_VOCAB)
    if not isinstance(kept, np.ndarray):
        raise TrimError(f"{trimmed}: no gguf_trim.kept_ids: not a file written by gguf-trim")
    if original_n_vocab is not None and src_n != original_n_vocab:
        raise TrimError(f"{trimmed} was trimmed from a {src_n}-token vocabulary, but the original given has "
                        f"{original_n_vocab} tokens")
    return kept.astype(np.int64)


def read_lines(path: str | Path) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return [ln.rstrip("\n").rstrip("\r") for ln in f if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise TrimError(f"{path}: cannot read text ({e})") from None


def line_fidelity(orig, trim, kept: np.ndarray, lines: Iterable[str], worst: int = 5) -> dict[str, Any]:
    n = same = 0
    tok_o = tok_t = 0
    examples = []
    for line in lines:
        a = tokenize(orig, line)
        b = tokenize(trim, line)
        n += 1
        tok_o += len(a)
        tok_t += len(b)
        mapped = [int(kept[i]) if i < len(kept) else -1 for i in b]
        if mapped == a:
            same += 1
        elif len(examples) < worst:
            examples.append({"line": line[:200], "original_tokens": len(a), "trimmed_tokens": len(b),
                             "original": [orig.detokenize([i]).decode("utf-8", "replace") for i in a[:40]],
                             "trimmed": [trim.detokenize([i]).decode("utf-8", "replace") for i in b[:40]]})
    return {"lines": n, "identical_lines": same, "line_fidelity": same / n if n else 1.0,
            "tokens_original": tok_o, "tokens_trimmed": tok_t, "worst": examples}


def logits_diff(original: str | Path, trimmed: str | Path, kept: np.ndarray, lines: list[str],
                n_ctx: int = 256) -> dict[str, Any]:
    """Max |logit difference| at the kept ids over the given lines (same token sequence in both)."""
    new_of = np.full(int(kept.max()) + 1, -1, dtype=np.int64)
    new_of[kept] = np.arange(len(kept))
    lo = load_llama(original, n_ctx=n_ctx, logits_all=True)
    lt = load_llama(trimmed, n_ctx=n_ctx, logits_all=True)
    worst, compared, positions = 0.0, 0, 0
    try:
        for line in lines:
            ids = tokenize(lo, line, add_bos=True)  # BOS only where the vocab asks for it
            ids = ids[: n_ctx - 1]
            if len(ids) < 1 or (np.asarray(ids) >= len(new_of)).any() or (new_of[ids] < 0).any():
                continue
            lo.reset()
            lo.eval(ids)
            a = np.array(lo.scores[: lo.n_tokens])[:, kept]
            lt.reset()
            lt.eval(new_of[ids].tolist())
            b = np.array(lt.scores[: lt.n_tokens])[:, : len(kept)]
            worst = max(worst, float(np.abs(a - b).max()))
            compared += 1
            positions += len(ids)
    finally:
        lo.close()
        lt.close()
    return {"logits_lines": compared, "logits_positions": positions, "logits_max_abs_diff": worst}


def line_bits(model: str | Path, lines: list[str], n_ctx: int = 512, n_threads: int | None = None) -> list:
    """(bits, UTF-8 bytes) the model spends on each line, or None where the line does not fit.
    Each line is scored on its own after the vocabulary's BOS (its EOS if it has none), so every
    token of the line is predicted and the bytes are exactly the line's."""
    llm = load_llama(model, n_ctx=n_ctx, logits_all=True, n_threads=n_threads)
    out: list = []
    try:
        start = llm.token_bos() if llm.token_bos() >= 0 else llm.token_eos()
        for x in lines:
            ids = [start] + tokenize(llm, x)
            if len(ids) < 2 or len(ids) > n_ctx:
                out.append(None)
                continue
            llm.reset()
            llm.eval(ids)
            a = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
            m = a.max(axis=1)
            lse = m + np.log(np.exp(a - m[:, None]).sum(axis=1))
            nats = float((lse - a[np.arange(len(ids) - 1), ids[1:]]).sum())
            out.append((nats / np.log(2), len(x.encode("utf-8"))))
    finally:
        llm.close()
    return out


def bits_per_byte(model: str | Path, lines: list[str], n_ctx: int = 512) -> float:
    """Bits per UTF-8 byte over the lines that fit (see line_bits)."""
    scored = [r for r in line_bits(model, lines, n_ctx) if r is not None]
    size = sum(b for _, b in scored)
    return sum(bits for bits, _ in scored) / size if size else float("nan")


def line_bits_per_file(model: str | Path, files: list[list[str]], n_ctx: int = 512) -> list[list]:
    """`line_bits` of several files' lines, the model loaded once."""
    flat = iter(line_bits(model, [x for lines in files for x in lines], n_ctx))
    return [list(itertools.islice(flat, len(lines))) for lines in files]


def bpb_summary(a: list, b: list) -> dict[str, Any]:
    """Bits per byte of two `line_bits` results over the lines both scored."""
    both = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    size = sum(x[1] for x, _ in both)
    bo = sum(x[0] for x, _ in both) / size if size else float("nan")
    bt = sum(y[0] for _, y in both) / size if size else float("nan")
    return {"bpb_lines": len(both), "bpb_bytes": size, "bpb_original": bo, "bpb_trimmed": bt,
            "bpb_change": bt / bo - 1 if size else float("nan")}


def check_suppress(original: str | Path, trimmed: str | Path, kept: np.ndarray,
                   langs: str | LanguageSet | None = None) -> dict[str, Any]:
    """Is every id of the trimmed file's suppress list of the right kind for its language set (`langs`,
    default the one recorded in the file, else en,vi)? (see the module docstring)"""
    with open_model(trimmed) as g:
        vt = Vocab.from_gguf(g)
        ids = file_suppress(g)
        lset = language_set(langs) if langs is not None else file_langs(g) or language_set(None)
    with open_model(original) as g:
        source_ids = set(file_suppress(g).tolist())
    specials = vt.named_special_ids
    guard_ids = set(suppressible(vt.pieces, vt.types, lset.chars, specials).tolist())
    problems = []
    for i in ids.tolist():
        if not 0 <= i < vt.n:
            problems.append(f"suppressed id {i} is not a token of the {vt.n}-token vocabulary")
        elif i in specials:
            problems.append(f"suppressed id {i} ({vt.display(i)!r}) is a special token")
        elif i not in guard_ids and not (i < len(kept) and int(kept[i]) in source_ids):
            problems.append(f"suppressed id {i} ({vt.display(i)!r}) can be part of allowed output and the "
                            "original does not list it")
    return {"suppress_count": len(ids), "suppress_by_guard": len(guard_ids & set(ids.tolist())),
            "suppress_problems": problems, "suppress_ids": ids}


def greedy_avoids(model: str | Path, ids: np.ndarray, lines: list[str], max_tokens: int = 24,
                  n_ctx: int = 512) -> dict[str, Any]:
    """Greedy continuation of each line without the suppress list: does it ever choose a listed id?
    (If not, the output with the list is the same token for token.)"""
    llm = load_llama(model, n_ctx=n_ctx)
    listed, ends = set(ids.tolist()), set(end_ids(llm))
    hits, steps = [], 0
    try:
        for line in lines:
            seq = tokenize(llm, line, add_bos=True)[: n_ctx - max_tokens]
            llm.reset()
            llm.eval(seq)
            for _ in range(max_tokens):
                tok = int(np.argmax(last_logits(llm)))
                steps += 1
                if tok in listed:
                    hits.append({"line": line[:80], "token": tok})
                    break
                if tok in ends:
                    break
                llm.eval([tok])
    finally:
        llm.close()
    return {"greedy_lines": len(lines), "greedy_steps": steps, "greedy_suppressed_hits": hits}


def verify(original: str | Path, trimmed: str | Path, texts: list[str | Path] = (), logits: int = 0,
           worst: int = 5, bpb_lines: int = 0, greedy: int = 4, langs: str | LanguageSet | None = None
           ) -> dict[str, Any]:
    """Fidelity, logits and load report of a trimmed file (see the module docstring)."""
    for path in (original, trimmed):  # what trim would refuse in the input, said as trim says it
        if not Path(path).is_file():
            raise TrimError(f"{path}: no such file")
        with open_model(path) as g:
            Vocab.from_gguf(g)
    check_loads(original, trimmed)  # both children at once
    orig = load_llama(original, vocab_only=True)
    trim = load_llama(trimmed, vocab_only=True)
    try:
        kept = kept_ids_of(trimmed, orig.n_vocab())
        if len(kept) > trim.n_vocab():  # padding tokens (see rewrite.padding_rows) come after the kept ones
            raise TrimError(f"{trimmed}: gguf_trim.kept_ids has {len(kept)} ids for {trim.n_vocab()} tokens")
        report: dict[str, Any] = {
            "original": str(original), "trimmed": str(trimmed), "loads": True,
            "n_vocab_original": orig.n_vocab(), "n_vocab_trimmed": trim.n_vocab(),
            "size_original": model_size(original), "size_trimmed": model_size(trimmed),
            "files": [],
        }
        all_lines: list[str] = []
        per_file: list[list[str]] = []
        for path in texts:
            lines = read_lines(path)
            all_lines.extend(lines)
            per_file.append(lines)
            r = line_fidelity(orig, trim, kept, lines, worst)
            report["files"].append({"path": str(path), **r})
    finally:
        orig.close()
        trim.close()
    if bpb_lines:
        samples = [spread_lines(lines, bpb_lines) for lines in per_file]
        for f, a, b in zip(report["files"], line_bits_per_file(original, samples),
                           line_bits_per_file(trimmed, samples)):
            f.update(bpb_summary(a, b))
    sup = check_suppress(original, trimmed, kept, langs)
    listed = sup.pop("suppress_ids")
    report.update(sup)
    with open_model(trimmed) as g:
        has_weights = bool(g.tensors)
    if greedy and len(listed) and has_weights:
        sample = spread_lines(all_lines, greedy) if all_lines else ["Hello world.", "Xin chào thế giới."][:greedy]
        report.update(greedy_avoids(trimmed, listed, sample))
    report["logits_max_abs_diff"] = None
    if logits:
        sample = spread_lines(all_lines, logits) if all_lines else ["Hello world.", "Xin chào thế giới."][:logits]
        report.update(logits_diff(original, trimmed, kept, sample))
    return report


def spread_lines(lines: list[str], n: int) -> list[str]:
    """n lines spread evenly over the list (both languages when files are concatenated): the
    samples of bits-per-byte and logits comparisons."""
    if n >= len(lines):
        return lines
    idx = np.linspace(0, len(lines) - 1, n).round().astype(int)
    return [lines[i] for i in idx]
