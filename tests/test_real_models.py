"""Real models end to end through llama-cpp-python: Gemma-3-270m (SentencePiece, tied output,
few-shot) and Qwen2.5-Coder-0.5B-Instruct (byte-level BPE, separate output Q8_0 and token_embd
Q5_0, chat template): trim -> verify -> greedy generation identical to the original."""

from __future__ import annotations

import pytest

from gguf_trim import trim
from gguf_trim.rewrite.verify import verify
from gguf_trim.runtime.llama import load_llama

from .conftest import GEMMA, QWEN, need

FEW_SHOT = ("English: Good morning.\nVietnamese: Chào buổi sáng.\n\n"
            "English: Where is the station?\nVietnamese: Nhà ga ở đâu?\n\n"
            "English: I like reading books.\nVietnamese: Tôi thích đọc sách.\n\n")
GEMMA_PROMPTS = [FEW_SHOT + "English: The weather is nice today.\nVietnamese:",
                 FEW_SHOT.replace("English", "X").replace("Vietnamese", "English").replace("X", "Vietnamese")
                 + "Vietnamese: Hôm nay trời đẹp.\nEnglish:",
                 "Hà Nội là thủ đô của"]
QWEN_MESSAGES = [
    [{"role": "user", "content": "Translate to Vietnamese, reply with the translation only: "
                                 "Please save your work before closing the window."}],
    [{"role": "user", "content": "Translate to English, reply with the translation only: "
                                 "Tôi đang học lập trình Python."}],
]


def _trimmed(src, factory, name):
    out = factory.mktemp(name) / f"{name}.envi.gguf"
    res, _ = trim(need(src), out)
    return src, out, res


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    return _trimmed(GEMMA, tmp_path_factory, "gemma")


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return _trimmed(QWEN, tmp_path_factory, "qwen")


@pytest.mark.parametrize("model", ["gemma", "qwen"])
def test_verify_real_model(model, request, dev_en, dev_vi):
    src, out, res = request.getfixturevalue(model)
    rep = verify(src, out, [dev_en, dev_vi], logits=8)
    assert rep["logits_lines"] == 8 and rep["logits_positions"] > 50
    assert rep["logits_max_abs_diff"] == 0.0
    for f in rep["files"]:
        assert f["line_fidelity"] >= 0.998
    assert rep["size_trimmed"] < rep["size_original"]
    assert rep["n_vocab_trimmed"] <= {"gemma": 168_000, "qwen": 104_000}[model]


def test_gemma_greedy_generation_is_identical(gemma):
    src, out, _ = gemma
    a, b = load_llama(src, n_ctx=512), load_llama(out, n_ctx=512)
    for prompt in GEMMA_PROMPTS:
        ra = a.create_completion(prompt, max_tokens=24, temperature=0.0, stop=["\n"])["choices"][0]["text"]
        rb = b.create_completion(prompt, max_tokens=24, temperature=0.0, stop=["\n"])["choices"][0]["text"]
        assert ra.strip() and ra == rb


def test_qwen_chat_greedy_generation_is_identical(qwen):
    src, out, _ = qwen
    a, b = load_llama(src, n_ctx=512), load_llama(out, n_ctx=512)
    for msgs in QWEN_MESSAGES:
        ra = a.create_chat_completion(messages=msgs, max_tokens=32, temperature=0.0)["choices"][0]["message"]
        rb = b.create_chat_completion(messages=msgs, max_tokens=32, temperature=0.0)["choices"][0]["message"]
        assert ra["content"].strip() and ra["content"] == rb["content"]
