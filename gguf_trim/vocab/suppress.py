"""The ids a trimmed file asks every llama.cpp sampler never to emit (`tokenizer.ggml.suppress_tokens`).

Why: the script guard runs only inside gguf-trim. Stock llama-server and llama-cli read this key
(llama-vocab.cpp) and give its ids a -inf logit bias in every sampler they build (common/sampling.cpp),
so there too a trimmed model cannot spell a foreign character through its byte tokens. The list holds
exactly the kept tokens the guard forbids in every UTF-8 state: tokens
that can never be part of output in the file's language set. So it never removes a token the guard would
allow, and greedy output on allowed text is unchanged. The tokens stay in the vocabulary, so input
text still tokenizes exactly as before.

What a static list cannot stop: a lead byte that begins both allowed and foreign characters, followed
by the continuation byte of a foreign one. For en,vi: 0xE1 begins the Vietnamese letters and Myanmar,
Hangul Jamo, Khmer, Ethiopic...; 0xE2 punctuation and CJK radicals; 0xEF ligatures and fullwidth forms;
0xF0 emoji and CJK Extension B. For en,ja 0xE4-0xE9 begin both kanji and Chinese-only Han. Only a
stateful constraint (the guard, a grammar) stops those (docs/languages.md measures each set).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from gguf_trim.vocab.charset import CharacterSet, split_head
from gguf_trim.vocab.vocabulary import BYTE, CONTROL, NORMAL, SUPPRESS_KEY, USER_DEFINED

RENDERED_TYPES = (NORMAL, 0, BYTE, USER_DEFINED)  # token types whose text llama.cpp writes to the output


def guard_view(pieces: list[bytes], types: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """(pieces as llama.cpp renders them, always-acceptable mask). Control tokens render as nothing and
    are never constrained; unknown/unused ones render as nothing here either."""
    rendered = [p if t in RENDERED_TYPES else b"" for p, t in zip(pieces, types.tolist())]
    return rendered, np.asarray(types) == CONTROL


def never_allowed(pieces: list[bytes], always_ok: np.ndarray, chars: CharacterSet,
                  exclude: set[int] | frozenset[int] = frozenset()) -> np.ndarray:
    """Ids (sorted int32) the script guard forbids in every UTF-8 state: at a character boundary and
    after every incomplete allowed character (`chars.pending_states`). `exclude`: ids never listed (the
    special ids). A token that starts with continuation bytes fits some state exactly when those bytes
    can end an allowed character after a proper prefix of it (and the rest is allowed text) or sit
    inside one (and nothing follows): `chars.infixes`, so no state has to be tried one by one."""
    ends, inside = chars.infixes
    out = []
    for i, piece in enumerate(pieces):
        if always_ok[i] or i in exclude or not piece:
            continue
        head, rest = split_head(piece)
        if not head:  # starts a character: only the boundary state can take it
            ok = chars.fresh_ok(piece)[0]
        elif rest:
            ok = head in ends and chars.fresh_ok(rest)[0]
        else:
            ok = head in ends or head in inside
        if not ok:
            out.append(i)
    return np.asarray(out, dtype=np.int32)


def suppressible(pieces: list[bytes], types: np.ndarray, chars: CharacterSet, specials: Iterable[int] = ()
                 ) -> np.ndarray:
    """The ids `trim` lists for a vocabulary given as stored pieces and token types: what the guard of
    `chars` never allows (`never_allowed` over `guard_view`), the `specials` (ids special-token keys name)
    excluded."""
    return never_allowed(*guard_view(pieces, types), chars, exclude=frozenset(int(i) for i in specials))


def file_suppress(g: Any) -> np.ndarray:
    """The suppress list a GGUF carries (empty when it has none)."""
    v = g.get(SUPPRESS_KEY)
    return np.asarray(v, dtype=np.int64) if isinstance(v, np.ndarray) else np.zeros(0, dtype=np.int64)


def lead_ranges(bs: list[int]) -> str:
    """0xD0-0xDF, 0xE0, ...: byte values as compact hex ranges, for reports."""
    out: list[str] = []
    bs = sorted(set(bs))
    i = 0
    while i < len(bs):
        j = i
        while j + 1 < len(bs) and bs[j + 1] == bs[j] + 1:
            j += 1
        out.append(f"0x{bs[i]:02X}" + (f"-0x{bs[j]:02X}" if j > i else ""))
        i = j + 1
    return ", ".join(out)


def describe(pieces: list[bytes], types: np.ndarray, ids: np.ndarray) -> dict[str, Any]:
    """What a suppress list covers: how many ids, how many are single byte tokens (and which bytes),
    how many longer tokens, and a few examples."""
    ids = np.asarray(ids, dtype=np.int64)
    ids = ids[(ids >= 0) & (ids < len(pieces))]
    single = sorted(pieces[i][0] for i in ids.tolist() if len(pieces[i]) == 1)
    longer = [i for i in ids.tolist() if len(pieces[i]) != 1]
    return {"count": int(len(ids)), "byte_tokens": len(single), "bytes": lead_ranges(single),
            "multi_byte_tokens": len(longer),
            "examples": [pieces[i].decode("utf-8", "backslashreplace") for i in longer[:8]]}
