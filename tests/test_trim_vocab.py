"""The lossless profile on real vocabularies: fidelity on the dev corpus, nothing foreign kept,
specials kept and remapped, closure, keep/drop lists and plans."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gguf_trim import GGUFFile, TrimError, Vocab, trim
from gguf_trim.langs import language_set
from gguf_trim.rewrite.verify import kept_ids_of, verify
from gguf_trim.runtime.llama import load_llama
from gguf_trim.selection.selection import read_token_list, select_lossless

from .conftest import GEMMA, QWEN, need, vocab_file

FOREIGN = ("CJK", "hiragana", "katakana", "katakana-hiragana", "hangul", "thai", "lao", "khmer", "myanmar",
           "cyrillic", "arabic", "hebrew", "devanagari", "bengali", "tamil", "fullwidth")

judge_bytes = language_set("en,vi").chars.judge_bytes


@pytest.fixture(scope="module", params=["qwen2", "llama-bpe", "gemma"])
def trimmed(request, tmp_path_factory):
    src = need(GEMMA) if request.param == "gemma" else vocab_file(request.param)
    out = tmp_path_factory.mktemp("trim") / f"{request.param}.envi.gguf"
    res, sel = trim(src, out)
    return request.param, src, out, res, sel


def test_dev_line_fidelity(trimmed, dev_en, dev_vi):
    name, src, out, res, sel = trimmed
    rep = verify(src, out, [dev_en, dev_vi])
    for f in rep["files"]:
        assert f["lines"] > 9000
        assert f["line_fidelity"] >= 0.998, (name, f["path"], f["worst"][:2])
    assert rep["n_vocab_trimmed"] == res.n_vocab_trimmed


def test_sizes(trimmed):
    name, src, out, res, sel = trimmed
    limit = {"qwen2": 104_500, "llama-bpe": 106_000, "gemma": 168_000}[name]
    assert res.n_vocab_trimmed <= limit
    assert res.n_vocab_trimmed < res.n_vocab_original


def test_no_kept_token_holds_a_dropped_script(trimmed):
    name, src, out, res, sel = trimmed
    with GGUFFile(out) as g:
        v = Vocab.from_gguf(g)
    bad = []
    byte_ids = set(v.byte_token_ids())  # the 256 byte tokens are kept whatever they spell
    for i, pc in enumerate(v.pieces):
        if v.types[i] in (1, 0) and i not in byte_ids:
            ok, label = judge_bytes(pc)
            if not ok or any(f in label for f in FOREIGN):
                bad.append(v.display(i))
    assert bad == []
    cjk = [i for i, pc in enumerate(v.pieces) if any(0x4E00 <= ord(c) <= 0x9FFF for c in pc.decode("utf-8", "ignore"))]
    assert cjk == []


def test_every_control_token_is_kept_and_special_ids_remapped(trimmed):
    name, src, out, res, sel = trimmed
    with GGUFFile(src) as g, GGUFFile(out) as h:
        v, w = Vocab.from_gguf(g), Vocab.from_gguf(h)
        kept = h.get("gguf_trim.kept_ids")
        controls = [v.tokens[i] for i in np.flatnonzero(v.types == 3)]
        assert [w.tokens[i] for i in np.flatnonzero(w.types == 3)] == controls
        for key, old in v.special_ids.items():
            f = h.fields[key]
            assert int(f.vtype) == 4, f"{key} must be UINT32"  # GGUFValueType.UINT32
            assert kept[f.value] == old and w.tokens[f.value] == v.tokens[old]
        assert np.array_equal(kept, sel.kept_ids)
        assert "gguf_trim.source_sha256" not in h.fields  # only with --source-sha256
        assert h.get("gguf_trim.source_size") == src.stat().st_size
        assert h.get("gguf_trim.source_n_vocab") == v.n
        # byte tokens all present
        assert len(w.byte_token_ids()) == len(v.byte_token_ids())
    llm = load_llama(out, vocab_only=True)
    assert llm.token_eos() == int(np.flatnonzero(kept == v.special_ids["tokenizer.ggml.eos_token_id"])[0])


def test_qwen_chat_template_renders_and_tokenizes(tmp_path):
    src = need(QWEN)
    out = tmp_path / "qwen.envi.gguf"
    trim(src, out)
    with GGUFFile(src) as g, GGUFFile(out) as h:
        assert h.fields["tokenizer.chat_template"].raw == g.fields["tokenizer.chat_template"].raw
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    a, b = load_llama(src, vocab_only=True), load_llama(out, vocab_only=True)
    kept = kept_ids_of(out)
    msgs = [{"role": "system", "content": "You translate English to Vietnamese."},
            {"role": "user", "content": "Translate: Good morning, teacher."}]
    tmpl = b.metadata["tokenizer.chat_template"]
    fmt = Jinja2ChatFormatter(template=tmpl, eos_token="<|im_end|>", bos_token="<|endoftext|>")
    prompt = fmt(messages=msgs).prompt
    assert "<|im_start|>user" in prompt
    ids_a = a.tokenize(prompt.encode(), add_bos=False, special=True)
    ids_b = b.tokenize(prompt.encode(), add_bos=False, special=True)
    assert kept[ids_b].tolist() == ids_a
    im_start = b.tokenize(b"<|im_start|>", add_bos=False, special=True)
    assert len(im_start) == 1 and kept[im_start[0]] == a.tokenize(b"<|im_start|>", add_bos=False, special=True)[0]


def test_drop_list_that_breaks_closure_is_refused(tmp_path):
    v = Vocab.from_gguf(GGUFFile(vocab_file("qwen2")))
    i = v.token_to_id["Ġhello".encode()]
    deriv = v.derivation(i)
    assert deriv, "Ġhello is built from smaller tokens"
    (tmp_path / "drop.txt").write_text(v.tokens[deriv[-1]].decode() + "\n", encoding="utf-8")
    with pytest.raises(TrimError, match="is built from it"):
        select_lossless(v, drop_list=read_token_list(tmp_path / "drop.txt", v))


def test_drop_list_of_a_special_or_byte_token_is_refused(tmp_path):
    v = Vocab.from_gguf(GGUFFile(vocab_file("qwen2")))
    for text in ("<|im_end|>", "Ġ"):
        with pytest.raises(TrimError, match="refusing to drop"):
            select_lossless(v, drop_list=[v.token_to_id[text.encode()]])


def test_drop_and_keep_lists(tmp_path):
    v = Vocab.from_gguf(GGUFFile(vocab_file("qwen2")))
    base = select_lossless(v)
    hello = v.token_to_id["Ġhello".encode()]
    assert base.keep[hello]
    # a leaf (no kept token is built from it) can be dropped; by piece text or JSONL id
    (tmp_path / "drop.jsonl").write_text(json.dumps({"id": hello}) + "\n", encoding="utf-8")
    sel = select_lossless(v, drop_list=read_token_list(tmp_path / "drop.jsonl", v))
    assert not sel.keep[hello] and sel.n_kept < base.n_kept
    # keeping a CJK word brings back the pieces it is built from (closure)
    word = "中国".encode()
    from gguf_trim.vocab.vocabulary import BYTE_TO_CHAR
    stored = "".join(BYTE_TO_CHAR[b] for b in word)
    wid = v.token_to_id[stored.encode()]
    (tmp_path / "keep.txt").write_text("中国\n", encoding="utf-8")
    sel = select_lossless(v, keep_list=read_token_list(tmp_path / "keep.txt", v))
    assert sel.keep[wid] and sel.why[wid] == "keep-list"
    for j in v.derivation(wid):
        assert sel.keep[j]
    assert sel.closure_added
    (tmp_path / "bad.txt").write_text("no-such-token-anywhere\n", encoding="utf-8")
    with pytest.raises(TrimError, match="not a token"):
        read_token_list(tmp_path / "bad.txt", v)


@pytest.mark.parametrize("case", ["missing", "out-of-range"])
def test_llama_cpp_default_special_ids_keep_naming_the_same_token(case, tmp_path):
    """A BPE file without (or with an out-of-range) bos/eos key gets llama.cpp's default id 11. With id 3
    swapped for a Chinese token, the trim drops id 3 and renumbers: the trimmed file must name the
    token that was id 11 explicitly, or llama.cpp's default would point at the next one."""
    from gguf.constants import GGUFValueType as V

    from gguf_trim.format.gguffile import GGUF_MAGIC, encode_field

    with GGUFFile(vocab_file("gpt-2")) as g:
        tokens = list(g.get("tokenizer.ggml.tokens"))
        pieces = Vocab.from_gguf(g).pieces
        han = next(i for i in range(len(tokens)) if judge_bytes(pieces[i])[1] == "CJK")
        tokens[3], tokens[han] = tokens[han], tokens[3]
        kv = []
        for name, f in g.fields.items():
            if name in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
                continue
            kv.append(encode_field(name, f.vtype, tokens, f.subtype) if name == "tokenizer.ggml.tokens" else f.raw)
    if case == "out-of-range":
        kv += [encode_field(f"tokenizer.ggml.{k}_token_id", V.UINT32, len(tokens) + 5) for k in ("bos", "eos")]
    src = tmp_path / "gpt2-swapped.gguf"
    src.write_bytes(GGUF_MAGIC + np.array([3], "<u4").tobytes() + np.array([0, len(kv)], "<u8").tobytes()
                    + b"".join(kv))
    out = tmp_path / "t.gguf"
    trim(src, out)
    a, b = load_llama(src, vocab_only=True), load_llama(out, vocab_only=True)
    kept = kept_ids_of(out)
    assert a.token_bos() == a.token_eos() == 11 and 3 not in kept.tolist()
    assert kept[b.token_bos()] == 11 and kept[b.token_eos()] == 11 and b.token_bos() == 10
