"""Translation between any two languages of a file's set (issue 32, item 4): prompts for any pair (en/vi
byte-identical to the prompts before language sets), the source-language rule, the language check's
labels, one-line errors for a direction outside the file's set, and one real translation into Japanese
with Qwen2.5-Coder-0.5B trimmed to en,ja."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gguf_trim.cli import main
from gguf_trim.errors import TrimError
from gguf_trim.langs import language_set
from gguf_trim.langs.phrases import EXAMPLE_EN, EXAMPLES
from gguf_trim.translate.evaluate import pair_directions, read_pair_table
from gguf_trim.translate.prompts import (
    PromptStyle,
    chat_messages,
    detect_lang,
    few_shot_prompt,
    header_codes,
    split_direction,
)

from .conftest import QWEN, need

EN_TEXT, VI_TEXT = "Open the file, then press Save.", "Mở tệp, rồi nhấn Lưu."

# The prompts of gguf-trim before language sets, captured from its code (LANG_NAMES, LANG_SELF, the en/vi
# EXAMPLES) before the names and examples moved to gguf_trim.langs: they must not change by a byte.
PINNED = {
    'fewshot en-vi prefix=True': (
        'English: Good morning, how are you today?\n'
        'Tiếng Việt: Chào buổi sáng, hôm nay bạn thế nào?\n'
        '\n'
        'English: Please save your changes before closing the window.\n'
        'Tiếng Việt: Vui lòng lưu các thay đổi trước khi đóng cửa sổ.\n'
        '\n'
        "English: The library opens at eight o'clock every morning.\n"
        'Tiếng Việt: Thư viện mở cửa lúc tám giờ mỗi sáng.\n'
        '\n'
        'English: I could not find the file you asked for.\n'
        'Tiếng Việt: Tôi không tìm thấy tệp mà bạn yêu cầu.\n'
        '\n'
        'English: Open the file, then press Save.\n'
        'Tiếng Việt:'
    ),
    'fewshot en-vi prefix=False': (
        'English: Good morning, how are you today?\n'
        'Vietnamese: Chào buổi sáng, hôm nay bạn thế nào?\n'
        '\n'
        'English: Please save your changes before closing the window.\n'
        'Vietnamese: Vui lòng lưu các thay đổi trước khi đóng cửa sổ.\n'
        '\n'
        "English: The library opens at eight o'clock every morning.\n"
        'Vietnamese: Thư viện mở cửa lúc tám giờ mỗi sáng.\n'
        '\n'
        'English: I could not find the file you asked for.\n'
        'Vietnamese: Tôi không tìm thấy tệp mà bạn yêu cầu.\n'
        '\n'
        'English: Open the file, then press Save.\n'
        'Vietnamese:'
    ),
    'fewshot vi-en prefix=True': (
        'Tiếng Việt: Chào buổi sáng, hôm nay bạn thế nào?\n'
        'English: Good morning, how are you today?\n'
        '\n'
        'Tiếng Việt: Vui lòng lưu các thay đổi trước khi đóng cửa sổ.\n'
        'English: Please save your changes before closing the window.\n'
        '\n'
        'Tiếng Việt: Thư viện mở cửa lúc tám giờ mỗi sáng.\n'
        "English: The library opens at eight o'clock every morning.\n"
        '\n'
        'Tiếng Việt: Tôi không tìm thấy tệp mà bạn yêu cầu.\n'
        'English: I could not find the file you asked for.\n'
        '\n'
        'Tiếng Việt: Mở tệp, rồi nhấn Lưu.\n'
        'English:'
    ),
    'fewshot vi-en prefix=False': (
        'Vietnamese: Chào buổi sáng, hôm nay bạn thế nào?\n'
        'English: Good morning, how are you today?\n'
        '\n'
        'Vietnamese: Vui lòng lưu các thay đổi trước khi đóng cửa sổ.\n'
        'English: Please save your changes before closing the window.\n'
        '\n'
        'Vietnamese: Thư viện mở cửa lúc tám giờ mỗi sáng.\n'
        "English: The library opens at eight o'clock every morning.\n"
        '\n'
        'Vietnamese: Tôi không tìm thấy tệp mà bạn yêu cầu.\n'
        'English: I could not find the file you asked for.\n'
        '\n'
        'Vietnamese: Mở tệp, rồi nhấn Lưu.\n'
        'English:'
    ),
    'chat en-vi shots=True insist=False': [
        {"role": "system", "content": ('You are a professional translator. '
                                        "Translate the user's English text into Vietnamese."
                                        ' Reply with the Vietnamese translation only, on one line.')},
        {"role": "user", "content": "Good morning, how are you today?"},
        {"role": "assistant", "content": "Chào buổi sáng, hôm nay bạn thế nào?"},
        {"role": "user", "content": "Please save your changes before closing the window."},
        {"role": "assistant", "content": "Vui lòng lưu các thay đổi trước khi đóng cửa sổ."},
        {"role": "user", "content": "The library opens at eight o'clock every morning."},
        {"role": "assistant", "content": "Thư viện mở cửa lúc tám giờ mỗi sáng."},
        {"role": "user", "content": "I could not find the file you asked for."},
        {"role": "assistant", "content": "Tôi không tìm thấy tệp mà bạn yêu cầu."},
        {"role": "user", "content": "Open the file, then press Save."},
    ],
    'chat en-vi shots=False insist=True': [
        {"role": "system", "content": ('You are a professional translator. '
                                        "Translate the user's English text into Vietnamese."
                                        ' Reply with the Vietnamese translation only, on one line.')},
        {"role": "user", "content": "Translate into Vietnamese: Open the file, then press Save."},
    ],
    'chat vi-en shots=True insist=False': [
        {"role": "system", "content": ('You are a professional translator. '
                                        "Translate the user's Vietnamese text into English."
                                        ' Reply with the English translation only, on one line.')},
        {"role": "user", "content": "Chào buổi sáng, hôm nay bạn thế nào?"},
        {"role": "assistant", "content": "Good morning, how are you today?"},
        {"role": "user", "content": "Vui lòng lưu các thay đổi trước khi đóng cửa sổ."},
        {"role": "assistant", "content": "Please save your changes before closing the window."},
        {"role": "user", "content": "Thư viện mở cửa lúc tám giờ mỗi sáng."},
        {"role": "assistant", "content": "The library opens at eight o'clock every morning."},
        {"role": "user", "content": "Tôi không tìm thấy tệp mà bạn yêu cầu."},
        {"role": "assistant", "content": "I could not find the file you asked for."},
        {"role": "user", "content": "Mở tệp, rồi nhấn Lưu."},
    ],
    'chat vi-en shots=False insist=True': [
        {"role": "system", "content": ('You are a professional translator. '
                                        "Translate the user's Vietnamese text into English."
                                        ' Reply with the English translation only, on one line.')},
        {"role": "user", "content": "Translate into English: Mở tệp, rồi nhấn Lưu."},
    ],
}


def test_en_vi_prompts_are_byte_identical_to_before():
    for src, dst, text in (("en", "vi", EN_TEXT), ("vi", "en", VI_TEXT)):
        for prefix in (True, False):
            assert few_shot_prompt(text, src, dst, PromptStyle(lang_prefix=prefix)) == \
                PINNED[f"fewshot {src}-{dst} prefix={prefix}"]
        for shots, insist in ((True, False), (False, True)):
            assert chat_messages(text, src, dst, PromptStyle(shots=shots, insist=insist)) == \
                PINNED[f"chat {src}-{dst} shots={shots} insist={insist}"]
    # the defaults as translate resolves them: few-shot lines labelled with the languages' own names
    assert few_shot_prompt(EN_TEXT, "en", "vi", PromptStyle().resolved("fewshot")) == \
        PINNED["fewshot en-vi prefix=True"]


def test_prompts_for_any_pair():
    p = few_shot_prompt("Hello.", "en", "ja", PromptStyle(lang_prefix=True))
    shots = "".join(f"English: {a}\n日本語: {b}\n\n" for a, b in zip(EXAMPLE_EN, EXAMPLES["ja"]))
    assert p == shots + "English: Hello.\n日本語:"
    assert few_shot_prompt("Hello.", "en", "ja").startswith("English: Good morning") and p.count("\n\n") == 4
    assert "\nJapanese: " in few_shot_prompt("Hello.", "en", "ja", PromptStyle(lang_prefix=False))
    m = chat_messages("안녕하세요", "ko", "en", PromptStyle(shots=True, insist=True))
    assert m[0]["content"] == ("You are a professional translator. Translate the user's Korean text into English. "
                               "Reply with the English translation only, on one line.")
    assert [x["content"] for x in m[1:9]] == [s for pair in zip(EXAMPLES["ko"], EXAMPLE_EN) for s in pair]
    assert [x["role"] for x in m[1:9]] == ["user", "assistant"] * 4
    assert m[-1] == {"role": "user", "content": "Translate into English: 안녕하세요"}
    # codes as users spell them
    assert chat_messages("x", "zh_hans", "EN")[0]["content"].startswith(
        "You are a professional translator. Translate the user's Chinese (Simplified) text into English.")


def test_a_language_without_examples():
    """'zh' ships no example sentences: chat prompts go without shots, few-shot prompts are refused."""
    assert "zh" not in EXAMPLES
    m = chat_messages("Hello.", "en", "zh", PromptStyle(shots=True))
    assert len(m) == 2 and m[-1] == {"role": "user", "content": "Hello."}
    with pytest.raises(TrimError) as e:
        few_shot_prompt("Hello.", "en", "zh")
    assert "\n" not in str(e.value) and "Chinese (zh)" in str(e.value)
    with pytest.raises(TrimError, match="unknown language 'xx'"):
        chat_messages("Hello.", "en", "xx")


def test_directions_and_pair_headers(tmp_path):
    assert split_direction("en-vi") == ("en", "vi")
    assert split_direction("sr-Latn-en") == ("sr-Latn", "en") and split_direction("ja-zh-hant") == ("ja", "zh-Hant")
    for bad in ("en-xx", "en", "en-en", "envi"):
        with pytest.raises(TrimError) as e:
            split_direction(bad)
        assert "\n" not in str(e.value)
    assert header_codes(["en", "ko"]) == ("en", "ko") and header_codes(["Hello", "안녕"]) is None
    assert header_codes(["en", "en"]) is None
    f = tmp_path / "p.tsv"
    f.write_text("en\tja\nGood morning.\tおはよう。\nThanks.\tありがとう。\n", encoding="utf-8")
    assert read_pair_table(f) == (("en", "ja"), [("Good morning.", "おはよう。"), ("Thanks.", "ありがとう。")])
    assert pair_directions((), ("en", "ja")) == [("en", "ja"), ("ja", "en")]
    assert pair_directions(("ja-en",), ("en", "ja")) == [("ja", "en")]
    with pytest.raises(TrimError) as e:
        pair_directions(("en-vi",), ("en", "ja"), f)
    assert "\n" not in str(e.value) and "en<TAB>ja" in str(e.value)
    g = tmp_path / "envi.tsv"
    g.write_text("Hello.\tXin chào.\n", encoding="utf-8")
    assert read_pair_table(g) == (("en", "vi"), [("Hello.", "Xin chào.")])  # no header: en,vi as before


def test_detect_lang():
    # en,vi: the rule as it always was (any Vietnamese letter)
    assert detect_lang("Xin chào các bạn") == "vi" and detect_lang("Hello there") == "en"
    assert detect_lang("Você está bem?", "en,vi") == "vi"
    # other sets: each language's own letters decide, else fastText among the set's languages
    assert detect_lang("Hello world", "en,ja") == "en"
    assert detect_lang("こんにちは、世界", "en,ja") == "ja"
    assert detect_lang("Please open the window.", "ko,en") == "en"
    assert detect_lang("창문을 열어 주세요.", "ko,en") == "ko"
    assert detect_lang("Привет, как дела?", "en,ru") == "ru"
    assert detect_lang("Bonjour, comment allez-vous aujourd'hui ?", "en,fr") == "fr"
    assert detect_lang("Você está bem hoje? Vamos ao cinema.", "en,pt") == "pt"  # not Vietnamese
    assert detect_lang("Good morning, how are you today?", "en,pt") == "en"
    assert detect_lang("Chào buổi sáng, hôm nay bạn thế nào?", "en,ja,vi") == "vi"


def test_langid_candidates_and_mapping():
    from gguf_trim.runtime.langid import detector, in_language, labels_for

    assert in_language("zh", "zh-Hans") and in_language("zh", "zh-Hant") and in_language("zh", "zh")
    assert all(in_language(x, "sr-Latn") for x in ("sr", "sh", "hr", "bs"))
    assert in_language("en", "en") and not in_language("fr", "en") and not in_language("und", "vi")
    assert labels_for(["sr-Latn", "en"]) >= {"sr", "sh", "hr", "bs", "en"}
    d = detector()
    pt = "Você está bem hoje?"
    assert d.detect(pt) == "vi"  # unchanged without candidates: the Vietnamese-letter rule first
    assert d.detect(pt, candidates={"pt", "en"}) == "pt"
    assert d.detect("Nhấn vào nút để lưu.", candidates={"vi", "en"}) == "vi"
    # the language check of an output: within the set's codes, unrestricted labels
    assert d.check(pt, "pt", language_set("en,pt")) == ("pt", False)
    assert d.check("Click the button to save your changes.", "pt", language_set("en,pt")) == ("en", True)
    assert d.check("你好，世界。今天天气很好。", "zh-Hant", language_set("en,zh-Hant")) == ("zh-Hant", False)
    assert d.check("Nhấn vào nút để lưu.", "vi") == ("vi", False) and d.check("", "en") == ("und", True)


@pytest.fixture(scope="module")
def enja(tmp_path_factory):
    from gguf_trim import trim

    out = tmp_path_factory.mktemp("enja") / "qwen.enja.gguf"
    trim(need(QWEN), out, langs="en,ja")
    return out


def one_line_error(args: list[str], *needles: str) -> str:
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), r.output
    return lines[0]


def test_cli_refuses_a_direction_outside_the_files_set(enja, tmp_path):
    one_line_error(["translate", str(enja), "--to", "ko", "Hello."], "en,ja", "into Korean (ko)")
    one_line_error(["translate", str(enja), "--from", "vi", "--to", "ja", "Xin chào."], "en,ja", "from Vietnamese (vi)")
    one_line_error(["translate", str(enja), "--to", "xx", "Hello."], "--to 'xx'", "known codes")
    one_line_error(["translate", str(enja), "--from", "klingon", "--to", "ja", "Hello."], "--from 'klingon'")
    pairs = tmp_path / "p.tsv"
    pairs.write_text("en\tja\nGood morning.\tおはよう。\n", encoding="utf-8")
    one_line_error(["eval-translate", str(enja), "--pairs", str(pairs), "--direction", "en-xx"], "en-xx")
    one_line_error(["eval-translate", str(enja), "--pairs", str(pairs), "--direction", "en-vi"], "en<TAB>ja")
    ko = tmp_path / "ko.tsv"
    ko.write_text("en\tko\nGood morning.\t좋은 아침입니다.\n", encoding="utf-8")
    one_line_error(["eval-translate", str(enja), "--pairs", str(ko), "--n", "1"], "en,ja", "Korean (ko)")


def test_translate_into_japanese_with_the_guard(enja):
    from gguf_trim.translate.translator import Translator

    tr = Translator(enja, n_ctx=1024)
    try:
        assert tr.guard and tr.langs.key == "en,ja" and tr.prompt == "chat"
        t = tr.translate("Good morning, how are you?", "ja")
        assert t.src == "en" and t.dst == "ja" and t.guarded
        assert t.text.strip() and tr.langs.chars.foreign(t.text) == [], t.text
        assert tr.foreign_chars(t.text) == []
    finally:
        tr.close()
