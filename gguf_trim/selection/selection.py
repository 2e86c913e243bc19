"""Choosing which tokens to keep: the lossless profile for a language set and its closure.

Why the closure is cheap: a token kept by the character rule has only kept-by-rule
substrings (their characters, or the characters their partial UTF-8 bytes can belong to, are
a subset of its own), and every token llama.cpp forms on the way to a token is a substring
of it. So only tokens removed for another reason (a --drop list, UNUSED padding, an edited
plan) can be missing from a kept token's derivation, and only kept tokens that contain such
a token need their derivation replayed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.langs import LanguageSet, language_set
from gguf_trim.vocab.charset import CharacterSet
from gguf_trim.vocab.tokenizer import literal_regex
from gguf_trim.vocab.vocabulary import BYTE, SPECIAL_TYPES, UNUSED, Vocab

REASONS = ("special", "special-id", "byte", "script", "corpus", "words", "prior", "needed", "keep-list", "closure",
           "plan")


@dataclass
class Selection:
    vocab: Vocab
    keep: np.ndarray  # bool per original id
    why: dict[int, str]  # reason per kept id
    allowed: np.ndarray  # bool per original id: all its characters are in the language set
    dropped_label: dict[int, str] = field(default_factory=dict)  # why each dropped id went
    closure_added: list[int] = field(default_factory=list)
    langs: tuple[str, ...] = ("en", "vi")
    profile: str = "lossless"
    detail: dict[int, dict] = field(default_factory=dict)  # per kept id: the evidence behind it (compact)
    info: dict = field(default_factory=dict)  # how the selection was made (compact: corpus, target...)

    @property
    def kept_ids(self) -> np.ndarray:
        return np.flatnonzero(self.keep)

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    @property
    def language_set(self) -> LanguageSet:
        return language_set(self.langs)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {r: 0 for r in REASONS}
        for r in self.why.values():
            counts[r] = counts.get(r, 0) + 1
        return {k: v for k, v in counts.items() if v}


def required_ids(vocab: Vocab) -> dict[int, str]:
    """Tokens that must survive any trim: specials, ids named by special keys, the 256 bytes."""
    req: dict[int, str] = {}
    for i in np.flatnonzero(np.isin(vocab.types, SPECIAL_TYPES)).tolist():
        req[i] = "special"
    for i in [*vocab.special_ids.values(), *vocab.implicit_special_ids.values()]:
        if 0 <= i < vocab.n:
            req.setdefault(i, "special-id")
    for i in vocab.byte_token_ids():
        req.setdefault(i, "byte")
    if not vocab.byte_level:  # <0xNN> byte tokens (SentencePiece, Gemma 4)
        for i in np.flatnonzero(vocab.types == BYTE).tolist():
            req.setdefault(i, "byte")
    return req


def read_token_list(path: str | Path, vocab: Vocab) -> list[int]:
    """Token ids from a --keep/--drop file: one token text per line (stored form such as
    'Ġhello' or the piece ' hello'), or JSONL objects with "id" or "text"."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").split("\n")  # not splitlines(): tokens may hold U+2028, U+0085...
    except (OSError, UnicodeDecodeError) as e:
        raise TrimError(f"{p}: cannot read token list ({e})") from None
    by_piece: dict[bytes, int] = {}
    for i, pc in enumerate(vocab.pieces):
        by_piece.setdefault(pc, i)
    ids = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        text: str | None = line
        if line.lstrip().startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrimError(f"{p}:{n}: invalid JSON ({e.msg})") from None
            if "id" in obj:
                i = obj["id"]
                if not isinstance(i, int) or not 0 <= i < vocab.n:
                    raise TrimError(f"{p}:{n}: id {i!r} is not a token id of this vocabulary (0..{vocab.n - 1})")
                ids.append(i)
                continue
            text = obj.get("text")
            if not isinstance(text, str):
                raise TrimError(f"{p}:{n}: a JSON line needs \"id\" or \"text\"")
        b = text.encode("utf-8")
        i = vocab.token_to_id.get(b, by_piece.get(b))
        if i is None:
            raise TrimError(f"{p}:{n}: {text!r} is not a token of this vocabulary")
        ids.append(i)
    return ids


