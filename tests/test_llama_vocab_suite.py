"""llama.cpp's own tokenizer tests, run on our lossless trims of its vocab-only GGUFs.

llama.cpp ships `models/ggml-vocab-*.gguf` with `.inp`/`.out` cases (tests/test-tokenizer-0.cpp:
cases split at "\\n__ggml_vocab_test__\\n", one line of space-separated expected ids per case,
tokenized with add_special=false and parse_special=false, the text as it is). For every vocabulary
gguf-trim supports: the original reproduces the expected ids (so the harness is right); a case whose
expected ids are all kept tokenizes to exactly those ids after the trim (mapped back through
gguf_trim.kept_ids); any other case still detokenizes to the original's text. The encoders are
refused with one clean line.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gguf_trim import GGUFFile, Vocab, trim
from gguf_trim.extend.words import detokenize_c
from gguf_trim.rewrite.verify import kept_ids_of, read_lines
from gguf_trim.runtime.llama import load_llama
from gguf_trim.vocab.vocabulary import BYTE, NORMAL, USER_DEFINED

from .conftest import ROOT, need

VOCABS = ROOT / "vendor" / "llama.cpp" / "models"
SEP = "\n__ggml_vocab_test__\n"
# Every vocab-only GGUF of the pinned llama.cpp (llama-cpp-python 0.3.36), by tokenizer.ggml.model.
SUPPORTED = ("aquila", "baichuan", "command-r", "deepseek-coder", "deepseek-llm", "falcon", "gemma-4", "gpt-2",
             "gpt-neox", "llama-bpe", "llama-spm", "mpt", "phi-3", "qwen2", "qwen35", "refact", "starcoder")
REFUSED = {"bert-bge": "bert", "nomic-bert-moe": "t5"}  # WordPiece and Unigram encoders
WITHOUT_CASES = ("aquila", "baichuan", "gpt-neox")
UNK_BYTE = {"command-r": 1403}  # tokens llama.cpp renders as [UNK_BYTE_0x...] (see test_pieces_are_llama_cpps)
DEV_STEP = 20  # every 20th dev line per language (~950 lines): the lossless claim on real text


def vocab_path(name: str) -> Path:
    return need(VOCABS / f"ggml-vocab-{name}.gguf")


def read_cases(path: Path) -> list[tuple[str, list[int]]]:
    """(text, expected ids) as test-tokenizer-0.cpp reads them: the .inp split at the separator
    (no case after a trailing one), one .out line per case (stripped, ids split at spaces)."""
    raw = Path(f"{path}.inp").read_bytes().decode("utf-8")
    texts: list[str] = []
    pos = 0
    while pos < len(raw):
        nxt = raw.find(SEP, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(SEP)
    lines = Path(f"{path}.out").read_bytes().decode("utf-8").split("\n")
    if len(lines) == len(texts) + 1 and lines[-1] == "":  # std::getline gives no line after the last \n
        lines.pop()
    assert len(lines) == len(texts), f"{path}: {len(texts)} inputs but {len(lines)} outputs"
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, lines)]


def test_the_list_is_llama_cpps():
    """A llama.cpp update that adds or removes a vocab file must update this suite."""
    found = sorted(p.name[len("ggml-vocab-"):-len(".gguf")] for p in need(VOCABS).glob("ggml-vocab-*.gguf"))
    assert found == sorted(SUPPORTED + tuple(REFUSED))
    with_cases = sorted(p.name[len("ggml-vocab-"):-len(".gguf.inp")] for p in VOCABS.glob("ggml-vocab-*.gguf.inp"))
    assert with_cases == sorted(set(found) - set(WITHOUT_CASES) - {"nomic-bert-moe"})


@pytest.fixture(scope="module", params=SUPPORTED)
def trimmed(request, tmp_path_factory):
    """Each vocabulary trimmed once per session (lossless, through the API, loaded by llama.cpp)."""
    src = vocab_path(request.param)
    out = tmp_path_factory.mktemp("suite") / f"{request.param}.envi.gguf"
    res, sel = trim(src, out, check=True)
    a, b = load_llama(src, vocab_only=True), load_llama(out, vocab_only=True)
    yield request.param, src, out, res, sel, a, b
    a.close()
    b.close()


def test_llama_cpp_cases(trimmed):
    name, src, out, res, sel, a, b = trimmed
    if name in WITHOUT_CASES:
        assert not Path(f"{src}.inp").exists()
        return
    cases = read_cases(src)
    assert len(cases) >= 40
    kept = kept_ids_of(out, res.n_vocab_original)
    all_kept = 0
    for text, want in cases:
        raw = text.encode("utf-8")
        assert a.tokenize(raw, add_bos=False, special=False) == want, (name, text)
        got = b.tokenize(raw, add_bos=False, special=False)
        if sel.keep[want].all():
            all_kept += 1
            assert kept[got].tolist() == want, (name, text)
        else:
            assert detokenize_c(b, got) == detokenize_c(a, want), (name, text)
    # the cases are mostly English and code; the few that are not keep their text
    assert all_kept >= len(cases) - 4, (name, all_kept, len(cases))


def test_dev_lines_tokenize_identically(trimmed, dev_en, dev_vi):
    name, src, out, res, sel, a, b = trimmed
    kept = kept_ids_of(out)
    n = 0
    for path in (dev_en, dev_vi):
        for text in read_lines(path)[::DEV_STEP]:
            raw = text.encode("utf-8")
            assert kept[b.tokenize(raw, add_bos=False, special=False)].tolist() == \
                a.tokenize(raw, add_bos=False, special=False), (name, text)
            n += 1
    assert n > 900
    assert res.n_vocab_trimmed < res.n_vocab_original


def test_pieces_are_llama_cpps(trimmed):
    """The bytes gguf-trim judges each token by are what llama.cpp renders it as (normal, byte and
    user-defined tokens), before and after the trim. A byte-level BPE token stored without GPT-2's
    byte map (command-r has 1,403) renders as "[UNK_BYTE_0x...]"; BPE never produces it from text."""
    import llama_cpp

    name, src, out, res, sel, a, b = trimmed
    assert set(sel.why) == set(np.flatnonzero(sel.keep).tolist())  # every kept id has its reason
    unk, n_bytes = [], []
    for path, llm in ((src, a), (out, b)):
        with GGUFFile(path) as g:
            v = Vocab.from_gguf(g)
        buf = ctypes.create_string_buffer(1024)
        vocab = llm._model.vocab
        types = v.types.tolist()
        n_unk = 0
        for i in range(v.n):
            if types[i] in (NORMAL, BYTE, USER_DEFINED):
                k = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, True)  # special=True
                piece = buf.raw[:k]
                if piece != v.pieces[i]:
                    assert v.byte_level and b"[UNK_BYTE_0x" in piece, (name, i, piece, v.pieces[i])
                    n_unk += 1
        unk.append(n_unk)
        n_bytes.append(len(v.byte_token_ids()))
    assert unk[0] == UNK_BYTE.get(name, 0) and unk[1] <= unk[0], (name, unk)
    assert n_bytes[1] == n_bytes[0]  # every byte token the original has (llama.cpp needs them)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_encoders_are_refused(name, tmp_path):
    out = tmp_path / "x.gguf"
    r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "trim", str(vocab_path(name)), "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("gguf-trim: error:") and f"unsupported tokenizer model {REFUSED[name]!r}" in lines[0]
    assert list(tmp_path.iterdir()) == []

