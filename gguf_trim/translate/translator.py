"""Translation between two languages of a model's set (English <-> Vietnamese by default) on
llama-cpp-python: one segment (`translate`, streaming too) or many decoded together in batches
(`translate_many`, through runtime.batch).

Chat/instruct models go through the chat template stored in the GGUF; base models (no
template, e.g. Gemma-3-270m) through a few-shot prompt whose examples ship here. Every
segment stops at the end of its line or turn, so output stays line-aligned with input.
The languages are the set the file was trimmed to (gguf_trim.langs): a translation is between two of
them, and the script guard (on by default for files gguf-trim trimmed) makes characters outside them
impossible. The file's own suppress list (tokenizer.ggml.suppress_tokens) is obeyed in every path,
guard or not, as stock llama.cpp obeys it; the guard forbids a superset of what gguf-trim lists, so
guarded output does not change.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from llama_cpp import LogitsProcessorList

from gguf_trim.errors import TrimError
from gguf_trim.format.shards import open_model
from gguf_trim.langs import LanguageSet, file_langs, language_set
from gguf_trim.runtime.guard import ScriptGuard
from gguf_trim.runtime.llama import end_ids, load_llama
from gguf_trim.translate.prompts import (
    REASK,
    PromptStyle,
    chat_messages,
    detect_lang,
    few_shot_prompt,
    language,
)
from gguf_trim.vocab.suppress import file_suppress


def choose_parallel(n_ctx: int, prefix: int, needs: list[int], gpu: bool = False) -> int:
    """Sequences to decode together: as many as n_ctx holds at the typical segment's need (its own
    prompt tokens plus output budget; the shared prefix is stored once), capped where a batch
    stops paying: on a CPU the step time grows with the batch once the cores are busy, a GPU
    takes many more sequences almost for free."""
    cap = 64 if gpu else 16
    if not needs:
        return 1
    typical = sorted(needs)[len(needs) // 2]
    return max(1, min(cap, (n_ctx - prefix) // max(1, typical)))


@dataclass
class Translation:
    source: str
    text: str
    src: str
    dst: str
    tokens: int
    seconds: float
    guarded: bool
    reasked: bool = False  # the first output was in the wrong language and the model was asked again


def resolve_prompt_guard(model: str | Path, prompt: str = "auto", guard: bool | None = None) -> tuple[str, bool]:
    """The prompt style and guard a Translator of `model` uses, from the file's metadata alone
    (chat when it has a template; the guard on when gguf-trim trimmed it, so its language set is known)."""
    with open_model(model) as g:
        langs = file_langs(g)
        has_template = "tokenizer.chat_template" in g.fields
    if guard is None:
        guard = langs is not None
    if prompt == "auto":
        prompt = "chat" if has_template else "fewshot"
    elif prompt not in ("chat", "fewshot"):
        raise TrimError(f"unknown prompt style {prompt!r} (auto, chat, fewshot)")
    if prompt == "chat" and not has_template:
        raise TrimError(f"{model} has no chat template; use --prompt fewshot")
    return prompt, guard


def model_langs(model: str | Path, langs: str | Iterable[str] | LanguageSet | None = None
                ) -> tuple[LanguageSet, bool]:
    """The languages a Translator of `model` translates between, and whether the file records them: the
    set gguf-trim trimmed it to; for a file it did not trim (which can write anything) `langs`, default en,vi."""
    with open_model(model) as g:
        recorded = file_langs(g)
    return recorded or language_set(langs), recorded is not None


def check_direction(langs: LanguageSet, dst: str, src: str = "auto", model: str | Path | None = None,
                    trimmed: bool = True) -> tuple[str, str]:
    """(src, dst) as codes of `langs` (src may stay 'auto'); a one-line TrimError for an unknown code or
    one outside the set, naming the set."""
    out = []
    for role, code in (("from", src), ("into", dst)):
        if role == "from" and code == "auto":
            out.append(code)
            continue
        lang = language(code)
        if lang.code not in langs:
            name = Path(model).name if model else "the model"
            where = (f"{name} was trimmed to {langs.key}" if trimmed
                     else f"{name} was not trimmed; its translator's languages are {langs.key} (langs=...)")
            raise TrimError(f"{where}: it cannot translate {role} {lang.name} ({lang.code})")
        out.append(lang.code)
    return out[0], out[1]


def check_model_direction(model: str | Path, dst: str, src: str = "auto",
                          langs: str | Iterable[str] | LanguageSet | None = None) -> tuple[str, str]:
    """check_direction against the languages a Translator of `model` would have (model_langs), from the
    file's metadata alone: a wrong direction is refused before a model loads or a cluster starts."""
    lset, trimmed = model_langs(model, langs)
    return check_direction(lset, dst, src, model, trimmed)


