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
from gguf_trim.extend.rows import added_rows, open_single, read_rows
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


def test_shared_prompt_prefix_gives_the_same_loss_and_gradients(tuned):
    """The prompt prefix every example of a direction begins with is run once per group and its keys and
    values repeated: the loss and the LoRA gradients equal those of running every example whole."""
    import torch

    from gguf_trim.extend.float_model import load_float_model
    from gguf_trim.translate.translator import Translator
    from gguf_trim.tune.data import render_pair
    from gguf_trim.tune.lora import add_lora, example_loss, prefix_groups
    from gguf_trim.tune.options import FinetuneOptions

    base, *_ = tuned
    rows = [line.split("\t")[:2] for line in need(PAIRS).read_text(encoding="utf-8").splitlines()[200:204]]
    tr = Translator(base, n_ctx=512, guard=False)
    try:
        batch = [render_pair(tr, en, vi, d) for en, vi in rows for d in ("en-vi", "vi-en")]
    finally:
        tr.close()
    groups = prefix_groups(batch)
    assert sorted(len(g) for _, g in groups) == [4, 4] and all(p >= 16 for p, _ in groups), groups
    assert all(p < e.n_prompt for p, g in groups for e in g)
    torch.manual_seed(0)
    model, _ = add_lora(load_float_model(base), "qwen2", 1, FinetuneOptions(rank=4))
    for mod in model.modules():
        if hasattr(mod, "lora_B") and "default" in getattr(mod, "lora_B", {}):
            torch.nn.init.normal_(mod.lora_B["default"].weight, std=0.05)
    params = [p for p in model.parameters() if p.requires_grad]
    got = {}
    for share in (False, True):
        model.zero_grad()
        loss, n = example_loss(model, batch, torch.device("cpu"), share_prefix=share)
        loss.backward()
        got[share] = float(loss.detach()), n, torch.cat([p.grad.flatten() for p in params])
    assert got[True][1] == got[False][1] > 0
    assert abs(got[True][0] - got[False][0]) < 1e-4 * abs(got[False][0])
    assert float((got[True][2] - got[False][2]).norm() / got[False][2].norm()) < 1e-4


def test_refine_to_trains_the_added_rows_with_the_adapter(tmp_path, tuned):
    """`--refine-to`: extend's rows and the LoRA in one run. The copy differs from the input only in the
    added rows, the input is untouched, the adapter names the copy as its base and passed the llama.cpp
    logits check on it. A file extend did not write gets one line and nothing is written."""
    from tests.test_refine import WORDS, assert_only_new_rows_differ, extended_synth

    ext = extended_synth(tmp_path, Q.Q8_0, Q.Q8_0, n_embd=128, n_ff=256)
    rows = [ln for ln in need(PAIRS).read_text(encoding="utf-8").splitlines(True)
            if any(w in ln.split("\t")[1].lower() for w in WORDS if len(ln.split("\t")) > 1)][:60]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("".join(rows), encoding="utf-8")
    sha = file_sha256(ext)
    out, refined, rep = tmp_path / "a.lora.gguf", tmp_path / "m.refined.gguf", tmp_path / "r.json"
    r = CliRunner().invoke(main, ["finetune", str(ext), "--pairs", str(pairs), "-o", str(out), "--refine-to",
                                  str(refined), "--steps", "20", "--batch", "4", "--lr", "0.005", "--rows-lr", "0.02",
                                  "--rank", "4", "--seq-len", "320", "--heldout", "4", "--check-lines", "2",
                                  "--device", "cpu", "--json", str(rep)])
    assert r.exit_code == 0, r.output
    rep = json.loads(rep.read_text())
    assert file_sha256(ext) == sha
    assert_only_new_rows_differ(ext, refined)
    with open_single(ext) as g, open_single(refined) as h:
        added = added_rows(g)
        before, after = read_rows(g, added), read_rows(h, added)
    assert rep["refined"]["rows"] == len(added.ids) > 0
    assert all(not np.allclose(before[k], after[k]) for k in added.tensors)
    with GGUFFile(out) as g:
        assert g.fields["gguf_trim.finetune.base_sha256"].text() == file_sha256(refined) == rep["refined"]["sha256"]
    assert rep["heldout_loss_after"] < rep["heldout_loss_before"]
    assert rep["logits_check"]["adapter"]["argmax_agreement"] >= 0.9
    assert ids_logits(refined, [1, 2, 3], LoraSpec(out)).shape[0] == 3

    plain = tmp_path / "plain.lora.gguf"  # without --refine-to the untrained rows are named, and stay as they are
    r = CliRunner().invoke(main, ["finetune", str(ext), "--pairs", str(pairs), "-o", str(plain), "--steps", "1",
                                  "--batch", "2", "--rank", "2", "--seq-len", "320", "--heldout", "4",
                                  "--check-lines", "0", "--device", "cpu"])
    assert r.exit_code == 0 and "never trained; --refine-to trains them" in r.output, r.output

    base, *_ = tuned  # trimmed, not extended
    bad_a, bad_b = tmp_path / "x.lora.gguf", tmp_path / "x.refined.gguf"
    r = CliRunner().invoke(main, ["finetune", str(base), "--pairs", str(pairs), "-o", str(bad_a), "--refine-to",
                                  str(bad_b), "--steps", "1"])
    assert r.exit_code == 2 and "not extended" in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not bad_a.exists() and not bad_b.exists()
