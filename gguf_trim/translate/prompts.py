"""The prompts `translate` writes: few-shot lines for base models, chat turns for instruct models,
the shipped example pairs, and the prompt variants (`PromptStyle`) that keep a small model in the
target language. Pure text: no llama.cpp here, so options can name a style without loading it."""

from __future__ import annotations

import re
from dataclasses import dataclass

LANG_NAMES = {"en": "English", "vi": "Vietnamese"}

# Few-shot examples for base models, written for this package (everyday and software language).
EXAMPLES = [
    ("Good morning, how are you today?", "Chào buổi sáng, hôm nay bạn thế nào?"),
    ("Please save your changes before closing the window.", "Vui lòng lưu các thay đổi trước khi đóng cửa sổ."),
    ("The library opens at eight o'clock every morning.", "Thư viện mở cửa lúc tám giờ mỗi sáng."),
    ("I could not find the file you asked for.", "Tôi không tìm thấy tệp mà bạn yêu cầu."),
]
_VI_CHARS = re.compile("[ăâđêôơưĂÂĐÊÔƠƯ\u1ea0-\u1ef9\u0300-\u0309\u0323]")


def detect_lang(text: str) -> str:
    """'vi' when the text has letters only Vietnamese uses (ă đ ơ ư, tone marks), else 'en'."""
    return "vi" if _VI_CHARS.search(text) else "en"


LANG_SELF = {"en": "English", "vi": "Tiếng Việt"}  # each language's name in itself


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
    names = LANG_SELF if style.lang_prefix else LANG_NAMES
    s, d = names[src], names[dst]
    shots = "".join(f"{s}: {a if src == 'en' else b}\n{d}: {b if src == 'en' else a}\n\n" for a, b in EXAMPLES)
    return f"{shots}{s}: {text}\n{d}:"


def chat_messages(text: str, src: str, dst: str, style: PromptStyle = PromptStyle()) -> list[dict[str, str]]:
    s, d = LANG_NAMES[src], LANG_NAMES[dst]
    msgs = [{"role": "system", "content": f"You are a professional translator. Translate the user's {s} text "
                                          f"into {d}. Reply with the {d} translation only, on one line."}]
    if style.shots:
        for a, b in EXAMPLES:
            msgs += [{"role": "user", "content": a if src == "en" else b},
                     {"role": "assistant", "content": b if src == "en" else a}]
    msgs.append({"role": "user", "content": f"Translate into {d}: {text}" if style.insist else text})
    return msgs
