"""refine with PyTorch (the `train` extra; `make test-train`): a tiny random model with a real
vocabulary through extend -> refine -> llama-cpp-python."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim import GGUFFile
from gguf_trim.extend.rows import added_rows, open_single, read_rows
from gguf_trim.extend.words import detokenize_c
from gguf_trim.format.quant import encode_rows
from gguf_trim.runtime.llama import load_llama
from tests.test_refine import TEXT, WORDS, assert_only_new_rows_differ, extended_synth

# Skipped with a reason where torch/transformers are missing (tests/conftest.py); gguf_trim.extend.train
# (and float_model, packing) import torch, so the tests import it themselves, after that decision.
pytestmark = pytest.mark.train


def corpus(path: Path, n: int, seed: int) -> Path:
    """Short Vietnamese-like lines that use the compound words, plus some English."""
    rng = random.Random(seed)
    fill = ["tôi", "là", "của", "này", "được", "ở", "đây", "và", "không", "một"]
    lines = []
    for k in range(n):
        if k % 5 == 4:
            lines.append("The file was saved to the disk.")
            continue
        words = [rng.choice(WORDS) if rng.random() < 0.5 else rng.choice(fill) for _ in range(rng.randint(4, 12))]
        line = " ".join(words)
        lines.append(line[0].upper() + line[1:] + ".")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("embd,output", [(Q.F32, None), (Q.Q8_0, Q.Q6_K)])
def test_extend_refine_llama_cpp(tmp_path, embd, output):
    ext = extended_synth(tmp_path, embd, output)
    text = corpus(tmp_path / "vi.txt", 400, 0)
    english = tmp_path / "en.txt"
    english.write_text("".join(f"The file {k} was saved to the disk.\n" for k in range(100)), encoding="utf-8")
    (tmp_path / "dev").mkdir()
    dev = corpus(tmp_path / "dev" / "vi.txt", 60, 7)  # same name as the training text, another folder
    out, npz, report = tmp_path / "m.refined.gguf", tmp_path / "rows.npz", tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "refine", str(ext), "--corpus", str(text),
                        "--corpus", str(english), "--eval-text", str(dev),
                        "-o", str(out), "--steps", "40", "--seq-len", "64", "--batch", "4", "--lr", "0.02",
                        "--heldout", "20", "--device", "cpu", "--dtype", "float32", "--export-rows", str(npz),
                        "--self-text", "40",
                        "--json", str(report)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    # the float model reproduces llama.cpp on this model before training
    assert rep["logits_check"]["argmax_agreement"] >= 0.9
    assert abs(rep["logits_check"]["bpb_float"] / rep["logits_check"]["bpb_llama_cpp"] - 1) < 0.01
    # training lowers the held-out loss, also with the rows quantized as written
    assert rep["after"]["loss"] < rep["before"]["loss"]
    assert rep["after_written"]["loss"] < rep["before"]["loss"]
    assert rep["tokens_trained"] > 0 and rep["steps"] == 40
    # the compound-or-first-piece choice (on by default): scored on the Vietnamese held-out lines, and
    # trained (with the next-token loss) to pick the compound where the text goes on with it
    assert rep["choice_weight"] == 1.0 and rep["choice_groups"] >= len(WORDS)
    choice = [r["by_corpus"][str(text)]["choice"] for r in (rep["before"], rep["after_written"])]
    assert choice[0]["positions"] == choice[1]["positions"] > 0
    assert choice[1]["right"] > choice[0]["right"] and choice[1]["loss"] < choice[0]["loss"]
    # --mix auto: text without added tokens is held out and scored, never drawn for training; the
    # self-text (the model's own continuations of Vietnamese heads) is trained on like a corpus
    # (a random model often loops: lines that a loop fills are dropped, and under 2 lines no self-text is
    # trained on; with these seeds the Q8_0/Q6_K model keeps enough lines, the F32 one does not)
    n_self = int(re.search(r"self-text: (\d+) greedy continuations", r.stderr)[1])
    assert n_self <= 40 and (n_self >= 2 or output is None)
    if n_self >= 2:
        vi, en, own = rep["corpora"]
        assert own["path"] == "self-text" and own["train_lines"] + own["heldout_lines"] == n_self
        # auto: a quarter of the sequences when it holds added tokens, the rest human text
        assert own["weight"] == pytest.approx(0.25 if own["added_share"] > 0 else 0.0)
        assert vi["weight"] == pytest.approx(1.0 - own["weight"])
        assert set(rep["after_written"]["by_corpus"]) == {str(text), str(english), str(dev), "self-text"}
    else:
        vi, en = rep["corpora"]
        assert vi["weight"] == 1.0
        assert set(rep["after_written"]["by_corpus"]) == {str(text), str(english), str(dev)}
    assert vi["added_share"] > 0.1 and en["added_share"] == 0 and en["weight"] == 0.0
    for name in (text, dev):
        assert rep["after_written"]["by_corpus"][str(name)]["loss"] < rep["before"]["by_corpus"][str(name)]["loss"]
    # --eval-text: scored on its own (up to --heldout lines of it), never in the pooled held-out figures
    assert rep["eval_texts"] == [{"path": str(dev), "lines": 20}]
    for scored in (rep["before"], rep["after_written"]):
        held = [scored["by_corpus"][str(p)] for p in (text, english)]
        n = sum(c["tokens"] for c in held)
        assert scored["loss"] == pytest.approx(sum(c["loss"] * c["tokens"] for c in held) / n)
    # only the added rows changed; they are the exported rows in the tensor's own encoding
    assert_only_new_rows_differ(ext, out)
    data = np.load(npz)
    with GGUFFile(ext) as g, GGUFFile(out) as h:
        added = added_rows(g)
        start = int(added.ids[0])
        before, after = read_rows(g, added), read_rows(h, added)
        for name in added.tensors:
            t = h.tensor(name)
            assert bytes(h.tensor_bytes(t))[start * (t.nbytes // t.shape[-1]):] == \
                encode_rows(data[name.replace(".", "_")], t.ggml_type)
            assert not np.array_equal(before[name], after[name])
    # llama.cpp loads it, text round-trips, and it scores the training text better than before
    llm = load_llama(out, n_ctx=256)
    for line in TEXT + text.read_text(encoding="utf-8").splitlines()[:50]:
        assert detokenize_c(llm, llm.tokenize(line.encode(), add_bos=False, special=False)) == line
    llm.close()
    from gguf_trim.rewrite.verify import bits_per_byte

    lines = text.read_text(encoding="utf-8").splitlines()[:100]
    assert bits_per_byte(out, lines) < bits_per_byte(ext, lines)


def test_float_model_matches_llama_cpp_on_f32_weights(tmp_path):
    """With float weights llama.cpp and the float model differ only by rounding (its KV cache is F16)."""
    from gguf_trim.extend.float_model import RowModel, load_float_model, logits_agreement

    ext = extended_synth(tmp_path, Q.F32, Q.F32)
    with open_single(ext) as g:
        added = added_rows(g)
        rm = RowModel(load_float_model(ext), added, read_rows(g, added))
    check = logits_agreement(ext, rm, TEXT)
    assert check["positions_with_new_tokens"] > 0
    assert check["argmax_agreement"] == 1.0
    assert check["max_abs_diff"] < 0.1


def test_choice_loss_is_the_cross_entropy_within_each_group():
    """Compounds 10, 11 (first piece 3) and 12 (first piece 5): at a position whose target is in
    a group, the loss is the cross-entropy over that group's logits alone; other positions add
    nothing. Checked against the sum written out by hand."""
    import torch

    from gguf_trim.extend.packing import Choices

    ch = Choices({10: 3, 11: 3, 12: 5}, n_vocab=13)
    assert ch.n_groups == 2
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 13, generator=g)
    tgt = torch.tensor([3, 10, 12, 7, -100, 5])
    nats, n, right = ch.loss(logits, tgt)
    groups = {3: [3, 10, 11], 10: [3, 10, 11], 12: [5, 12], 5: [5, 12]}
    want, hits = 0.0, 0
    for k, t in enumerate(tgt.tolist()):
        if t in groups:
            z = logits[k, groups[t]]
            want -= float(torch.log_softmax(z, 0)[groups[t].index(t)])
            hits += int(groups[t][int(z.argmax())] == t)
    assert n == 4 and right == hits
    assert float(nats) == pytest.approx(want, rel=1e-6)
    assert ch.loss(logits, torch.tensor([7, 8, -100]))[1:] == (0, 0)
