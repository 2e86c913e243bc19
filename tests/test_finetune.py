"""finetune (the `train` extra; `make test-train`): a tiny random model with Qwen2's real vocabulary,
trimmed, through finetune -> adapter GGUF -> llama-cpp-python and gguf-trim translate --lora."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim import GGUFFile, trim
from gguf_trim.cli import main
from gguf_trim.files import file_sha256
from gguf_trim.runtime.llama import Adapters, load_llama
from gguf_trim.tune.adapter import LoraSpec
from tests.conftest import SHARED, need, vocab_file
from tests.synth import build_model

pytestmark = pytest.mark.train

PAIRS = SHARED / "corpus" / "train" / "prose.en-vi.tsv"


def synth(folder, n_embd=128, seed=0):
    src = build_model(folder / f"m{n_embd}.gguf", vocab_file("qwen2"), Q.F16, Q.Q8_0, arch="qwen2", n_embd=n_embd,
                      n_ff=256, seed=seed)
    return trim(src, folder / f"m{n_embd}.envi.gguf")[0].output


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    d = tmp_path_factory.mktemp("finetune")
    base = synth(d)
    pairs = d / "pairs.tsv"
    pairs.write_text("".join(line for line in need(PAIRS).read_text(encoding="utf-8").splitlines(True)[:80]),
                     encoding="utf-8")
    sha = file_sha256(base)
    out, rep = d / "a.lora.gguf", d / "r.json"
    r = CliRunner().invoke(main, ["finetune", str(base), "--pairs", str(pairs), "-o", str(out), "--steps", "40",
                                  "--batch", "4", "--lr", "0.005", "--rank", "4", "--seq-len", "320", "--heldout", "4",
                                  "--check-lines", "2", "--device", "cpu", "--json", str(rep)])
    assert r.exit_code == 0, r.output
    return base, out, json.loads(rep.read_text()), sha, d


def ids_logits(path, ids, spec=None):
    llm = load_llama(path, n_ctx=256, logits_all=True)
    try:
        if spec is not None:
            Adapters(llm, path, [spec]).apply(llm._ctx.ctx)
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def test_finetune_writes_an_adapter_llama_cpp_applies(tuned):
    """Loss falls on the training pairs; the adapter GGUF is what llama.cpp expects; base + adapter
    through llama.cpp matches the float model + LoRA (the report's check); the base is untouched."""
    base, adapter, rep, sha, _ = tuned
    assert rep["train_loss_last"] < rep["train_loss_first"] - 0.5, rep
    assert rep["train_pairs"] > 60 and rep["heldout_pairs"] == 4 and rep["tokens_trained"] > 0
    assert rep["logits_check"]["adapter"]["argmax_agreement"] >= 0.9
    assert file_sha256(base) == sha
    with GGUFFile(adapter) as g:
        assert g.fields["general.type"].text() == "adapter" and g.fields["adapter.type"].text() == "lora"
        assert g.arch == "qwen2" and float(g.get("adapter.lora.alpha")) == 32.0
        names = {t.name for t in g.tensors}
    assert len(names) == 2 * 7 and "blk.0.attn_q.weight.lora_a" in names and "blk.0.ffn_down.weight.lora_b" in names


def test_adapter_changes_logits_and_scale_zero_is_the_base(tuned):
    base, adapter, *_ = tuned
    llm = load_llama(base, vocab_only=True)
    ids = llm.tokenize(b"The file was saved. Xin ch\xc3\xa0o.", add_bos=False)
    llm.close()
    plain = ids_logits(base, ids)
    tuned_logits = ids_logits(base, ids, LoraSpec(adapter, 1.0))
    assert np.abs(tuned_logits - plain).max() > 0.01
    assert np.array_equal(ids_logits(base, ids, LoraSpec(adapter, 0.0)), plain)
    # llama-cpp-python's own lora_path gives the same logits as gguf-trim's Adapters
    from llama_cpp import Llama

    own = Llama(str(base), lora_path=str(adapter), n_ctx=256, logits_all=True, verbose=False)
    own.eval(ids)
    assert np.array_equal(np.array(own.scores[: len(ids)]), tuned_logits)
    own.close()


def test_translate_with_lora(tuned):
    base, adapter, *_ = tuned
    r = CliRunner().invoke(main, ["translate", str(base), "--to", "vi", "--lora", f"{adapter}:0.5", "--json",
                                  "The file was saved."])
    assert r.exit_code == 0, r.output


def test_bad_input(tuned):
    """One clear line, exit 2, nothing written."""
    base, adapter, _, _, d = tuned
    one = d / "one.tsv"
    one.write_text("only English here\n", encoding="utf-8")
    zh = d / "zh.tsv"
    zh.write_text("".join(f"Hello {k}\t你好 {k}\n" for k in range(20)), encoding="utf-8")
    for pairs, msg in ((one, "one column; expected English<TAB>Vietnamese"), (zh, "no pair is left after cleaning")):
        out = d / "bad.gguf"
        r = CliRunner().invoke(main, ["finetune", str(base), "--pairs", str(pairs), "-o", str(out), "--steps", "1"])
        assert r.exit_code == 2 and msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not out.exists()
    other = synth(d, n_embd=64, seed=1)
    r = CliRunner().invoke(main, ["translate", str(other), "--to", "vi", "--lora", str(adapter), "Hello."])
    assert r.exit_code == 2 and "another model" in r.output and len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.server
def test_llama_server_applies_the_adapter(tuned):
    """Stock llama-server --lora loads the adapter; its greedy completion is gguf-trim's with the adapter."""
    from gguf_trim.runtime.server import LlamaServer
    from gguf_trim.translate.translator import Translator

    base, adapter, *_ = tuned
    tr = Translator(base, n_ctx=512, guard=False, lora=(LoraSpec(adapter),))
    try:
        prompt = tr.prompt_tokens("The file was saved.", "en", "vi")
        ours = tr._llm.create_completion(prompt, max_tokens=8, temperature=0.0, repeat_penalty=1.0)
        ours_text = ours["choices"][0]["text"]
    finally:
        tr.close()
    with LlamaServer(base, n_ctx=512, threads=2, args=["--lora", str(adapter)]) as s:
        got = s.complete(prompt, n_predict=8, temperature=0.0, cache_prompt=False)
    assert got["content"] == ours_text
