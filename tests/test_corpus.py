"""gguf_trim.selection.corpus: every format gives exactly the expected segments, the hash follows content and options,
and every bad input is a one-line TrimError naming the file (and line)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gguf_trim import files
from gguf_trim.errors import TrimError
from gguf_trim.selection import corpus
from gguf_trim.selection.corpus import open_corpus


def segs(*paths: Path | str, **kw) -> list[str]:
    return list(open_corpus([str(p) for p in paths], **kw).segments())


def write(path: Path, data: str | bytes, gz: bool = False) -> Path:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def error(*paths: Path | str, **kw) -> str:
    with pytest.raises(TrimError) as exc:
        segs(*paths, **kw)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


TXT = "\ufeffalpha\r\nbeta\n\n   \n\t\n  x y \nnặng\u2028cùng\rdòng\nlast"
TXT_SEGS = ["alpha", "beta", "  x y ", "nặng\u2028cùng\rdòng", "last"]


# ---- plain text ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, gz", [("a.txt", False), ("a.txt.gz", True), ("A.TXT", False), ("A.Txt.GZ", True)])
def test_txt(tmp_path, name, gz):
    assert segs(write(tmp_path / name, TXT, gz)) == TXT_SEGS


def test_txt_is_streamed(tmp_path):
    p = write(tmp_path / "a.txt", b"one\ntwo\n\xff\n")
    it = open_corpus([str(p)]).segments()
    assert next(it) == "one"
    assert next(it) == "two"
    with pytest.raises(TrimError, match=r"a\.txt:3: invalid UTF-8"):
        next(it)


def test_several_inputs_in_order(tmp_path):
    a = write(tmp_path / "a.txt", "1\n2\n")
    b = write(tmp_path / "b.tsv", "3\t4\n")
    c = write(tmp_path / "c.jsonl", jsonl({"text": "5"}))
    assert segs(c, a, b) == ["5", "1", "2", "3", "4"]
    assert open_corpus([str(c), str(a)]).sources == [str(c), str(a)]
    assert open_corpus(str(a)).sources == [str(a)]


# ---- JSON lines ------------------------------------------------------------------------------------

RECORDS = [
    {"text": "first", "id": 1},
    {"text": ["l1", "", "l2", None]},
    {"text": None},
    {"id": 4},
    {"text": ""},
    {"text": "  "},
    {"text": "multi\nline\u2028x"},
]
RECORD_SEGS = ["first", "l1", "l2", "multi\nline\u2028x"]


@pytest.mark.parametrize("name, gz", [("a.jsonl", False), ("a.json", False), ("a.jsonl.gz", True),
                                      ("a.JSON.gz", True)])
def test_jsonl(tmp_path, name, gz):
    data = "\ufeff" + jsonl(*RECORDS[:3]) + "\n  \r\n" + jsonl(*RECORDS[3:]).replace("\n", "\r\n")
    assert segs(write(tmp_path / name, data, gz)) == RECORD_SEGS


def test_jsonl_field_dotted_and_literal(tmp_path):
    p = write(tmp_path / "t.jsonl", jsonl(
        {"translation": {"en": "hello", "vi": "xin chào"}},
        {"translation": {"en": "only en"}},
        {"translation": None},
        {"translation": {"vi": ["một", "hai"]}, "translation.vi": "literal key wins"},
    ))
    assert segs(p, field="translation.vi") == ["xin chào", "literal key wins"]
    assert segs(p, field="translation.en") == ["hello", "only en"]


def test_jsonl_field_missing_everywhere(tmp_path):
    p = write(tmp_path / "t.jsonl", jsonl({"body": "x", "id": 1}, {"body": "y"}))
    assert error(p) == f"{p}: no line has the field 'text' (keys of the first record: body, id)"
    assert segs(p, field="body") == ["x", "y"]
    assert error(p, field="body.inner") == f"{p}:1: 'body' is a string, cannot look up 'inner'"


def test_jsonl_bad_values(tmp_path):
    p = write(tmp_path / "t.jsonl", jsonl({"text": "ok"}, {"text": 3}))
    assert error(p) == f"{p}:2: field 'text' is a number, expected a string or a list of strings"
    p = write(tmp_path / "u.jsonl", jsonl({"text": ["a", {"b": 1}]}))
    assert error(p) == f"{p}:1: field 'text' holds a list item that is an object, expected strings"
    p = write(tmp_path / "v.jsonl", jsonl({"text": "a"}, ["text"]))
    assert error(p) == f"{p}:2: expected a JSON object, got a list"
    p = write(tmp_path / "w.jsonl", jsonl({"text": "a"}, None))
    assert error(p) == f"{p}:2: expected a JSON object, got null"


def test_jsonl_invalid_json(tmp_path):
    p = write(tmp_path / "t.jsonl", '{"text": "a"}\n\n{"text": "b",}\n')
    assert error(p).startswith(f"{p}:3: invalid JSON (")
    p = write(tmp_path / "t.json", '[{"text": "a"},\n {"text": "b"}]\n')
    msg = error(p)
    assert msg.startswith(f"{p}:1: invalid JSON (")
    assert msg.endswith("; .json files are read as JSON lines, one object per line)")


# ---- TSV -------------------------------------------------------------------------------------------

TSV = "en\tvi\tnote\r\nhello\txin chào\t\n\n  \nbye\t \tlast\n"


@pytest.mark.parametrize("name, gz", [("a.tsv", False), ("a.TSV.gz", True)])
def test_tsv(tmp_path, name, gz):
    p = write(tmp_path / name, TSV, gz)
    assert segs(p) == ["en", "vi", "note", "hello", "xin chào", "bye", "last"]
    assert segs(p, columns=[1]) == ["vi", "xin chào"]
    assert segs(p, columns=[2, 0]) == ["note", "en", "hello", "last", "bye"]


def test_tsv_missing_column(tmp_path):
    p = write(tmp_path / "a.tsv", "a\tb\tc\nd\te\n")
    assert error(p, columns=[2]) == f"{p}:2: no column 2 (row has 2)"
    assert error(p, columns=[5]) == f"{p}:1: no column 5 (row has 3)"


@pytest.mark.parametrize("columns, msg", [([], "no TSV columns given"),
                                          ([0, -1], "TSV columns must be 0-based indices >= 0, got -1")])
def test_tsv_bad_columns_option(tmp_path, columns, msg):
    p = write(tmp_path / "a.tsv", "a\n")
    assert error(p, columns=columns) == msg


# ---- Parquet ---------------------------------------------------------------------------------------

def write_parquet(path: Path, table: dict, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table), path, **kw)
    return path


def test_parquet(tmp_path):
    p = write_parquet(tmp_path / "a.PARQUET", {
        "text": ["one", None, "", "two"],
        "lines": [["a", "b"], [], None, ["", "c"]],
        "tr": [{"vi": "một"}, {"vi": None}, {"vi": "ba"}, {"vi": "bốn"}],
        "n": [1, 2, 3, 4],
    })
    assert segs(p) == ["one", "two"]
    assert segs(p, field="lines") == ["a", "b", "c"]
    assert segs(p, field="tr.vi") == ["một", "ba", "bốn"]
    assert error(p, field="n") == f"{p}: row 1: field 'n' is a number, expected a string or a list of strings"
    assert error(p, field="tr.en") == f"{p}: no row has the field 'tr.en'"


def test_parquet_streams_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "BATCH_ROWS", 7)
    rows = [f"row {i}" for i in range(100)]
    p = write_parquet(tmp_path / "a.parquet", {"text": rows}, row_group_size=30)
    assert segs(p) == rows


def test_parquet_missing_column(tmp_path):
    p = write_parquet(tmp_path / "a.parquet", {"body": ["x"], "id": [1]})
    assert error(p) == f"{p}: no column 'text' (available: body, id)"
    assert error(p, field="bod.y") == f"{p}: no column 'bod' (available: body, id)"


def test_parquet_corrupt(tmp_path):
    p = write(tmp_path / "a.parquet", b"not parquet at all")
    assert error(p).startswith(f"{p}: cannot read Parquet (")


# ---- directories -----------------------------------------------------------------------------------

def test_directory(tmp_path):
    d = tmp_path / "corpus"
    write(d / "b.txt", "b\n")
    write(d / "a.txt", "a\n")
    write(d / "a" / "z.txt.gz", "a/z\n", gz=True)
    write(d / "a" / "m.JSONL", jsonl({"text": "a/m"}))
    write(d / "a-b.tsv", "a-b\n")
    write_parquet(d / "c" / "p.parquet", {"text": ["c/p"]})
    write(d / ".hidden.txt", "hidden\n")
    write(d / ".git" / "x.txt", "hidden dir\n")
    write(d / "a" / ".h" / "y.txt", "hidden subdir\n")
    write(d / "readme.md", "other\n")
    write(d / "x.parquet.gz", b"other")
    write(d / "data.bin", b"\xff")
    assert segs(d) == ["a/m", "a/z", "a-b", "a", "b", "c/p"]
    assert segs(d / "a", tmp_path / "corpus" / "b.txt") == ["a/m", "a/z", "b"]


def test_directory_without_supported_files(tmp_path):
    d = tmp_path / "d"
    write(d / "x.md", "x\n")
    write(d / ".y.txt", "y\n")
    assert error(d) == f"{d}: directory holds no supported file ({corpus.SUPPORTED})"
    (tmp_path / "empty").mkdir()
    assert error(tmp_path / "empty") == f"{tmp_path / 'empty'}: directory holds no supported file ({corpus.SUPPORTED})"


# ---- bad input -------------------------------------------------------------------------------------

def test_missing_and_unsupported(tmp_path):
    assert error(tmp_path / "nope.txt") == f"{tmp_path / 'nope.txt'}: no such file or directory"
    for name in ("a.csv", "a.parquet.gz", "README", "a.gz"):
        p = write(tmp_path / name, "x\n")
        assert error(p) == f"{p}: unsupported file type (expected {corpus.SUPPORTED})"
    with pytest.raises(TrimError, match="^no corpus given$"):
        open_corpus([])
    with pytest.raises(TrimError, match="^the corpus field name is empty$"):
        open_corpus([str(write(tmp_path / "a.txt", "x"))], field="")


def test_bad_utf8(tmp_path):
    p = write(tmp_path / "a.txt", b"ok\nfine\nbad \xc3\x28 here\n")
    assert error(p) == f"{p}:3: invalid UTF-8 (byte 0xc3 at offset 4)"
    p = write(tmp_path / "a.jsonl.gz", b'{"text": "a"}\n\xff\n', gz=True)
    assert error(p) == f"{p}:2: invalid UTF-8 (byte 0xff at offset 0)"


def test_bad_gzip(tmp_path):
    p = write(tmp_path / "a.txt.gz", "plain text, not gzip\n")
    assert error(p).startswith(f"{p}: bad gzip data (")
    whole = gzip.compress(("line\n" * 1000).encode(), mtime=0)
    p = write(tmp_path / "b.txt.gz", whole[: len(whole) // 2])
    assert error(p).startswith(f"{p}: bad gzip data (")
    p = write(tmp_path / "c.tsv.gz", whole[:-4] + b"\0\0\0\0")  # wrong length trailer
    assert error(p).startswith(f"{p}: bad gzip data (")


def test_unreadable_file(tmp_path, monkeypatch):
    p = write(tmp_path / "a.txt", "x\n")
    c = open_corpus([str(p)])

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(corpus, "open", denied, raising=False)
    monkeypatch.setattr(files, "open", denied, raising=False)  # the corpus hash reads through files.file_sha256
    assert error(p) == f"{p}: cannot read (Permission denied)"
    with pytest.raises(TrimError, match=r"^.*a\.txt: cannot read \(Permission denied\)$"):
        c.sha256()


# ---- sha256 and sizes ------------------------------------------------------------------------------

def test_sha256(tmp_path):
    a = write(tmp_path / "a.txt", "one\ntwo\n")
    b = write(tmp_path / "sub" / "renamed.txt", "one\ntwo\n")
    c = write(tmp_path / "c.txt", "one\ntwo!\n")
    h = open_corpus([str(a)]).sha256()
    assert len(h) == 64 and int(h, 16) >= 0
    assert open_corpus([str(b)]).sha256() == h
    assert open_corpus([str(tmp_path / "sub")]).sha256() == h
    assert open_corpus([str(c)]).sha256() != h
    assert open_corpus([str(a), str(c)]).sha256() != open_corpus([str(c), str(a)]).sha256()
    assert open_corpus([str(a), str(c)]).sha256() == open_corpus([str(b), str(c)]).sha256()


def test_sha256_options(tmp_path):
    j = write(tmp_path / "a.jsonl", jsonl({"text": "x", "body": "y"}))
    assert open_corpus([str(j)]).sha256() == open_corpus([str(j)], field="text").sha256()
    assert open_corpus([str(j)]).sha256() != open_corpus([str(j)], field="body").sha256()
    t = write(tmp_path / "a.tsv", "x\ty\n")
    hashes = {open_corpus([str(t)], columns=cols).sha256() for cols in (None, [0], [1], [1, 0], [0, 1])}
    assert len(hashes) == 5
    # the same bytes read as another format are another text
    same = write(tmp_path / "b.txt", "x\ty\n")
    assert open_corpus([str(same)]).sha256() not in hashes
    # options that a format does not use leave its hash alone
    assert open_corpus([str(same)], field="body", columns=[1]).sha256() == open_corpus([str(same)]).sha256()


def test_total_bytes(tmp_path):
    a = write(tmp_path / "d" / "a.txt", "12345\n")
    g = write(tmp_path / "d" / "b.txt.gz", "x" * 1000, gz=True)
    assert open_corpus([str(a)]).total_bytes() == 6
    assert open_corpus([str(tmp_path / "d")]).total_bytes() == 6 + g.stat().st_size
    assert g.stat().st_size < 1000


def test_import_is_light():
    code = ("import sys, gguf_trim.selection.corpus; "
            "print(sorted(m for m in ('datasets', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- hf: datasets ----------------------------------------------------------------------------------

@pytest.fixture
def hf(tmp_path, monkeypatch):
    """`datasets` with its cache in tmp_path, offline."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets  # a dependency: missing is a failure, not a skip

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    return datasets


