"""The compact profile: exact fast token counts, the selection's guarantees (size, closure,
specials), plans, the CLI, and the claims it rests on through real llama.cpp:
a line whose original tokens are all kept tokenizes identically after the trim, and such a line
never costs the trimmed model more bits (same logits, softmax over fewer tokens)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_trim.api import CompactOptions, make_selection, trim
from gguf_trim.cli import main
from gguf_trim.format.gguffile import GGUFFile
from gguf_trim.langs import language_set
from gguf_trim.rewrite.verify import kept_ids_of, line_bits, read_lines
from gguf_trim.runtime.llama import load_llama
from gguf_trim.selection import compact as C
from gguf_trim.selection import count as K
from gguf_trim.selection.plan import read_plan, write_plan
from gguf_trim.vocab import tokenizer as T
from gguf_trim.vocab.vocabulary import Vocab

from .conftest import DEV, GEMMA, SHARED, need, vocab_file

TRAIN = SHARED / "corpus" / "train"
# Text that exercises every cut llama.cpp makes: user-defined tokens (Gemma 3's runs of spaces,
# tabs, HTML tags), the one Gemma token spanning a word boundary ("> </"), digits, contractions,
# trailing and leading spaces, other scripts, line breaks inside a segment.
TRICKY = ["a  b   c    d", "\tindented\t\ttabs", "<b>bold</b> and <table><tr><td>x</td></tr></table>",
          "x> </y and > </ end", "1234567 and 3.14159, 10,000", "don't it's we'll THEY'RE",
          "trailing spaces   ", "   leading spaces", "Tiếng Việt có dấu: Nguyễn, Đặng, Ưng", "中文 и русский ✓ 🙂",
          "line one\nline two\r\nline three", "  \n\n  ", "[multimodal] <start_of_image>", "a\u2028b\u00a0c",
          # Gemma 4: newline runs (taken whole when they are a token), its user-defined tokens
          "para\n\n\n\nnext", "\n" * 40 + "end", "<|tool_call>call<tool_call|> <|\"|>"]

judge_bytes = language_set("en,vi").chars.judge_bytes


@pytest.fixture(scope="session", autouse=True)
def _cache(tmp_path_factory):
    """One cache folder for the session: counts and word evidence are computed once per tokenizer."""
    mp = pytest.MonkeyPatch()
    mp.setenv("GGUF_TRIM_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def _sample_lines(n: int = 1500) -> list[str]:
    out = []
    for name in ("en.txt", "vi.txt"):
        lines = read_lines(need(TRAIN / name))
        out += lines[:: max(1, len(lines) // n)][:n]
    return out + TRICKY


def _vocab(path):
    with GGUFFile(path) as g:
        return Vocab.from_gguf(g)


@pytest.mark.parametrize("name", ["qwen2", "llama-bpe", "gpt-2", "phi-3", "llama-spm", "gemma", "gemma-4"])
def test_fast_counts_equal_llama_cpp(name):
    """The fast path's counts are llama.cpp's, id for id, on real and tricky text, for BPE (three
    pre-tokenizers, ignore_merges), SPM (with and without the space prefix, user-defined tokens) and
    Gemma 4 (BPE on SentencePiece-style text: newline runs taken whole, the crossing merge '>▁</')."""
    path = need(GEMMA) if name == "gemma" else vocab_file(name)
    vocab = _vocab(path)
    lines = _sample_lines()
    fast = K.count_tokens(vocab, path, lambda: iter(lines), f"t-{name}", use_cache=False, progress=False,
                          workers=2)
    slow = K.count_tokens(vocab, path, lambda: iter(lines), f"t-{name}", use_cache=False, progress=False,
                          workers=1, force_llama=True)
    assert fast.method == "tokenizers" and fast.mismatch is None
    assert slow.method == "llama.cpp"
    assert fast.segments == slow.segments == len(lines)
    assert fast.bytes == slow.bytes == sum(len(x.encode()) for x in lines)
    np.testing.assert_array_equal(fast.counts, slow.counts)
    # and segment by segment, the path the counts add up
    llm = load_llama(path, vocab_only=True)
    try:
        splitter, tok = T.splitter_for(vocab), T.unit_tokenizer(vocab)
        for line, ids in zip(TRICKY, T.fast_tokenize(splitter, tok, TRICKY)):
            assert ids == llm.tokenize(line.encode(), add_bos=False, special=False), line
    finally:
        llm.close()


def test_plain_text_blocks_count_the_same(tmp_path):
    """Workers splitting raw .txt blocks count exactly what the segment-by-segment reader gives."""
    from gguf_trim.selection.corpus import open_corpus

    path = vocab_file("qwen2")
    vocab = _vocab(path)
    f = tmp_path / "c.txt"
    f.write_text("\r\n".join(_sample_lines(800)) + "\n\n   \nlast line without newline\r", encoding="utf-8")
    c = open_corpus([str(f)])
    assert c.plain_text
    a = K.count_tokens(vocab, path, c.segments, "seg", use_cache=False, progress=False)
    b = K.count_tokens(vocab, path, c.segments, "blk", use_cache=False, progress=False, blocks=c.txt_blocks)
    assert a.method == b.method == "tokenizers"
    assert (a.segments, a.bytes) == (b.segments, b.bytes) == (len(list(c.segments())),
                                                               sum(len(x.encode()) for x in c.segments()))
    np.testing.assert_array_equal(a.counts, b.counts)


def test_wrong_fast_tokenizer_falls_back_to_llama_cpp(monkeypatch):
    """If the equivalent disagrees with llama.cpp on the sample, llama.cpp counts everything."""
    path = vocab_file("qwen2")
    vocab = _vocab(path)
    lines = _sample_lines(300)
    ref = K.count_tokens(vocab, path, lambda: iter(lines), "ref", use_cache=False, progress=False, force_llama=True)
    monkeypatch.setitem(T.PRE_TOKENIZERS, "qwen2", T.PRE_TOKENIZERS["gpt-2"])  # a plausible but wrong regex
    got = K.count_tokens(vocab, path, lambda: iter(lines), "wrong", use_cache=False, progress=False)
    assert got.method == "llama.cpp" and "differs from llama.cpp" in got.mismatch
    np.testing.assert_array_equal(got.counts, ref.counts)
    monkeypatch.delitem(T.PRE_TOKENIZERS, "qwen2")
    got = K.count_tokens(vocab, path, lambda: iter(lines), "unknown", use_cache=False, progress=False)
    assert got.method == "llama.cpp" and "no fast tokenizer" in got.mismatch
    np.testing.assert_array_equal(got.counts, ref.counts)


def test_counts_are_cached_by_tokenizer_and_corpus(tmp_path):
    from gguf_trim.selection.corpus import open_corpus

    path = vocab_file("qwen2")
    vocab = _vocab(path)
    f = tmp_path / "a.txt"
    f.write_text("hello world\nxin chào thế giới\n", encoding="utf-8")
    c = open_corpus([str(f)])
    key = c.sha256()
    first = K.count_tokens(vocab, path, c.segments, key, progress=False)
    again = K.count_tokens(vocab, path, c.segments, c.sha256(), progress=False)
    assert not first.cached and again.cached
    np.testing.assert_array_equal(first.counts, again.counts)
    f.write_text("hello world\nxin chào thế giới!\n", encoding="utf-8")
    c2 = open_corpus([str(f)])
    assert c2.sha256() != key
    assert not K.count_tokens(vocab, path, c2.segments, c2.sha256(), progress=False).cached


@pytest.fixture(scope="module")
def qwen_evidence():
    path = vocab_file("qwen2")
    vocab = _vocab(path)
    ev = C.gather_evidence(vocab, path, [str(need(TRAIN / "en.txt")), str(need(TRAIN / "vi.txt"))],
                           progress=False)
    return vocab, ev


def test_compact_selection_guarantees(qwen_evidence):
    vocab, ev = qwen_evidence
    base = make_selection(vocab)
    for target in (76116, 50000):
        sel = C.select_compact(vocab, ev, target=target)
        kept = sel.keep
        assert sel.n_kept + (vocab.n - sel.n_kept) % C.PAD_MODULUS <= target
        assert sel.n_kept > target - C.PAD_MODULUS
        assert not (kept & ~base.keep).any()  # a subset of the lossless set
        for i, why in base.why.items():  # specials and bytes stay
            if why in ("special", "special-id", "byte"):
                assert kept[i], (i, why)
        for i in np.flatnonzero(kept).tolist():  # closed: everything a kept token is built from is kept
            assert all(kept[j] for j in (vocab.derivation(i) or ())), vocab.display(i)
        assert set(sel.why.values()) <= {"special", "special-id", "byte", "corpus", "words", "prior", "needed"}
        assert sel.detail and all({"count", "words", "prior"} <= d.keys() for d in sel.detail.values())
    # the most frequent corpus tokens and common words survive even a hard cut
    sel = C.select_compact(vocab, ev, target=40000)
    top = np.argsort(-ev.corpus)[:2000]
    assert sel.keep[top].all()
    for piece in (" the", " Việt", " được", " window"):
        assert sel.keep[vocab.pieces.index(piece.encode())], piece


def test_min_count(qwen_evidence):
    vocab, ev = qwen_evidence
    sel = C.select_compact(vocab, ev, min_count=5)
    base = make_selection(vocab)
    cand = np.zeros(vocab.n, dtype=bool)
    cand[[i for i, w in base.why.items() if w == "script"]] = True
    strong = cand & ((ev.corpus >= 5) | (ev.words > 0))
    assert sel.keep[strong].all()
    weak_kept = sel.keep & cand & ~strong
    assert all(sel.why[i] == "needed" for i in np.flatnonzero(weak_kept).tolist())
    assert sel.n_kept < base.n_kept


def test_foreign_tokens_go_first(qwen_evidence):
    """Tokens only other Latin-script languages' common words use (unseen in En/Vi) are dropped
    before any other candidate."""
    vocab, ev = qwen_evidence
    sel = C.select_compact(vocab, ev, target=90000)
    base = make_selection(vocab)
    script = np.zeros(vocab.n, dtype=bool)
    script[[i for i, w in base.why.items() if w == "script"]] = True
    foreign_only = (ev.foreign > 0) & (ev.words <= 0) & (ev.corpus <= 0) & script
    kept_foreign = sel.keep & foreign_only
    assert foreign_only.sum() > 1000
    assert all(sel.why[i] == "needed" for i in np.flatnonzero(kept_foreign).tolist())


def test_latin_langs_is_what_wordfreq_says():
    import wordfreq

    latin = sorted(lang for lang in wordfreq.available_languages()
                   if np.mean([judge_bytes(w.encode())[0] for w in wordfreq.top_n_list(lang, 200)]) >= 0.5)
    assert tuple(latin) == C.LATIN_LANGS


def test_word_forms():
    forms = C.word_forms(("vi",))
    for f in ("việt", " việt", "Việt", " Việt", " nam", " Nam"):
        assert f in forms, f


def test_plan_round_trip_and_exact_fidelity(qwen_evidence, tmp_path, dev_en, dev_vi):
    """A compact plan reads back as the same selection, applies to the vocab file, and every held-out
    line whose original tokens are all kept tokenizes to the same tokens; no other line does."""
    vocab, ev = qwen_evidence
    sel = C.select_compact(vocab, ev, target=76116)
    plan = tmp_path / "q.plan"
    write_plan(plan, sel, source="vocab-qwen2.gguf")
    back = read_plan(plan, vocab)
    np.testing.assert_array_equal(back.keep, sel.keep)
    assert back.why == sel.why and not back.closure_added
    header = json.loads(plan.read_text(encoding="utf-8").split("\n")[0])
    assert header["profile"] == "compact" and header["selection"]["target_size"] == 76116
    line = json.loads(plan.read_text(encoding="utf-8").split("\n")[1000])
    assert {"why", "count", "words", "prior"} <= line.keys()

    out = tmp_path / "q.gguf"
    res, _ = trim(vocab_file("qwen2"), out, plan=plan)
    assert res.n_vocab_trimmed == sel.n_kept  # no tensors, no padding
    kept = kept_ids_of(out)
    lo, lt = load_llama(vocab_file("qwen2"), vocab_only=True), load_llama(out, vocab_only=True)
    try:
        n = same = predicted = 0
        for path in (dev_en, dev_vi):
            for text in read_lines(path)[::7]:
                a = lo.tokenize(text.encode(), add_bos=False, special=False)
                b = [int(kept[i]) for i in lt.tokenize(text.encode(), add_bos=False, special=False)]
                p = bool(sel.keep[a].all())
                assert (a == b) == p, text
                n, same, predicted = n + 1, same + (a == b), predicted + p
    finally:
        lo.close()
        lt.close()
    assert n > 2500 and same == predicted
    assert same / n >= 0.9  # held-out software text; the frontier in docs/ has the measured figures


def test_gemma_compact_bits_never_worse_on_identical_lines(tmp_path):
    """Trimmed Gemma at 50%: for a line tokenized identically, every logit at a kept id is the
    original's, so its bits can only fall (softmax over fewer tokens); lines with a dropped token
    are re-tokenized and are measured, not assumed."""
    out = tmp_path / "g.gguf"
    opts = CompactOptions(corpus=[str(need(TRAIN / "en.txt")), str(need(TRAIN / "vi.txt"))], target_size=131072)
    res, sel = trim(need(GEMMA), out, profile="compact", compact=opts)
    assert res.n_vocab_trimmed == 131072
    lines = read_lines(DEV / "vi.txt")[:12] + read_lines(DEV / "en.txt")[:12] + [
        "The Großglockner and Zürich are in the Alps; señor García said ¿qué?"]
    a, b = line_bits(GEMMA, lines, n_ctx=256), line_bits(out, lines, n_ctx=256)
    llm = load_llama(GEMMA, vocab_only=True)
    identical = 0
    try:
        for text, x, y in zip(lines, a, b):
            if x is None or y is None:  # longer than the context
                continue
            ids = llm.tokenize(text.encode(), add_bos=False, special=False)
            assert x[1] == y[1] == len(text.encode())
            if sel.keep[ids].all():
                identical += 1
                assert y[0] <= x[0] + 1e-6, text
    finally:
        llm.close()
    assert identical >= 20
    # the CLI reports the same comparison
    text = tmp_path / "t.txt"
    text.write_text("\n".join(lines[:6]) + "\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["verify", str(GEMMA), str(out), "--text", str(text), "--bpb", "--bpb-lines", "6",
                                  "--json", str(tmp_path / "v.json")])
    assert r.exit_code == 0, r.output
    assert "bits per byte over 6 lines:" in r.output
    rep = json.loads((tmp_path / "v.json").read_text())["files"][0]
    want_o = sum(x[0] for x in a[:6]) / sum(x[1] for x in a[:6])
    assert rep["bpb_lines"] == 6 and abs(rep["bpb_original"] - want_o) < 1e-9
    r = CliRunner().invoke(main, ["verify", str(GEMMA), str(out), "--bpb"])
    assert r.exit_code == 2 and "--bpb needs --text" in r.output


def test_cli_compact_plan_and_errors(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps({"t": s}) for s in ["Hello world", "Xin chào thế giới", "Hôm nay"]),
                      encoding="utf-8")
    r = CliRunner().invoke(main, ["plan", str(vocab_file("qwen2")), "-o", str(tmp_path / "p.plan"),
                                  "--profile", "compact", "--target-size", "60000", "--corpus", str(corpus),
                                  "--field", "t"])
    assert r.exit_code == 0, r.output
    assert "60,000 of 151,936 tokens kept" in r.output and "corpus" in r.output
    header = json.loads((tmp_path / "p.plan").read_text(encoding="utf-8").split("\n")[0])
    assert header["n_kept"] == 60000 and header["selection"]["segments"] == 3

    def err(*args):
        r = CliRunner().invoke(main, ["plan", str(vocab_file("qwen2")), "-o", str(tmp_path / "x.plan"), *args])
        assert r.exit_code == 2, r.output
        assert r.output.startswith("gguf-trim: error:") and r.output.count("\n") == 1, r.output
        assert not (tmp_path / "x.plan").exists()
        return r.output

    assert "belong to --profile compact" in err("--target-size", "1000")
    assert "not both" in err("--profile", "compact", "--target-size", "60000", "--min-count", "3",
                             "--corpus", str(corpus))
    assert "needs a --corpus" in err("--profile", "compact", "--min-count", "3")
    assert "below the" in err("--profile", "compact", "--target-size", "100")
    assert "missing.txt" in err("--profile", "compact", "--corpus", str(tmp_path / "missing.txt"))
    assert "unknown profile" in err("--profile", "tiny")
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    assert "holds no text" in err("--profile", "compact", "--corpus", str(tmp_path / "empty.txt"))


def test_hf_dataset_corpus(tmp_path, monkeypatch):
    """hf:NAME[:split][:field] through the datasets library, on a local folder (there is no hub here)."""
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    data = tmp_path / "ds"
    data.mkdir()
    (data / "train.jsonl").write_text("\n".join(json.dumps({"body": s}) for s in ["Xin chào", "Hello there"]),
                                      encoding="utf-8")
    opts = CompactOptions(corpus=[f"hf:{data}:train:body"], target_size=60000)
    sel = make_selection(_vocab(vocab_file("qwen2")), profile="compact", compact=opts)
    assert sel.info["segments"] == 2 and sel.n_kept <= 60000


def test_frontier_cli(tmp_path):
    """`gguf-trim frontier` on a vocab-only file: one compact row per target plus lossless, files written."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("Hello world\nXin chào thế giới\n", encoding="utf-8")
    held = tmp_path / "h.txt"
    held.write_text("Hello there\nXin chào bạn\nThe window is closed.\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["frontier", str(vocab_file("qwen2")), "--targets", "0.5,90000", "--corpus",
                                  str(corpus), "--text", str(held), "--no-count-rates", "--json",
                                  str(tmp_path / "f.json"), "--md", str(tmp_path / "F.md"), "--png",
                                  str(tmp_path / "f.png")])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "f.json").read_text())["rows"]
    assert [(x["profile"], x["n_vocab"]) for x in rows] == [("compact", 75968), ("compact", 90000),
                                                           ("lossless", 104077)]
    assert rows[-1]["fidelity_h"] == 1.0 and all(0 < x["fidelity_h"] <= 1 for x in rows)
    assert "| vocab-qwen2 | compact | 75,968 |" in (tmp_path / "F.md").read_text()
    assert (tmp_path / "f.png").stat().st_size > 1000
