"""The suppress list (tokenizer.ggml.suppress_tokens) a trim writes: exactly the kept tokens the script
guard forbids in every UTF-8 state, read by llama.cpp itself, obeyed by gguf-trim's own paths, checked
by verify, carried by extend. Stock llama-server's behaviour with it is in test_server.py."""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_trim import trim
from gguf_trim.cli import main
from gguf_trim.format.gguffile import GGUFFile
from gguf_trim.format.shards import open_model
from gguf_trim.langs import language_set
from gguf_trim.rewrite.verify import greedy_avoids
from gguf_trim.runtime.guard import ScriptGuard
from gguf_trim.runtime.llama import last_logits, load_llama, tokenize
from gguf_trim.vocab.suppress import file_suppress, guard_view
from gguf_trim.vocab.vocabulary import SUPPRESS_KEY, Vocab
from tests.conftest import GEMMA, QWEN, SMOLLM, need, vocab_file
from tests.synth import with_key

# lead bytes that begin no English/Vietnamese character (vocab/charset.py): what every byte-level
# vocabulary with all 256 byte tokens must list
FOREIGN_LEADS = [0xC0, 0xC1, *range(0xD0, 0xE1), *range(0xE3, 0xEF), 0xF1, 0xF2, *range(0xF4, 0x100)]

EN_VI = language_set("en,vi").chars


def llama_list(path) -> list[int]:
    """The suppress ids as llama.cpp itself read them from the file."""
    import llama_cpp

    llm = load_llama(path, vocab_only=True)
    try:
        n = ctypes.c_int32(0)
        ptr = llama_cpp.llama_vocab_get_suppress_tokens(llm._model.vocab, ctypes.byref(n))
        return [ptr[i] for i in range(n.value)]
    finally:
        llm.close()


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory):
    """Lossless trims of the real models, with the list (default) and without."""
    d = tmp_path_factory.mktemp("suppress")
    out = {}
    for name, src in (("gemma", GEMMA), ("qwen", QWEN), ("smollm", SMOLLM)):
        out[name] = trim(need(src), d / f"{name}.gguf")[0].output
    out["qwen-nolist"] = trim(QWEN, d / "qwen-nolist.gguf", suppress=False)[0].output
    return out


@pytest.mark.parametrize("name", ["gemma", "qwen", "smollm"])
def test_list_is_what_the_guard_never_allows(trimmed, name):
    """Every listed id is forbidden by the guard after every reachable UTF-8 state; every other
    rendered token is allowed in at least one; llama.cpp reads back exactly the ids written."""
    path = trimmed[name]
    with open_model(path) as g:
        v = Vocab.from_gguf(g)
        listed = file_suppress(g)
        assert g.fields[SUPPRESS_KEY].subtype.name == "INT32"
    assert llama_list(path) == listed.tolist()
    assert len(listed) and listed.tolist() == sorted(set(listed.tolist()))
    pieces, always_ok = guard_view(v.pieces, v.types)
    guard = ScriptGuard(pieces, always_ok, [], EN_VI)
    forbidden_everywhere = None
    for state in (b"", *EN_VI.pending_states):
        f = set(guard.forbidden(state).tolist())
        forbidden_everywhere = f if forbidden_everywhere is None else forbidden_everywhere & f
    rendered = {i for i, p in enumerate(pieces) if p and not always_ok[i]}
    assert set(listed.tolist()) == forbidden_everywhere & rendered
    assert not set(listed.tolist()) & (set(v.special_ids.values()) | set(v.implicit_special_ids.values()))
    # the byte tokens of the foreign lead bytes are on it; those of 0xE1 (Vietnamese) and 0xEA are decided
    byte_of = {p[0]: i for i, p in enumerate(pieces) if len(p) == 1}
    assert {byte_of[b] for b in FOREIGN_LEADS if b in byte_of} <= set(listed.tolist())
    assert byte_of[0xE1] not in listed and byte_of[0xEA] in listed


def test_every_byte_level_vocab_lists_all_foreign_leads(trimmed):
    """Qwen (all 256 byte tokens): the list is exactly the 45 foreign lead bytes, no longer token."""
    with open_model(trimmed["qwen"]) as g:
        v = Vocab.from_gguf(g)
        listed = file_suppress(g).tolist()
    assert sorted(v.pieces[i][0] for i in listed) == FOREIGN_LEADS and all(len(v.pieces[i]) == 1 for i in listed)


