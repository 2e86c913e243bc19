"""The languages `--langs` knows: one data entry each. Adding a language is adding a line here.

Each entry names where its characters come from, never the characters themselves:
* `cldr`: the Google Fonts language id whose CLDR exemplar characters (base, auxiliary, marks,
  numerals, punctuation, index) the language writes (gflanguages, pinned in pyproject.toml);
* `scripts`: the ISO 15924 scripts its letters are taken from, whole (Unicode's Script_Extensions
  property, through the `regex` package), so text that goes beyond the exemplars (names, loanwords,
  rarer letters) still tokenizes losslessly. Exemplar characters of any other script are left out:
  that is how Korean drops the Hanja CLDR lists as auxiliary (Hangul only, by design: modern
  Korean text rarely needs them, and Han is what a Korean user's model drifts into);
* `han`: for Japanese, the codec whose Han characters Japanese uses: JIS X 0208/0213
  (`euc_jis_2004`), so en,ja keeps the kanji and drops the Han characters only Chinese uses
  (simplified forms such as 这 们 说 吗 东 车).

`Latn` is not taken from the Script property but from the blocks below: that property also holds
the fullwidth Latin letters (U+FF21-FF5A, only used inside CJK text) and Latin Extended-D/E
(U+A720-A7FF, U+AB30-AB6F), which share the UTF-8 lead byte 0xEA with the Hangul syllables
U+AC00-AFFF: without them no Latin-script set has a character starting with 0xEA, so the 0xEA byte
token goes on the suppress list and stock llama.cpp cannot spell those syllables byte by byte.
Measured before deciding: 0 of the 23.1M characters of the project's En/Vi corpora fall in either.

`COMMON` is what every set writes: ASCII, Latin-1 punctuation and symbols, combining marks,
punctuation, currency, letterlike symbols, arrows, maths, box drawing, dingbats, emoji, flags.
Greek letters are there as maths symbols (pi, alpha): a token may hold one (`GREEK_MATHS`), not
Greek words, unless the set writes Greek.
"""

from __future__ import annotations

from dataclasses import dataclass

# Inclusive code point ranges every language set allows.
COMMON: tuple[tuple[int, int], ...] = (
    (0x0000, 0x00BF),   # ASCII, Latin-1 controls, punctuation and symbols (¡ « ° ± » ¿)
    (0x00D7, 0x00D7),   # multiplication sign
    (0x00F7, 0x00F7),   # division sign
    (0x0300, 0x036F),   # combining diacritical marks (decomposed accents and tones, stress marks)
    (0x0370, 0x03FF),   # Greek and Coptic: letters as maths symbols (see GREEK_MATHS)
    (0x2000, 0x2BFF),   # punctuation, super/subscripts, currency (incl. the dong sign), letterlike,
                        # number forms, arrows, maths, technical, box drawing, shapes, dingbats
    (0x2E00, 0x2E7F),   # supplemental punctuation
    (0xFE00, 0xFE0F),   # variation selectors (emoji presentation)
    (0xFEFF, 0xFEFF),   # byte order mark / zero width no-break space
    (0xFFF9, 0xFFFD),   # interlinear annotation, object and replacement characters
    (0x1D400, 0x1D7FF),  # mathematical alphanumeric symbols
    (0x1F000, 0x1F1FF),  # game symbols, enclosed alphanumerics, regional indicators (flags)
    (0x1F300, 0x1FAFF),  # emoji, pictographs, transport, supplemental symbols
    (0xE0000, 0xE007F),  # tag characters (subdivision flags)
)
GREEK_MATHS = 1  # Greek letters one token may hold when the set does not write Greek

