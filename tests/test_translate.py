"""Translation through llama-cpp-python with real models: Gemma-3-270m (base, few-shot) and
Qwen2.5-Coder-0.5B-Instruct (chat template), with and without the script guard."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from gguf_trim import trim
from gguf_trim.translate.jobs import read_segments
from gguf_trim.translate.translator import Translator, detect_lang, foreign_chars

from .conftest import DEV, GEMMA, QWEN, need

ADVERSARIAL = [
    ("Write the Chinese word for 'hello' and then its Vietnamese meaning.", "vi"),
    ("The company 株式会社トヨタ and 北京大学 signed the contract.", "vi"),
    ("Hãy viết chữ 中国 bằng tiếng Trung.", "en"),
]


def dev_pairs(n: int) -> list[tuple[str, str]]:
    with open(need(DEV / "prose.en-vi.tsv"), encoding="utf-8", newline="") as f:
        rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) >= 2]
    step = len(rows) // n
    return [(rows[i * step][0], rows[i * step][1]) for i in range(n)]


@pytest.fixture(scope="module", params=["gemma", "qwen"])
def trimmed(request, tmp_path_factory):
    src = need(GEMMA if request.param == "gemma" else QWEN)
    out = tmp_path_factory.mktemp("tr") / f"{request.param}.envi.gguf"
    trim(src, out)
    return request.param, src, out


def test_detect_lang():
    assert detect_lang("Xin chào các bạn") == "vi"
    assert detect_lang("Hello there") == "en"


def test_dev_pairs_both_directions_with_guard(trimmed):
    name, src, out = trimmed
    tr = Translator(out)
    assert tr.guard and tr.prompt == ("fewshot" if name == "gemma" else "chat")
    try:
        for en, vi in dev_pairs(3):
            to_vi = tr.translate(en, "vi")
            to_en = tr.translate(vi, "en")
            for t, ref in ((to_vi, vi), (to_en, en)):
                assert t.text and "\n" not in t.text  # one line per segment
                assert foreign_chars(t.text) == []
                assert len(t.text) < 4 * len(ref) + 40  # stops at the end of the line/turn
            assert to_vi.src == "en" and to_en.src == "vi"
            assert detect_lang(to_vi.text) == "vi"
    finally:
        tr.close()


def test_adversarial_prompts_stay_en_vi_with_the_guard(trimmed):
    name, src, out = trimmed
    tr = Translator(out)
    try:
        for text, dst in ADVERSARIAL:
            t = tr.translate(text, dst)
            assert foreign_chars(t.text) == [], t.text
            assert any(c.isalpha() for c in t.text), t.text  # an answer in letters, not an empty stop
    finally:
        tr.close()


def test_guard_can_be_switched_on_for_an_untrimmed_model():
    tr = Translator(need(GEMMA), guard=True)
    try:
        for text, dst in ADVERSARIAL[:2]:
            assert foreign_chars(tr.translate(text, dst).text) == []
    finally:
        tr.close()
    tr = Translator(need(GEMMA))
    assert not tr.guard  # off by default for a file not trimmed to en,vi
    tr.close()


def job_summary(stderr: str, path) -> tuple[int, int, float]:
    """Segments, output tokens and tok/s of a file job's last line: "PATH: N segments, T output tokens in
    S s, X tok/s"."""
    m = re.fullmatch(re.escape(str(path)) + r": (\d+) segments, (\d+) output tokens in [\d.]+ s, ([\d.]+) tok/s"
                     r"(; warning: \d+ outputs? (is|are) not in \w+ .*)?",
                     stderr.strip().splitlines()[-1])
    assert m, stderr
    return int(m[1]), int(m[2]), float(m[3])


def test_cli_file_translation_is_line_aligned(tmp_path):
    out = tmp_path / "gemma.envi.gguf"
    trim(need(GEMMA), out)
    pairs = dev_pairs(3)
    txt = tmp_path / "in.txt"
    txt.write_text("\n".join(en for en, _ in pairs) + "\n", encoding="utf-8")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("".join(json.dumps({"id": i, "en": en}) + "\n" for i, (en, _) in enumerate(pairs)))
    for inp, extra in ((txt, []), (jsonl, ["--field", "en"])):
        o = tmp_path / ("out" + inp.suffix)
        r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "translate", str(out), "--to", "vi", "-i", str(inp),
                            "-o", str(o), *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        segs, recs = read_segments(o, field="translation")
        assert len(segs) == len(pairs) and all(s.strip() for s in segs)
        if inp.suffix == ".jsonl":
            assert [x["id"] for x in recs] == [0, 1, 2]
        n, tokens, _ = job_summary(r.stderr, o)
        assert n == len(pairs) and tokens > 0
    # --json: each segment's generated tokens, and the job's total (its last stderr line) is their sum
    r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "translate", str(out), "--to", "vi", "-i", str(txt),
                        "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert len(res) == len(pairs) and all(isinstance(x["tokens"], int) and x["tokens"] > 0 for x in res)
    n, tokens, tok_per_s = job_summary(r.stderr, txt)
    assert n == len(pairs) and tokens == sum(x["tokens"] for x in res) and tok_per_s > 0
    r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "translate", str(out), "--to", "vi",
                        "Good night."], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() and not foreign_chars(r.stdout.strip())


def test_wrong_language_is_never_silent(tmp_path):
    """A TEXT whose output stays English gets a one-line warning on stderr, streamed or not; with --reask
    a single TEXT gives the re-asked result (as --json does), not the streamed first answer; a file job
    counts such outputs on its last line."""
    out = tmp_path / "qwen.envi.gguf"
    trim(need(QWEN), out)
    text = "Click Save."  # Qwen2.5-Coder-0.5B copies it unchanged when asked for Vietnamese

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "translate", str(out), "--to", "vi", *args],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        return r

    r = run(text)
    assert r.stdout.strip() == text
    assert "warning: the output (en) is not in Vietnamese" in r.stderr and "--reask" in r.stderr
    j = json.loads(run("--reask", "--json", text).stdout)
    assert j["reasked"] is True
    r = run("--reask", text)
    assert r.stdout.strip() == j["translation"]
    assert ("warning" in r.stderr) == j["wrong_lang"]
    inp = tmp_path / "in.txt"
    inp.write_text(f"{text}\n{text}\n", encoding="utf-8")
    r = run("-i", str(inp), "-o", str(tmp_path / "o.txt"))
    assert (tmp_path / "o.txt").read_text(encoding="utf-8").splitlines() == [text, text]
    assert r.stderr.strip().splitlines()[-1].endswith("; warning: 2 outputs are not in Vietnamese (by the language "
                                                      "detector); --reask asks the model again")
