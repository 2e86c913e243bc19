"""Extending Gemma-3-270m (trimmed) with Vietnamese compound words as new tokens."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_trim import GGUFFile, trim
from gguf_trim.extend.words import export_rows, extend_file, tokenization_report
from gguf_trim.rewrite.verify import bits_per_byte, read_lines
from gguf_trim.runtime.llama import load_llama

from .conftest import GEMMA, SHARED, need

WORDS = ["học sinh", "Việt Nam", "có thể", "thông tin", "sử dụng", "tập tin", "dữ liệu", "hiển thị"]


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    d = tmp_path_factory.mktemp("ext")
    base = d / "gemma.envi.gguf"
    trim(need(GEMMA), base)
    words = d / "words.txt"
    words.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    out = d / "gemma.envi.vi.gguf"
    res = extend_file(base, words, out, top=len(WORDS))
    return base, out, res


def test_compounds_are_single_ids_and_round_trip(extended):
    base, out, res = extended
    assert res.n_vocab_after == res.n_vocab_before + len(res.added)
    assert " học sinh" in res.added and " Việt Nam" in res.added and "Việt Nam" in res.added
    llm = load_llama(out, vocab_only=True)
    for text in (" học sinh", " Việt Nam"):
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        assert len(ids) == 1 and ids[0] >= res.n_vocab_before
    rep = tokenization_report(out, ["Tôi là học sinh ở Việt Nam.", "Việt Nam có thể sử dụng dữ liệu.",
                                    "Học sinh Việt Nam học tập tin học."])
    assert rep["round_trip_failures"] == 0


def test_new_rows_are_the_mean_of_their_pieces(extended, tmp_path):
    base, out, res = extended
    npz = tmp_path / "rows.npz"
    assert export_rows(out, npz) == len(res.added)
    data = np.load(npz)
    tok = load_llama(base, vocab_only=True)
    from gguf_trim.format.quant import rows_float

    with GGUFFile(base) as g:
        n = len(g.get("tokenizer.ggml.tokens"))
        for text, vec in zip(data["texts"], data["token_embd_weight"]):
            ids = tok.tokenize(str(text).encode(), add_bos=False, special=False)
            mean = rows_float(g, "token_embd.weight", n, ids).mean(0)
            # requantized to Q8_0: equal up to one quantization step of each block
            assert np.abs(vec - mean).max() <= np.abs(mean).max() / 127 + 1e-6


def test_extended_model_generates_and_costs_bits(extended):
    base, out, res = extended
    lines = ["Học sinh Việt Nam có thể sử dụng thông tin này.", "Tập tin dữ liệu được hiển thị ở đây."]
    b0, b1 = bits_per_byte(base, lines), bits_per_byte(out, lines)
    assert np.isfinite(b0) and np.isfinite(b1) and b1 > 0
    llm = load_llama(out, n_ctx=256)
    text = llm.create_completion("Tôi là", max_tokens=12, temperature=0.0)["choices"][0]["text"]
    assert text.strip()


def test_dev_vietnamese_needs_fewer_tokens(tmp_path, dev_vi):
    base = tmp_path / "g.gguf"
    trim(need(GEMMA), base)
    out = tmp_path / "gx.gguf"
    res = extend_file(base, need(SHARED / "lexicon" / "vi_compounds.tsv"), out, top=1000,
                      corpus=need(SHARED / "corpus" / "train" / "vi.txt"))
    lines = read_lines(dev_vi)[:3000]
    a, b = tokenization_report(base, lines), tokenization_report(out, lines)
    assert b["round_trip_failures"] == 0
    assert b["tokens"] <= 0.85 * a["tokens"]
    assert res.n_vocab_after - res.n_vocab_before == len(res.added) > 1000


def test_k_quant_rows_are_requantized_through_libggml(tmp_path):
    from gguf.constants import GGMLQuantizationType as Q

    from gguf_trim.format.quant import rows_float
    from tests.synth import build_model

    from .conftest import vocab_file

    src = build_model(tmp_path / "m.gguf", vocab_file("llama-spm"), Q.Q4_K, Q.Q6_K)
    words = tmp_path / "w.txt"
    words.write_text("học sinh\nViệt Nam\n", encoding="utf-8")
    out = tmp_path / "x.gguf"
    res = extend_file(src, words, out, top=2)
    tok = load_llama(src, vocab_only=True)
    with GGUFFile(src) as g, GGUFFile(out) as h:
        assert h.tensor("token_embd.weight").type_name == "Q4_K" and h.tensor("output.weight").type_name == "Q6_K"
        for k, text in enumerate(res.added):
            ids = tok.tokenize(text.encode(), add_bos=False, special=False)
            for name in ("token_embd.weight", "output.weight"):
                mean = rows_float(g, name, res.n_vocab_before, ids).mean(0)
                new = rows_float(h, name, res.n_vocab_after, [res.n_vocab_before + k])[0]
                assert np.abs(new - mean).max() < 0.2 * np.abs(mean).max()  # 4-6 bit blocks
                assert np.corrcoef(new, mean)[0, 1] > 0.95
    llm = load_llama(out, n_ctx=128)
    assert llm.create_completion("Việt Nam", max_tokens=4, temperature=0.0)["choices"][0]["text"] is not None