def test_hf_jsonl_folder(tmp_path, hf):
    d = tmp_path / "ds"
    write(d / "train.jsonl", jsonl({"text": "t1", "vi": "v1"}, {"text": "t2", "vi": None}))
    write(d / "test.jsonl", jsonl({"text": "s1", "vi": "w1"}))
    assert segs(f"hf:{d}") == ["t1", "t2"]
    assert segs(f"hf:{d}:test") == ["s1"]
    assert segs(f"hf:{d}::vi") == ["v1"]
    assert segs(f"hf:{d}:test:vi") == ["w1"]
    assert segs(f"hf:{d}", field="vi") == ["v1"]
    assert segs(f"hf:{d}:train:text", field="vi") == ["t1", "t2"]
    c = open_corpus([f"hf:{d}"])
    assert c.total_bytes() is None
    assert c.sources == [f"hf:{d}"]
    hashes = {open_corpus([s]).sha256() for s in (f"hf:{d}", f"hf:{d}:test", f"hf:{d}::vi")}
    assert len(hashes) == 3
    assert open_corpus([f"hf:{d}"]).sha256() == c.sha256()


def test_hf_parquet_folder(tmp_path, hf):
    d = tmp_path / "pq"
    table = {"text": ["p1", "", "p2"], "tr": [{"vi": "a"}, None, {"vi": "b"}]}
    write_parquet(d / "data" / "train-00000.parquet", table)
    assert segs(f"hf:{d}") == ["p1", "p2"]
    assert segs(f"hf:{d}:train:tr.vi") == ["a", "b"]


