"""What each language set keeps: the rows of `gguf-trim languages` and docs/languages.md.

Why a command: before trimming a 40 GB file a user wants to know which codes exist, what each writes
and, for their model's vocabulary, how many tokens a set keeps and how many it lists as never allowed.
Everything here reads the vocabulary only (a vocab-only GGUF will do).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from gguf_trim.langs.languages import known_codes, language_set
from gguf_trim.vocab.charset import CharacterSet


def scripts_text(code: str) -> str:
    e = language_set(code).language(code).entry
    return "+".join(e.scripts) + (f" (Han: {e.han})" if e.han else "")


def language_rows(model: str | Path | None = None, base: str = "en",
                  codes: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per known language X: its names, scripts, the characters of the set `base`+X and, with a
    model, the lossless selection's kept tokens and the suppress list's size for that set."""
    from gguf_trim.format.shards import open_model
    from gguf_trim.selection.selection import select_lossless
    from gguf_trim.vocab.suppress import suppressible
    from gguf_trim.vocab.vocabulary import Vocab

    vocab = None
    if model is not None:
        with open_model(model) as g:
            vocab = Vocab.from_gguf(g)
    rows = []
    for code in codes or known_codes():
        lset = language_set(f"{base},{code}" if base else code)
        lang = lset.language(code)
        row: dict[str, Any] = {"code": code, "name": lang.name, "autonym": lang.autonym,
                               "scripts": scripts_text(code), "wordfreq": lang.entry.wordfreq or "-",
                               "set": lset.key, "characters": lset.chars.size, **reach_text(lset.key)}
        if vocab is not None:
            sel = select_lossless(vocab, lset)
            kept = sel.kept_ids
            named = set(vocab.named_special_ids)
            ids = suppressible([vocab.pieces[i] for i in kept.tolist()], vocab.types[kept], lset.chars,
                               [j for j, i in enumerate(kept.tolist()) if i in named])
            row.update({"n_vocab": vocab.n, "kept": sel.n_kept, "kept_share": round(sel.n_kept / vocab.n, 4),
                        "suppress_ids": int(len(ids))})
        rows.append(row)
    return rows


# Scripts a model drifts into, reported for every set (ISO 15924 codes, Unicode Script property).
FOREIGN_SCRIPTS = ("Hani", "Hira", "Kana", "Hang", "Cyrl", "Arab", "Hebr", "Grek", "Deva", "Beng", "Thai")


def lead_bytes(chars: CharacterSet) -> np.ndarray:
    """bool[256]: which bytes begin the UTF-8 encoding of some allowed character (ASCII is its own lead)."""
    cp = np.flatnonzero(chars.allowed)
    lead = np.where(cp < 0x80, cp, np.where(cp < 0x800, 0xC0 | (cp >> 6),
                                            np.where(cp < 0x10000, 0xE0 | (cp >> 12), 0xF0 | (cp >> 18))))
    out = np.zeros(256, dtype=bool)
    out[lead] = True
    return out


def list_reach(spec: str, scripts: Iterable[str] = FOREIGN_SCRIPTS) -> dict[str, dict[str, int]]:
    """What the suppress list alone can stop, per foreign script: its characters outside the set in the
    Basic Multilingual Plane (where text of these scripts lives; the rarer planes begin with 0xF0, which
    emoji share), and how many of them begin with a lead byte no allowed character has: those the list
    stops (their lead byte token is listed and no kept token starts with it). The rest need the guard or
    the grammar. `Hani` counts the main CJK block (U+4E00-9FFF) only: the Han of everyday text."""
    from gguf_trim.langs.languages import unicode_property

    chars = language_set(spec).chars
    shared = lead_bytes(chars)
    bmp = np.zeros(0x110000, dtype=bool)
    bmp[:0x10000] = True
    out = {}
    for sc in scripts:
        where = bmp.copy()
        if sc == "Hani":
            where[:] = False
            where[0x4E00:0xA000] = True
        cps = np.flatnonzero(unicode_property(f"sc={sc}") & ~chars.allowed & where)
        if not len(cps):
            continue
        leads = np.fromiter((chr(c).encode("utf-8")[0] for c in cps.tolist()), dtype=np.int64, count=len(cps))
        out[sc] = {"foreign": int(len(cps)), "stopped_by_list": int((~shared[leads]).sum())}
    return out


def reach_text(spec: str) -> dict[str, str]:
    """list_reach as two short cells: the foreign scripts the list alone stops whole, and the others with
    the share of their characters it stops (the rest need the guard or the grammar)."""
    reach = list_reach(spec)
    whole = [sc for sc, r in reach.items() if r["stopped_by_list"] == r["foreign"]]
    part = [f"{sc} {r['stopped_by_list'] / r['foreign']:.0%}" for sc, r in reach.items()
            if r["stopped_by_list"] < r["foreign"]]
    return {"list_stops": " ".join(whole) or "-", "list_partly": ", ".join(part) or "-"}
