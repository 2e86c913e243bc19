"""The character judgement that decides the lossless profile, including partial UTF-8 pieces."""

import pytest

from gguf_trim.errors import TrimError
from gguf_trim.langs import language_set
from gguf_trim.vocab.charset import script_label

EN_VI = language_set("en,vi").chars
judge_bytes = EN_VI.judge_bytes

VI = "Tiếng Việt có những chữ như ă â đ ê ô ơ ư, dấu sắc huyền hỏi ngã nặng: ạ ả ấ ầ ẩ ẫ ậ ệ ộ ợ ữ ỹ"


def allowed(b: bytes) -> bool:
    return judge_bytes(b)[0]


@pytest.mark.parametrize("text", ["hello", " the", "\n\n", "  ", "Việt", " Nguyễn", "₫", "€", "—", "“quoted”",
                                  "→", "≤", "π", "α", "😀", "👍🏽", "✓", "½", "©", "Ω", "fi", "\u0301"])
def test_en_vi_text_is_kept(text):
    assert allowed(text.encode())


@pytest.mark.parametrize("text", ["中国", "日本語", "ー", "한국어", "Привет", "مرحبا", "שלום", "สวัสดี", "ລາວ", "ខ្មែរ",
                                  "မြန်မာ", "नमस्ते", "，", "。", "Ａ", "αβγ", "\u3000"])
def test_other_scripts_are_dropped(text):
    assert not allowed(text.encode())


def test_every_vietnamese_character_is_allowed_alone_and_in_pieces():
    for ch in set(VI):
        b = ch.encode()
        assert allowed(b), ch
        for cut in range(1, len(b)):  # byte-level BPE pieces of the character
            assert allowed(b[:cut]) and allowed(b[cut:]), (ch, cut)


def test_partial_pieces_are_judged_by_the_code_points_they_can_be_part_of():
    # Vietnamese ệ (E1 BB 87) shares its lead byte E1 with Myanmar/Hangul Jamo/Khmer (U+1000-1FFF)
    assert allowed(b"\xe1")
    assert allowed(b"\xe1\xbb")  # U+1EC0..U+1EFF: Vietnamese
    assert not allowed(b"\xe1\x80")  # U+1000..U+103F: Myanmar only
    assert not allowed(b"\xe4\xb8")  # U+4E00..: CJK only
    assert not allowed(b"\xe4")  # U+4000..U+4FFF: CJK only
    assert allowed("😀".encode()[:3])
    assert allowed(b" Vi\xe1\xbb")
    assert not allowed(b" \xe4\xb8")


def test_invalid_utf8_in_the_middle_is_dropped():
    assert not allowed(b"a\xffb")
    assert not allowed(b"\xc0\xaf")
    assert judge_bytes(b"\xe4\xb8\xad")[1] == "CJK"


def test_langs():
    assert language_set("en,vi").codes == ("en", "vi")
    assert language_set("vi, en").codes == ("en", "vi")
    with pytest.raises(TrimError, match="unknown language .xx. in --langs: known codes are en, vi"):
        language_set("en,xx")


def test_script_labels():
    assert script_label("Việt".encode()) == "latin(vi)"
    assert script_label("中".encode()) == "CJK"
    assert script_label(b"hello") == "ascii"