def test_hf_saved_to_disk(tmp_path, hf):
    ds = hf.Dataset.from_dict({"text": ["a", None, "b"], "lines": [["x", "y"], [], ["z"]]})
    ds.save_to_disk(str(tmp_path / "saved"))
    assert segs(f"hf:{tmp_path / 'saved'}") == ["a", "b"]
    assert segs(f"hf:{tmp_path / 'saved'}::lines") == ["x", "y", "z"]
    dd = hf.DatasetDict({"train": ds, "validation": hf.Dataset.from_dict({"text": ["v"]})})
    dd.save_to_disk(str(tmp_path / "dict"))
    assert segs(f"hf:{tmp_path / 'dict'}") == ["a", "b"]
    assert segs(f"hf:{tmp_path / 'dict'}:validation") == ["v"]
    spec = f"hf:{tmp_path / 'dict'}:test"
    assert error(spec) == f"{spec}: no split 'test' (available: train, validation)"
    h = open_corpus([f"hf:{tmp_path / 'saved'}"]).sha256()
    assert h != open_corpus([f"hf:{tmp_path / 'saved'}::lines"]).sha256()


def test_hf_errors(tmp_path, hf):
    d = tmp_path / "ds"
    write(d / "train.jsonl", jsonl({"body": "x"}, {"body": 5}))
    assert error(f"hf:{d}") == f"hf:{d}: no column 'text' (available: body)"
    expected = f"hf:{d}::body: row 2: field 'body' is a number, expected a string or a list of strings"
    assert error(f"hf:{d}::body") == expected
    msg = error(f"hf:{d}:nosuchsplit")
    assert msg.startswith(f"hf:{d}:nosuchsplit: cannot load dataset (ValueError: ")
    assert "nosuchsplit" in msg[len(f"hf:{d}:nosuchsplit"):]
    msg = error("hf:no-such-user/no-such-dataset")
    assert msg.startswith("hf:no-such-user/no-such-dataset: cannot load dataset (")
    for bad in ("hf:", "hf::train", "hf:a:b:c:d"):
        assert error(bad) == f"{bad}: bad hf: input (expected hf:NAME[:split][:field])"


