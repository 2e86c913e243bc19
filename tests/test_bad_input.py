"""Bad input: one line on stderr, exit code 2, no traceback, no file left behind, input untouched.
Plus a mutation test: randomly corrupted copies of a small GGUF never crash the tool."""

from __future__ import annotations

import hashlib
import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_trim.cli import main

from .conftest import vocab_file


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_trim.cli", *args], capture_output=True, text=True, timeout=300)


def assert_clean_failure(r: subprocess.CompletedProcess, match: str) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("gguf-trim: error:") and match in lines[0], lines[0]


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def spm(tmp_path) -> Path:
    p = tmp_path / "in" / "vocab.gguf"
    p.parent.mkdir()
    p.write_bytes(vocab_file("llama-spm").read_bytes())
    return p


def _field_offset(data: bytes, key: str) -> int:
    """Offset just after the key string of a metadata entry."""
    k = key.encode()
    return data.index(struct.pack("<Q", len(k)) + k) + 8 + len(k)


def corrupt(kind: str, data: bytes) -> bytes:
    if kind == "text":
        return b"this is not a model\n" * 10
    if kind == "truncated":
        return data[: len(data) // 2]
    if kind == "magic":
        return b"GGML" + data[4:]
    if kind == "version":
        return data[:4] + struct.pack("<I", 7) + data[8:]
    if kind == "array-length":  # tokenizer.ggml.tokens: value type, element type, then the count
        at = _field_offset(data, "tokenizer.ggml.tokens") + 8
        return data[:at] + struct.pack("<Q", 1 << 40) + data[at + 8:]
    if kind == "kv-count":
        return data[:16] + struct.pack("<Q", 1 << 50) + data[24:]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,match", [("text", "not a GGUF"), ("truncated", "truncated"), ("magic", "magic"),
                                        ("version", "version 7"), ("array-length", "tokenizer.ggml.tokens"),
                                        ("kv-count", "corrupt")])
def test_corrupt_file(kind, match, spm, tmp_path):
    spm.write_bytes(corrupt(kind, spm.read_bytes()))
    before = sha(spm)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("trim", str(spm), "-o", str(out / "x.gguf"))
    assert_clean_failure(r, match)
    assert list(out.iterdir()) == [] and sha(spm) == before
    for cmd in (["inspect", str(spm)], ["verify", str(spm), str(spm)], ["diff", str(spm), str(spm)]):
        assert_clean_failure(run_cli(*cmd), match)


def test_unsupported_tokenizer(tmp_path):
    r = run_cli("trim", str(vocab_file("bert-bge")), "-o", str(tmp_path / "x.gguf"))
    assert_clean_failure(r, "unsupported tokenizer model 'bert'")
    assert list(tmp_path.iterdir()) == []


def test_missing_input_and_directory_input(tmp_path):
    assert_clean_failure(run_cli("trim", str(tmp_path / "nope.gguf"), "-o", str(tmp_path / "x.gguf")), "cannot open")
    assert_clean_failure(run_cli("inspect", str(tmp_path)), "directory")


def test_output_equal_to_input_is_refused(spm):
    before = sha(spm)
    assert_clean_failure(run_cli("trim", str(spm), "-o", str(spm)), "is the input file")
    assert sha(spm) == before and sorted(os.listdir(spm.parent)) == ["vocab.gguf"]


def test_unwritable_or_missing_output_folder(spm, tmp_path):
    # /proc refuses new files even for root, which ignores permission bits
    assert_clean_failure(run_cli("trim", str(spm), "-o", "/proc/gguf-trim-test.gguf"), "/proc")
    assert_clean_failure(run_cli("trim", str(spm), "-o", str(tmp_path / "no" / "such" / "x.gguf")), "does not exist")


def test_plan_for_another_vocab(spm, tmp_path):
    plan = tmp_path / "plan.jsonl"
    r = run_cli("plan", str(vocab_file("phi-3")), "-o", str(plan))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "o"
    out.mkdir()
    assert_clean_failure(run_cli("trim", str(spm), "-o", str(out / "x.gguf"), "--plan", str(plan)),
                         "another vocabulary")
    assert list(out.iterdir()) == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = run_cli("trim", str(spm), "-o", str(out / "x.gguf"), "--plan", str(bad))
    assert_clean_failure(r, "not a gguf-trim plan")


