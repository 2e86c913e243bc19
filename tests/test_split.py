"""Split GGUFs (NAME-00001-of-0000N.gguf): a split copy of Qwen2.5-Coder-0.5B written by gguf-py's
own GGUFWriter(split_max_size=...), as llama.cpp's converters write one, trimmed from any shard.

Claims checked exactly: the output is split the same way (unchanged shards byte-identical, the
vocab tensors in the shards that held them); llama-cpp-python loads it from its first shard with
logits at kept ids equal to the unsplit original's; --merge and --split-max-size give the same
tensor bytes as trimming the unsplit file; a broken shard set is one clear error, exit 2, nothing
written; every other command takes a split model."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_trim import inspect, trim
from gguf_trim.bench.vram import estimate_file
from gguf_trim.cli import main
from gguf_trim.errors import GGUFError
from gguf_trim.format.gguffile import GGUFFile
from gguf_trim.format.shards import GGUFModel, output_paths
from gguf_trim.rewrite.verify import verify
from gguf_trim.runtime.llama import load_llama
from gguf_trim.selection.plan import write_plan
from tests.synth import write_split

from .conftest import QWEN, SMOLLM, need

SHARD_BYTES = 150_000_000  # Qwen-0.5B (469 MiB) -> 4 shards: output.weight alone, token_embd + layers, layers, layers


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def tensor_bytes(path: Path) -> dict[str, tuple[tuple[int, ...], int, str]]:
    """name -> (shape, type, sha256 of the bytes) over every shard of a model."""
    with GGUFModel(path) as m:
        return {t.name: (t.shape, t.ggml_type, hashlib.sha256(m.tensor_bytes(t)).hexdigest()) for t in m.tensors}


@pytest.fixture(scope="module")
def split_qwen(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("split-src")
    return write_split(need(QWEN), d / "qwen.gguf", split_max_size=SHARD_BYTES)


@pytest.fixture(scope="module")
def single_trim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "qwen.envi.gguf"
    trim(need(QWEN), out)
    return out


@pytest.fixture(scope="module")
def split_trim(split_qwen, tmp_path_factory):
    out = tmp_path_factory.mktemp("split-out") / "qwen.envi.gguf"
    res, _ = trim(split_qwen[2], out)  # given by its third shard: the set is found from any shard
    return res


def test_split_source_is_what_llama_cpp_writes(split_qwen):
    assert [p.name for p in split_qwen] == [f"qwen-0000{i}-of-00004.gguf" for i in range(1, 5)]
    with GGUFModel(split_qwen[3]) as m:
        assert m.path == split_qwen[0] and len(m.shards) == 4
        assert [t.name for t in m.shards[0].tensors] == ["output.weight"]
        assert "token_embd.weight" in [t.name for t in m.shards[1].tensors]
    with GGUFFile(split_qwen[0]) as g0, GGUFFile(split_qwen[0]) as g1:
        assert g0.get("split.count") == 4 and g1.get("split.no") == 0


def test_trim_keeps_the_split_layout(split_qwen, split_trim):
    res = split_trim
    assert [p.name for p in res.outputs] == [f"qwen.envi-0000{i}-of-00004.gguf" for i in range(1, 5)]
    assert res.output == res.outputs[0]
    assert res.sliced_tensors == ["output.weight", "token_embd.weight"]
    # shards without vocab tensors are copied unchanged
    for src, out in zip(split_qwen[2:], res.outputs[2:]):
        assert sha(src) == sha(out)
    with GGUFModel(res.outputs[1]) as m:
        assert [g.path for g in m.shards] == res.outputs
        assert [sorted(t.name for t in g.tensors) for g in m.shards] == [
            sorted(t.name for t in GGUFFile(p).tensors) for p in split_qwen]
        assert m.get("split.count") == 4 and m.shards[1].get("split.no") == 1
        assert m.shards[1].get("split.tensors.count") == 291
        assert "tokenizer.ggml.tokens" not in m.shards[1].fields  # metadata only in the first shard
        assert len(m.get("tokenizer.ggml.tokens")) == res.n_vocab_trimmed
    assert res.size_trimmed == sum(p.stat().st_size for p in res.outputs)
    assert res.size_original == sum(p.stat().st_size for p in split_qwen)


def test_split_trim_equals_single_file_trim(split_trim, single_trim):
    assert tensor_bytes(split_trim.output) == tensor_bytes(single_trim)
    with GGUFModel(split_trim.output) as a, GGUFFile(single_trim) as b:
        for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.eos_token_id"):
            va, vb = a.get(key), b.get(key)
            assert (list(va) if hasattr(va, "tolist") else va) == (list(vb) if hasattr(vb, "tolist") else vb)
        assert (a.get("gguf_trim.kept_ids") == b.get("gguf_trim.kept_ids")).all()


def test_split_output_loads_from_first_shard_with_identical_logits(split_trim, dev_en, dev_vi, tmp_path):
    # the original given unsplit, the trimmed as a split set: both through llama-cpp-python
    lines = tmp_path / "lines.txt"
    lines.write_text("\n".join(dev_en.read_text().splitlines()[:150] + dev_vi.read_text().splitlines()[:150]))
    rep = verify(QWEN, split_trim.outputs[3], [lines], logits=6)
    assert rep["logits_max_abs_diff"] == 0.0 and rep["logits_positions"] > 40
    assert rep["files"][0]["line_fidelity"] == 1.0
    assert rep["size_trimmed"] == split_trim.size_trimmed
    llm = load_llama(split_trim.outputs[0], n_ctx=256)
    msgs = [{"role": "user", "content": "Translate to Vietnamese, reply with the translation only: Good morning."}]
    a = llm.create_chat_completion(messages=msgs, max_tokens=16, temperature=0.0)["choices"][0]["message"]["content"]
    assert a.strip()


def test_merge_and_max_size(split_qwen, single_trim, tmp_path):
    res, _ = trim(split_qwen[0], tmp_path / "m.gguf", layout="merge")
    assert res.outputs == [tmp_path / "m.gguf"]
    with GGUFFile(res.output) as g:
        assert "split.count" not in g.fields and len(g.tensors) == 291
    assert tensor_bytes(res.output) == tensor_bytes(single_trim)

    res, _ = trim(split_qwen[0], tmp_path / "r-00001-of-00005.gguf", split_max_size=100_000_000)
    assert [p.name for p in res.outputs] == [f"r-0000{i}-of-00005.gguf" for i in range(1, 6)]
    with GGUFModel(res.output) as m:
        for g in m.shards:
            data = sum(t.nbytes for t in g.tensors)
            assert data <= 100_000_000 or len(g.tensors) == 1
    assert tensor_bytes(res.output) == tensor_bytes(single_trim)

    # a single file can be split as well
    res, _ = trim(QWEN, tmp_path / "s.gguf", split_max_size=200_000_000)
    assert len(res.outputs) == 3 and tensor_bytes(res.output) == tensor_bytes(single_trim)
    load_llama(res.outputs[0], vocab_only=True).close()


def test_output_names():
    assert output_paths("out.gguf", 1) == [Path("out.gguf")]
    assert output_paths("d/out.gguf", 2) == [Path("d/out-00001-of-00002.gguf"), Path("d/out-00002-of-00002.gguf")]
    assert output_paths("out-00001-of-00002.gguf", 2)[1] == Path("out-00002-of-00002.gguf")


def _copy_set(split_qwen, d: Path) -> list[Path]:
    d.mkdir()
    return [Path(shutil.copy(p, d / p.name)) for p in split_qwen]


def _set_u16(path: Path, key: str, value: int) -> None:
    """Overwrite a UINT16 split key in place (its 2 value bytes follow the key and its type)."""
    data = bytearray(path.read_bytes()[:1 << 16])
    k = key.encode()
    at = data.index(struct.pack("<Q", len(k)) + k) + 8 + len(k)
    assert struct.unpack_from("<I", data, at)[0] == 2  # UINT16
    with open(path, "r+b") as f:
        f.seek(at + 4)
        f.write(struct.pack("<H", value))


def _broken_sets(split_qwen, tmp_path):
    """(name, shard to give, error fragment) for each way a shard set can be broken."""
    cases = []

    s = _copy_set(split_qwen, tmp_path / "missing")
    s[2].unlink()
    cases.append(("missing", s[0], "missing shard 3 of 4"))

    s = _copy_set(split_qwen, tmp_path / "count")
    _set_u16(s[1], "split.count", 5)
    cases.append(("count", s[0], "split.count 5"))

    s = _copy_set(split_qwen, tmp_path / "index")
    _set_u16(s[3], "split.no", 2)
    cases.append(("index", s[0], "split.no 2"))

    s = _copy_set(split_qwen, tmp_path / "truncated")
    with open(s[3], "r+b") as f:
        f.truncate(s[3].stat().st_size - 4096)
    cases.append(("truncated", s[1], "truncated"))

    s = _copy_set(split_qwen, tmp_path / "foreign")
    other = write_split(need(SMOLLM), tmp_path / "smol.gguf", split_max_size=30_000_000)
    assert len(other) == 4
    shutil.copy(other[2], s[2])
    cases.append(("foreign", s[0], "another model"))

    s = _copy_set(split_qwen, tmp_path / "renamed")
    s[0].rename(s[0].with_name("qwen.gguf"))
    cases.append(("renamed", s[0].with_name("qwen.gguf"), "cannot be found"))
    return cases


def test_broken_shard_sets_are_one_clear_error(split_qwen, tmp_path):
    runner = CliRunner()
    for name, given, fragment in _broken_sets(split_qwen, tmp_path):
        before = {p: sha(p) for p in given.parent.iterdir()}
        out = tmp_path / f"out-{name}"
        out.mkdir()
        for cmd in (["trim", str(given), "-o", str(out / "t.gguf")], ["plan", str(given), "-o", str(out / "p.jsonl")],
                    ["inspect", str(given)], ["verify", str(QWEN), str(given)]):
            r = runner.invoke(main, cmd)
            lines = r.output.strip().splitlines()
            assert r.exit_code == 2, (name, cmd, r.output)
            assert len(lines) == 1 and lines[0].startswith("gguf-trim: error:"), (name, r.output)
            assert fragment in lines[0], (name, r.output)
        assert list(out.iterdir()) == [], name
        assert {p: sha(p) for p in given.parent.iterdir()} == before, name


def test_refusals(split_qwen, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["trim", str(split_qwen[0]), "-o", str(split_qwen[1])])
    assert r.exit_code == 2 and "input" in r.output
    r = runner.invoke(main, ["trim", str(split_qwen[0]), "-o", str(tmp_path / "x-00002-of-00003.gguf")])
    assert r.exit_code == 2 and "shard 2 of 3" in r.output
    (tmp_path / "y-00003-of-00004.gguf").mkdir()  # a shard name taken by a folder: refused before writing
    r = runner.invoke(main, ["trim", str(split_qwen[0]), "-o", str(tmp_path / "y.gguf")])
    assert r.exit_code == 2 and "directory" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y-00003-of-00004.gguf"]
    for bad in ("0M", "12X", "-3G"):
        r = runner.invoke(main, ["trim", str(split_qwen[0]), "-o", str(tmp_path / "z.gguf"), "--split-max-size", bad])
        assert r.exit_code == 2 and "--split-max-size" in r.output
    # a failure after the copy has started (a plan for another vocabulary) leaves no temp file
    plan = tmp_path / "smol.plan"
    from gguf_trim.selection.selection import select_lossless
    from gguf_trim.vocab.vocabulary import Vocab
    with GGUFFile(need(SMOLLM)) as g:
        write_plan(plan, select_lossless(Vocab.from_gguf(g)), source="smol")
    out = tmp_path / "o"
    out.mkdir()
    with pytest.raises(Exception, match="plan"):
        trim(split_qwen[0], out / "t.gguf", plan=plan, overlap=True)
    assert list(out.iterdir()) == []


def test_every_command_reads_a_split_model(split_qwen, single_trim, split_trim, tmp_path):
    a, b = inspect(split_qwen[1]), inspect(QWEN)
    assert a["shards"] and len(a["shards"]) == 4 and b["shards"] is None
    for k in ("n_vocab", "vocab_sha256", "vocab_tensor_bytes", "tensor_bytes", "scripts"):
        assert a[k] == b[k]
    runner = CliRunner()
    r = runner.invoke(main, ["diff", str(split_qwen[3]), str(QWEN)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["plan", str(split_qwen[2]), "-o", str(tmp_path / "a.plan")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["plan", str(QWEN), "-o", str(tmp_path / "b.plan")])
    body = [json.loads(x) for x in (tmp_path / "a.plan").read_text().splitlines()[1:]]
    assert body == [json.loads(x) for x in (tmp_path / "b.plan").read_text().splitlines()[1:]]
    va, vb = estimate_file(split_qwen[0]), estimate_file(QWEN)
    assert va["original"] == vb["original"] and va["trimmed"] == vb["trimmed"]
    r = runner.invoke(main, ["translate", str(split_trim.outputs[1]), "--to", "vi", "--json", "Good morning."])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["translation"].strip()


def test_split_model_errors_are_gguf_errors(split_qwen, tmp_path):
    s = _copy_set(split_qwen, tmp_path / "s")
    s[3].unlink()
    with pytest.raises(GGUFError, match="missing shard 4 of 4"):
        GGUFModel(s[1])


def test_extend_reads_a_split_model(split_trim, single_trim, tmp_path):
    from gguf_trim.extend.words import extend_file

    words = tmp_path / "words.txt"
    words.write_text("học sinh\nViệt Nam\ncó thể\n", encoding="utf-8")
    a = extend_file(split_trim.outputs[2], words, tmp_path / "a.gguf", top=3)
    b = extend_file(single_trim, words, tmp_path / "b.gguf", top=3)
    assert a.added == b.added and a.n_vocab_after == b.n_vocab_after
    with GGUFFile(a.output) as g:
        assert "split.count" not in g.fields  # one file
    assert tensor_bytes(a.output) == tensor_bytes(b.output)
    llm = load_llama(a.output, vocab_only=True)
    assert len(llm.tokenize(" Việt Nam".encode(), add_bos=False, special=False)) == 1


def test_a_failed_rename_takes_back_the_shards_already_renamed(split_qwen, tmp_path, monkeypatch):
    """Fault injection: the third rename fails (a full disk, a vanished folder): the two shards
    already in place are removed again and no temp file stays, so no partial set is left."""
    import os

    import gguf_trim.rewrite.writer as rw

    real, calls = os.replace, []

    def flaky(a, b):
        calls.append(b)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(a, b)

    monkeypatch.setattr(rw.os, "replace", flaky)
    with pytest.raises(OSError):
        trim(split_qwen[0], tmp_path / "t.gguf", check=False)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_source_sha256_of_a_split_model_is_per_shard(split_qwen, tmp_path):
    res, _ = trim(split_qwen[1], tmp_path / "h.gguf", hash_source=True, check=False)
    with GGUFModel(res.output) as m:
        assert m.fields["gguf_trim.source_sha256"].text() == ",".join(sha(p) for p in split_qwen)
        assert m.get("gguf_trim.source_size") == sum(p.stat().st_size for p in split_qwen)
        assert m.fields["gguf_trim.source_file"].text() == split_qwen[0].name
