"""The script guard's UTF-8 state machine on byte sequences (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_trim.langs import language_set
from gguf_trim.runtime.guard import ScriptGuard
from gguf_trim.vocab.charset import pending_of

# a toy vocabulary: the 256 single bytes, some words, an end token
WORDS = [b" Vi\xe1\xbb\x87t", b" Nam", b"hello", " 中国".encode(), b"\xe1\xbb", b"\xbb\x87", "ệ".encode()[2:] + b"t"]
PIECES = [bytes([b]) for b in range(256)] + WORDS + [b""]
END = len(PIECES) - 1
EN_VI = language_set("en,vi").chars
continue_ok = EN_VI.continue_ok
guard = ScriptGuard(PIECES, np.array([False] * (len(PIECES) - 1) + [True]), [END], EN_VI)


def ids_of_bytes(data: bytes) -> list[int]:
    return list(data)


@pytest.mark.parametrize("text", ["Việt Nam", "Tiếng Việt có dấu: ạ ả ấ ầ ẩ ẫ ậ ệ ộ ợ ữ ỹ đ ơ ư", "π ≤ 3.15 €5 ₫10 😀",
                                  "“quoted” — dash", "naïve café"])
def test_allowed_text_spelled_byte_by_byte_passes(text):
    assert guard.allows(ids_of_bytes(text.encode()))


@pytest.mark.parametrize("text", ["中", "日本", "한국", "Привет", "မြန်", "ខ្មែរ", "ᄀ", "สวัสดี", "，", "Ａ"])
def test_foreign_characters_cannot_be_spelled_byte_by_byte(text):
    assert not guard.allows(ids_of_bytes(text.encode()))


def test_shared_lead_byte_e1_is_decided_by_the_code_point():
    # U+1EC7 ệ = E1 BB 87 (Vietnamese); U+1000 (Myanmar) = E1 80 80; U+1100 (Hangul Jamo) = E1 84 80
    assert 0xE1 not in guard.forbidden(b"").tolist()
    assert 0xBB not in guard.forbidden(b"\xe1").tolist()
    assert 0x80 in guard.forbidden(b"\xe1").tolist()
    assert 0x84 in guard.forbidden(b"\xe1").tolist()
    assert 0x87 not in guard.forbidden(b"\xe1\xbb").tolist()
    assert guard.allows(ids_of_bytes(b"\xe1\xbb\x87"))
    assert not guard.allows(ids_of_bytes(b"\xe1\x80\x80"))


def test_state_is_kept_across_multi_byte_tokens():
    w = {p: i for i, p in enumerate(PIECES)}
    assert guard.allows([w[b"\xe1\xbb"], 0x87])  # piece + byte
    assert guard.allows([0xE1, w[b"\xbb\x87"]])  # byte + piece
    assert guard.allows([0xE1, 0xBB, w["ệ".encode()[2:] + b"t"]])  # the last byte and more in one token
    assert not guard.allows([w[" 中国".encode()]])
    assert not guard.allows([0xE1, w[b"hello"]])  # a character cut short
    assert not guard.allows([0x87])  # a continuation byte with nothing to continue
    assert guard.allows([0xE1, END])  # stopping is always allowed


def test_pending_and_transitions():
    assert pending_of(b"abc") == b""
    assert pending_of("Việ".encode()) == b""
    assert pending_of(b"Vi" + b"\xe1\xbb") == b"\xe1\xbb"
    assert pending_of(b"x\xf0\x9f\x98") == b"\xf0\x9f\x98"
    assert continue_ok(b"\xe1\xbb", b"\x87abc") == (True, b"")
    assert continue_ok(b"\xe1\xbb", b"\x87\xe4") == (False, b"")
    assert continue_ok(b"", b"ok \xe1") == (True, b"\xe1")
    assert continue_ok(b"", b"ok \xe4") == (False, b"")


def test_processor_masks_only_forbidden_ids():
    proc = guard.processor()
    prompt = np.array([1, 2, 3])
    scores = np.zeros(len(PIECES), dtype=np.float32)
    out = proc(prompt, scores.copy())
    assert np.isneginf(out[0xE4]) and out[ord("a")] == 0 and out[0xE1] == 0
    out = proc(np.array([1, 2, 3, 0xE1]), scores.copy())  # output so far ends with E1
    assert np.isneginf(out[ord("a")]) and out[0xBB] == 0 and np.isneginf(out[0x80]) and out[END] == 0
