"""Text fields of records (JSON lines, Parquet rows, dataset rows): dotted field paths and their strings.

Shared by the corpus readers of selection/corpus.py and selection/hf.py, so every format
reports a missing or mistyped field with the same one-line message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gguf_trim.errors import TrimError

DEFAULT_FIELD = "text"  # the field read when --field is not given
MISSING = object()  # what `lookup` returns for a field a record does not have


def lookup(record: Any, field: str, where: Callable[[], str]) -> Any:
    """The value at a dotted field path (a key that itself holds the dots wins); MISSING when absent."""
    if isinstance(record, dict) and field in record:
        return record[field]
    parts = field.split(".")
    cur = record
    for i, part in enumerate(parts):
        if i == 0 and not isinstance(cur, dict):
            raise TrimError(f"{where()}: expected a JSON object, got {type_name(cur)}")
        if cur is None:
            return None
        if not isinstance(cur, dict):
            raise TrimError(f"{where()}: '{'.'.join(parts[:i])}' is {type_name(cur)}, cannot look up '{part}'")
        if part not in cur:
            return MISSING
        cur = cur[part]
    return cur


def texts(value: Any, field: str, where: Callable[[], str]) -> Iterator[str]:
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
                what = type_name(v)
                raise TrimError(f"{where()}: field '{field}' holds a list item that is {what}, expected strings")
    elif value is not None:
        raise TrimError(f"{where()}: field '{field}' is {type_name(value)}, expected a string or a list of strings")


def type_name(value: Any) -> str:
    names = {type(None): "null", dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", bytes: "bytes"}
    return names.get(type(value), type(value).__name__)


def top_column(field: str, names: Sequence[str], where: str) -> str:
    """The table column a (dotted) field lives in; an error listing the columns when there is none."""
    if field in names:
        return field
    top = field.split(".")[0]
    if top not in names:
        raise TrimError(f"{where}: no column '{top}' (available: {', '.join(names) or 'none'})")
    return top


def column_segments(values: Iterator[Any], top: str, field: str, label: str) -> Iterator[str]:
    """Segments from a stream of one column's values; an error when a nested field is in no row."""
    rows = found = 0
    for value in values:
        rows += 1
        value = lookup({top: value}, field, lambda r=rows: f"{label}: row {r}")
        if value is MISSING:
            continue
        found += 1
        yield from texts(value, field, lambda r=rows: f"{label}: row {r}")
    if rows and not found:
        raise TrimError(f"{label}: no row has the field '{field}'")
