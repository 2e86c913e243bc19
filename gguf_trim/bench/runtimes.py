"""Does a trimmed file stay in its languages where gguf-trim's script guard does not run? (`make bench-runtimes`)

Why: most people run a GGUF in stock llama-server, llama-cli or ollama, where only what the file carries (the
suppress list) or what the client sends (a grammar) can keep foreign scripts out. This benchmark asks the
model, on purpose, for other scripts (for en,vi: Chinese, Japanese, Korean, Russian and Thai, in prompts that
quote them and ask for them back; for another set, langs/phrases.py's ADVERSARIAL prompts of its languages) at
high temperatures, and counts the outputs that hold a character outside the set's characters
(`language_set(langs).chars`), per runtime and variant:

* runtime `llama-server`: stock llama-server (runtime/server.py), /v1/chat/completions with the GGUF's chat
  template; the suppress list applies when the file has one, the grammar when the request sends it;
* runtime `gguf-trim (llama-cpp-python)`: the model loaded as the translate path loads it, chats through
  llama-cpp-python's create_chat_completion (the same template) with the script guard's logits processor
  for the set on every file gguf-trim trimmed (never on the original).
  llama-cpp-python's own sampler chain ignores the suppress list, so there the guard does the work.

Variants: the original file, the trimmed file without the list (`trim --no-suppress`), with it, and with it
plus the GBNF grammar of the set's characters (export.grammar_gbnf). Both runtimes get the same sampling
parameters (llama.cpp's default truncation: top-k 40, top-p 0.95, min-p 0.05; no repeat penalty).

    gguf-trim bench runtimes MODEL [--langs en,ko] --json runtimes.json --md runtimes.md
"""

from __future__ import annotations

import itertools
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gguf_trim.langs import LanguageSet, language_set
from gguf_trim.langs.phrases import ADVERSARIAL
from gguf_trim.tables import markdown_table

# Prompts that ask for, or quote, scripts a file trimmed to en,vi cannot spell with its own tokens: only
# through byte tokens, which is what the suppress list and the grammar are for. The "Repeat exactly" ones are
# the hardest: the prompt itself hands the model the byte tokens to copy.
PROMPTS: tuple[str, ...] = (
    "Repeat exactly: 我爱你 and 사랑해",
    "Repeat exactly: Привет, как дела?",
    "Repeat exactly: สวัสดีครับ and ありがとう",
    "Translate to Korean: Good morning, how are you today?",
    "Translate to Russian: The weather is beautiful today.",
    "Write the Thai word for hello.",
    "Translate into Japanese: Thank you very much for your help.",
    "Translate to Chinese: I love learning new languages.",
    "Write one sentence in Japanese, then the same sentence in Korean.",
)
SEEDS = (0, 1, 2, 3)
TEMPERATURES = (1.0, 1.5)
MAX_TOKENS = 32
# llama.cpp's default truncation, given explicitly so that both runtimes sample alike
SAMPLING: dict[str, Any] = {"top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}
VARIANTS = ("original", "trimmed --no-suppress", "trimmed + list", "trimmed + list + grammar")
RUNTIMES = ("llama-server", "gguf-trim (llama-cpp-python)")
N_EXAMPLES = 5


def foreign(text: str, langs: str | LanguageSet | None = None) -> list[str]:
    """The characters of `text` outside the language set (default en,vi)."""
    return language_set(langs).chars.foreign(text)


def default_prompts(langs: str | LanguageSet | None = None) -> list[str]:
    """PROMPTS for en,vi (the README's measurement); else the ADVERSARIAL prompts of the set's languages."""
    lset = language_set(langs)
    if lset.is_en_vi:
        return list(PROMPTS)
    own = [p for code in lset.codes for p in ADVERSARIAL.get(code, ())]
    return own or list(PROMPTS)


def foreign_outputs(server: Any, prompts: Iterable[str], seeds: Iterable[int], temperatures: Iterable[float],
                    max_tokens: int, langs: str | LanguageSet | None = None, keep_texts: bool = False,
                    **params: Any) -> dict[str, Any]:
    """Chat once per (prompt, seed, temperature) through `server.chat` (LlamaServer.chat, or anything that
    answers OpenAI-shaped chat completions), `server.parallel` at a time, and count the outputs with a
    character outside the language set `langs` (default en,vi). `params` go into every request (top_k,
    grammar, ...).

    Returns {"outputs", "with_foreign" (outputs), "foreign_chars", "replacement_chars" (U+FFFD: bytes that
    formed no character; allowed, but worth seeing), "tokens", "seconds", "by_prompt" {prompt: outputs with
    foreign characters}, "examples" [{prompt, seed, temperature, text}]}, and "texts" (every output, in job
    order) with `keep_texts`."""
    chars = language_set(langs).chars
    prompts = list(prompts)
    jobs = list(itertools.product(prompts, list(seeds), list(temperatures)))

    def one(job: tuple[str, int, float]) -> tuple[str, int]:
        prompt, seed, temp = job
        r = server.chat([{"role": "user", "content": prompt}], temperature=temp, seed=seed, max_tokens=max_tokens,
                        **params)
        return r["choices"][0]["message"]["content"] or "", int(r.get("usage", {}).get("completion_tokens", 0))

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max(1, getattr(server, "parallel", 1))) as ex:
        answers = list(ex.map(one, jobs))
    seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"outputs": len(jobs), "with_foreign": 0, "foreign_chars": 0, "replacement_chars": 0,
                           "tokens": sum(n for _, n in answers), "seconds": round(seconds, 1),
                           "by_prompt": dict.fromkeys(prompts, 0), "examples": []}
    if keep_texts:
        out["texts"] = [text for text, _ in answers]
    for (prompt, seed, temp), (text, _) in zip(jobs, answers):
        bad = chars.foreign(text)
        out["replacement_chars"] += text.count("\ufffd")
        if not bad:
            continue
        out["with_foreign"] += 1
        out["foreign_chars"] += len(bad)
        out["by_prompt"][prompt] += 1
        if len(out["examples"]) < N_EXAMPLES:
            out["examples"].append({"prompt": prompt, "seed": seed, "temperature": temp, "text": text})
    return out


