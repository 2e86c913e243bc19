"""The ids a trimmed file asks every llama.cpp sampler never to emit (`tokenizer.ggml.suppress_tokens`).

Why: the script guard runs only inside gguf-trim. Stock llama-server and llama-cli (and ollama, which
runs them) read this key (llama-vocab.cpp) and give its ids a -inf logit bias in every sampler they
build (common/sampling.cpp), so there too a trimmed model cannot spell a foreign character through
its byte tokens. The list holds exactly the kept tokens the guard forbids in every UTF-8 state: tokens
that can never be part of English/Vietnamese output. So it never removes a token the guard would
allow, and greedy output on allowed text is unchanged. The tokens stay in the vocabulary, so input
text still tokenizes exactly as before.

What a static list cannot stop: a lead byte that begins both allowed and foreign characters, followed
by the continuation byte of a foreign one. 0xE1 begins the Vietnamese letters and Myanmar, Hangul
Jamo, Khmer, Ethiopic...; 0xE2 punctuation and CJK radicals; 0xEF ligatures and fullwidth forms;
0xF0 emoji and CJK Extension B. Only a stateful constraint (the guard, a grammar) stops those.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import numpy as np

from gguf_trim.vocab.charset import ALLOWED, continue_ok, split_head, utf8_len
from gguf_trim.vocab.vocabulary import BYTE, CONTROL, NORMAL, SUPPRESS_KEY, USER_DEFINED

RENDERED_TYPES = (NORMAL, 0, BYTE, USER_DEFINED)  # token types whose text llama.cpp writes to the output


def guard_view(pieces: list[bytes], types: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """(pieces as llama.cpp renders them, always-acceptable mask). Control tokens render as nothing and
    are never constrained; unknown/unused ones render as nothing here either."""
    rendered = [p if t in RENDERED_TYPES else b"" for p, t in zip(pieces, types.tolist())]
    return rendered, np.asarray(types) == CONTROL


@lru_cache(maxsize=1)
def pending_states() -> tuple[bytes, ...]:
    """Every incomplete UTF-8 sequence allowed output can end with: the proper prefixes of the
    encodings of the allowed characters (a few hundred)."""
    states: set[bytes] = set()
    for cp in np.flatnonzero(ALLOWED[0x80:]).tolist():
        enc = chr(cp + 0x80).encode("utf-8", "surrogatepass")
        for k in range(1, len(enc)):
            states.add(enc[:k])
    return tuple(sorted(states))


def never_allowed(pieces: list[bytes], always_ok: np.ndarray, exclude: set[int] | frozenset[int] = frozenset()
                  ) -> np.ndarray:
    """Ids (sorted int32) the script guard forbids in every UTF-8 state: at a character boundary and
    after every incomplete allowed character. `exclude`: ids never listed (the special ids)."""
    by_need: dict[int, list[bytes]] = {}
    for p in pending_states():
        by_need.setdefault(utf8_len(p[0]) - len(p), []).append(p)
    out = []
    for i, piece in enumerate(pieces):
        if always_ok[i] or i in exclude or not piece:
            continue
        head, _ = split_head(piece)
        if not head:  # starts a character: only the boundary state can take it
            if not continue_ok(b"", piece)[0]:
                out.append(i)
            continue
        states = [p for need, ps in by_need.items() if need >= len(head) for p in ps]
        if not any(continue_ok(p, piece)[0] for p in states):
            out.append(i)
    return np.asarray(out, dtype=np.int32)


def suppressible(pieces: list[bytes], types: np.ndarray, specials: Iterable[int] = ()) -> np.ndarray:
    """The ids `trim` lists for a vocabulary given as stored pieces and token types: what the guard never
    allows (`never_allowed` over `guard_view`), the `specials` (ids special-token keys name) excluded."""
    return never_allowed(*guard_view(pieces, types), exclude=frozenset(int(i) for i in specials))


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
