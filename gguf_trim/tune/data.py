"""The training data of `finetune`: translation pairs read, cleaned, split, and rendered as the exact
token sequences `gguf-trim translate` decodes (no PyTorch here).

Hygiene, in order: whitespace normalised (translate flattens a segment the same way), empty or
over-long pairs dropped, exact duplicates dropped, pairs with a character outside the pair's two
languages dropped (a model trimmed to them could not write it), pairs whose sides are not detected in
their languages dropped (the language check translate uses). Then a held-out slice is drawn (seeded)
and every training pair sharing a side with a held-out pair is dropped too, so no held-out text is ever
trained on.

The pairs are English/Vietnamese unless they say otherwise: a TSV whose first line names two known
codes (`en<TAB>ko`) holds pairs of those languages in that column order, and `--pair en,ko` names them
for files without such a line (JSON lines then have fields `en` and `ko`).
"""

from __future__ import annotations

import csv
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gguf_trim.errors import TrimError
from gguf_trim.translate.prompts import header_codes, language, split_direction

EN_VI = ("en", "vi")
MAX_CHARS = 2000  # a pair side longer than this is a document, not a segment


@dataclass
class Example:
    """One rendered example: prompt ids then target ids; the loss is on the target only."""

    ids: list[int]
    n_prompt: int
    direction: str  # SRC-DST (en-vi, vi-en, ...), or text (monolingual, loss on every token)


@dataclass
class PairData:
    train: list[tuple[str, str]]
    heldout: list[tuple[str, str]]
    dropped: Counter = field(default_factory=Counter)
    read: int = 0
    langs: tuple[str, str] = EN_VI  # the two languages, in the order of each pair's sides


def parse_pair(pair: str | None) -> tuple[str, str] | None:
    """--pair 'en,ko' -> ('en', 'ko'); None stays None; a one-line TrimError for anything else."""
    if pair is None:
        return None
    parts = [p.strip() for p in pair.split(",")]
    if len(parts) != 2 or parts[0] == parts[1]:
        raise TrimError(f"--pair {pair!r}: expected two different language codes, e.g. en,ko")
    a, b = language(parts[0]).code, language(parts[1]).code
    if a == b:
        raise TrimError(f"--pair {pair!r}: expected two different language codes, e.g. en,ko")
    return a, b


def read_pair_files(paths: list[str | Path], pair: tuple[str, str] | None = None
                    ) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    """The pairs of every file, all of one language pair (a file's header line, else `pair`, else en,vi),
    each in that pair's order; a one-line TrimError when files name different languages."""
    langs: tuple[str, str] | None = pair
    out: list[tuple[str, str]] = []
    for path in paths:
        codes, pairs = read_pair_file(path, pair)
        if langs is None:
            langs = codes
        elif set(codes) != set(langs):
            raise TrimError(f"{path}: {codes[0]}<TAB>{codes[1]} pairs, but the other pairs are "
                            f"{langs[0]}<TAB>{langs[1]}")
        out += pairs if codes == langs else [(b, a) for a, b in pairs]
    return langs or EN_VI, out


def read_pair_file(path: str | Path, pair: tuple[str, str] | None = None
                   ) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    """The languages and pairs of a TSV (X<TAB>Y[<TAB>anything], after a first line naming X and Y when
    it has one) or of JSON lines with a field per language; the languages: the header's, else `pair`,
    else en,vi. A header that names other languages than `pair` is a one-line TrimError."""
    p = Path(path)
    langs = pair or EN_VI
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TrimError(f"{path}: cannot read pairs ({getattr(e, 'strerror', None) or e})") from None
    names = "/".join(language(c).name for c in langs)
    pairs: list[tuple[str, str]] = []
    if p.suffix in (".jsonl", ".json"):
        x, y = langs
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                pairs.append((str(rec[x]), str(rec[y])))
            except (ValueError, KeyError, TypeError):
                raise TrimError(f"{path}:{n}: expected a JSON object with fields \"{x}\" and \"{y}\"") from None
    else:
        header = None
        for n, row in enumerate(csv.reader(text.splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if not row or not "".join(row).strip():
                continue
            if header is None and not pairs:
                header = header_codes(row)
                if header:
                    if pair and set(header) != set(pair):
                        raise TrimError(f"{path}:{n}: a header naming {header[0]},{header[1]}, but --pair is "
                                        f"{pair[0]},{pair[1]}")
                    langs, names = header, "/".join(language(c).name for c in header)
                    continue
                header = ()  # a pair: no header further down
            if len(row) < 2:
                raise TrimError(f"{path}:{n}: one column; expected {names.replace('/', '<TAB>')}")
            pairs.append((row[0], row[1]))
    if not pairs:
        raise TrimError(f"{path}: no {names} pairs")
    return langs, pairs


def clean_pairs(pairs: list[tuple[str, str]], heldout: int, seed: int = 0,
                langs: tuple[str, str] = EN_VI) -> PairData:
    """The hygiene of the module docstring; `heldout` pairs (at most a tenth) kept apart; `langs`: the
    pairs' two languages, in side order."""
    from gguf_trim.langs import language_set
    from gguf_trim.runtime.langid import detector

    det = detector()
    lset = language_set(langs)
    x, y = langs
    outside = f"characters outside {'/'.join(language(c).name for c in langs)}"
    dropped: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    good: list[tuple[str, str]] = []
    for a, b in pairs:
        a, b = " ".join(a.split()), " ".join(b.split())
        if not a or not b:
            dropped["empty side"] += 1
        elif len(a) > MAX_CHARS or len(b) > MAX_CHARS:
            dropped["too long"] += 1
        elif (a, b) in seen:
            dropped["duplicate"] += 1
        elif lset.chars.foreign(a) or lset.chars.foreign(b):
            dropped[outside] += 1
        elif det.check(b, y, lset)[1] or det.check(a, x, lset)[1]:
            dropped["wrong language"] += 1
        else:
            seen.add((a, b))
            good.append((a, b))
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
    return PairData(train, held, dropped, len(pairs), tuple(langs))


def render_pair(tr, a: str, b: str, direction: str, langs: tuple[str, str] = EN_VI) -> Example:
    """The example `translate` would decode for the pair (a, b) of the languages `langs` in this
    direction (its prompt tokens, the model's own prompt kind and style), with the reference as the
    answer and the end the translator stops at: the chat turn's end token, or a newline after a
    few-shot answer."""
    src, dst = split_direction(direction)
    text, ref = (a, b) if src == langs[0] else (b, a)
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