class PythonChat:
    """The model as gguf-trim's translate path runs it (llama-cpp-python, with the script guard of `langs`,
    default the file's recorded set), answering chats like LlamaServer.chat, one at a time. `guard`: None
    turns it on for a file gguf-trim trimmed and off for any other (the original)."""

    parallel = 1

    def __init__(self, model: str | Path, n_ctx: int = 2048, threads: int | None = None,
                 langs: str | LanguageSet | None = None, guard: bool | None = None):
        from gguf_trim.format.shards import open_model
        from gguf_trim.langs import file_langs
        from gguf_trim.runtime.guard import ScriptGuard
        from gguf_trim.runtime.llama import end_ids, load_llama

        if guard is None:
            with open_model(model) as g:
                guard = file_langs(g) is not None
        self.llm = load_llama(model, n_ctx=n_ctx, n_threads=threads)
        self.guard = ScriptGuard.for_model(model, end_ids(self.llm), langs) if guard else None
        self._grammars: dict[str, Any] = {}

    def chat(self, messages: list[dict], grammar: str | None = None, **params: Any) -> dict:
        from llama_cpp import LlamaGrammar, LogitsProcessorList

        if self.guard is not None:
            params["logits_processor"] = LogitsProcessorList([self.guard.processor()])
        if grammar is not None:
            if grammar not in self._grammars:
                self._grammars[grammar] = LlamaGrammar.from_string(grammar, verbose=False)
            params["grammar"] = self._grammars[grammar]
        return self.llm.create_chat_completion(messages=messages, **params)

    def close(self) -> None:
        self.llm.close()


def grammar_text(langs: str | LanguageSet | None = None) -> str | None:
    """The GBNF grammar of the set's characters (export.grammar_gbnf), or None where this build has none."""
    try:
        from gguf_trim.export import grammar_gbnf
    except ImportError:
        return None
    return grammar_gbnf(langs)


def trimmed_name(model: str | Path, langs: str | LanguageSet | None = None, listed: bool = True) -> str:
    """NAME.envi.gguf, NAME.enzh-Hans-nolist.gguf: the file name of a trim of `model` to `langs`."""
    tag = language_set(langs).key.replace(",", "")
    return f"{Path(model).name.removesuffix('.gguf')}.{tag}{'' if listed else '-nolist'}.gguf"


def trimmed_pair(model: str | Path, folder: str | Path, langs: str | LanguageSet | None = None
                 ) -> tuple[Path, Path]:
    """The model trimmed to `langs` (default en,vi) twice into `folder`: (without the suppress list, with it)."""
    from gguf_trim.api import trim

    key = language_set(langs).key
    bare, listed = Path(folder) / trimmed_name(model, key, False), Path(folder) / trimmed_name(model, key)
    trim(model, bare, langs=key, suppress=False)
    trim(model, listed, langs=key, suppress=True)
    return bare, listed


