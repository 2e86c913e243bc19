"""Reading text corpora for token counting: plain text, JSON lines, TSV, Parquet, directories and HF datasets.

Everything is streamed (corpora can be far larger than memory) and every problem with the input becomes
a one-line `TrimError` naming the file (and line), because the CLI shows such errors as they are.
`Corpus.sha256` identifies the text for the token-count cache: it hashes the raw bytes of the inputs,
in order, plus the options that change what is read, so renaming or moving a file keeps the cache.
Record fields are looked up by selection/fields.py, hf: inputs read by selection/hf.py.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError, one_line
from gguf_trim.files import file_sha256
from gguf_trim.selection.fields import DEFAULT_FIELD, MISSING, column_segments, lookup, texts, top_column
from gguf_trim.selection.hf import HFInput, hf_segments, open_hf

# Lower-case suffix -> reader; each of these except Parquet may also be gzipped (name + ".gz").
KINDS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".parquet": "parquet"}
SUPPORTED = ".txt, .jsonl, .json, .tsv, .parquet (and .txt/.jsonl/.json/.tsv with .gz)"
HASH_VERSION = b"gguf-trim corpus v1\n"
BATCH_ROWS = 4096
CHUNK = 1 << 20


@dataclass(frozen=True)
class _File:
    path: Path
    kind: str  # txt, jsonl, tsv, parquet
    gz: bool


def _kind_of(path: Path) -> tuple[str, bool] | None:
    """The reader for a file name, decided by its (case-insensitive) suffixes; None if unsupported."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    for suffix, kind in KINDS.items():
        if name.endswith(suffix):
            if gz and kind == "parquet":
                return None  # pyarrow needs a seekable file
            return kind, gz
    return None


class Corpus:
    """Text inputs opened by `open_corpus`: streams segments, and identifies the content for caching."""

    def __init__(self, sources: list[str], items: list[_File | HFInput], field: str, columns: tuple[int, ...] | None):
        self.sources = sources
        self._items = items
        self._field = field
        self._columns = columns

    def __repr__(self) -> str:
        return f"Corpus({self.sources!r})"

    def segments(self) -> Iterator[str]:
        """Every non-empty text segment of every input, in order, read lazily."""
        for item in self._items:
            if isinstance(item, HFInput):
                yield from hf_segments(item)
            elif item.kind == "txt":
                yield from _txt_segments(item)
            elif item.kind == "jsonl":
                yield from _jsonl_segments(item, self._field)
            elif item.kind == "tsv":
                yield from _tsv_segments(item, self._columns)
            else:
                yield from _parquet_segments(item, self._field)

    @property
    def plain_text(self) -> bool:
        """All inputs are .txt (or .txt.gz): `txt_blocks` can replace `segments`."""
        return all(isinstance(i, _File) and i.kind == "txt" for i in self._items)

    def txt_blocks(self, size: int = CHUNK) -> Iterator[str]:
        """The text of .txt inputs in decoded blocks of whole lines (about `size` bytes, never across
        files), for worker processes to split with `txt_block_segments`: splitting lines is then
        parallel, and the reader only moves blocks. Same segments as `segments`, same errors."""
        for item in self._items:
            if not (isinstance(item, _File) and item.kind == "txt"):
                raise TrimError(f"{item}: txt_blocks reads .txt inputs only")
            yield from _txt_blocks(item, size)

    def sha256(self) -> str:
        """Identity of the text for caching: raw bytes and reading options of each input, in order, not names."""
        h = hashlib.sha256(HASH_VERSION)
        for item in self._items:
            if isinstance(item, HFInput):
                parts = ["hf", item.name, item.split, item.field, str(item.dataset._fingerprint)]
            else:
                option = {"txt": "", "tsv": _columns_text(self._columns)}.get(item.kind, f"field={self._field}")
                parts = [item.kind, "gz" if item.gz else "", option, file_sha256(item.path)]
            for part in parts:
                data = part.encode("utf-8", "surrogatepass")
                h.update(len(data).to_bytes(8, "little") + data)
        return h.hexdigest()

    def total_bytes(self) -> int | None:
        """Sum of the input file sizes (compressed size for .gz), for a progress bar; None with an hf: input."""
        total = 0
        for item in self._items:
            if isinstance(item, HFInput):
                return None
            try:
                total += item.path.stat().st_size
            except OSError as e:
                raise TrimError(f"{item.path}: cannot read ({one_line(e)})") from e
        return total


