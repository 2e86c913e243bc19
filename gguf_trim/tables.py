"""The one table renderer: Markdown tables (benchmarks, evaluations, docs) and aligned text tables (the demo)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A GitHub Markdown table, without a final newline. `align` has one letter per column: `l`
    (the default for missing letters) or `r` (right-aligned: numbers). Cells are str()-ed as they
    are: callers format numbers themselves."""
    rule = "|" + "".join("---:|" if (align[k:k + 1] == "r") else "---|" for k in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(rows: Iterable[Sequence[object]], widths: Sequence[int], align: str = "") -> str:
    """Fixed-width text columns, one line per row, without a final newline; `align` as in
    markdown_table (`l` pads on the right, `r` on the left)."""
    def cell(c: object, k: int) -> str:
        return f"{c!s:>{widths[k]}}" if align[k:k + 1] == "r" else f"{c!s:<{widths[k]}}"

    return "\n".join("".join(cell(c, k) for k, c in enumerate(row)) for row in rows)


def human_size(n: float) -> str:
    """Bytes as B, KiB, MiB or GiB, as the CLI and the benchmark tables print them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)
