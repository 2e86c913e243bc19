"""A language set: the languages `--langs` names, resolved once and passed down.

Why one object: the selection, the suppress list, the script guard, the exported grammar, the prompts
and the language check must agree on what the set writes. They all take a `LanguageSet` and ask its
`chars` (one `CharacterSet`), so a new language is an entry in `table.py`, never an edit elsewhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.langs.table import COMMON, GREEK_MATHS, LANGUAGES, LATIN, Entry
from gguf_trim.vocab.charset import CharacterSet

DEFAULT = "en,vi"
_BY_CODE = {e.code.lower(): e for e in LANGUAGES}
_ORDER = {e.code: i for i, e in enumerate(LANGUAGES)}


def known_codes() -> tuple[str, ...]:
    return tuple(e.code for e in LANGUAGES)


def _mask(ranges: Iterable[tuple[int, int]]) -> np.ndarray:
    m = np.zeros(0x110000, dtype=bool)
    for lo, hi in ranges:
        m[lo:hi + 1] = True
    return m


@cache
def _all_chars() -> str:
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))


@cache
def unicode_property(prop: str) -> np.ndarray:
    """Code points with a Unicode property as the `regex` package knows it (e.g. 'scx=Hira')."""
    import regex

    m = np.zeros(0x110000, dtype=bool)
    for match in regex.finditer(r"\p{" + prop + "}+", _all_chars()):
        m[np.fromiter(map(ord, match.group()), dtype=np.int64)] = True
    m.flags.writeable = False
    return m


@cache
def codec_chars(codec: str) -> np.ndarray:
    """Han code points a legacy codec can encode (e.g. JIS X 0213 for Japanese)."""
    han = np.flatnonzero(unicode_property("sc=Hani"))
    m = np.zeros(0x110000, dtype=bool)
    for cp in han.tolist():
        try:
            chr(cp).encode(codec)
        except UnicodeEncodeError:
            continue
        m[cp] = True
    m.flags.writeable = False
    return m


def parse_exemplars(text: str) -> set[str]:
    """The characters of a CLDR exemplar string: space-separated items, `{multi}` sequences, `a-z`
    ranges (written only between two single characters, as in 가-힣), characters glued together
    (`-－` in Japanese punctuation). Placeholder circles of marks (◌́) are just characters."""
    out: set[str] = set()
    for item in text.split():
        for seq in re.findall(r"\{([^}]*)\}", item):
            out.update(seq)
        item = re.sub(r"\{[^}]*\}", "", item)
        i = 0
        while i < len(item):
            if i + 2 < len(item) and item[i + 1] == "-" and ord(item[i]) < ord(item[i + 2]):
                out.update(map(chr, range(ord(item[i]), ord(item[i + 2]) + 1)))
                i += 3
            else:
                out.add(item[i])
                i += 1
    return out


@cache
def _proto(cldr: str):  # noqa: ANN202 (a gfmetadata LanguageProto)
    from importlib.resources import files

    from gflanguages import LanguageProto, text_format  # gfmetadata's protobuf classes, as gflanguages loads them

    path = files("gflanguages.data").joinpath("languages").joinpath(f"{cldr}.textproto")
    return text_format.Parse(path.read_text(encoding="utf-8"), LanguageProto())


@dataclass(frozen=True)
class Language:
    """One language of the table, with its names and characters."""

    entry: Entry

    @property
    def code(self) -> str:
        return self.entry.code

    @cached_property
    def _locale(self):  # noqa: ANN202 (babel.Locale)
        from babel import Locale

        return Locale.parse((self.entry.locale or self.entry.code).replace("-", "_"))

    @cached_property
    def name(self) -> str:
        """Its English name ('Vietnamese'), from CLDR through babel."""
        return str(self._locale.english_name)

    @cached_property
    def autonym(self) -> str:
        """Its name in itself ('Tiếng Việt'), from CLDR through babel."""
        n = str(self._locale.display_name)
        return n[:1].upper() + n[1:]  # 'français' starts a line of a prompt: 'Français:'


    def exemplars(self) -> set[str]:
        """CLDR's exemplar characters of the language (every category)."""
        e = _proto(self.entry.cldr).exemplar_chars
        out: set[str] = set()
        for part in (e.base, e.auxiliary, e.marks, e.numerals, e.punctuation, e.index):
            out |= parse_exemplars(part)
        return out

    def sample_text(self) -> str:
        """The UDHR sample text gflanguages ships for the language (for tests and reports)."""
        s = _proto(self.entry.cldr).sample_text
        return "\n".join(x for x in (s.specimen_16, s.specimen_21, s.specimen_32, s.specimen_36, s.tester) if x)

    @cached_property
    def letters(self) -> np.ndarray:
        """The code points this language writes beyond COMMON (read-only)."""
        m = np.zeros(0x110000, dtype=bool)
        scripts = self.entry.scripts
        for sc in scripts:
            if sc == "Latn":
                m |= _mask(LATIN)
            elif sc == "Hani" and self.entry.han:
                m |= unicode_property("scx=Hani") & ~unicode_property("sc=Hani")  # shared CJK punctuation
                m |= codec_chars(self.entry.han)
            else:
                m |= unicode_property(f"scx={sc}")
        own = unicode_property("sc=Zyyy") | unicode_property("sc=Zinh")
        for sc in scripts:
            own = own | unicode_property(f"sc={sc}")
        for ch in self.exemplars():
            cp = ord(ch)
            if own[cp]:
                m[cp] = True
        m.flags.writeable = False
        return m


