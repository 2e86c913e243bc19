"""scripts/soak.py (`make soak`) in miniature: its kill/resume, trim-kill and full-disk parts on a
tiny random model with a real (Llama 2 SentencePiece) vocabulary, so that the soak's own bookkeeping
is tested in `make test`; the real soak runs on SmolLM2-135M and Qwen2.5-Coder-0.5B for minutes."""

from __future__ import annotations

import importlib.util
import json

import pytest
from gguf.constants import GGMLQuantizationType as Q

from tests.synth import build_model

from .conftest import ROOT, need, vocab_file

spec = importlib.util.spec_from_file_location("soak", ROOT / "scripts" / "soak.py")
soak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soak)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("soak")
    return build_model(d / "tiny.gguf", vocab_file("llama-spm"), Q.Q8_0, Q.Q8_0, n_embd=64, n_ff=128), d


def test_soak_kills_resumes_and_fills_the_disk(tiny, dev_en):
    model, d = tiny
    out = d / "soak.json"
    rc = soak.main(["--parts", "translate,trim,disk", "--translate-model", str(model), "--trim-model", str(model),
                    "--text", str(need(dev_en)), "--segments", "60", "--translate-kills", "3", "--jitter", "0.2",
                    "--trim-kills", "3", "--disk-mb", "1", "--work", str(d), "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0, res["summary"]
    t = res["translate"]
    assert t["kills"] >= 1 and t["lost"] == t["repeated"] == t["mismatched"] == t["corrupt"] == 0
    assert t["in_order"] and t["identical_bytes"] and t["lines"] == 60 and not t["sidecar_left"]
    tr = res["trim"]
    assert tr["kills"] >= 1 and tr["partial"] == 0 and tr["input_unchanged"] and tr["next_trim_identical"]
    assert ("temp files left" in res["summary"]) == bool(tr["temp_files_left"])  # reported, never hidden
    fd = res["full_disk"]
    assert fd["exit"] == 2 and fd["stderr_lines"] == 1 and fd["left"] == []
    assert res["summary"].startswith("soak: translate ") and "full disk: 1 line, exit 2, 0 partial" in res["summary"]
    assert [p.name for p in d.iterdir() if p.name.startswith("gguf-trim-soak-")] == []  # its work folder is gone


def test_compare_jobs_counts_lost_repeated_and_mismatched(tmp_path):
    ref, out = tmp_path / "ref.jsonl", tmp_path / "out.jsonl"
    rec = [{"id": i, "text": str(i), "translation": f"t{i}"} for i in range(5)]
    ref.write_text("".join(json.dumps(r) + "\n" for r in rec))
    bad = [rec[0], rec[1], rec[1], {**rec[2], "translation": "x"}, rec[4]]  # id 3 lost, 1 repeated, 2 mismatched
    out.write_text("".join(json.dumps(r) + "\n" for r in bad) + '{"id": 5, "te')
    r = soak.compare_jobs(out, ref, 5)
    assert (r["lost"], r["repeated"], r["mismatched"], r["corrupt"]) == (1, 1, 1, 1)
    assert not r["identical_bytes"] and r["in_order"]
    line = soak.summary({"translate": {**r, "kills": 3, "ok": False}})
    assert line.startswith("soak: translate 3 kills, 1 lost, 1 repeated, 1 mismatched, 1 corrupt") and "FAILED" in line
