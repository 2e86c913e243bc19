"""Script guard: a decode-time constraint that makes characters outside the file's language set
impossible, including characters spelled piece by piece through byte tokens.

The state is the incomplete UTF-8 sequence the output ends with (0-3 bytes). For each state
the set of acceptable tokens is computed once and cached as an index array of forbidden ids,
so a decoding step costs one dict lookup and one vectorised assignment. The rule looks at
whole code points: Vietnamese precomposed letters share the lead byte 0xE1 with Myanmar,
Hangul Jamo and Khmer, and Japanese kanji share 0xE4-0xE9 with Chinese-only Han, so a lead byte
alone decides nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from gguf_trim.format.shards import open_model
from gguf_trim.langs import LanguageSet, file_langs, language_set
from gguf_trim.vocab.charset import CharacterSet, pending_of, split_head, tail_range, utf8_len
from gguf_trim.vocab.suppress import guard_view
from gguf_trim.vocab.vocabulary import Vocab


class ScriptGuard:
    """Forbidden token ids per UTF-8 state, for one vocabulary and one character set."""

    def __init__(self, pieces: list[bytes], always_ok: np.ndarray, end_ids: list[int], chars: CharacterSet):
        self.pieces = pieces
        self.chars = chars
        self.n = len(pieces)
        self.end_ids = np.asarray(sorted(set(end_ids)), dtype=np.int64)
        self._always_ok = always_ok
        # Tokens that start with continuation bytes are the only ones that can finish a character. Whether
        # one may follow a state depends only on its leading continuation bytes (the head) and on whether
        # the rest is allowed text, so they are grouped by head once: a new state then costs one check
        # per distinct head, not one per token (CJK sets meet hundreds of states).
        by_head: dict[bytes, tuple[list[int], list[int]]] = {}
        for i, p in enumerate(pieces):
            if p and 0x80 <= p[0] <= 0xBF and not always_ok[i]:
                head, rest = split_head(p)
                if len(head) > 3:
                    continue  # never part of valid UTF-8
                completes, inside = by_head.setdefault(head, ([], []))
                if not rest or chars.fresh_ok(rest)[0]:
                    completes.append(i)  # fine wherever the head ends an allowed character
                if not rest:
                    inside.append(i)  # fine wherever the head stays inside one
        self._heads = [(h, np.asarray(c, dtype=np.int64), np.asarray(s, dtype=np.int64))
                       for h, (c, s) in by_head.items()]
        self._forbidden: dict[bytes, np.ndarray] = {}
        self._next: dict[tuple[bytes, int], bytes] = {}

    @classmethod
    def for_model(cls, path: str | Path, end_ids: list[int], langs: str | LanguageSet | None = None
                  ) -> ScriptGuard:
        """Pieces as llama.cpp renders them (control tokens render as nothing, so they are left
        alone, except that only end-of-generation ones may cut a character short). `langs`: the
        language set (default: the one the file was trimmed to, else en,vi)."""
        with open_model(path) as g:
            v = Vocab.from_gguf(g)
            lset = language_set(langs) if langs is not None else file_langs(g) or language_set(None)
        return cls(*guard_view(v.pieces, v.types), end_ids, lset.chars)

    def forbidden(self, pending: bytes) -> np.ndarray:
        """Ids that may not follow output ending in `pending` (cached per state)."""
        got = self._forbidden.get(pending)
        if got is not None:
            return got
        if not pending:
            fresh = self.chars.continue_ok
            bad = [i for i, p in enumerate(self.pieces) if not self._always_ok[i] and not fresh(b"", p)[0]]
            arr = np.asarray(bad, dtype=np.int64)
        else:
            ok = np.zeros(self.n, dtype=bool)
            need = utf8_len(pending[0])
            for head, completes, inside in self._heads:
                joined = pending + head
                if len(joined) == need:
                    try:
                        fits = self.chars.char_allowed(ord(joined.decode("utf-8")))
                    except UnicodeDecodeError:
                        fits = False
                    if fits:
                        ok[completes] = True
                elif len(joined) < need:
                    r = tail_range(joined)
                    if r is not None and self.chars.any_allowed(*r):
                        ok[inside] = True
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
            pending = self.chars.continue_ok(pending, self.pieces[i])[1] if not self._always_ok[i] else pending
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
