"""The prompts `translate` writes: few-shot lines for base models, chat turns for instruct models,
the shipped example sentences, and the prompt variants (`PromptStyle`) that keep a small model in the
target language. Pure text: no llama.cpp here, so options can name a style without loading it.

Languages are codes of `gguf_trim.langs`: their names come from its `Language` objects (CLDR through
babel), the examples from `gguf_trim.langs.phrases.EXAMPLES`, so any pair of known languages is
prompted the same way the original English <-> Vietnamese prompts were (byte for byte for en/vi).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.langs import Language, LanguageSet, known_codes, language_set
from gguf_trim.langs.languages import normalize_code
from gguf_trim.langs.phrases import EXAMPLES

_VI_CHARS = re.compile("[ăâđêôơưĂÂĐÊÔƠƯ\u1ea0-\u1ef9\u0300-\u0309\u0323]")


def language(code: str) -> Language:
    """The `Language` of a code ('ko', 'zh_hans'); a one-line TrimError for an unknown one."""
    c = normalize_code(code)
    if c is None:
        raise TrimError(f"unknown language {code!r}: known codes are {', '.join(known_codes())}")
    return language_set(c).language(c)


def split_direction(direction: str) -> tuple[str, str]:
    """'en-vi' -> ('en', 'vi'); codes may hold a hyphen themselves ('sr-Latn-en'), so every split is
    tried. A one-line TrimError when no split gives two known, different codes."""
    parts = direction.split("-")
    for i in range(1, len(parts)):
        a, b = normalize_code("-".join(parts[:i])), normalize_code("-".join(parts[i:]))
        if a and b and a != b:
            return a, b
    raise TrimError(f"direction {direction!r}: expected SRC-DST of two different known languages (e.g. en-vi, "
                    f"ko-en); known codes are {', '.join(known_codes())}")


def header_codes(row: list[str]) -> tuple[str, str] | None:
    """The two codes of a pair file's header line ('en<TAB>ko'), or None when the row is a pair."""
    if len(row) < 2:
        return None
    a, b = normalize_code(row[0]), normalize_code(row[1])
    return (a, b) if a and b and a != b else None


def untrimmed_langs(dst: str, src: str = "auto") -> str:
    """A Translator's `langs` for a file gguf-trim did not trim (it can write anything), from a
    direction: both languages, or en,vi and the target when the source is detected (en,vi as before
    language sets). A trimmed file's own set always wins over it."""
    codes = [src, dst] if src != "auto" else ["en", "vi", dst]
    return ",".join(dict.fromkeys(codes))


def examples(src: str, dst: str) -> list[tuple[str, str]] | None:
    """The shipped example sentences as (src, dst) pairs; None when either language has none."""
    a, b = EXAMPLES.get(src), EXAMPLES.get(dst)
    return list(zip(a, b)) if a and b else None


def detect_lang(text: str, lset: str | LanguageSet | None = None) -> str:
    """The source language of `text` among the set's (auto --from).

    en,vi (the default): 'vi' when the text has letters only Vietnamese uses (ă đ ơ ư, tone marks), else
    'en', as always. Other sets: the language whose own letters (those no other language of the set
    writes: kana, Hangul, Cyrillic...) the text uses most (letters only: CLDR's exemplars also list
    punctuation); where that does not decide (Latin-script
    languages share their letters), fastText restricted to the set's languages; without it the first."""
    lset = language_set(lset)
    if set(lset.codes) == {"en", "vi"}:
        return "vi" if _VI_CHARS.search(text) else "en"
    if len(lset) == 1:
        return lset.codes[0]
    letters = [ord(c) for c in text if c.isalpha()]  # exemplar punctuation (' in en, « in fr) says little
    cps = np.asarray(letters, dtype=np.int64)
    counts = {c: int(m[cps].sum()) for c, m in _own_letters(lset).items()}
    best = max(counts.values())
    top = [c for c in lset.codes if counts[c] == best]
    if best and len(top) == 1:
        return top[0]
    cands = top if best else list(lset.codes)
    from gguf_trim.runtime.langid import detector, in_language, labels_for

    det = detector(required=False)
    if det is not None:
        label = det.detect(text, candidates=labels_for(cands))
        for c in cands:
            if in_language(label, c):
                return c
    return cands[0]


@cache
def _own_letters(lset: LanguageSet) -> dict[str, np.ndarray]:
    """Each language's letters that no other language of the set writes (cached per set)."""
    out = {}
    for lang in lset.languages:
        others = np.zeros(0x110000, dtype=bool)
        for o in lset.languages:
            if o.code != lang.code:
                others |= o.letters
        out[lang.code] = lang.letters & ~others
    return out


@dataclass(frozen=True)
class PromptStyle:
    """Prompt variants that keep a small model in the target language.

    shots: (chat) the shipped example pairs as earlier user/assistant turns, so the model has
    seen answers in the target language; lang_prefix: the answer starts with the target
    language's own name ("Tiếng Việt:"; few-shot prompts label their lines that way); insist:
    the user turn repeats the target language (used when re-asking). None: the default for the
    prompt kind (`resolved`): measured on dev pairs, examples help chat models and the
    language's own name helps few-shot prompts (README, "Measured")."""

    shots: bool | None = None
    lang_prefix: bool | None = None
    insist: bool = False

    def resolved(self, prompt: str) -> PromptStyle:
        """This style with its defaults filled in for a `chat` or `fewshot` prompt."""
        return PromptStyle(shots=prompt == "chat" if self.shots is None else self.shots,
                           lang_prefix=prompt == "fewshot" if self.lang_prefix is None else self.lang_prefix,
                           insist=self.insist)


REASK = PromptStyle(shots=True, lang_prefix=True, insist=True)


def few_shot_prompt(text: str, src: str, dst: str, style: PromptStyle = PromptStyle()) -> str:
    """Lines 'Name: sentence' for the four examples and then the text; a base model has nothing else
    to go on, so a language without shipped examples is refused rather than prompted bare."""
    ls, ld = language(src), language(dst)
    pairs = examples(ls.code, ld.code)
    if pairs is None:
        lack = ls if ls.code not in EXAMPLES else ld
        raise TrimError(f"no few-shot examples ship for {lack.name} ({lack.code}); use a model with a chat "
                        "template (--prompt chat)")
    s, d = (ls.autonym, ld.autonym) if style.lang_prefix else (ls.name, ld.name)
    shots = "".join(f"{s}: {a}\n{d}: {b}\n\n" for a, b in pairs)
    return f"{shots}{s}: {text}\n{d}:"


def chat_messages(text: str, src: str, dst: str, style: PromptStyle = PromptStyle()) -> list[dict[str, str]]:
    """System turn naming both languages, the examples as earlier turns (when asked for and shipped for
    both languages), then the text."""
    ls, ld = language(src), language(dst)
    s, d = ls.name, ld.name
    msgs = [{"role": "system", "content": f"You are a professional translator. Translate the user's {s} text "
                                          f"into {d}. Reply with the {d} translation only, on one line."}]
    pairs = examples(ls.code, ld.code) if style.shots else None
    for a, b in pairs or ():
        msgs += [{"role": "user", "content": a}, {"role": "assistant", "content": b}]
    msgs.append({"role": "user", "content": f"Translate into {d}: {text}" if style.insist else text})
    return msgs
