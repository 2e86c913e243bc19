"""Gemma 4's tokenizer (tokenizer.ggml.model = gemma4: BPE merges over SentencePiece-style text,
<0xNN> byte tokens) through every path that tokenizes: reading, the lossless trim and its closure,
the merges written, the compact profile's counting and selection, extend, the script guard.
All against llama.cpp itself (llama-cpp-python) on the vocab file llama.cpp ships."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_trim import GGUFFile, TrimError, Vocab, trim
from gguf_trim.api import CompactOptions
from gguf_trim.extend.words import detokenize_c, extend_file, tokenization_report
from gguf_trim.rewrite.verify import kept_ids_of, read_lines, verify
from gguf_trim.runtime.guard import ScriptGuard
from gguf_trim.runtime.llama import load_llama
from gguf_trim.selection import compact as C
from gguf_trim.selection.selection import kept_merges, select_lossless
from gguf_trim.vocab import tokenizer as T
from gguf_trim.vocab.vocabulary import BYTE, USER_DEFINED

from .conftest import SHARED, need, vocab_file

TRAIN = SHARED / "corpus" / "train"
S = "\u2581"


def _vocab(path) -> Vocab:
    with GGUFFile(path) as g:
        return Vocab.from_gguf(g)


@pytest.fixture(scope="module")
def src():
    return vocab_file("gemma-4")


@pytest.fixture(scope="module")
def vocab(src):
    return _vocab(src)


@pytest.fixture(scope="module")
def lossless(src, tmp_path_factory):
    """The lossless trim, once per session (trim loads it with llama.cpp before renaming it)."""
    out = tmp_path_factory.mktemp("gemma4") / "gemma-4.envi.gguf"
    res, sel = trim(src, out)
    return out, res, sel


@pytest.fixture(scope="module")
def llms(src, lossless):
    a, b = load_llama(src, vocab_only=True), load_llama(lossless[0], vocab_only=True)
    yield a, b
    a.close()
    b.close()


def test_read_as_llama_cpp_reads_it(vocab, llms):
    a, _ = llms
    assert (vocab.model, vocab.pre, vocab.pre_type) == ("gemma4", None, "gemma4")  # llama.cpp forces "gemma4"
    assert vocab.is_bpe and not vocab.byte_level and vocab.whole_newline_runs and not vocab.add_space_prefix
    assert (vocab.n, len(vocab.merges)) == (262_144, 514_906) == (a.n_vocab(), 514_906)
    byte_ids = vocab.byte_token_ids()
    assert len(byte_ids) == 256 and (vocab.types[byte_ids] == BYTE).all()
    hello = vocab.token_to_id[f"{S}hello".encode()]
    assert vocab.pieces[hello] == b" hello" and a.tokenize(b" hello", add_bos=False, special=False) == [hello]
    # the merge loop, replayed on a token's text, ends at that token through tokens that exist
    for text in (f"{S}Việt", f"{S}information", f"{S}được", f"{S}Nguyễn"):
        i = vocab.token_to_id[text.encode()]
        d = vocab.derivation(i)
        assert d is not None and i not in d and all(vocab.tokens[j].decode() in text for j in d), text
        assert a.tokenize(text.replace(S, " ").encode(), add_bos=False, special=False) == [i], text
    # a run of newlines that is a token is taken whole, without merges (llama-vocab.cpp's Gemma 4 case)
    nl3 = vocab.token_to_id[b"\n\n\n"]
    assert vocab.derivation(nl3) == [] and a.tokenize(b"\n\n\n", add_bos=False, special=False) == [nl3]


def test_lossless_trim_keeps_en_vi_text_exactly(src, vocab, lossless, llms, dev_en, dev_vi):
    out, res, sel = lossless
    assert (res.n_vocab_original, res.n_vocab_trimmed) == (262_144, 166_758)
    assert (res.merges_original, res.merges_trimmed) == (514_906, 390_644)
    rep = verify(src, out, [dev_en, dev_vi])
    assert [(f["lines"] > 9000, f["line_fidelity"]) for f in rep["files"]] == [(True, 1.0), (True, 1.0)]
    # special and user-defined tokens keep their ids' meaning; the chat markup tokenizes the same
    a, b = llms
    kept = kept_ids_of(out)
    prompt = "<bos><|turn>user\nDịch sang tiếng Anh: Xin chào!<turn|>\n<|turn>model\n<|tool_call>x<tool_call|>"
    ids_a = a.tokenize(prompt.encode(), add_bos=False, special=True)
    assert kept[b.tokenize(prompt.encode(), add_bos=False, special=True)].tolist() == ids_a
    assert b.token_bos() == int(np.flatnonzero(kept == a.token_bos())[0])
    # foreign text is not lost: it falls back to byte tokens and detokenizes to the same text
    for text in ("中文 и русский ✓ 🙂", "日本語のテキスト", "한국어"):
        got = b.tokenize(text.encode(), add_bos=False, special=False)
        assert detokenize_c(b, got) == text and len(got) >= len(a.tokenize(text.encode(), add_bos=False, special=False))


def test_model_rows_sliced_and_logits_exact(src, tmp_path, dev_vi):
    """A (tiny, random) model with the Gemma 4 tokenizer: token_embd/output sliced row by row, padded
    to the original's count modulo 16, and the logits at the kept ids are the original's exactly."""
    from gguf.constants import GGMLQuantizationType as Q

    from tests.synth import build_model

    model = build_model(tmp_path / "g4-tiny.gguf", src, Q.Q8_0, Q.F16, n_embd=64, n_ff=128)
    out = tmp_path / "g4-tiny.envi.gguf"
    res, sel = trim(model, out)
    assert (res.n_vocab_trimmed, res.n_padding) == (166_768, 10) and res.n_vocab_trimmed % 16 == 262_144 % 16
    assert res.sliced_tensors == ["output.weight", "token_embd.weight"]
    text = tmp_path / "vi.txt"
    text.write_text("\n".join(read_lines(dev_vi)[:150]) + "\n", encoding="utf-8")
    rep = verify(model, out, [text], logits=3)
    assert rep["files"][0]["line_fidelity"] == 1.0
    assert rep["logits_positions"] > 20 and rep["logits_max_abs_diff"] == 0.0


def test_merges_written_are_those_of_kept_tokens(vocab, lossless):
    out, res, sel = lossless
    w = _vocab(out)
    assert w.merges == kept_merges(vocab, sel.keep)
    for a, b in w.merge_ranks:  # every part and result of a written merge is a token of the trimmed file
        assert a.encode() in w.token_to_id and b.encode() in w.token_to_id and (a + b).encode() in w.token_to_id
    # and llama.cpp's merge loop forms every kept token through the same tokens as before
    kept = sel.kept_ids
    for i in range(0, w.n, 37):
        before, after = vocab.derivation(int(kept[i])), w.derivation(i)
        assert (None if after is None else kept[after].tolist()) == before, w.display(i)


def test_closure_and_drop_list(vocab, tmp_path):
    i = vocab.token_to_id[f"{S}Việt".encode()]
    deriv = vocab.derivation(i)
    assert deriv, "▁Việt is built from smaller tokens"
    with pytest.raises(TrimError, match="is built from it"):
        select_lossless(vocab, drop_list=[deriv[-1]])
    # keeping a CJK word keeps what llama.cpp builds it from
    word = vocab.token_to_id["中国".encode()]
    sel = select_lossless(vocab, keep_list=[word])
    assert sel.keep[word] and all(sel.keep[j] for j in vocab.derivation(word))
    assert not select_lossless(vocab).keep[word]


def test_compact_profile(src, vocab, tmp_path, monkeypatch, dev_en, dev_vi):
    """Fast counts are llama.cpp's (checked on a sample inside, method "tokenizers"); the compact
    trim loads, is closed, and a held-out line tokenizes identically iff its tokens are all kept."""
    monkeypatch.setenv("GGUF_TRIM_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "train.txt"
    corpus.write_text("\n".join(read_lines(need(TRAIN / "en.txt"))[:3000] + read_lines(need(TRAIN / "vi.txt"))[:3000])
                      + "\n", encoding="utf-8")
    opts = CompactOptions(corpus=[str(corpus)], target_size=131_072, words=False, cache=False, workers=2)
    out = tmp_path / "g4.compact.gguf"
    res, sel = trim(src, out, profile="compact", compact=opts)
    assert res.n_vocab_trimmed == sel.n_kept == 131_072  # vocab only: no padding
    assert sel.info["count_method"] == "tokenizers" and "fast_path_refused" not in sel.info
    for i in np.flatnonzero(sel.keep).tolist()[::7]:
        assert all(sel.keep[j] for j in (vocab.derivation(i) or ())), vocab.display(i)
    kept = kept_ids_of(out)
    lo, lt = load_llama(src, vocab_only=True), load_llama(out, vocab_only=True)
    try:
        n = same = 0
        for path in (dev_en, dev_vi):
            for text in read_lines(path)[::15]:
                a = lo.tokenize(text.encode(), add_bos=False, special=False)
                b = kept[lt.tokenize(text.encode(), add_bos=False, special=False)].tolist()
                assert (a == b) == bool(sel.keep[a].all()), text
                n, same = n + 1, same + (a == b)
    finally:
        lo.close()
        lt.close()
    assert n > 1200 and same / n > 0.9


def test_word_forms_tokenize_as_llama_cpp(vocab, src, llms):
    """The compact profile's word evidence tokenizes word forms in one `tokenizers` call."""
    a, _ = llms
    forms = list(C.word_forms(("vi", "en")))[::25]
    tok = T.text_tokenizer(vocab)
    got = [e.ids for e in tok.encode_batch_fast(forms, add_special_tokens=False)]
    assert len(forms) > 5000
    assert [a.tokenize(f.encode(), add_bos=False, special=False) for f in forms] == got