def open_corpus(paths: Sequence[str], field: str | None = None, columns: Sequence[int] | None = None) -> Corpus:
    """Check the inputs (files, directories, `hf:NAME[:split][:field]`) and return a Corpus over them.

    Cheap checks happen here so that a long run does not fail late: missing paths, unsupported types,
    empty directories, Parquet columns, and HF datasets (loaded here, with their field checked).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # a lone path is a common slip; a str would otherwise be read letter by letter
    sources = [os.fspath(p) for p in paths]
    if not sources:
        raise TrimError("no corpus given")
    if field is not None and not field:
        raise TrimError("the corpus field name is empty")
    fld = field or DEFAULT_FIELD
    cols: tuple[int, ...] | None = None
    if columns is not None:
        cols = tuple(columns)
        if not cols:
            raise TrimError("no TSV columns given")
        bad = [c for c in cols if isinstance(c, bool) or not isinstance(c, int) or c < 0]
        if bad:
            raise TrimError(f"TSV columns must be 0-based indices >= 0, got {bad[0]!r}")
    items: list[_File | HFInput] = []
    for src in sources:
        if src.startswith("hf:"):
            items.append(open_hf(src, field))
            continue
        path = Path(src)
        if path.is_dir():
            found = _walk(path)
            if not found:
                raise TrimError(f"{src}: directory holds no supported file ({SUPPORTED})")
            items.extend(found)
        elif path.exists():
            kind = _kind_of(path)
            if kind is None:
                raise TrimError(f"{src}: unsupported file type (expected {SUPPORTED})")
            items.append(_File(path, *kind))
        else:
            raise TrimError(f"{src}: no such file or directory")
    for item in items:
        if isinstance(item, _File) and item.kind == "parquet":
            _parquet_column(item.path, fld)
    return Corpus(sources, items, fld, cols)


def _walk(root: Path) -> list[_File]:
    """Supported files under a directory, sorted by path components; hidden files and directories skipped."""
    found: list[tuple[tuple[str, ...], _File]] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=_walk_error):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath, name)
            kind = None if name.startswith(".") else _kind_of(path)
            if kind is not None and path.is_file():
                found.append((path.relative_to(root).parts, _File(path, *kind)))
    found.sort(key=lambda t: t[0])
    return [f for _, f in found]


def _walk_error(e: OSError) -> None:
    raise TrimError(f"{e.filename}: cannot list directory ({one_line(e)})") from e


def _columns_text(columns: tuple[int, ...] | None) -> str:
    return "columns=all" if columns is None else "columns=" + ",".join(map(str, columns))


# ---- line-based formats ----------------------------------------------------------------------------

def _lines(item: _File) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) for each line, split on b"\\n" only; a UTF-8 BOM is dropped."""
    path = item.path
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise TrimError(f"{path}: cannot read ({one_line(e)})") from e
    with raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if item.gz else raw
        it = iter(stream)
        n = 0
        while True:
            try:
                data = next(it)
            except StopIteration:
                return
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise TrimError(f"{path}: bad gzip data ({one_line(e)})") from e
            except OSError as e:
                raise TrimError(f"{path}: cannot read ({one_line(e)})") from e
            n += 1
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                raise TrimError(f"{path}:{n}: invalid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from e
            if n == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if text.endswith("\n"):
                text = text[:-2] if text.endswith("\r\n") else text[:-1]
            yield n, text


def _txt_blocks(item: _File, size: int) -> Iterator[str]:
    path = item.path
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise TrimError(f"{path}: cannot read ({one_line(e)})") from e
    line_no = 0  # lines before the current block, for error messages
    with raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if item.gz else raw
        rest = b""
        first = True
        while True:
            try:
                data = stream.read(size)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise TrimError(f"{path}: bad gzip data ({one_line(e)})") from e
            except OSError as e:
                raise TrimError(f"{path}: cannot read ({one_line(e)})") from e
            buf = rest + data
            if data:
                cut = buf.rfind(b"\n") + 1
                if cut == 0:
                    rest = buf
                    continue
                buf, rest = buf[:cut], buf[cut:]
            elif not buf:
                return
            else:
                rest = b""
            try:
                text = buf.decode("utf-8")
            except UnicodeDecodeError as e:
                n = line_no + buf.count(b"\n", 0, e.start) + 1
                start = buf.rfind(b"\n", 0, e.start) + 1
                raise TrimError(f"{path}:{n}: invalid UTF-8 (byte 0x{buf[e.start]:02x} at offset "
                                f"{e.start - start})") from e
            if first and text.startswith("\ufeff"):
                text = text[1:]
            first = False
            line_no += buf.count(b"\n")
            yield text
            if not data:
                return


def txt_block_segments(block: str) -> list[str]:
    """The segments of a `txt_blocks` block: its lines without line endings, blank ones skipped."""
    lines = block.split("\n")
    if lines[-1] == "":
        lines.pop()
        return [x[:-1] if x.endswith("\r") else x for x in lines if x.strip()]
    last = lines.pop()  # the file's last line, without a newline: its "\r" is text
    out = [x[:-1] if x.endswith("\r") else x for x in lines if x.strip()]
    if last.strip():
        out.append(last)
    return out


def _txt_segments(item: _File) -> Iterator[str]:
    for _, line in _lines(item):
        if line.strip():
            yield line


def _tsv_segments(item: _File, columns: tuple[int, ...] | None) -> Iterator[str]:
    """Selected cells of each row; no quoting or header handling (plain tab-separated values)."""
    for n, line in _lines(item):
        if not line.strip():
            continue
        cells = line.split("\t")
        for c in range(len(cells)) if columns is None else columns:
            if c >= len(cells):
                raise TrimError(f"{item.path}:{n}: no column {c} (row has {len(cells)})")
            if cells[c].strip():
                yield cells[c]


def _jsonl_segments(item: _File, field: str) -> Iterator[str]:
    path = item.path
    records = found = 0
    first_keys: list[str] = []
    for n, line in _lines(item):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            hint = "; .json files are read as JSON lines, one object per line" if records == 0 else ""
            raise TrimError(f"{path}:{n}: invalid JSON ({e.msg} at column {e.colno}{hint})") from e
        records += 1
        if records == 1 and isinstance(record, dict):
            first_keys = list(record)
        value = lookup(record, field, lambda n=n: f"{path}:{n}")
        if value is MISSING:
            continue
        found += 1
        yield from texts(value, field, lambda n=n: f"{path}:{n}")
    if records and not found:
        keys = ", ".join(first_keys[:20]) or "none"
        raise TrimError(f"{path}: no line has the field '{field}' (keys of the first record: {keys})")


# ---- parquet ---------------------------------------------------------------------------------------

def _parquet_column(path: Path, field: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as e:
        raise TrimError(f"{path}: cannot read Parquet ({one_line(e)})") from e
    return top_column(field, names, str(path))


def _parquet_segments(item: _File, field: str) -> Iterator[str]:
    """Streams one column by record batches, so a file larger than memory is fine."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = item.path
    top = _parquet_column(path, field)

    def values() -> Iterator[Any]:
        try:
            with pq.ParquetFile(path) as pf:
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=[top]):
                    yield from batch.column(0).to_pylist()
        except (pa.ArrowException, OSError) as e:
            raise TrimError(f"{path}: cannot read Parquet ({one_line(e)})") from e

    yield from column_segments(values(), top, field, str(path))