# The Latin script as Latin-script languages write it (see the module docstring for what is left out).
LATIN: tuple[tuple[int, int], ...] = (
    (0x00C0, 0x024F),   # Latin-1 letters, Latin Extended-A/B (Vietnamese ă â đ ê ô ơ ư)
    (0x0250, 0x02FF),   # IPA extensions, spacing modifier letters
    (0x1AB0, 0x1AFF),   # combining diacritical marks extended
    (0x1D00, 0x1DFF),   # phonetic extensions, combining marks supplement
    (0x1E00, 0x1EFF),   # Latin Extended Additional: precomposed Vietnamese letters with tones
    (0x2C60, 0x2C7F),   # Latin Extended-C
    (0xFB00, 0xFB06),   # Latin ligatures (fi, fl)
    (0xFE20, 0xFE2F),   # combining half marks
)


@dataclass(frozen=True)
class Entry:
    """One language as data (see the module docstring)."""

    code: str  # what --langs takes: ISO 639-1, with a script subtag where a language has two
    cldr: str  # gflanguages id: its exemplar characters
    scripts: tuple[str, ...]  # ISO 15924 codes whose letters it writes
    wordfreq: str | None  # wordfreq's code for its common-word list (None: not covered)
    lid: tuple[str, ...]  # fastText lid.176 labels that count as this language
    han: str | None = None  # a codec that narrows Han to the characters this language uses
    locale: str | None = None  # babel locale for its names, when not the code itself


LANGUAGES: tuple[Entry, ...] = (
    Entry("en", "en_Latn", ("Latn",), "en", ("en",)),
    Entry("vi", "vi_Latn", ("Latn",), "vi", ("vi",)),
    Entry("fr", "fr_Latn", ("Latn",), "fr", ("fr",)),
    Entry("de", "de_Latn", ("Latn",), "de", ("de",)),
    Entry("es", "es_Latn", ("Latn",), "es", ("es",)),
    Entry("pt", "pt_Latn", ("Latn",), "pt", ("pt",)),
    Entry("it", "it_Latn", ("Latn",), "it", ("it",)),
    Entry("nl", "nl_Latn", ("Latn",), "nl", ("nl",)),
    Entry("pl", "pl_Latn", ("Latn",), "pl", ("pl",)),
    Entry("sv", "sv_Latn", ("Latn",), "sv", ("sv",)),
    Entry("cs", "cs_Latn", ("Latn",), "cs", ("cs",)),
    Entry("ro", "ro_Latn", ("Latn",), "ro", ("ro",)),
    Entry("hu", "hu_Latn", ("Latn",), "hu", ("hu",)),
    Entry("id", "id_Latn", ("Latn",), "id", ("id",)),
    Entry("tr", "tr_Latn", ("Latn",), "tr", ("tr",)),
    Entry("sr-Latn", "sr_Latn", ("Latn",), "sh", ("sr", "sh", "hr", "bs")),
    Entry("ru", "ru_Cyrl", ("Cyrl",), "ru", ("ru",)),
    Entry("uk", "uk_Cyrl", ("Cyrl",), "uk", ("uk",)),
    Entry("sr-Cyrl", "sr_Cyrl", ("Cyrl",), "sr", ("sr",)),
    Entry("el", "el_Grek", ("Grek",), "el", ("el",)),
    Entry("he", "he_Hebr", ("Hebr",), "he", ("he",)),
    Entry("ar", "ar_Arab", ("Arab",), "ar", ("ar", "arz")),
    Entry("fa", "fa_Arab", ("Arab",), "fa", ("fa",)),
    Entry("hi", "hi_Deva", ("Deva",), "hi", ("hi",)),
    Entry("bn", "bn_Beng", ("Beng",), "bn", ("bn",)),
    Entry("th", "th_Thai", ("Thai",), None, ("th",)),
    Entry("ja", "ja_Jpan", ("Hira", "Kana", "Hani"), "ja", ("ja",), han="euc_jis_2004"),
    Entry("ko", "ko_Kore", ("Hang",), "ko", ("ko",)),
    Entry("zh-Hans", "zh_Hans", ("Hani",), "zh", ("zh",), locale="zh_Hans"),
    Entry("zh-Hant", "zh_Hant", ("Hani", "Bopo"), "zh", ("zh",), locale="zh_Hant"),
    Entry("zh", "zh_Hans", ("Hani", "Bopo"), "zh", ("zh",), locale="zh"),
)
