"""A set of allowed characters, and how to judge a token's bytes against it.

A token is a byte string that may start or end in the middle of a UTF-8 sequence (byte-level
BPE pieces such as b"\\xe1\\xbb"). Such a partial piece is kept when at least one allowed code
point could contain it: that is exactly the condition under which tokenizing allowed text can
produce it, so keeping it is what makes the trim lossless.

Which characters are allowed is the language set's business (gguf_trim.langs builds one
`CharacterSet` per set from language data); this module only knows code points and UTF-8, so the
lossless selection, the suppress list, the script guard and the exported grammar all judge by the
same object and cannot disagree.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cached_property, lru_cache

import numpy as np

GREEK = (0x0370, 0x03FF)
MIN_CP = (0, 0, 0x80, 0x800, 0x10000)  # smallest code point of each UTF-8 length (no overlong forms)


def utf8_len(lead: int) -> int:
    """Length of the UTF-8 sequence a lead byte starts (0: a continuation byte or invalid)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # continuation byte or invalid lead


def tail_range(tail: bytes) -> tuple[int, int] | None:
    """Code points whose UTF-8 encoding starts with `tail` (an incomplete sequence): one range."""
    n = utf8_len(tail[0])
    if n <= len(tail) or any(not 0x80 <= b <= 0xBF for b in tail[1:]):
        return None
    v = tail[0] & (0xFF >> (n + 1))
    for b in tail[1:]:
        v = (v << 6) | (b & 0x3F)
    rest = 6 * (n - len(tail))
    lo = max(v << rest, MIN_CP[n])
    hi = min(((v + 1) << rest) - 1, 0x10FFFF)
    return (lo, hi) if lo <= hi else None


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The true positions of a boolean array as inclusive (first, last) runs."""
    cps = np.flatnonzero(mask)
    if not cps.size:
        return []
    breaks = np.flatnonzero(np.diff(cps) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(cps) - 1]])
    return [(int(cps[s]), int(cps[e])) for s, e in zip(starts, ends)]


class CharacterSet:
    """The code points a language set writes, with the rules every judge of a token shares.

    `max_greek`: how many Greek letters one token may hold (1: Greek letters only as maths symbols
    such as pi, not Greek words; None: no limit, for a set that writes Greek). `name`: the set's
    codes, for reports ("en,vi")."""

    def __init__(self, allowed: np.ndarray, max_greek: int | None = 1, name: str = ""):
        a = np.array(allowed, dtype=bool, copy=True)
        if a.shape != (0x110000,):
            raise ValueError("a CharacterSet needs one flag per code point (0x110000)")
        a[0xD800:0xE000] = False  # surrogates are never text
        a.flags.writeable = False
        self.allowed = a
        self.max_greek = max_greek
        self.name = name
        self._prefix = np.concatenate([[0], np.cumsum(a, dtype=np.int64)])
        self._head: dict[bytes, bool] = {}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CharacterSet) and self.max_greek == other.max_greek
                and bool(np.array_equal(self.allowed, other.allowed)))

    def __hash__(self) -> int:
        return hash((self.size, self.max_greek))

    def __repr__(self) -> str:
        return f"CharacterSet({self.name or '?'}: {self.size} code points)"

    @cached_property
    def size(self) -> int:
        return int(self.allowed.sum())

    @cached_property
    def ranges(self) -> list[tuple[int, int]]:
        """The allowed code points as inclusive runs."""
        return runs(self.allowed)

    @cached_property
    def _fullmatch(self) -> re.Pattern[str]:
        """The set as a regex over decoded text: the fast path for complete tokens."""
        return re.compile("[" + "".join(f"\\U{lo:08x}-\\U{hi:08x}" for lo, hi in self.ranges) + "]*")

    def char_allowed(self, cp: int) -> bool:
        return bool(self.allowed[cp])

    def foreign(self, text: str) -> list[str]:
        """The characters of `text` outside the set, in order (repeats included)."""
        a = self.allowed
        return [c for c in text if not a[ord(c)]]

    def any_allowed(self, lo: int, hi: int) -> bool:
        """Is any code point in [lo, hi] allowed?"""
        return bool(self._prefix[hi + 1] - self._prefix[lo] > 0)

    def head_allowed(self, head: bytes) -> bool:
        """Could `head` (1-3 continuation bytes) be the end of an allowed character?"""
        got = self._head.get(head)
        if got is not None:
            return got
        k = len(head)
        low = 0
        for b in head:
            low = (low << 6) | (b & 0x3F)
        ok = False
        for n in range(k + 1, 5):
            hi_bits = (0, 0, 5, 4, 3)[n] + 6 * (n - 1 - k)  # free bits above the fixed ones
            cps = (np.arange(1 << hi_bits, dtype=np.int64) << (6 * k)) | low
            cps = cps[(cps >= MIN_CP[n]) & (cps <= 0x10FFFF)]
            if cps.size and self.allowed[cps].any():
                ok = True
                break
        self._head[head] = ok
        return ok

    def _greek_ok(self, text: str) -> bool:
        if self.max_greek is None:
            return True
        greek = 0
        for ch in text:
            if GREEK[0] <= ord(ch) <= GREEK[1] and unicodedata.category(ch).startswith("L"):
                greek += 1
                if greek > self.max_greek:
                    return False
        return True

    def judge_bytes(self, piece: bytes) -> tuple[bool, str]:
        """(allowed, label). Allowed when every character is in the set (with at most `max_greek` Greek
        letters) and any partial UTF-8 head/tail could belong to an allowed character. The label names
        the first offending script, for the plan and the reports."""
        if piece.isascii():
            return (True, "allowed") if piece else (False, "empty")
        try:
            text = piece.decode("utf-8")
            if self._fullmatch.fullmatch(text):
                return (True, "allowed") if self._greek_ok(text) else (False, "greek-word")
        except UnicodeDecodeError:
            pass
        head, body = split_head(piece)
        if len(head) > 3:
            head, body = piece[:3], piece[3:]
        tail = b""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            # accept only an incomplete sequence at the very end
            if e.reason != "unexpected end of data" or e.end != len(body):
                return False, "invalid-utf8"
            text, tail = body[:e.start].decode("utf-8"), body[e.start:]
        if head and not self.head_allowed(head):
            return False, _label_of_bytes(head)
        if tail:
            r = tail_range(tail)
            if r is None or not self.any_allowed(*r):
                return False, "partial:" + (_label(chr(r[0])) if r else "invalid")
        for ch in text:
            if not self.allowed[ord(ch)]:
                return False, _label(ch)
        if not self._greek_ok(text):
            return False, "greek-word"
        return True, "allowed"

    # -- the UTF-8 state rules the script guard and the suppress list share --------------------------

    def fresh_ok(self, data: bytes) -> tuple[bool, bytes]:
        """Is `data` (starting at a character boundary) allowed text, possibly ending inside a
        character that could still become allowed? Returns (ok, the incomplete tail)."""
        try:
            text = data.decode("utf-8")
            tail = b""
        except UnicodeDecodeError as e:
            if e.reason != "unexpected end of data" or e.end != len(data):
                return False, b""
            text, tail = data[:e.start].decode("utf-8"), data[e.start:]
        a = self.allowed
        if not all(a[ord(c)] for c in text):
            return False, b""
        if tail:
            r = tail_range(tail)
            if r is None or not self.any_allowed(*r):
                return False, b""
        return True, tail

    def continue_ok(self, pending: bytes, piece: bytes) -> tuple[bool, bytes]:
        """Appending `piece` to output that ends with the incomplete sequence `pending`:
        (allowed, the new incomplete tail)."""
        if not pending:
            head, _ = split_head(piece)
            if head:
                return False, b""  # a continuation byte with nothing to continue
            return self.fresh_ok(piece)
        need = utf8_len(pending[0])
        head, rest = split_head(piece)
        joined = pending + head
        if len(joined) > need or not head:
            return False, b""  # too many continuation bytes, or the character is cut short
        if len(joined) < need:
            if rest:
                return False, b""
            r = tail_range(joined)
            return (r is not None and self.any_allowed(*r)), joined
        try:
            cp = ord(joined.decode("utf-8"))
        except UnicodeDecodeError:
            return False, b""
        if not self.allowed[cp]:
            return False, b""
        return self.fresh_ok(rest)

    @cached_property
    def pending_states(self) -> tuple[bytes, ...]:
        """Every incomplete UTF-8 sequence allowed output can end with: the proper prefixes of the
        encodings of the allowed characters."""
        states: set[bytes] = set()
        for lo, hi in self.ranges:
            lo = max(lo, 0x80)
            if lo > hi:
                continue
            for cp in _prefix_representatives(lo, hi):
                enc = chr(cp).encode("utf-8")
                for k in range(1, len(enc)):
                    states.add(enc[:k])
        return tuple(sorted(states))

    @cached_property
    def infixes(self) -> tuple[frozenset[bytes], frozenset[bytes]]:
        """(continuation-byte runs that can end an allowed character after a proper prefix of it, those
        that can sit inside one without ending it): what can follow some pending state. The suppress
        list asks this of every token that starts with continuation bytes."""
        ends: set[bytes] = set()
        inside: set[bytes] = set()
        for lo, hi in self.ranges:
            for cp in range(max(lo, 0x80), hi + 1):
                enc = chr(cp).encode("utf-8")
                n = len(enc)
                for k in range(1, n):
                    ends.add(enc[k:])
                    for j in range(k + 1, n):
                        inside.add(enc[k:j])
        return frozenset(ends), frozenset(inside)


def _prefix_representatives(lo: int, hi: int) -> list[int]:
    """Code points of [lo, hi] that between them have every proper UTF-8 prefix the range has: the
    first code point of each 64-aligned block (the prefixes drop the last byte, which is all that
    differs inside a block)."""
    out = [lo]
    cp = (lo | 0x3F) + 1
    while cp <= hi:
        out.append(cp)
        cp += 0x40
    return out


def split_head(piece: bytes) -> tuple[bytes, bytes]:
    """(leading continuation bytes, the rest)."""
    i = 0
    while i < len(piece) and 0x80 <= piece[i] <= 0xBF:
        i += 1
    return piece[:i], piece[i:]


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


def _label_of_bytes(head: bytes) -> str:
    return "partial:" + "".join(f"{b:02x}" for b in head)


@lru_cache(maxsize=4096)
def _label(ch: str) -> str:
    """A coarse script name for reports: the first word of the character's Unicode name."""
    name = unicodedata.name(ch, "")
    if not name:
        cat = unicodedata.category(ch)
        return {"Co": "private-use", "Cn": "unassigned", "Cs": "surrogate", "Cc": "control"}.get(cat, cat)
    word = name.split()[0]
    if word in ("CJK", "IDEOGRAPHIC", "KANGXI"):
        return "CJK"
    if word in ("FULLWIDTH", "HALFWIDTH"):
        return "fullwidth"
    return word.lower()


def script_label(piece: bytes) -> str:
    """The script a token belongs to, for `inspect`'s histogram."""
    text = piece.decode("utf-8", "ignore")
    letters = [c for c in text if unicodedata.category(c)[0] in "LM" and ord(c) > 0x7F]
    if letters:
        lab = _label(letters[0])
        if lab == "latin" and any(0x1EA0 <= ord(c) <= 0x1EF9 or c in "ăâđêôơưĂÂĐÊÔƠƯ" for c in letters):
            return "latin(vi)"
        return lab
    if not text:
        return "partial-utf8"
    if all(ord(c) < 0x80 for c in text):
        return "ascii" if any(c.isalnum() for c in text) else "ascii-punct/space"
    return "symbol/emoji"

