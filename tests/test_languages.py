"""Language sets as data (issue 32): each language's characters from CLDR/Unicode data, en,vi as before,
Japanese without Chinese-only Han, the suppress rule for any set equal to trying every UTF-8 state."""

import numpy as np
import pytest

from gguf_trim.errors import TrimError
from gguf_trim.langs import known_codes, language_set
from gguf_trim.langs.languages import parse_exemplars
from gguf_trim.vocab.suppress import never_allowed
from gguf_trim.vocab.vocabulary import Vocab
from tests.conftest import vocab_file

# The En/Vi character set as it was written by hand before the table (charset.EN_VI_RANGES at e561298).
OLD_EN_VI_RANGES = (
    (0x0000, 0x024F), (0x0250, 0x02FF), (0x0300, 0x036F), (0x0370, 0x03FF), (0x1AB0, 0x1AFF), (0x1D00, 0x1DFF),
    (0x1E00, 0x1EFF), (0x2000, 0x2BFF), (0x2C60, 0x2C7F), (0x2E00, 0x2E7F), (0xFB00, 0xFB06), (0xFE00, 0xFE0F),
    (0xFE20, 0xFE2F), (0xFEFF, 0xFEFF), (0xFFF9, 0xFFFD), (0x1D400, 0x1D7FF), (0x1F000, 0x1F1FF),
    (0x1F300, 0x1FAFF), (0xE0000, 0xE007F))
REQUIRED = ("en", "vi", "fr", "de", "es", "pt", "it", "id", "tr", "ru", "uk", "ar", "fa", "hi", "bn", "th", "ja", "ko",
            "zh-Hans", "zh-Hant")


def test_en_vi_is_the_set_it_always_was():
    old = np.zeros(0x110000, dtype=bool)
    for lo, hi in OLD_EN_VI_RANGES:
        old[lo:hi + 1] = True
    for spec in ("en,vi", "vi,en", "en", "vi", ["vi", "en"]):
        chars = language_set(spec).chars
        assert np.array_equal(chars.allowed, old), spec
        assert chars.max_greek == 1
    assert language_set("vi , EN").key == "en,vi"


def test_at_least_twenty_languages_including_the_required_ones():
    assert set(REQUIRED) <= set(known_codes()) and len(known_codes()) >= 20


@pytest.mark.parametrize("code", known_codes())
def test_each_language_writes_its_own_cldr_sample_and_exemplars(code):
    """The UDHR sample text gflanguages ships is all allowed, and so is every exemplar character of the
    language's own scripts (Korean's Hanja are the designed exception: Han is not a Korean script here)."""
    lset = language_set(code)
    lang = lset.language(code)
    assert lang.name and lang.autonym
    assert lset.chars.foreign(lang.sample_text()) == []
    out = [c for c in lang.exemplars() if not lset.chars.char_allowed(ord(c))]
    if code == "ko":
        import unicodedata

        assert out and all(unicodedata.name(c).startswith("CJK") for c in out)
    else:
        assert out == []


def test_japanese_keeps_kana_and_kanji_and_drops_chinese_only_han():
    ja = language_set("en,ja").chars
    for ch in "日本語の文章ですカタカナーひらがな。、「」飲食標題簡単":
        assert ja.char_allowed(ord(ch)), ch
    for ch in "这们说吗东车标简饮":  # simplified forms JIS X 0208/0213 does not have
        assert not ja.char_allowed(ord(ch)), ch
    han = [cp for cp in range(0x4E00, 0xA000)]
    kept = sum(ja.char_allowed(cp) for cp in han)
    gb_only = [cp for cp in han if _enc(cp, "gb2312") and not _enc(cp, "euc_jis_2004")]
    assert kept >= 12_560 - 10 and len(gb_only) > 2000
    assert not any(ja.char_allowed(cp) for cp in gb_only)


def _enc(cp: int, codec: str) -> bool:
    try:
        chr(cp).encode(codec)
        return True
    except UnicodeEncodeError:
        return False


@pytest.mark.parametrize("spec, yes, no", [
    ("en,ko", "한국어 ㅋㅋ 가힣", "漢字あア中"),
    ("en,zh-Hans", "中文这们說。，", "あア한"),
    ("en,ru", "Привет ёЁ «»", "中あ한ا"),
    ("en,hi", "नमस्ते।", "中ابকก"),
    ("en,th", "สวัสดี", "中ابनক"),
    ("en,ar", "مرحبا،؟ پ", "中אनก"),
])
def test_each_set_keeps_its_script_and_drops_the_others(spec, yes, no):
    chars = language_set(spec).chars
    assert chars.foreign(yes) == [] and chars.foreign(no) == list(no)


