"""Plans: written, applied unchanged, applied after hand edits, refused for another vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gguf_trim import GGUFFile, TrimError, Vocab, trim

from .conftest import vocab_file


def _lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x]


def test_plan_round_trip_and_edit(tmp_path):
    src = vocab_file("llama-bpe")
    res, sel = trim(src, tmp_path / "a.gguf", plan_out=tmp_path / "plan.jsonl")
    header, *rows = _lines(tmp_path / "plan.jsonl")
    assert header["n_kept"] == sel.n_kept == len(rows)
    assert [r["id"] for r in rows] == sel.kept_ids.tolist()
    assert [r["new_id"] for r in rows] == list(range(len(rows)))
    assert {r["why"] for r in rows} >= {"special", "byte", "script"}

    res2, sel2 = trim(src, tmp_path / "b.gguf", plan=tmp_path / "plan.jsonl")
    assert np.array_equal(sel2.kept_ids, sel.kept_ids)
    with GGUFFile(tmp_path / "a.gguf") as a, GGUFFile(tmp_path / "b.gguf") as b:
        assert a.get("tokenizer.ggml.tokens") == b.get("tokenizer.ggml.tokens")
        assert a.get("tokenizer.ggml.merges") == b.get("tokenizer.ggml.merges")

    # hand edit: drop every kept token that spells a word of 12+ letters (leaves: nothing is built from them)
    v = Vocab.from_gguf(GGUFFile(src))
    long_words = {r["id"] for r in rows if r["why"] == "script" and len(r["text"].strip()) >= 12
                  and r["text"].strip().isalpha()}
    needed = {j for r in rows if r["id"] not in long_words for j in (v.derivation(r["id"]) or ())}
    removed = long_words - needed
    assert len(removed) > 100
    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in [header] + [r for r in rows
                                if r["id"] not in removed]) + "\n", encoding="utf-8")
    res3, sel3 = trim(src, tmp_path / "c.gguf", plan=edited)
    assert res3.n_vocab_trimmed == res.n_vocab_trimmed - len(removed)
    with GGUFFile(tmp_path / "c.gguf") as c:
        toks = set(c.get("tokenizer.ggml.tokens"))
    assert not any(v.tokens[i] in toks for i in removed)


def test_plan_that_removes_a_needed_token_is_refused(tmp_path):
    src = vocab_file("llama-bpe")
    trim(src, tmp_path / "a.gguf", plan_out=tmp_path / "plan.jsonl", check=False)
    header, *rows = _lines(tmp_path / "plan.jsonl")
    v = Vocab.from_gguf(GGUFFile(src))
    hello = v.token_to_id["Ġhello".encode()]
    needed = v.derivation(hello)[-1]
    for drop, msg in ((needed, "is built from it"), (v.special_ids["tokenizer.ggml.eos_token_id"], "removes token")):
        p = tmp_path / f"bad{drop}.jsonl"
        p.write_text("\n".join(json.dumps(x) for x in [header] + [r for r in rows if r["id"] != drop]) + "\n")
        with pytest.raises(TrimError, match=msg):
            trim(src, tmp_path / "x.gguf", plan=p)
        assert not (tmp_path / "x.gguf").exists()


def test_plan_for_another_vocab_is_refused(tmp_path):
    trim(vocab_file("qwen2"), tmp_path / "q.gguf", plan_out=tmp_path / "qwen.jsonl", check=False)
    with pytest.raises(TrimError, match="another vocabulary"):
        trim(vocab_file("llama-bpe"), tmp_path / "x.gguf", plan=tmp_path / "qwen.jsonl")
    assert not (tmp_path / "x.gguf").exists()