def test_hf_without_datasets(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    msg = error(f"hf:{tmp_path}")
    assert msg.startswith("hf: corpora need the datasets package: pip install 'gguf-trim[hf]' (")


def test_txt_blocks_give_the_same_segments(tmp_path):
    """Workers split .txt blocks themselves (count.py); any block size gives exactly `segments`."""
    from gguf_trim.selection.corpus import txt_block_segments

    texts = {"a.txt": "\ufeffhello\r\nworld\n\n  \nlast\r", "b.txt": "x\ny\n", "c.txt": "", "d.txt": "no newline",
             "e.txt": "\n\n\n", "f.txt": "".join(f"line {i} Việt\t\r\n" if i % 3 else "\n" for i in range(3000))}
    paths = []
    for name, text in texts.items():
        (tmp_path / name).write_bytes(text.encode("utf-8"))
        paths.append(str(tmp_path / name))
    with gzip.open(tmp_path / "g.txt.gz", "wb") as f:
        f.write(texts["f.txt"].encode("utf-8"))
    paths.append(str(tmp_path / "g.txt.gz"))
    c = open_corpus(paths)
    assert c.plain_text
    want = list(c.segments())
    for size in (1, 7, 100, 4096, 1 << 20):
        assert [s for b in c.txt_blocks(size) for s in txt_block_segments(b)] == want
    (tmp_path / "h.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    assert not open_corpus(paths + [str(tmp_path / "h.jsonl")]).plain_text


def test_txt_blocks_report_bad_utf8_with_line(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"ok\nfine\nbro\xffken\n")
    with pytest.raises(TrimError, match=r"bad.txt:3: invalid UTF-8 \(byte 0xff at offset 3\)"):
        list(open_corpus([str(p)]).txt_blocks())
