"""Reading text corpora for token counting: plain text, JSON lines, TSV, Parquet, directories and HF datasets.

Everything is streamed (corpora can be far larger than memory) and every problem with the input becomes
a one-line `TrimError` naming the file (and line), because the CLI shows such errors as they are.
`Corpus.sha256` identifies the text for the token-count cache: it hashes the raw bytes of the inputs,
in order, plus the options that change what is read, so renaming or moving a file keeps the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError

DEFAULT_FIELD = "text"
# Lower-case suffix -> reader; each of these except Parquet may also be gzipped (name + ".gz").
KINDS = {".txt": "txt", ".jsonl": "jsonl", ".json": "jsonl", ".tsv": "tsv", ".parquet": "parquet"}
SUPPORTED = ".txt, .jsonl, .json, .tsv, .parquet (and .txt/.jsonl/.json/.tsv with .gz)"
HASH_VERSION = b"gguf-trim corpus v1\n"
BATCH_ROWS = 4096
CHUNK = 1 << 20

_MISSING = object()


@dataclass(frozen=True)
class _File:
    path: Path
    kind: str  # txt, jsonl, tsv, parquet
    gz: bool


@dataclass
class _HF:
    spec: str  # as given, for messages
    name: str
    split: str
    field: str
    dataset: Any  # datasets.Dataset


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


def _one_line(e: BaseException) -> str:
    """An exception as a short single line, for wrapping library errors into TrimError."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    text = " ".join(text.split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class Corpus:
    """Text inputs opened by `open_corpus`: streams segments, and identifies the content for caching."""

    def __init__(self, sources: list[str], items: list[_File | _HF], field: str, columns: tuple[int, ...] | None):
        self.sources = sources
        self._items = items
        self._field = field
        self._columns = columns

    def __repr__(self) -> str:
        return f"Corpus({self.sources!r})"

    def segments(self) -> Iterator[str]:
        """Every non-empty text segment of every input, in order, read lazily."""
        for item in self._items:
            if isinstance(item, _HF):
                yield from _hf_segments(item)
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
            if isinstance(item, _HF):
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
            if isinstance(item, _HF):
                return None
            try:
                total += item.path.stat().st_size
            except OSError as e:
                raise TrimError(f"{item.path}: cannot read ({_one_line(e)})") from e
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
    items: list[_File | _HF] = []
    for src in sources:
        if src.startswith("hf:"):
            items.append(_open_hf(src, field))
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
    raise TrimError(f"{e.filename}: cannot list directory ({_one_line(e)})") from e


def _columns_text(columns: tuple[int, ...] | None) -> str:
    return "columns=all" if columns is None else "columns=" + ",".join(map(str, columns))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's raw bytes, streamed."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
    except OSError as e:
        raise TrimError(f"{path}: cannot read ({_one_line(e)})") from e
    return h.hexdigest()


# ---- line-based formats ----------------------------------------------------------------------------

def _lines(item: _File) -> Iterator[tuple[int, str]]:
    """(line number, text without its line ending) for each line, split on b"\\n" only; a UTF-8 BOM is dropped."""
    path = item.path
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise TrimError(f"{path}: cannot read ({_one_line(e)})") from e
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
                raise TrimError(f"{path}: bad gzip data ({_one_line(e)})") from e
            except OSError as e:
                raise TrimError(f"{path}: cannot read ({_one_line(e)})") from e
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
        raise TrimError(f"{path}: cannot read ({_one_line(e)})") from e
    line_no = 0  # lines before the current block, for error messages
    with raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if item.gz else raw
        rest = b""
        first = True
        while True:
            try:
                data = stream.read(size)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                raise TrimError(f"{path}: bad gzip data ({_one_line(e)})") from e
            except OSError as e:
                raise TrimError(f"{path}: cannot read ({_one_line(e)})") from e
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
        value = _lookup(record, field, lambda n=n: f"{path}:{n}")
        if value is _MISSING:
            continue
        found += 1
        yield from _texts(value, field, lambda n=n: f"{path}:{n}")
    if records and not found:
        keys = ", ".join(first_keys[:20]) or "none"
        raise TrimError(f"{path}: no line has the field '{field}' (keys of the first record: {keys})")


# ---- values of records -----------------------------------------------------------------------------