def _mutate(data: bytearray, rng: random.Random, header_end: int) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:  # truncate anywhere
        return bytes(data[: rng.randrange(len(data))])
    d = bytearray(data)
    if kind == 1:  # flip a few bytes in the header/metadata
        for _ in range(rng.randint(1, 8)):
            d[rng.randrange(header_end)] ^= 1 << rng.randrange(8)
    elif kind == 2:  # a huge or zero length/count somewhere in the metadata
        at = rng.randrange(header_end - 8)
        d[at:at + 8] = struct.pack("<Q", rng.choice([0, 1, 255, 1 << 31, 1 << 40, (1 << 64) - 1]))
    elif kind == 3:  # random bytes anywhere
        for _ in range(rng.randint(1, 64)):
            d[rng.randrange(len(d))] = rng.randrange(256)
    else:  # duplicate a token string (llama.cpp aborts on duplicates) by overwriting one with another
        d[rng.randrange(header_end // 2, header_end)] = ord("a")
    return bytes(d)


def test_mutation_never_crashes_or_leaves_files(tmp_path):
    src = vocab_file("llama-spm").read_bytes()
    from gguf_trim.format.gguffile import GGUFFile

    with GGUFFile(vocab_file("llama-spm")) as g:
        header_end = g.header_end
    rng = random.Random(1234)
    runner = CliRunner()
    outcomes = {0: 0, 2: 0}
    for n in range(200):
        case = tmp_path / f"m{n}"
        case.mkdir()
        inp = case / "in.gguf"
        inp.write_bytes(_mutate(bytearray(src), rng, header_end))
        before = sha(inp)
        res = runner.invoke(main, ["trim", str(inp), "-o", str(case / "out.gguf")])
        assert res.exit_code in (0, 2), (n, res.output, res.exception)
        assert res.exception is None or isinstance(res.exception, SystemExit), (n, res.exception)
        assert "Traceback" not in res.output
        left = sorted(p.name for p in case.iterdir())
        assert left == (["in.gguf", "out.gguf"] if res.exit_code == 0 else ["in.gguf"]), (n, left)
        assert sha(inp) == before
        outcomes[res.exit_code] += 1
    assert outcomes[2] >= 100  # most corruptions are caught, the rest trimmed and load-checked


def test_duplicate_token_text_is_refused_and_aborting_loads_are_contained(tmp_path):

    from gguf_trim.errors import TrimError
    from gguf_trim.format.gguffile import GGUFFile, encode_field, write_gguf
    from gguf_trim.runtime.loadcheck import load_check

    src = vocab_file("llama-spm")
    bad = tmp_path / "dup.gguf"
    with GGUFFile(src) as g, open(bad, "wb") as fh:
        toks = list(g.get("tokenizer.ggml.tokens"))
        toks[1000] = toks[1001]
        kv = [encode_field(k, f.vtype, toks, f.subtype) if k == "tokenizer.ggml.tokens" else f.raw
              for k, f in g.fields.items()]
        write_gguf(fh, kv, [], g.alignment)
    out = tmp_path / "o"
    out.mkdir()
    assert_clean_failure(run_cli("trim", str(bad), "-o", str(out / "x.gguf")), "duplicate token text")
    assert list(out.iterdir()) == []
    # llama.cpp itself aborts the process on this file; the load check runs it in a child process
    with pytest.raises(TrimError, match="llama.cpp cannot load"):
        load_check(bad)


def test_temp_files_of_a_killed_trim_are_removed_by_the_next(spm, tmp_path):
    """A SIGKILLed writer leaves its hidden temp file (gigabytes for a model); the next trim of the same
    output removes it, and only it: not the temp file of a writer still running, nor one from another host."""
    from gguf_trim.files import _host

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    host = _host()
    stale = [f".out.gguf.{dead}@{host}.k1x2.tmp", f".out.gguf.{dead}@{host}.q9z8.vocab.tmp"]
    kept = [f".out.gguf.{os.getpid()}@{host}.live.tmp", f".out.gguf.{dead}@elsewhere.n0pe.tmp",
            f".other.gguf.{dead}@{host}.n0pe.tmp"]
    for name in stale + kept:
        (out_dir / name).write_bytes(b"x" * 100)
    r = run_cli("trim", str(spm), "-o", str(out_dir / "out.gguf"))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(["out.gguf", *kept])
