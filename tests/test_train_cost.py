"""The LM head in training (tune/logits.py) and `gguf-trim bench train-cost` (the `train` extra;
`make test-train`): logits at the answer positions only, in blocks whose gradients are taken at once,
give the loss and gradients of the stock full-logits step; the bench runs end to end on tiny models.

Tiny models with Llama 2's 32k SentencePiece vocabulary (transformers parses the whole vocabulary when it
builds the float model: Qwen2's would take most of the time), one PyTorch thread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from gguf.constants import GGMLQuantizationType as Q

from tests.conftest import SHARED, need, vocab_file
from tests.synth import build_model
from tests.test_refine import WORDS
from tests.test_refine_train import corpus

pytestmark = pytest.mark.train

PAIRS = SHARED / "corpus" / "train" / "prose.en-vi.tsv"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from gguf_trim.extend.words import extend_file

    d = tmp_path_factory.mktemp("train_cost")
    base = build_model(d / "spm.gguf", vocab_file("llama-spm"), Q.F32, None, arch="llama", n_embd=64, n_ff=128)
    words = d / "words.txt"
    words.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    ext = extend_file(base, words, d / "spm.ext.gguf", top=len(WORDS)).output
    pairs = d / "pairs.tsv"
    pairs.write_text("".join(need(PAIRS).read_text(encoding="utf-8").splitlines(True)[:40]), encoding="utf-8")
    return {"dir": d, "base": base, "ext": ext, "words": words, "pairs": pairs, "text": corpus(d / "vi.txt", 200, 0)}


@pytest.fixture(scope="module")
def float_models() -> dict:
    """Float models by path, loaded once for the whole module (each load parses the 32k vocabulary: ~5 s)."""
    return {}


def _load(path: Path, cache: dict):
    from gguf_trim.bench.train_cost import _float_model

    return _float_model(str(path), cache)


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def _grads(params):
    import torch

    return torch.cat([p.grad.flatten() for p in params])


def test_answer_only_blocks_give_the_full_logits_loss_and_gradients(files, float_models, monkeypatch):
    """finetune's step, with and without extend's rows trained too (`--refine-to`): blocks of 5 answer
    positions against the logits of every position at once; loss and gradients within 1e-5."""
    import torch

    from gguf_trim.extend.float_model import RowModel
    from gguf_trim.extend.rows import added_rows, open_single, read_rows
    from gguf_trim.translate.translator import Translator
    from gguf_trim.tune import logits
    from gguf_trim.tune.data import render_pair
    from gguf_trim.tune.lora import add_lora, example_loss
    from gguf_trim.tune.options import FinetuneOptions

    torch.set_num_threads(1)
    monkeypatch.setattr(logits, "BLOCK", 5)
    rows_txt = [ln.split("\t")[:2] for ln in files["pairs"].read_text(encoding="utf-8").splitlines()[:3]]
    for path, with_rows in ((files["base"], False), (files["ext"], True)):
        tr = Translator(path, n_ctx=512, guard=False)
        try:
            batch = [render_pair(tr, en, vi, d) for en, vi in rows_txt for d in ("en-vi", "vi-en")]
        finally:
            tr.close()
        torch.manual_seed(0)
        model, _ = add_lora(_load(path, float_models), "llama", 1, FinetuneOptions(rank=4))
        for mod in model.modules():
            if hasattr(mod, "lora_B") and "default" in getattr(mod, "lora_B", {}):
                torch.nn.init.normal_(mod.lora_B["default"].weight, std=0.05)
        rows = None
        if with_rows:
            with open_single(path) as g:
                added = added_rows(g)
                rows = RowModel(model.get_base_model(), added, read_rows(g, added))
        params = [p for p in model.parameters() if p.requires_grad] + (rows.trainable() if rows else [])
        got = {}
        for mode in ("full", "chunked"):
            for p in params:
                p.grad = None
            with logits.logits_mode(mode):
                loss, n = example_loss(model, batch, torch.device("cpu"), rows=rows)
            loss.backward()
            got[mode] = float(loss.detach()), n, _grads(params)
        assert got["full"][1] == got["chunked"][1] > 2 * logits.BLOCK
        assert abs(got["chunked"][0] - got["full"][0]) <= 1e-5 * abs(got["full"][0])
        assert _rel(got["chunked"][2], got["full"][2]) < 1e-5
        if rows is not None:  # the rows' own gradient (it passes through the blocks' head too)
            k = rows.new_in.numel()
            assert _rel(got["chunked"][2][-k:], got["full"][2][-k:]) < 1e-5 and got["full"][2][-k:].abs().sum() > 0


def test_refine_blocks_give_the_full_logits_loss_and_gradients(files, float_models, monkeypatch):
    import torch

    from gguf_trim.extend import train
    from gguf_trim.extend.float_model import RowModel
    from gguf_trim.extend.packing import Choices, Packer
    from gguf_trim.extend.rows import added_rows, open_single, read_rows
    from gguf_trim.tune import logits

    torch.set_num_threads(1)
    monkeypatch.setattr(train, "LOGIT_CHUNK", 7)
    with open_single(files["ext"]) as g:
        added = added_rows(g)
        rm = RowModel(_load(files["ext"], float_models), added, read_rows(g, added))
    packer = Packer(files["ext"], 32)
    try:
        seqs = [s for s, _ in zip(packer.sequences(iter(files["text"].read_text(encoding="utf-8").splitlines())),
                                  range(3))]
        choices = Choices.for_added(packer.llm, added)
    finally:
        packer.close()
    got = {}
    for mode in ("full", "chunked"):
        rm.new_in.grad = None
        with logits.logits_mode(mode):
            b = train.batch_loss(rm, seqs, torch.device("cpu"), torch.float32, train=True, choices=choices,
                                 choice_weight=1.0)
        got[mode] = b.nats, b.choice_nats, rm.new_in.grad.clone()
    assert abs(got["chunked"][0] - got["full"][0]) <= 1e-5 * got["full"][0]
    assert abs(got["chunked"][1] - got["full"][1]) <= 1e-5 * max(got["full"][1], 1e-9)
    assert _rel(got["chunked"][2], got["full"][2]) < 1e-5


def test_bench_train_cost_end_to_end(files, float_models, monkeypatch):
    """Two steps per run on the tiny model and its lossless trim: the JSON has every run, the shares and
    ratios, and the adapter trained on the trim applies to the original. The first run in its own process
    as the bench runs them, the others in this one with the float models loaded once (a fresh Python with
    PyTorch and a float model takes ~10 s here)."""
    from gguf_trim.bench import train_cost
    from gguf_trim.cli import main
    from gguf_trim.translate.translator import Translator

    real, calls, cache = train_cost.run_worker, [], float_models

    def run_worker(spec, timeout):
        calls.append(spec)
        return real(spec, timeout) if len(calls) == 1 else json.loads(json.dumps(train_cost.worker(spec, cache)))

    monkeypatch.setattr(train_cost, "run_worker", run_worker)
    monkeypatch.setattr(Translator, "max_tokens", lambda self, text: 8)  # a random model writes to its budget
    d = files["dir"]
    out, md = d / "tc.json", d / "tc.md"
    r = CliRunner().invoke(main, ["bench", "train-cost", str(files["base"]), "--pairs", str(files["pairs"]),
                                  "--corpus", str(files["text"]), "--words", str(files["words"]), "--steps", "2",
                                  "--warmup", "1", "--tokens", "24", "--batch", "2", "--seq-len", "24",
                                  "--n-pairs", "8", "--adapter-check", "1", "--threads", "1", "--work",
                                  str(d / "work"), "--variants", "original,lossless", "--json", str(out),
                                  "--md", str(md)])
    assert r.exit_code == 0, r.output
    rep = json.loads(out.read_text())
    assert len(rep["runs"]) == 2 * 3 * 2  # stages x modes x files
    for run in rep["runs"]:
        assert len(run["step_s"]) == 2 and run["peak_mib"] > 0 and run["median_s"] > 0
    runs = {(x["stage"], x["variant"], x["mode"]): x for x in rep["runs"]}
    for stage in ("finetune", "refine"):  # the same first step whether the logits come in blocks or at once
        for v in ("original", "lossless"):
            a, b = runs[stage, v, "chunked"]["losses"][0], runs[stage, v, "full"]["losses"][0]
            assert abs(a - b) <= 1e-5 * abs(b)
    trims = [x for x in rep["derived"] if x["variant"] == "lossless"]
    assert trims and all("time_ratio" in x and "mem_pred" in x for x in trims)
    [check] = rep["adapters"][files["base"].name]
    assert check["applies"] and check["texts"] == 1
    assert "| finetune | lossless |" in md.read_text()