def test_unknown_code_is_one_line_naming_the_known_ones():
    for bad in ("en,xx", "", " , ", "klingon"):
        with pytest.raises(TrimError) as e:
            language_set(bad)
        assert "\n" not in str(e.value) and "en, vi, fr" in str(e.value)
    assert language_set("en,,").key == "en"
    assert language_set("zh_hans").key == "zh-Hans" and language_set("SR-latn").key == "sr-Latn"


def test_exemplar_ranges_and_sequences():
    assert parse_exemplars("가-각 {ch} -－ a") == {"가", "각", "c", "h", "-", "－", "a"}
    assert parse_exemplars("- , .") == {"-", ",", "."}


def brute_never_allowed(pieces, chars):
    """The suppress rule as first written: try every pending state one by one."""
    from gguf_trim.vocab.charset import split_head, utf8_len

    by_need: dict[int, list[bytes]] = {}
    for p in chars.pending_states:
        by_need.setdefault(utf8_len(p[0]) - len(p), []).append(p)
    out = []
    for i, piece in enumerate(pieces):
        head, _ = split_head(piece)
        if not head:
            if not chars.continue_ok(b"", piece)[0]:
                out.append(i)
            continue
        states = [p for need, ps in by_need.items() if need >= len(head) for p in ps]
        if not any(chars.continue_ok(p, piece)[0] for p in states):
            out.append(i)
    return out


@pytest.mark.parametrize("spec", ["en,vi", "en,ja", "en,ko", "en,th", "en,ru"])
def test_suppress_rule_equals_trying_every_state(spec):
    """never_allowed's shortcut (continuation runs that end or sit inside an allowed character) gives the
    same ids as trying every state, on Qwen2's real byte-level pieces that start mid-character."""
    from gguf_trim.format.shards import open_model

    with open_model(vocab_file("qwen2")) as g:
        v = Vocab.from_gguf(g)
    chars = language_set(spec).chars
    picked = [p for p in v.pieces if p and (0x80 <= p[0] <= 0xBF or len(p) == 1)][:6000]
    picked += [p for p in v.pieces if p and p[0] >= 0xC2][:3000]
    fast = never_allowed(picked, np.zeros(len(picked), dtype=bool), chars).tolist()
    assert fast == brute_never_allowed(picked, chars)


def run_cli(*args: str):
    from click.testing import CliRunner

    from gguf_trim.cli import main

    return CliRunner().invoke(main, list(args))


def test_compact_needs_a_corpus_for_a_language_without_word_lists(tmp_path):
    r = run_cli("plan", str(vocab_file("qwen2")), "-o", str(tmp_path / "p.jsonl"), "--langs", "en,th",
                "--profile", "compact")
    assert r.exit_code == 2 and "needs --corpus for th" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "p.jsonl").exists()


def test_compact_for_thai_from_the_corpus(tmp_path):
    """en,th compact: English from wordfreq, Thai from the corpus alone; the Thai text keeps its tokens."""
    from gguf_trim.api import CompactOptions, make_selection
    from gguf_trim.format.shards import open_model
    from tests.conftest import MODELS, need

    th = need(MODELS / "langs" / "th.txt")
    with open_model(vocab_file("qwen2")) as g:
        v = Vocab.from_gguf(g)
    sel = make_selection(v, "en,th", "compact", compact=CompactOptions(corpus=[str(th)], target_size=70_000,
                                                                       cache=False, workers=1))
    assert sel.langs == ("en", "th") and 69_000 < sel.n_kept <= 70_000
    assert sel.info["word_lists"] == "wordfreq en"
    thai_kept = [i for i in sel.kept_ids.tolist() if "\u0e00" <= v.pieces[i].decode("utf-8", "ignore")[:1] <= "\u0e7f"]
    assert len(thai_kept) > 500 and sel.summary().get("corpus", 0) > 0


def test_languages_command_lists_every_code():
    r = run_cli("languages")
    assert r.exit_code == 0
    for code in known_codes():
        assert f"| {code} |" in r.output
    assert "日本語" in r.output and "Tiếng Việt" in r.output
