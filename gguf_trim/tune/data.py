"""The training data of `finetune`: translation pairs read, cleaned, split, and rendered as the exact
token sequences `gguf-trim translate` decodes (no PyTorch here).

Hygiene, in order: whitespace normalised (translate flattens a segment the same way), empty or
over-long pairs dropped, exact duplicates dropped, pairs with a character outside the kept
English/Vietnamese set dropped (the trimmed model could not write it), pairs whose English side is not
detected as English or whose Vietnamese side is not Vietnamese dropped (the language check translate
uses). Then a held-out slice is drawn (seeded) and every training pair sharing a side with a held-out
pair is dropped too, so no held-out text is ever trained on.
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gguf_trim.errors import TrimError

MAX_CHARS = 2000  # a pair side longer than this is a document, not a segment


@dataclass
class Example:
    """One rendered example: prompt ids then target ids; the loss is on the target only."""

    ids: list[int]
    n_prompt: int
    direction: str  # en-vi, vi-en, or text (monolingual, loss on every token)


@dataclass
class PairData:
    train: list[tuple[str, str]]
    heldout: list[tuple[str, str]]
    dropped: Counter = field(default_factory=Counter)
    read: int = 0


def read_pair_file(path: str | Path) -> list[tuple[str, str]]:
    """English/Vietnamese pairs from a TSV (english<TAB>vietnamese[<TAB>anything]) or JSON lines with
    fields "en" and "vi"."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TrimError(f"{path}: cannot read pairs ({getattr(e, 'strerror', None) or e})") from None
    pairs: list[tuple[str, str]] = []
    if p.suffix in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                pairs.append((str(rec["en"]), str(rec["vi"])))
            except (ValueError, KeyError, TypeError):
                raise TrimError(f"{path}:{n}: expected a JSON object with fields \"en\" and \"vi\"") from None
    else:
        for n, row in enumerate(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise TrimError(f"{path}:{n}: one column; expected English<TAB>Vietnamese")
            pairs.append((row[0], row[1]))
    if not pairs:
        raise TrimError(f"{path}: no English/Vietnamese pairs")
    return pairs


def clean_pairs(pairs: list[tuple[str, str]], heldout: int, seed: int = 0) -> PairData:
    """The hygiene of the module docstring; `heldout` pairs (at most a tenth) kept apart."""
    from gguf_trim.runtime.langid import detector
    from gguf_trim.translate.translator import foreign_chars

    det = detector()
    dropped: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    good: list[tuple[str, str]] = []
    for en, vi in pairs:
        en, vi = " ".join(en.split()), " ".join(vi.split())
        if not en or not vi:
            dropped["empty side"] += 1
        elif len(en) > MAX_CHARS or len(vi) > MAX_CHARS:
            dropped["too long"] += 1
        elif (en, vi) in seen:
            dropped["duplicate"] += 1
        elif foreign_chars(en) or foreign_chars(vi):
            dropped["characters outside English/Vietnamese"] += 1
        elif det.detect(vi) != "vi" or det.detect(en) != "en":
            dropped["wrong language"] += 1
        else:
            seen.add((en, vi))
            good.append((en, vi))
    if not good:
        raise TrimError("no pair is left after cleaning (" + ", ".join(f"{k} {v}" for k, v in dropped.items()) + ")")
    rng = random.Random(seed)
    order = list(range(len(good)))
    rng.shuffle(order)
    n_held = min(heldout, len(good) // 10)
    held = [good[i] for i in sorted(order[:n_held])]
    held_sides = {s for pair in held for s in pair}
    train = []
    for i in sorted(order[n_held:]):
        if good[i][0] in held_sides or good[i][1] in held_sides:
            dropped["shares a side with a held-out pair"] += 1
        else:
            train.append(good[i])
    if not train:
        raise TrimError("no training pair is left after the held-out slice")
    return PairData(train, held, dropped, len(pairs))


def render_pair(tr, en: str, vi: str, direction: str) -> Example:
    """The example `translate` would decode for this pair in this direction (its prompt tokens, the
    model's own prompt kind and style), with the reference as the answer and the end the translator
    stops at: the chat turn's end token, or a newline after a few-shot answer."""
    src, dst = direction.split("-")
    text, ref = (en, vi) if src == "en" else (vi, en)
    prompt = tr.prompt_tokens(text, src, dst)
    llm = tr._llm
    if tr.prompt == "chat":
        m = llm._model
        end = m.token_eot() if m.token_eot() != -1 else llm.token_eos()
        target = llm.tokenize(ref.encode("utf-8"), add_bos=False, special=False) + [end]
    else:
        target = llm.tokenize(f" {ref}\n".encode(), add_bos=False, special=False)
    return Example(prompt + target, len(prompt), direction)


def render_text(tr, line: str, seq_len: int) -> Example | None:
    """A monolingual line for next-token loss (after BOS where the vocabulary has one)."""
    llm = tr._llm
    bos = [llm.token_bos()] if llm.token_bos() >= 0 else []
    ids = bos + llm.tokenize(line.encode("utf-8"), add_bos=False, special=False)
    return Example(ids[:seq_len], len(bos), "text") if len(ids) > len(bos) + 1 else None