def bench_model(model: str | Path, langs: str | LanguageSet | None = "en,vi", prompts: Iterable[str] | None = None,
                seeds: Iterable[int] = SEEDS, temperatures: Iterable[float] = TEMPERATURES,
                max_tokens: int = MAX_TOKENS, runtimes: Iterable[str] = RUNTIMES, threads: int | None = None,
                parallel: int = 4, log: Callable[[str], None] | None = None) -> list[dict]:
    """Rows (runtime x variant) for one model: foreign_outputs of each, the model trimmed to `langs` in a temp
    folder. `prompts` default to `default_prompts(langs)`."""
    from gguf_trim.runtime.server import LlamaServer

    lset = language_set(langs)
    prompts = default_prompts(lset) if prompts is None else list(prompts)
    seeds, temperatures = list(seeds), list(temperatures)
    gbnf = grammar_text(lset)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gguf-trim-runtimes-") as tmp:
        bare, listed = trimmed_pair(model, tmp, lset)
        files = {"original": Path(model), "trimmed --no-suppress": bare, "trimmed + list": listed,
                 "trimmed + list + grammar": listed}
        for runtime in runtimes:
            for variant in VARIANTS:
                base = {"model": Path(model).name, "runtime": runtime, "variant": variant}
                params = dict(SAMPLING)
                if variant.endswith("grammar"):
                    if gbnf is None:
                        rows.append({**base, "outputs": None, "note": "no export.grammar_gbnf in this build"})
                        continue
                    params["grammar"] = gbnf
                if log:
                    log(f"{base['model']}: {runtime}, {variant}")
                if runtime == "llama-server":
                    with LlamaServer(files[variant], threads=threads, parallel=parallel) as s:
                        res = foreign_outputs(s, prompts, seeds, temperatures, max_tokens, lset, **params)
                    guard = False
                else:
                    chat = PythonChat(files[variant], threads=threads, langs=lset)
                    try:
                        res = foreign_outputs(chat, prompts, seeds, temperatures, max_tokens, lset, **params)
                        guard = chat.guard is not None
                    finally:
                        chat.close()
                rows.append({**base, "guard": guard, **res})
    return rows


def bench(models: Iterable[str | Path], **kw: Any) -> dict[str, Any]:
    """The whole benchmark: rows for every model plus the settings they were measured with."""
    kw["langs"] = language_set(kw.get("langs")).key
    if kw.get("prompts") is None:
        kw["prompts"] = default_prompts(kw["langs"])
    kw.setdefault("seeds", SEEDS)
    kw.setdefault("temperatures", TEMPERATURES)
    kw.setdefault("max_tokens", MAX_TOKENS)
    kw["prompts"], kw["seeds"], kw["temperatures"] = list(kw["prompts"]), list(kw["seeds"]), list(kw["temperatures"])
    rows = [r for m in models for r in bench_model(m, **kw)]
    return {"rows": rows, "prompts": kw["prompts"], "seeds": kw["seeds"], "temperatures": kw["temperatures"],
            "max_tokens": kw["max_tokens"], "sampling": SAMPLING, "threads": kw.get("threads") or os.cpu_count(),
            "machine": platform.machine(), "grammar": grammar_text(kw["langs"]) is not None, "langs": kw["langs"]}


def markdown(result: dict[str, Any]) -> str:
    """The README table: runtime x variant -> outputs with foreign characters (and how many characters)."""
    rows = []
    for r in result["rows"]:
        if r.get("outputs") is None:
            rows.append([r["model"], r["runtime"], r["variant"], "-", "n/a", "n/a", "n/a"])
            continue
        rows.append([r["model"], r["runtime"], r["variant"], "on" if r["guard"] else "off",
                     f"{r['with_foreign']} / {r['outputs']}", r["foreign_chars"], r["replacement_chars"]])
    table = markdown_table(["model", "runtime", "variant", "guard", "outputs with foreign chars", "foreign chars",
                            "U+FFFD"], rows, "lllllrr")
    temps = ", ".join(f"{t:.1f}" for t in result["temperatures"])
    note = (f"{len(result['prompts'])} adversarial prompts x {len(result['seeds'])} seeds x temperature {temps}, "
            f"at most {result['max_tokens']} tokens each; top-k {SAMPLING['top_k']}, top-p {SAMPLING['top_p']}, "
            f"min-p {SAMPLING['min_p']}.")
    return table + "\n\n" + note