def _lookup(record: Any, field: str, where: Callable[[], str]) -> Any:
    """The value at a dotted field path (a key that itself holds the dots wins); _MISSING when absent."""
    if isinstance(record, dict) and field in record:
        return record[field]
    parts = field.split(".")
    cur = record
    for i, part in enumerate(parts):
        if i == 0 and not isinstance(cur, dict):
            raise TrimError(f"{where()}: expected a JSON object, got {_type_name(cur)}")
        if cur is None:
            return None
        if not isinstance(cur, dict):
            raise TrimError(f"{where()}: '{'.'.join(parts[:i])}' is {_type_name(cur)}, cannot look up '{part}'")
        if part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _texts(value: Any, field: str, where: Callable[[], str]) -> Iterator[str]:
    """A field's segments: a string, or each string of a list; None means no text."""
    if isinstance(value, str):
        if value.strip():
            yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, str):
                if v.strip():
                    yield v
            elif v is not None:
                what = _type_name(v)
                raise TrimError(f"{where()}: field '{field}' holds a list item that is {what}, expected strings")
    elif value is not None:
        raise TrimError(f"{where()}: field '{field}' is {_type_name(value)}, expected a string or a list of strings")


def _type_name(value: Any) -> str:
    names = {type(None): "null", dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", bytes: "bytes"}
    return names.get(type(value), type(value).__name__)


def _top_column(field: str, names: Sequence[str], where: str) -> str:
    """The table column a (dotted) field lives in; an error listing the columns when there is none."""
    if field in names:
        return field
    top = field.split(".")[0]
    if top not in names:
        raise TrimError(f"{where}: no column '{top}' (available: {', '.join(names) or 'none'})")
    return top


def _rows(values: Iterator[Any], top: str, field: str, label: str) -> Iterator[str]:
    """Segments from a stream of one column's values; an error when a nested field is in no row."""
    rows = found = 0
    for value in values:
        rows += 1
        value = _lookup({top: value}, field, lambda r=rows: f"{label}: row {r}")
        if value is _MISSING:
            continue
        found += 1
        yield from _texts(value, field, lambda r=rows: f"{label}: row {r}")
    if rows and not found:
        raise TrimError(f"{label}: no row has the field '{field}'")


# ---- parquet ---------------------------------------------------------------------------------------

def _parquet_column(path: Path, field: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as e:
        raise TrimError(f"{path}: cannot read Parquet ({_one_line(e)})") from e
    return _top_column(field, names, str(path))


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
            raise TrimError(f"{path}: cannot read Parquet ({_one_line(e)})") from e

    yield from _rows(values(), top, field, str(path))


# ---- Hugging Face datasets -------------------------------------------------------------------------

def _import_datasets() -> Any:
    """The `datasets` module, imported only for hf: inputs; offline unless the user says otherwise."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError as e:
        raise TrimError(f"hf: corpora need the 'datasets' package (pip install datasets): {_one_line(e)}") from e
    return datasets


def _is_saved_dataset(folder: Path) -> bool:
    """Whether a folder was written by Dataset.save_to_disk / DatasetDict.save_to_disk."""
    if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
        return True
    return (folder / "dataset_info.json").is_file() and any(folder.glob("*.arrow"))


def _open_hf(spec: str, field_option: str | None) -> _HF:
    """Load `hf:NAME[:split][:field]` and check its field; the field part wins over the --field option."""
    parts = spec[3:].split(":")
    if len(parts) > 3 or not parts[0]:
        raise TrimError(f"{spec}: bad hf: input (expected hf:NAME[:split][:field])")
    name = parts[0]
    split = (parts[1] if len(parts) > 1 else "") or "train"
    field = (parts[2] if len(parts) > 2 else "") or field_option or DEFAULT_FIELD
    datasets = _import_datasets()
    folder = Path(name)
    try:
        if folder.is_dir() and _is_saved_dataset(folder):
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise TrimError(f"{spec}: no split '{split}' (available: {', '.join(ds)})")
                ds = ds[split]
            elif len(parts) > 1 and parts[1] and ds.split is not None and str(ds.split) != split:
                raise TrimError(f"{spec}: the saved dataset is the '{ds.split}' split, not '{split}'")
        else:
            ds = datasets.load_dataset(name, split=split)
    except TrimError:
        raise
    except Exception as e:  # datasets raises many types (ValueError, FileNotFoundError, ConnectionError, ...)
        raise TrimError(f"{spec}: cannot load dataset ({type(e).__name__}: {_one_line(e)})") from e
    if not isinstance(ds, datasets.Dataset):
        raise TrimError(f"{spec}: expected a dataset split, got {type(ds).__name__}")
    _top_column(field, ds.column_names, spec)
    return _HF(spec, name, split, field, ds)


def _hf_segments(item: _HF) -> Iterator[str]:
    top = _top_column(item.field, item.dataset.column_names, item.spec)

    def values() -> Iterator[Any]:
        try:
            for batch in item.dataset.select_columns([top]).iter(batch_size=BATCH_ROWS):
                yield from batch[top]
        except Exception as e:  # arrow cache files gone, decoding errors, ...
            raise TrimError(f"{item.spec}: cannot read dataset ({type(e).__name__}: {_one_line(e)})") from e

    yield from _rows(values(), top, item.field, item.spec)
