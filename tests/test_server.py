"""Trimmed files in stock llama.cpp (llama-server, llama-perplexity), where gguf-trim's script guard does not run.

Why: most people run a GGUF in stock llama.cpp. There a trimmed file must chat in Vietnamese through its own
chat template, tokenize exactly as gguf-trim does, give the same greedy output with and without its suppress
list, be no worse on held-out text, and, with the list, not spell foreign scripts through byte tokens even when
asked to at high temperature (the same run without the list shows that the check can fail).
Qwen2.5-Coder-0.5B, trimmed twice per module; each llama-server starts once per module (2 threads, 4 slots).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gguf_trim.bench.runtimes import PROMPTS, SAMPLING, foreign_outputs, trimmed_pair
from gguf_trim.runtime.server import LlamaServer, perplexity
from tests.conftest import DEV, QWEN, need

pytestmark = pytest.mark.server

THREADS, SLOTS, N_CTX = 2, 4, 4096
SEEDS, TEMPERATURES, MAX_TOKENS = (0, 1, 2, 3), (1.0, 1.5), 24  # 9 prompts x 4 x 2 = 72 chats


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(trimmed without the suppress list, trimmed with it)."""
    return trimmed_pair(need(QWEN), tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def listed(trimmed: tuple[Path, Path]):
    with LlamaServer(trimmed[1], n_ctx=N_CTX, threads=THREADS, parallel=SLOTS) as s:
        yield s


@pytest.fixture(scope="module")
def bare(trimmed: tuple[Path, Path]):
    with LlamaServer(trimmed[0], n_ctx=N_CTX, threads=THREADS, parallel=SLOTS) as s:
        yield s


def answers(server: LlamaServer, conversations: list[list[dict]], **params) -> list[str]:
    """Chat replies, SLOTS requests at a time."""
    def one(messages: list[dict]) -> str:
        return server.chat(messages, **params)["choices"][0]["message"]["content"]

    with ThreadPoolExecutor(SLOTS) as ex:
        return list(ex.map(one, conversations))


def dev_lines(path: Path, n: int) -> list[str]:
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return lines[:n]


def test_vietnamese_chat_through_the_files_template(listed: LlamaServer) -> None:
    from gguf_trim.runtime.langid import detector

    prompts = ["Hãy trả lời bằng tiếng Việt: Thủ đô của Việt Nam là gì?",
               "Translate to Vietnamese: Please save your changes before closing the window."]
    outs = answers(listed, [[{"role": "user", "content": p}] for p in prompts], temperature=0, max_tokens=48)
    langs = [detector().detect(o) for o in outs]
    assert langs == ["vi", "vi"], list(zip(outs, langs))


def test_tokenize_endpoint_agrees_with_gguf_trim(trimmed: tuple[Path, Path], listed: LlamaServer,
                                                 dev_en: Path, dev_vi: Path) -> None:
    from gguf_trim.runtime.llama import load_llama, tokenize

    lines = dev_lines(dev_en, 200) + dev_lines(dev_vi, 200)
    llm = load_llama(trimmed[1], vocab_only=True)
    try:
        ours = [tokenize(llm, t) for t in lines]
    finally:
        llm.close()
    with ThreadPoolExecutor(SLOTS) as ex:
        theirs = list(ex.map(listed.tokenize, lines))
    bad = [t for t, a, b in zip(lines, ours, theirs) if a != b]
    assert not bad, f"{len(bad)} of {len(lines)} lines tokenize differently, e.g. {bad[0]!r}"


def test_suppress_list_keeps_foreign_scripts_out(listed: LlamaServer, bare: LlamaServer) -> None:
    """72 chats at temperature 1.0 and 1.5 asking for CJK, Russian and Thai: none leaks with the list; without
    it the same prompts do (the file can still spell them through byte tokens), so the check can fail."""
    with_list = foreign_outputs(listed, PROMPTS, SEEDS, TEMPERATURES, MAX_TOKENS, **SAMPLING)
    without = foreign_outputs(bare, PROMPTS, SEEDS, TEMPERATURES, MAX_TOKENS, **SAMPLING)
    assert with_list["outputs"] == without["outputs"] == 72
    assert with_list["with_foreign"] == 0, with_list["examples"]
    assert without["with_foreign"] > 0, f"without the list no output leaked: {without}"


def test_greedy_translations_unchanged_by_the_list(listed: LlamaServer, bare: LlamaServer) -> None:
    from gguf_trim.translate.prompts import PromptStyle, chat_messages

    pairs = [ln.split("\t") for ln in dev_lines(need(DEV / "prose.en-vi.tsv"), 20)]
    style = PromptStyle().resolved("chat")
    convs = [chat_messages(en, "en", "vi", style) for en, *_ in pairs]
    params = {"temperature": 0, "max_tokens": 64, "stop": ["\n"]}
    # one at a time, in the same order on both servers: requests decoded together in one batch can round
    # differently (measured: sent 4 at a time, 2 of these 20 greedy outputs differed between the two files)
    a = [listed.chat(m, **params)["choices"][0]["message"]["content"] for m in convs]
    b = [bare.chat(m, **params)["choices"][0]["message"]["content"] for m in convs]
    assert all(a), a
    assert a == b, [(x, y) for x, y in zip(a, b) if x != y]


@pytest.mark.parametrize("lang", ["en", "vi"])
def test_perplexity_not_worse_after_trim(trimmed: tuple[Path, Path], tmp_path: Path, lang: str) -> None:
    """Held-out dev text, 20 chunks of 128 tokens: the trimmed file's perplexity is at most the original's."""
    text = tmp_path / f"{lang}.txt"
    text.write_text("\n".join(dev_lines(need(DEV / f"{lang}.txt"), 400)) + "\n", encoding="utf-8")
    orig = perplexity(QWEN, text, n_ctx=128, chunks=20, threads=THREADS)
    trim = perplexity(trimmed[1], text, n_ctx=128, chunks=20, threads=THREADS)
    assert trim <= orig, f"{lang}: original {orig:.4f}, trimmed {trim:.4f}"
    print(f"{lang}: original {orig:.4f}, trimmed {trim:.4f}")