@dataclass
class Translator:
    """A loaded model plus how to prompt it and whether to guard its output."""

    model: str | Path
    n_ctx: int = 2048
    threads: int | None = None
    n_gpu_layers: int = 0
    temperature: float = 0.0
    seed: int | None = None
    guard: bool | None = None  # None: on when gguf-trim trimmed the file
    prompt: str = "auto"  # auto | chat | fewshot
    style: PromptStyle = PromptStyle()
    reask: bool = False  # ask once more (REASK style) when an output is not in the target language
    flash_attn: bool = True  # attention skips the cells of other sequences (see BatchEngine)
    lora: tuple = ()  # LoRA adapters (tune.adapter.LoraSpec) applied on every context
    # The languages it translates between (a LanguageSet once built): always the set a trimmed file records;
    # for a file gguf-trim did not trim, these (default en,vi; see untrimmed_langs).
    langs: str | Iterable[str] | LanguageSet | None = None
    _llm: object = field(default=None, repr=False)
    _guard: ScriptGuard | None = field(default=None, repr=False)
    _suppress: np.ndarray | None = field(default=None, repr=False)  # the file's suppress list (ids)
    _adapters: object = field(default=None, repr=False)
    _formatter: object = field(default=None, repr=False)
    _engine: object = field(default=None, repr=False)
    _prefixes: dict = field(default_factory=dict, repr=False)
    _primed: list = field(default_factory=list, repr=False)
    _trimmed: bool = field(default=False, repr=False)  # langs is the set the file records

    def __post_init__(self) -> None:
        self.prompt, self.guard = resolve_prompt_guard(self.model, self.prompt, self.guard)
        self.style = self.style.resolved(self.prompt)
        self.langs, self._trimmed = model_langs(self.model, self.langs)
        self._llm = load_llama(self.model, n_ctx=self.n_ctx, n_threads=self.threads,
                               n_gpu_layers=self.n_gpu_layers, flash_attn=self.flash_attn)
        if self.lora:
            from gguf_trim.runtime.llama import Adapters

            try:
                self._adapters = Adapters(self._llm, self.model, list(self.lora))
                self._adapters.apply(self._llm._ctx.ctx)
            except TrimError:
                self.close()
                raise
        with open_model(self.model) as g:
            ids = file_suppress(g)
        n = self._llm.n_vocab()
        self._suppress = ids[(ids >= 0) & (ids < n)] if len(ids) else None  # llama.cpp skips the others too
        if self.guard:
            self._guard = ScriptGuard.for_model(self.model, end_ids(self._llm), self.langs)
            self._guard.forbidden(b"")  # build the common state's table up front

    def max_tokens(self, text: str) -> int:
        """Output budget of one segment: 3 tokens per source token plus 32, within n_ctx."""
        max_tokens = 32 + 3 * len(self._llm.tokenize(text.encode(), add_bos=False))
        if self.n_ctx < 512 + max_tokens:
            max_tokens = max(16, self.n_ctx - 512)
        return max_tokens

    def prompt_tokens(self, text: str, src: str, dst: str, style: PromptStyle | None = None) -> list[int]:
        """The tokens this segment's prompt is: the GGUF's chat template rendered as
        create_chat_completion renders it (plus an answer prefix when asked), or the few-shot
        prompt with the BOS/EOS rules of create_completion. Both paths decode exactly these."""
        llm, style = self._llm, style or self.style
        if self.prompt == "chat":
            if self._formatter is None:
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                m = llm._model
                eos, bos = llm.token_eos(), llm.token_bos()
                self._formatter = Jinja2ChatFormatter(
                    template=llm.metadata["tokenizer.chat_template"],
                    eos_token=m.token_get_text(eos) if eos != -1 else "",
                    bos_token=m.token_get_text(bos) if bos != -1 else "", stop_token_ids=[eos])
            res = self._formatter(messages=chat_messages(text, src, dst, style))
            prompt = res.prompt + (f"{language(dst).autonym}:" if style.lang_prefix else "")
            return llm.tokenize(prompt.encode("utf-8"), add_bos=not res.added_special, special=True)
        m = llm._model
        cls, sep = m.token_cls(), m.token_sep()
        bos = [cls if cls != -1 else llm.token_bos()]
        if not m.add_bos_token() or bos == [-1]:
            bos = []
        eos = [sep if sep != -1 else llm.token_eos()] if (m.add_eos_token() or sep != -1) else []
        prompt = few_shot_prompt(text, src, dst, style)
        return bos + llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True) + eos

    def _kwargs(self, max_tokens: int) -> dict:
        kw = {"max_tokens": max_tokens, "temperature": self.temperature, "stop": ["\n"]}
        if self.temperature > 0:
            kw.update(top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=self.seed)
        else:
            kw.update(repeat_penalty=1.0)
        procs = [self._guard.processor()] if self._guard is not None else []
        if self._suppress is not None:
            ids = self._suppress

            def suppress(_input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
                scores[ids] = -np.inf
                return scores

            procs.append(suppress)
        if procs:
            kw["logits_processor"] = LogitsProcessorList(procs)
        return kw

    def ban_mask(self) -> np.ndarray | None:
        """The file's suppress list as the batch engine's mask of never-chosen ids."""
        if self._suppress is None:
            return None
        mask = np.zeros(self._llm.n_vocab(), dtype=bool)
        mask[self._suppress] = True
        return mask

    def check_direction(self, dst: str, src: str = "auto") -> tuple[str, str]:
        """(src, dst) as codes of this translator's languages; one line naming them when not."""
        return check_direction(self.langs, dst, src, self.model, self._trimmed)

    def source_guess(self, dst: str) -> str:
        """The source assumed where none can be detected (a blank segment, the shared prompt prefix of an
        auto job): the set's first other language (en for vi, vi for en)."""
        return next((c for c in self.langs.codes if c != dst), dst)

    def foreign_chars(self, text: str) -> list[str]:
        """Characters outside this translator's languages (what its guard forbids)."""
        return self.langs.chars.foreign(text)

    def translate(self, text: str, dst: str, src: str = "auto", stream: bool = False) -> Iterator[str] | Translation:
        """Translate one segment (its newlines are flattened to spaces), one at a time through
        llama-cpp-python's create_completion on the prompt tokens of prompt_tokens()."""
        text = " ".join(text.split())
        src, dst = self.check_direction(dst, src)
        src = detect_lang(text, self.langs) if src == "auto" else src
        t0 = time.perf_counter()
        res = self._complete(text, src, dst, self.style, stream)
        if stream:
            return self._stream(res)
        out, n = res["choices"][0]["text"].strip(), res["usage"]["completion_tokens"]
        reasked = False
        if self.reask and self.style != REASK and self.wrong_lang(out, dst):
            res = self._complete(text, src, dst, REASK, False)
            again, n2 = res["choices"][0]["text"].strip(), res["usage"]["completion_tokens"]
            n, reasked = n + n2, True
            if not self.wrong_lang(again, dst):
                out = again
        return Translation(text, out, src, dst, n, time.perf_counter() - t0, self._guard is not None, reasked)

    def _complete(self, text: str, src: str, dst: str, style: PromptStyle, stream: bool):
        prompt = self.prompt_tokens(text, src, dst, style)
        self._prime(src, dst, style)
        kw = self._kwargs(self._job_budget(text, prompt))
        return self._llm.create_completion(prompt, stream=stream, **kw)

    def wrong_lang(self, out: str, dst: str) -> bool:
        """Is this output not in the target language (by the language detector, within this set)?"""
        from gguf_trim.runtime.langid import detector

        return detector().check(out, dst, self.langs)[1]

    def shared_prefix(self, src: str, dst: str, style: PromptStyle | None = None) -> list[int]:
        """The prompt tokens every segment of this direction starts with (cached)."""
        from gguf_trim.runtime.batch import common_prefix

        style = style or self.style
        key = (src, dst, style)
        if key not in self._prefixes:
            self._prefixes[key] = common_prefix([self.prompt_tokens("a", src, dst, style),
                                                 self.prompt_tokens("b c", src, dst, style)])
        return self._prefixes[key]

    def _prime(self, src: str, dst: str, style: PromptStyle | None = None) -> None:
        """Leave exactly the shared prompt prefix in the KV cache, evaluated on its own.

        Why: llama.cpp's numbers depend on how a prompt is split into batches, and
        create_completion reuses whatever prefix the previous call left, so without this a
        segment's greedy output could depend on the segment translated before it. With it, a
        segment always gets the same output, and the batched path (which evaluates the prefix
        once on its own too) computes the same thing."""
        llm, prefix = self._llm, self.shared_prefix(src, dst, style)
        n = len(prefix)
        if n == 0:
            return
        if llm.n_tokens >= n and llm.input_ids[:n].tolist() == prefix and self._primed == prefix:
            if llm.n_tokens > n and llm._ctx.kv_cache_seq_rm(-1, n, -1):
                llm.n_tokens = n
            if llm.n_tokens == n:
                return
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(prefix)
        self._primed = prefix

    def _job_budget(self, text: str, prompt: list[int]) -> int:
        """max_tokens as create_completion clamps it to this translator's n_ctx."""
        mt = self.max_tokens(text)
        return mt if mt + len(prompt) < self.n_ctx else self.n_ctx - len(prompt)

    def engine(self, parallel: int):
        """The batched decoder over this translator's n_ctx KV cells (remade when `parallel` changes)."""
        from gguf_trim.runtime.batch import BatchEngine

        e = self._engine
        if e is None or e.parallel != parallel:
            if e is not None:
                e.close()
            self._engine = BatchEngine(self._llm, self.n_ctx, parallel, self.threads)
            if self._adapters is not None:
                self._adapters.apply(self._engine._ctx.ctx)
        return self._engine

    def translate_many(self, texts: Iterable[str], dst: str, src: str = "auto",
                       parallel: int | None = None) -> Iterator[Translation]:
        """Translate many segments with batched decoding; yields them in input order.

        The n_ctx KV cells are shared by all sequences (the common prompt prefix once).
        `parallel` (sequences decoded together) defaults to what fits n_ctx for this model's
        prompts (see choose_parallel). Greedy output follows the one-at-a-time `translate` (same
        prompt tokens, stops and guard; llama.cpp may round differently in a batch, see the
        README). `seconds` of each result is the wall time since the previous one, so their sum
        is the job's wall time. Blank segments give "" without touching the model."""
        from gguf_trim.runtime.batch import Job

        src, dst = self.check_direction(dst, src)
        guess = src if src != "auto" else self.source_guess(dst)
        prefix = self.shared_prefix(guess, dst)
        ready: dict[int, Translation] = {}
        meta: dict[int, tuple[str, str]] = {}

        def jobs() -> Iterator[Job]:
            for i, raw in enumerate(texts):
                text = " ".join(raw.split())
                if not text:
                    ready[i] = Translation("", "", guess, dst, 0, 0.0, self._guard is not None)
                    continue
                s = detect_lang(text, self.langs) if src == "auto" else src
                meta[i] = (text, s)
                prompt = self.prompt_tokens(text, s, dst)
                yield Job(i, prompt, self._job_budget(text, prompt))

        stream = jobs()
        if parallel is None:
            head = list(itertools.islice(stream, 64))
            parallel = choose_parallel(self.n_ctx, len(prefix), [len(j.prompt) - len(prefix) + j.max_tokens
                                                                  for j in head], self.n_gpu_layers > 0)
            stream = itertools.chain(head, stream)
        eng = self.engine(parallel)
        nxt = 0
        t_last = time.perf_counter()
        first: dict[int, tuple[str, int]] = {}  # segments asked again: their first output and tokens
        for done in eng.run(stream, self._guard, self.temperature, self.seed, prefix, ban=self.ban_mask()):
            text, s = meta[done.index]
            out, n, reasked = done.text.strip(), len(done.tokens), False
            if done.attempt == 0 and self.reask and self.style != REASK and self.wrong_lang(out, dst):
                first[done.index] = (out, n)
                prompt = self.prompt_tokens(text, s, dst, REASK)
                eng.submit(Job(done.index, prompt, self._job_budget(text, prompt), attempt=1))
                continue
            if done.attempt == 1:
                out0, n0 = first.pop(done.index)
                out, n, reasked = (out0 if self.wrong_lang(out, dst) else out), n + n0, True
            del meta[done.index]
            ready[done.index] = Translation(text, out, s, dst, n, 0.0, self._guard is not None, reasked)
            while nxt in ready:
                t = ready.pop(nxt)
                now = time.perf_counter()
                t.seconds, t_last = now - t_last, now
                yield t
                nxt += 1
        while nxt in ready:
            yield ready.pop(nxt)
            nxt += 1

    @staticmethod
    def _stream(chunks) -> Iterator[str]:
        first = True
        for c in chunks:
            piece = c["choices"][0]["text"] or ""
            if first:
                piece = piece.lstrip()
                first = not piece
            yield piece

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def foreign_chars(text: str, langs: str | Iterable[str] | LanguageSet | None = None) -> list[str]:
    """Characters outside a language set (default en,vi): what a guard for that set forbids."""
    return language_set(langs).chars.foreign(text)