def test_extend(lossless, tmp_path, dev_vi):
    """New compound tokens are USER_DEFINED: llama.cpp matches them on the raw text before BPE, so no
    merge is added, and text without them tokenizes as before."""
    base = lossless[0]
    words = tmp_path / "w.txt"
    words.write_text("học sinh\nViệt Nam\ncó thể\n", encoding="utf-8")
    out = tmp_path / "g4.vi.gguf"
    res = extend_file(base, words, out, top=3)
    assert " học sinh" in res.added and "Việt Nam" in res.added
    v, w = _vocab(base), _vocab(out)
    assert w.merges == v.merges and w.n == v.n + len(res.added)
    assert (w.types[v.n:] == USER_DEFINED).all()
    lb, lx = load_llama(base, vocab_only=True), load_llama(out, vocab_only=True)
    try:
        for text in (" học sinh", "Việt Nam"):
            ids = lx.tokenize(text.encode(), add_bos=False, special=False)
            assert len(ids) == 1 and ids[0] >= v.n
        checked = 0
        for text in read_lines(dev_vi)[:400]:
            if not any(f in text for f in res.added):
                raw = text.encode()
                assert lx.tokenize(raw, add_bos=False, special=False) == lb.tokenize(raw, add_bos=False, special=False)
                checked += 1
        assert checked > 100
    finally:
        lb.close()
        lx.close()
    rep = tokenization_report(out, ["Tôi là học sinh ở Việt Nam.", "Việt Nam có thể\n\nhọc sinh  có thể"])
    assert rep["round_trip_failures"] == 0