def select_lossless(vocab: Vocab, langs: str | LanguageSet = "en,vi", keep_list: list[int] | None = None,
                    drop_list: list[int] | None = None) -> Selection:
    """Keep what text of the language set can produce, the specials and the bytes, then close."""
    lset = language_set(langs)
    n = vocab.n
    keep = np.zeros(n, dtype=bool)
    why: dict[int, str] = {}
    dropped: dict[int, str] = {}
    required = required_ids(vocab)
    types = vocab.types.tolist()
    allowed, labels = judge_vocab(vocab, lset.chars)
    for i in range(n):
        if i in required:
            keep[i], why[i] = True, required[i]
        elif types[i] == UNUSED:
            dropped[i] = "unused"
        elif allowed[i]:
            keep[i], why[i] = True, "script"
        else:
            dropped[i] = labels[i]
    for i in keep_list or ():
        if not keep[i]:
            keep[i], why[i] = True, "keep-list"
            dropped.pop(i, None)
    manual = set()
    for i in drop_list or ():
        if i in required:
            raise TrimError(f"refusing to drop token {i} {vocab.display(i)!r}: it is a {required[i]} token, "
                            "which llama.cpp needs")
        if keep[i]:
            keep[i] = False
            why.pop(i, None)
            dropped[i] = "drop-list"
            manual.add(i)
    sel = Selection(vocab, keep, why, allowed, dropped, langs=lset.codes)
    close(sel, refuse=manual, refuse_reason="it is in the --drop list")
    return sel


def judge_vocab(vocab: Vocab, chars: CharacterSet) -> tuple[np.ndarray, list[str]]:
    """The character judgement of every token: (allowed per id, label per id)."""
    judge_bytes = chars.judge_bytes
    allowed = np.zeros(vocab.n, dtype=bool)
    labels = []
    for i, pc in enumerate(vocab.pieces):
        ok, label = judge_bytes(pc)
        allowed[i] = ok
        labels.append(label)
    return allowed, labels


def close(sel: Selection, refuse: set[int] = frozenset(), refuse_reason: str = "") -> None:
    """Add back every dropped token that a kept token's derivation passes through.
    A needed token in `refuse` is an error rather than a silent re-add."""
    vocab, keep, allowed = sel.vocab, sel.keep, sel.allowed
    special = np.isin(vocab.types, SPECIAL_TYPES + (BYTE,))
    # Only a dropped token whose characters are allowed can be a substring of an allowed kept
    # token; kept tokens that are not allowed themselves (--keep) are always replayed.
    suspects = np.flatnonzero(~keep & allowed).tolist()
    todo = np.flatnonzero(keep & ~allowed & ~special).tolist()
    if suspects:
        texts = sorted({vocab.tokens[i].decode("utf-8", "replace") for i in suspects}, key=len, reverse=True)
        shortest = len(texts[-1])
        pattern = literal_regex(texts)
        todo += [i for i in np.flatnonzero(keep & allowed & ~special).tolist()
                 if len(vocab.tokens[i]) > shortest and pattern.search(vocab.tokens[i].decode("utf-8", "replace"))]
    while todo:
        nxt = []
        for i in todo:
            for j in vocab.derivation(i) or ():
                if keep[j]:
                    continue
                if j in refuse:
                    raise TrimError(f"refusing to drop token {j} {vocab.display(j)!r}: {refuse_reason}, but "
                                    f"kept token {i} {vocab.display(i)!r} is built from it")
                keep[j] = True
                sel.why[j] = "closure"
                sel.dropped_label.pop(j, None)
                sel.closure_added.append(j)
                nxt.append(j)
        todo = nxt


def kept_merges(vocab: Vocab, keep: np.ndarray) -> list[bytes]:
    """Merges to write: a merge goes when its left part, right part or result is a dropped token."""
    if not vocab.merges:
        return []
    t2i = vocab.token_to_id
    out = []
    for m in vocab.merges:
        s = m.decode("utf-8", "replace")
        sp = s.find(" ", 1)
        parts = (s, "") if sp < 0 else (s[:sp], s[sp + 1:])
        ok = True
        for piece in (parts[0], parts[1], parts[0] + parts[1]):
            j = t2i.get(piece.encode())
            if j is not None and not keep[j]:
                ok = False
                break
        if ok:
            out.append(m)
    return out
