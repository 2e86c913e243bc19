"""finetune's pair files for any two languages (no PyTorch): a first line naming the two codes, or
--pair, else English<TAB>Vietnamese as before; the same hygiene within the pair's languages, and both
directions rendered with translate's prompts for that pair."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gguf_trim.cli import main
from gguf_trim.errors import TrimError
from gguf_trim.options import from_params
from gguf_trim.tune.data import clean_pairs, parse_pair, read_pair_file, read_pair_files, render_pair
from gguf_trim.tune.options import FinetuneOptions

EN_KO = [("Good morning, how are you today?", "좋은 아침입니다. 오늘 어떻게 지내세요?"),
         ("Please save your changes before closing the window.", "창을 닫기 전에 변경 사항을 저장하세요.")]


def test_header_line_names_the_languages(tmp_path):
    f = tmp_path / "p.tsv"
    f.write_text("en\tko\n" + "".join(f"{a}\t{b}\n" for a, b in EN_KO), encoding="utf-8")
    assert read_pair_file(f) == (("en", "ko"), EN_KO)
    assert read_pair_file(f, ("ko", "en")) == (("en", "ko"), EN_KO)  # the header says which column is which
    with pytest.raises(TrimError, match="header naming en,ko, but --pair is en,ja"):
        read_pair_file(f, ("en", "ja"))
    g = tmp_path / "q.tsv"  # no header: --pair, else en,vi as before
    g.write_text("".join(f"{b}\t{a}\n" for a, b in EN_KO), encoding="utf-8")
    assert read_pair_file(g, ("ko", "en")) == (("ko", "en"), [(b, a) for a, b in EN_KO])
    assert read_pair_file(g)[0] == ("en", "vi")
    # files of one pair in either column order come out in one order; another pair is refused
    assert read_pair_files([f, g], ("ko", "en")) == (("ko", "en"), [(b, a) for a, b in EN_KO] * 2)
    assert read_pair_files([f])[0] == ("en", "ko")
    h = tmp_path / "h.tsv"
    h.write_text("en\tja\nHello.\tこんにちは。\n", encoding="utf-8")
    with pytest.raises(TrimError) as e:
        read_pair_files([f, h])
    assert "\n" not in str(e.value) and "en<TAB>ko" in str(e.value)
    j = tmp_path / "p.jsonl"  # JSON lines: a field per language
    j.write_text("".join(json.dumps({"en": a, "ko": b}, ensure_ascii=False) + "\n" for a, b in EN_KO), encoding="utf-8")
    assert read_pair_file(j, ("en", "ko")) == (("en", "ko"), EN_KO)
    with pytest.raises(TrimError, match='fields "en" and "vi"'):
        read_pair_file(j)
    empty = tmp_path / "e.tsv"
    empty.write_text("en\tko\n", encoding="utf-8")
    with pytest.raises(TrimError, match="no English/Korean pairs"):
        read_pair_file(empty)


def test_parse_pair_and_the_option():
    assert parse_pair(None) is None and parse_pair("en,ko") == ("en", "ko") and parse_pair("zh_hans, en") == (
        "zh-Hans", "en")
    for bad in ("en", "en,en", "en,ko,ja", "en,xx"):
        with pytest.raises(TrimError) as e:
            parse_pair(bad)
        assert "\n" not in str(e.value)
    opts, _ = from_params(FinetuneOptions, {"pair": "en,ko"})
    assert opts.pair == "en,ko" and FinetuneOptions().pair is None
    r = CliRunner().invoke(main, ["finetune", "--help"])
    assert r.exit_code == 0 and "--pair X,Y" in r.output


def test_hygiene_within_the_pairs_languages():
    pairs = [*EN_KO, ("Open the file.", "파일을 여세요. 文件"),  # a Chinese character Korean does not write
             ("Click Save.", "Click Save."),  # the Korean side is English
             EN_KO[0]]
    data = clean_pairs(pairs, heldout=1, langs=("en", "ko"))
    assert data.langs == ("en", "ko") and data.read == 5
    assert data.dropped["characters outside English/Korean"] == 1
    assert data.dropped["wrong language"] == 1 and data.dropped["duplicate"] == 1
    assert sorted(data.train + data.heldout) == sorted(EN_KO)


def test_both_directions_rendered_with_the_pairs_prompts():
    class Llm:
        def tokenize(self, b, add_bos=False, special=False):
            return list(b)

    class Tr:
        prompt = "fewshot"
        _llm = Llm()
        asked: list = []

        def prompt_tokens(self, text, src, dst):
            self.asked.append((text, src, dst))
            return [0]

    tr = Tr()
    a, b = EN_KO[0]
    e1 = render_pair(tr, a, b, "en-ko", ("en", "ko"))
    e2 = render_pair(tr, a, b, "ko-en", ("en", "ko"))
    assert tr.asked == [(a, "en", "ko"), (b, "ko", "en")]
    assert bytes(e1.ids[1:]).decode() == f" {b}\n" and bytes(e2.ids[1:]).decode() == f" {a}\n"
    assert e1.n_prompt == 1 and e2.direction == "ko-en"
