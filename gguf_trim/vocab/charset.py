"""Which characters English and Vietnamese text uses, and how to judge a token's bytes.

A token is a byte string that may start or end in the middle of a UTF-8 sequence (byte-level
BPE pieces such as b"\\xe1\\xbb"). Such a partial piece is kept when at least one allowed code
point could contain it: that is exactly the condition under which tokenizing allowed text can
produce it, so keeping it is what makes the trim lossless.

The character set is a list of Unicode blocks rather than Unicode scripts because the
"Common" script mixes what we want (punctuation, maths, arrows, emoji) with what we do
not (CJK punctuation, fullwidth forms), and because Latin fullwidth letters belong to the
Latin script but are only used in CJK text.

Latin Extended-D (U+A720-A7FF) and -E (U+AB30-AB6F) are left out on purpose: they share the UTF-8
lead byte 0xEA with the Hangul syllables U+AC00-AFFF, and without them no allowed character starts
with 0xEA, so the 0xEA byte token can go on the file's suppress list (rewrite/suppress.py) and stock
llama.cpp can no longer spell those syllables byte by byte. Measured before deciding: 0 of the
23.1M characters in the project's En/Vi train and dev corpora fall in either block.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import numpy as np

SUPPORTED_LANGS = ("en", "vi")

# Inclusive code point ranges that English/Vietnamese text (with its usual symbols) uses.
EN_VI_RANGES: tuple[tuple[int, int], ...] = (
    (0x0000, 0x024F),   # ASCII, Latin-1, Latin Extended-A/B (Vietnamese ă â đ ê ô ơ ư)
    (0x0250, 0x02FF),   # IPA extensions, spacing modifier letters
    (0x0300, 0x036F),   # combining diacritical marks (decomposed Vietnamese tones)
    (0x0370, 0x03FF),   # Greek and Coptic: letters as maths symbols (pi, alpha); see GREEK
    (0x1AB0, 0x1AFF),   # combining diacritical marks extended
    (0x1D00, 0x1DFF),   # phonetic extensions, combining marks supplement
    (0x1E00, 0x1EFF),   # Latin Extended Additional: precomposed Vietnamese letters with tones
    (0x2000, 0x2BFF),   # punctuation, super/subscripts, currency (incl. the dong sign), letterlike,
                        # number forms, arrows, maths, technical, box drawing, shapes, dingbats
    (0x2C60, 0x2C7F),   # Latin Extended-C
    (0x2E00, 0x2E7F),   # supplemental punctuation
    (0xFB00, 0xFB06),   # Latin ligatures (fi, fl)
    (0xFE00, 0xFE0F),   # variation selectors (emoji presentation)
    (0xFE20, 0xFE2F),   # combining half marks
    (0xFEFF, 0xFEFF),   # byte order mark / zero width no-break space
    (0xFFF9, 0xFFFD),   # interlinear annotation, object and replacement characters
    (0x1D400, 0x1D7FF),  # mathematical alphanumeric symbols
    (0x1F000, 0x1F1FF),  # game symbols, enclosed alphanumerics, regional indicators (flags)
    (0x1F300, 0x1FAFF),  # emoji, pictographs, transport, supplemental symbols
    (0xE0000, 0xE007F),  # tag characters (subdivision flags)
)
GREEK = (0x0370, 0x03FF)
MAX_GREEK_LETTERS = 1  # a token may hold one Greek letter (a maths symbol), not Greek words

ALLOWED = np.zeros(0x110000, dtype=bool)  # by code point: used by English/Vietnamese text
for _lo, _hi in EN_VI_RANGES:
    ALLOWED[_lo:_hi + 1] = True
ALLOWED[0xD800:0xE000] = False  # surrogates are never text
_ALLOWED_PREFIX = np.concatenate([[0], np.cumsum(ALLOWED, dtype=np.int64)])
# the same set as a regex over decoded text: the fast path for complete tokens
_ALLOWED_RE = re.compile("[" + "".join(
    f"\\U{max(lo, 0xE000) if lo <= 0xDFFF < hi and lo >= 0xD800 else lo:08x}-\\U{hi:08x}"
    for lo, hi in EN_VI_RANGES) + "]*")
_GREEK_RE = re.compile("[\u0370-\u03ff]")


def check_langs(langs: str) -> tuple[str, ...]:
    """Parse --langs; only English and Vietnamese exist so far (both use the same Latin set)."""
    from gguf_trim.errors import TrimError

    parts = tuple(p.strip().lower() for p in langs.split(",") if p.strip())
    bad = [p for p in parts if p not in SUPPORTED_LANGS]
    if not parts or bad:
        raise TrimError(f"unsupported --langs {langs!r}: supported languages are "
                        f"{', '.join(SUPPORTED_LANGS)} (e.g. --langs en,vi)")
    return tuple(sorted(set(parts), key=SUPPORTED_LANGS.index))


def char_allowed(cp: int) -> bool:
    return bool(ALLOWED[cp])


def any_allowed(lo: int, hi: int) -> bool:
    """Is any code point in [lo, hi] allowed?"""
    return bool(_ALLOWED_PREFIX[hi + 1] - _ALLOWED_PREFIX[lo] > 0)


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
    lo = max(v << rest, (0, 0, 0x80, 0x800, 0x10000)[n])
    hi = min(((v + 1) << rest) - 1, 0x10FFFF)
    return (lo, hi) if lo <= hi else None


@lru_cache(maxsize=65536)
def _head_allowed(head: bytes) -> bool:
    """Could `head` (1-3 continuation bytes) be the end of an allowed character?"""
    k = len(head)
    low = 0
    for b in head:
        low = (low << 6) | (b & 0x3F)
    for n in range(k + 1, 5):
        hi_bits = (0, 0, 5, 4, 3)[n] + 6 * (n - 1 - k)  # free bits above the fixed ones
        cps = (np.arange(1 << hi_bits, dtype=np.int64) << (6 * k)) | low
        cps = cps[(cps >= (0, 0, 0x80, 0x800, 0x10000)[n]) & (cps <= 0x10FFFF)]
        if cps.size and ALLOWED[cps].any():
            return True
    return False


def judge_bytes(piece: bytes) -> tuple[bool, str]:
    """(allowed, label). Allowed when every character is English/Vietnamese (at most one Greek
    letter) and any partial UTF-8 head/tail could belong to an allowed character. The label
    names the first offending script, for the plan and the reports."""
    if piece.isascii():
        return (True, "en-vi") if piece else (False, "empty")
    try:
        text = piece.decode("utf-8")
        if _ALLOWED_RE.fullmatch(text) and not _GREEK_RE.search(text):
            return True, "en-vi"
    except UnicodeDecodeError:
        pass
    i = 0
    while i < len(piece) and i < 3 and 0x80 <= piece[i] <= 0xBF:
        i += 1
    head = piece[:i]
    body = piece[i:]
    tail = b""
    text: str
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        # accept only an incomplete sequence at the very end
        if e.reason != "unexpected end of data" or e.end != len(body):
            return False, "invalid-utf8"
        text, tail = body[:e.start].decode("utf-8"), body[e.start:]
    if head and not _head_allowed(head):
        return False, _label_of_bytes(head)
    if tail:
        r = tail_range(tail)
        if r is None or not any_allowed(*r):
            return False, "partial:" + (_label(chr(r[0])) if r else "invalid")
    greek = 0
    for ch in text:
        cp = ord(ch)
        if not ALLOWED[cp]:
            return False, _label(ch)
        if GREEK[0] <= cp <= GREEK[1] and unicodedata.category(ch).startswith("L"):
            greek += 1
            if greek > MAX_GREEK_LETTERS:
                return False, "greek-word"
    return True, "en-vi"


# -- the UTF-8 state rules the script guard and the suppress list share --------------------------------

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
