"""Script guard: a decode-time constraint that makes characters outside English/Vietnamese
impossible, including characters spelled piece by piece through byte tokens.

The state is the incomplete UTF-8 sequence the output ends with (0-3 bytes). For each state
the set of acceptable tokens is computed once and cached as an index array of forbidden ids,
so a decoding step costs one dict lookup and one vectorised assignment. The rule looks at
whole code points: Vietnamese precomposed letters share the lead byte 0xE1 with Myanmar,
Hangul Jamo and Khmer, so a lead byte alone decides nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gguf_trim.format.shards import open_model
from gguf_trim.vocab.charset import ALLOWED, any_allowed, tail_range, utf8_len
from gguf_trim.vocab.vocabulary import BYTE, CONTROL, NORMAL, USER_DEFINED, Vocab


def split_head(piece: bytes) -> tuple[bytes, bytes]:
    """(leading continuation bytes, the rest)."""
    i = 0
    while i < len(piece) and 0x80 <= piece[i] <= 0xBF:
        i += 1
    return piece[:i], piece[i:]


def fresh_ok(data: bytes) -> tuple[bool, bytes]:
    """Is `data` (starting at a character boundary) allowed text, possibly ending inside a
    character that could still become allowed? Returns (ok, the incomplete tail)."""
    try:
        text = data.decode("utf-8")
        tail = b""
    except UnicodeDecodeError as e:
        if e.reason != "unexpected end of data" or e.end != len(data):
            return False, b""
        text, tail = data[:e.start].decode("utf-8"), data[e.start:]
    if not all(ALLOWED[ord(c)] for c in text):
        return False, b""
    if tail:
        r = tail_range(tail)
        if r is None or not any_allowed(*r):
            return False, b""
    return True, tail


def continue_ok(pending: bytes, piece: bytes) -> tuple[bool, bytes]:
    """Appending `piece` to output that ends with the incomplete sequence `pending`:
    (allowed, the new incomplete tail)."""
    if not pending:
        head, _ = split_head(piece)
        if head:
            return False, b""  # a continuation byte with nothing to continue
        return fresh_ok(piece)
    need = utf8_len(pending[0])
    head, rest = split_head(piece)
    joined = pending + head
    if len(joined) > need or not head:
        return False, b""  # too many continuation bytes, or the character is cut short
    if len(joined) < need:
        if rest:
            return False, b""
        r = tail_range(joined)
        return (r is not None and any_allowed(*r)), joined
    try:
        cp = ord(joined.decode("utf-8"))
    except UnicodeDecodeError:
        return False, b""
    if not ALLOWED[cp]:
        return False, b""
    return fresh_ok(rest)


def pending_of(data: bytes) -> bytes:
    """The incomplete UTF-8 sequence `data` ends with ("" when it ends on a boundary)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b < 0x80:
            return b""
        if b >= 0xC0:
            n = utf8_len(b)
            return data[-back:] if n > back else b""
    return b""


class ScriptGuard:
    """Forbidden token ids per UTF-8 state, for one vocabulary."""

    def __init__(self, pieces: list[bytes], always_ok: np.ndarray, end_ids: list[int]):
        self.pieces = pieces
        self.n = len(pieces)
        self.end_ids = np.asarray(sorted(set(end_ids)), dtype=np.int64)
        self._always_ok = always_ok
        # tokens that start with continuation bytes are the only ones that can finish a character
        self._cont = np.asarray([i for i, p in enumerate(pieces) if p and 0x80 <= p[0] <= 0xBF and not always_ok[i]],
                                dtype=np.int64)
        self._forbidden: dict[bytes, np.ndarray] = {}
        self._next: dict[tuple[bytes, int], bytes] = {}

    @classmethod
    def for_model(cls, path: str | Path, end_ids: list[int]) -> ScriptGuard:
        """Pieces as llama.cpp renders them (control tokens render as nothing, so they are left
        alone, except that only end-of-generation ones may cut a character short)."""
        with open_model(path) as g:
            v = Vocab.from_gguf(g)
        types = v.types
        pieces = [p if t in (NORMAL, 0, BYTE, USER_DEFINED) else b"" for p, t in zip(v.pieces, types.tolist())]
        always_ok = types == CONTROL
        return cls(pieces, always_ok, end_ids)

    def forbidden(self, pending: bytes) -> np.ndarray:
        """Ids that may not follow output ending in `pending` (cached per state)."""
        got = self._forbidden.get(pending)
        if got is not None:
            return got
        if not pending:
            bad = [i for i, p in enumerate(self.pieces) if not self._always_ok[i] and not continue_ok(b"", p)[0]]
            arr = np.asarray(bad, dtype=np.int64)
        else:
            ok = np.zeros(self.n, dtype=bool)
            for i in self._cont.tolist():
                ok[i] = continue_ok(pending, self.pieces[i])[0]
            ok[self.end_ids] = True  # stopping is always possible
            arr = np.flatnonzero(~ok)
        self._forbidden[pending] = arr
        return arr

    def state_after(self, ids: list[int]) -> bytes:
        """The pending incomplete sequence after the given generated ids."""
        data = b"".join(self.pieces[i] for i in ids[-4:] if 0 <= i < self.n)
        return pending_of(data)

    def allows(self, data_ids: list[int]) -> bool:
        """Would this id sequence be accepted step by step? (For tests.)"""
        pending = b""
        for i in data_ids:
            if i in set(self.forbidden(pending).tolist()):
                return False
            pending = continue_ok(pending, self.pieces[i])[1] if not self._always_ok[i] else pending
        return True

    def processor(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """A llama-cpp-python logits processor for one generation: it sees the whole sequence,
        prompt included, so the first call fixes where the output starts."""
        start: list[int] = []

        def apply(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            if not start:
                start.append(len(input_ids))
            gen = input_ids[start[0]:].tolist()
            scores[self.forbidden(self.state_after(gen))] = -np.inf
            return scores

        return apply