def test_script_guard(src, lossless, llms, dev_en, dev_vi):
    """The guard reads Gemma 4 pieces (U+2581 as space, <0xNN> as its byte): En/Vi text passes,
    other scripts cannot be written, not even byte by byte."""
    out, res, sel = lossless
    a, b = llms
    v = _vocab(out)
    guard = ScriptGuard.for_model(out, [b.token_eos()])
    fresh = set(guard.forbidden(b"").tolist())
    normal = np.flatnonzero(v.types == 1).tolist()
    assert not fresh & set(normal)  # every kept normal token is En/Vi text
    for path in (dev_en, dev_vi):
        for text in read_lines(path)[::200]:
            assert guard.allows(b.tokenize(text.encode(), add_bos=False, special=False)), text
    byte_id = dict(enumerate(v.byte_token_ids()))
    assert guard.allows([byte_id[x] for x in "Việt".encode()])
    for text in ("中", "Привет", "한", "ខ្មែរ"):
        assert not guard.allows([byte_id[x] for x in text.encode()]), text
    # on the original vocabulary, its CJK and Cyrillic tokens are forbidden outright
    og = ScriptGuard.for_model(src, [a.token_eos()])
    w = _vocab(src)
    forbidden = set(og.forbidden(b"").tolist())
    for text in ("中国", f"{S}России", "Привет"):
        assert w.token_to_id[text.encode()] in forbidden, text