def test_no_suppress_and_inspect(trimmed):
    """--no-suppress leaves the key out; inspect shows the list or says there is none."""
    with open_model(trimmed["qwen-nolist"]) as g:
        assert SUPPRESS_KEY not in g.fields
    assert llama_list(trimmed["qwen-nolist"]) == []
    r = CliRunner().invoke(main, ["inspect", str(trimmed["qwen"]), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["suppress"]["count"] == 45 and json.loads(r.output)["suppress"]["byte_tokens"] == 45
    r = CliRunner().invoke(main, ["inspect", str(trimmed["qwen-nolist"])])
    assert "suppress list: none" in r.output


def test_source_list_is_remapped_and_merged(tmp_path):
    """A source's own list survives remapped (its dropped ids gone), merged with the guard's."""
    from gguf_trim.selection.selection import select_lossless

    src = vocab_file("qwen2")
    with open_model(src) as g:
        v = Vocab.from_gguf(g)
    sel = select_lossless(v, "en,vi")
    kept_word = v.token_to_id[b"\xc4\xa0hello"] if b"\xc4\xa0hello" in v.token_to_id else 15339
    dropped = int(np.flatnonzero(~sel.keep)[0])
    listed_src = with_key(src, tmp_path / "src.gguf", SUPPRESS_KEY, [kept_word, dropped])
    res, sel = trim(listed_src, tmp_path / "out.gguf")
    new_of = {int(o): n for n, o in enumerate(sel.kept_ids.tolist())}
    with GGUFFile(res.output) as g:
        listed = file_suppress(g).tolist()
    assert new_of[kept_word] in listed and len(listed) == 45 + 1
    res2, _ = trim(listed_src, tmp_path / "out-nolist.gguf", suppress=False)
    with GGUFFile(res2.output) as g:
        assert file_suppress(g).tolist() == [new_of[kept_word]]


def test_translator_obeys_the_file(trimmed, tmp_path):
    """translate's paths apply the file's list, guard or not: a file listing the ids of the greedy
    output's first tokens translates differently, and never emits a listed id (single and batched)."""
    from gguf_trim.translate.translator import Translator

    text = "The weather is nice today."
    tr = Translator(trimmed["qwen-nolist"], n_ctx=512, guard=False)
    try:
        base = tr.translate(text, "vi")
        first = tr._llm.tokenize(base.text.encode(), add_bos=False)[:2]
    finally:
        tr.close()
    listed = with_key(trimmed["qwen-nolist"], tmp_path / "listed.gguf", SUPPRESS_KEY, first)
    for guard in (False, True):
        tr = Translator(listed, n_ctx=512, guard=guard)
        try:
            one = tr.translate(text, "vi")
            many = list(tr.translate_many([text, text], "vi", parallel=2))
            ids = tr._llm.tokenize(one.text.encode(), add_bos=False)
            assert one.text != base.text and not set(ids) & set(first), (guard, one.text)
            assert [m.text for m in many] == [one.text, one.text]
        finally:
            tr.close()


def test_guard_forbids_a_superset_of_the_list(trimmed):
    """So guarded output is the same with the list applied as without it."""
    from gguf_trim.translate.translator import Translator

    tr = Translator(trimmed["gemma"], n_ctx=512)
    try:
        assert tr._guard is not None and tr._suppress is not None
        for state in (b"", *EN_VI.pending_states):
            assert set(tr._suppress.tolist()) <= set(tr._guard.forbidden(state).tolist())
    finally:
        tr.close()


def test_verify_checks_the_list(trimmed, tmp_path, dev_vi):
    """verify: the list is of the right kind and greedy output never wants a listed id; a list naming
    an allowed token fails with one line."""
    r = CliRunner().invoke(main, ["verify", str(QWEN), str(trimmed["qwen"]), "--json", str(tmp_path / "v.json")])
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "v.json").read_text())
    assert rep["suppress_count"] == rep["suppress_by_guard"] == 45 and rep["suppress_problems"] == []
    assert rep["greedy_lines"] == 2 and rep["greedy_steps"] > 2 and rep["greedy_suppressed_hits"] == []
    with open_model(trimmed["qwen"]) as g:
        v = Vocab.from_gguf(g)
        listed = file_suppress(g).tolist()
    bad = with_key(trimmed["qwen"], tmp_path / "bad.gguf", SUPPRESS_KEY, listed + [v.token_to_id[b"hello"]])
    r = CliRunner().invoke(main, ["verify", str(QWEN), str(bad)])
    assert r.exit_code == 2 and "can be part of allowed output" in r.output.strip().splitlines()[-1]


def test_greedy_check_sees_the_greedy_token(trimmed):
    """verify's greedy check reads the logits llama.cpp computed (llama-cpp-python fills `scores` only
    with logits_all, so reading those saw an uninitialised array): a list naming the token greedy
    decoding picks is a hit at the first step."""
    line = "The capital of France is"
    llm = load_llama(trimmed["qwen"], logits_all=True)
    try:
        ids = tokenize(llm, line, add_bos=True)
        llm.eval(ids)
        row = np.array(llm.scores[len(ids) - 1])
        assert np.array_equal(last_logits(llm), row) and row.std() > 0
        want = int(np.argmax(row))
    finally:
        llm.close()
    rep = greedy_avoids(trimmed["qwen"], np.array([want]), [line], max_tokens=4)
    assert rep["greedy_steps"] == 1 and rep["greedy_suppressed_hits"] == [{"line": line, "token": want}]


def test_extend_carries_and_completes_the_list(trimmed, tmp_path):
    """extend: from a file trimmed without the list, the extended file gets it; the added compounds
    (Vietnamese) are never on it."""
    from gguf_trim.extend.words import extend_file

    words = tmp_path / "w.tsv"
    words.write_text("có thể\t1\nkhông thể\t1\n", encoding="utf-8")
    src = trim(GEMMA, tmp_path / "g-nolist.gguf", suppress=False)[0].output
    r = extend_file(src, words, tmp_path / "g.ext.gguf", check=False)
    with open_model(r.output) as g:
        listed = file_suppress(g)
    with open_model(trimmed["gemma"]) as g:
        assert listed.tolist() == file_suppress(g).tolist()
    assert not (listed >= r.n_vocab_before).any()
    r2 = extend_file(src, words, tmp_path / "g.ext2.gguf", check=False, suppress=False)
    with open_model(r2.output) as g:
        assert len(file_suppress(g)) == 0
