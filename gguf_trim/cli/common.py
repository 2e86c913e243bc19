"""What the command modules share: sizes in and out, JSON output. Only click and the standard
library here, so that `gguf-trim --help` stays light."""

from __future__ import annotations

import json
from typing import Any

from gguf_trim.errors import TrimError
from gguf_trim.files import atomic_write

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130



def parse_size(text: str) -> int:
    """A size as llama.cpp's gguf-split takes it: N followed by M or G (decimal: 1M = 10^6 bytes);
    K and a plain byte count are accepted too."""
    t = text.strip().upper().removesuffix("B")
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    digits = t[:-1] if scale != 1 else t
    if not digits.isdigit() or int(digits) <= 0:
        raise TrimError(f"--split-max-size {text!r}: give a positive size such as 500M or 4G")
    return int(digits) * scale


def write_text(path: str, text: str) -> None:
    """A report file (UTF-8), written all or nothing like every other output."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str, data: Any, **kw: Any) -> None:
    """A JSON report file (UTF-8, indented)."""
    write_text(path, json.dumps(data, indent=1, **kw))
