"""`inspect` and `diff` on real files."""

from __future__ import annotations

import json
import subprocess
import sys

from gguf_trim import diff_vocabs, inspect, trim

from .conftest import GEMMA, need, vocab_file


def test_inspect_gemma_and_its_trim(tmp_path):
    r = inspect(need(GEMMA))
    assert (r["arch"], r["tokenizer"], r["n_vocab"]) == ("gemma3", "llama", 262_144)
    assert [t["name"] for t in r["vocab_tensors"]] == ["token_embd.weight"]
    assert r["vocab_tensors"][0]["type"] == "Q8_0" and 0.6 < r["vocab_share_of_file"] < 0.8
    assert r["scripts"]["CJK"] > 10_000 and r["scripts"]["latin(vi)"] > 1000
    out = tmp_path / "g.gguf"
    trim(need(GEMMA), out)
    t = inspect(out)
    assert "CJK" not in t["scripts"] and t["scripts"]["latin(vi)"] == r["scripts"]["latin(vi)"]
    assert t["trimmed_from"] == GEMMA.name and t["vocab_share_of_file"] < r["vocab_share_of_file"]
    cli = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "inspect", str(out), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(cli.stdout)["n_vocab"] == t["n_vocab"]


def test_diff():
    same = diff_vocabs(vocab_file("qwen2"), vocab_file("qwen2"))
    assert same["identical"] and same["differs_in"] == []
    q = diff_vocabs(vocab_file("qwen2"), vocab_file("qwen35"))
    assert not q["identical"] and q["differs_in"] == ["pre"] and q["differing_ids"] == 0
    other = diff_vocabs(vocab_file("qwen2"), vocab_file("llama-bpe"))
    assert other["differing_ids"] > 100_000 and "tokens" in other["differs_in"]
    r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "diff", str(vocab_file("qwen2")),
                        str(vocab_file("qwen35"))], capture_output=True, text=True)
    assert r.returncode == 1 and "identical: no (pre)" in r.stdout
