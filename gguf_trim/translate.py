"""English <-> Vietnamese translation on llama-cpp-python, one segment at a time.

Chat/instruct models go through the chat template stored in the GGUF; base models (no
template, e.g. Gemma-3-270m) through a few-shot prompt whose examples ship here. Every
segment stops at the end of its line or turn, so output stays line-aligned with input.
The script guard (on by default for files trimmed to en,vi) makes other scripts impossible.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from llama_cpp import LogitsProcessorList

from .errors import TrimError
from .guard import ScriptGuard
from .shards import open_model
from .verify import load_llama

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


def few_shot_prompt(text: str, src: str, dst: str) -> str:
    s, d = LANG_NAMES[src], LANG_NAMES[dst]
    shots = "".join(f"{s}: {a if src == 'en' else b}\n{d}: {b if src == 'en' else a}\n\n" for a, b in EXAMPLES)
    return f"{shots}{s}: {text}\n{d}:"


def chat_messages(text: str, src: str, dst: str) -> list[dict[str, str]]:
    s, d = LANG_NAMES[src], LANG_NAMES[dst]
    return [{"role": "system", "content": f"You are a professional translator. Translate the user's {s} text "
                                          f"into {d}. Reply with the {d} translation only, on one line."},
            {"role": "user", "content": text}]


@dataclass
class Translation:
    source: str
    text: str
    src: str
    dst: str
    tokens: int
    seconds: float
    guarded: bool


@dataclass
class Translator:
    """A loaded model plus how to prompt it and whether to guard its output."""

    model: str | Path
    n_ctx: int = 2048
    threads: int | None = None
    n_gpu_layers: int = 0
    temperature: float = 0.0
    seed: int | None = None
    guard: bool | None = None  # None: on when the file was trimmed to en,vi
    prompt: str = "auto"  # auto | chat | fewshot
    _llm: object = field(default=None, repr=False)
    _guard: ScriptGuard | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        with open_model(self.model) as g:
            langs = g.fields["gguf_trim.langs"].text() if "gguf_trim.langs" in g.fields else None
            has_template = "tokenizer.chat_template" in g.fields
        if self.guard is None:
            self.guard = langs is not None and set(langs.split(",")) <= {"en", "vi"}
        if self.prompt == "auto":
            self.prompt = "chat" if has_template else "fewshot"
        elif self.prompt not in ("chat", "fewshot"):
            raise TrimError(f"unknown prompt style {self.prompt!r} (auto, chat, fewshot)")
        if self.prompt == "chat" and not has_template:
            raise TrimError(f"{self.model} has no chat template; use --prompt fewshot")
        self._llm = load_llama(self.model, n_ctx=self.n_ctx, n_threads=self.threads,
                               n_gpu_layers=self.n_gpu_layers)
        if self.guard:
            llm = self._llm
            import llama_cpp

            vocab = llm._model.vocab
            ends = [i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)]
            self._guard = ScriptGuard.for_model(self.model, ends)
            self._guard.forbidden(b"")  # build the common state's table up front

    def _kwargs(self, max_tokens: int) -> dict:
        kw = {"max_tokens": max_tokens, "temperature": self.temperature, "stop": ["\n"]}
        if self.temperature > 0:
            kw.update(top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=self.seed)
        else:
            kw.update(repeat_penalty=1.0)
        if self._guard is not None:
            kw["logits_processor"] = LogitsProcessorList([self._guard.processor()])
        return kw

    def translate(self, text: str, dst: str, src: str = "auto", stream: bool = False) -> Iterator[str] | Translation:
        """Translate one segment (its newlines are flattened to spaces)."""
        text = " ".join(text.split())
        if dst not in LANG_NAMES:
            raise TrimError(f"--to must be one of {', '.join(LANG_NAMES)}")
        src = detect_lang(text) if src == "auto" else src
        if src not in LANG_NAMES:
            raise TrimError(f"--from must be auto or one of {', '.join(LANG_NAMES)}")
        llm = self._llm
        max_tokens = 32 + 3 * len(llm.tokenize(text.encode(), add_bos=False))
        if self.n_ctx < 512 + max_tokens:
            max_tokens = max(16, self.n_ctx - 512)
        kw = self._kwargs(max_tokens)
        t0 = time.perf_counter()
        if self.prompt == "chat":
            res = llm.create_chat_completion(messages=chat_messages(text, src, dst), stream=stream, **kw)
        else:
            res = llm.create_completion(few_shot_prompt(text, src, dst), stream=stream, **kw)
        if stream:
            return self._stream(res, self.prompt == "chat")
        if self.prompt == "chat":
            out, n = res["choices"][0]["message"]["content"] or "", res["usage"]["completion_tokens"]
        else:
            out, n = res["choices"][0]["text"], res["usage"]["completion_tokens"]
        return Translation(text, out.strip(), src, dst, n, time.perf_counter() - t0, self._guard is not None)

    @staticmethod
    def _stream(chunks, chat: bool) -> Iterator[str]:
        first = True
        for c in chunks:
            piece = (c["choices"][0].get("delta", {}).get("content") if chat else c["choices"][0]["text"]) or ""
            if first:
                piece = piece.lstrip()
                first = not piece
            yield piece

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def foreign_chars(text: str) -> list[str]:
    """Characters outside the English/Vietnamese set (what the guard forbids)."""
    from .charset import char_allowed

    return [c for c in text if not char_allowed(ord(c))]