@dataclass(frozen=True)
class LanguageSet:
    """The languages a trim keeps and a translation may write, in the table's order."""

    codes: tuple[str, ...]
    languages: tuple[Language, ...] = field(repr=False, compare=False)

    @property
    def key(self) -> str:
        """The form stored in a trimmed file (gguf_trim.langs) and shown to users: 'en,vi'."""
        return ",".join(self.codes)

    def __str__(self) -> str:
        return self.key

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and code in self.codes

    def __iter__(self):  # noqa: ANN204
        return iter(self.codes)

    def __len__(self) -> int:
        return len(self.codes)

    def language(self, code: str) -> Language:
        for lang in self.languages:
            if lang.code == code:
                return lang
        raise TrimError(f"{code!r} is not one of this file's languages ({self.key})")

    @cached_property
    def scripts(self) -> frozenset[str]:
        return frozenset(sc for lang in self.languages for sc in lang.entry.scripts)

    @cached_property
    def chars(self) -> CharacterSet:
        """Every character the set writes: COMMON plus each language's letters."""
        m = _mask(COMMON)
        for lang in self.languages:
            m |= lang.letters
        return CharacterSet(m, max_greek=None if "Grek" in self.scripts else GREEK_MATHS, name=self.key)

    @property
    def is_en_vi(self) -> bool:
        """The set the project started with, whose prompts and language rule predate the table."""
        return set(self.codes) <= {"en", "vi"}


def normalize_code(code: str) -> str | None:
    """'zh_hans', 'ZH-Hans' -> 'zh-Hans'; None for an unknown code."""
    e = _BY_CODE.get(code.strip().replace("_", "-").lower())
    return e.code if e else None


@cache
def _resolve(codes: tuple[str, ...]) -> LanguageSet:
    return LanguageSet(codes, tuple(Language(_BY_CODE[c.lower()]) for c in codes))


def language_set(langs: str | Iterable[str] | LanguageSet | None = None) -> LanguageSet:
    """Resolve --langs ('en,vi', 'en, ja', ['en', 'ko']) once; an unknown code is one-line TrimError."""
    if isinstance(langs, LanguageSet):
        return langs
    if langs is None:
        langs = DEFAULT
    parts = [p for p in (langs.split(",") if isinstance(langs, str) else langs) if p.strip()]
    codes = [normalize_code(p) for p in parts]
    bad = [p.strip() for p, c in zip(parts, codes) if c is None]
    if not parts or bad:
        what = f"unknown language {', '.join(map(repr, bad))}" if bad else "no language given"
        raise TrimError(f"{what} in --langs: known codes are {', '.join(known_codes())} "
                        "(e.g. --langs en,ja; gguf-trim languages)")
    return _resolve(tuple(sorted(set(c for c in codes if c), key=_ORDER.__getitem__)))


def file_langs(g: object) -> LanguageSet | None:
    """The language set a GGUF (an open `GGUFModel`) was trimmed to, from its gguf_trim.langs key;
    None for a file gguf-trim did not trim."""
    from gguf_trim.format import keys

    fields = getattr(g, "fields", {})
    if keys.LANGS not in fields:
        return None
    recorded = fields[keys.LANGS].text()
    try:
        return language_set(recorded)
    except TrimError:
        raise TrimError(f"{getattr(g, 'path', 'the model')} was trimmed to languages this gguf-trim does not know "
                        f"({recorded}); upgrade gguf-trim") from None
