"""Translation files in and out, and side-by-side evaluation (chrF/BLEU with sacrebleu,
characters outside English/Vietnamese, tokens per second)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import TrimError
from .translate import Translator, foreign_chars


def read_segments(path: str | Path, field: str = "text", column: int = 0) -> tuple[list[str], list[Any]]:
    """Segments of a .txt (one per line), .jsonl (`field`) or .tsv (`column`) file, plus the
    parsed records so that the output can keep the same shape."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TrimError(f"{p}: cannot read ({e})") from None
    lines = raw.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if p.suffix == ".jsonl":
        recs = []
        for n, line in enumerate(lines, 1):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise TrimError(f"{p}:{n}: invalid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                raise TrimError(f"{p}:{n}: no string field {field!r} (choose it with --field)")
            recs.append(obj)
        return [r[field] for r in recs], recs
    if p.suffix == ".tsv":
        rows = [line.split("\t") for line in lines]
        for n, r in enumerate(rows, 1):
            if len(r) <= column:
                raise TrimError(f"{p}:{n}: no column {column} (choose it with --column)")
        return [r[column] for r in rows], rows
    return lines, lines


def write_segments(path: str | Path, src_path: str | Path, outputs: list[str], records: list[Any],
                   field: str = "text") -> None:
    """Line-aligned output in the input's format: .txt lines, .jsonl with `translation`, .tsv with
    the translation appended as a column."""
    p, suffix = Path(path), Path(src_path).suffix
    with open(p, "w", encoding="utf-8") as f:
        for out, rec in zip(outputs, records):
            if suffix == ".jsonl":
                f.write(json.dumps({**rec, "translation": out}, ensure_ascii=False) + "\n")
            elif suffix == ".tsv":
                f.write("\t".join(list(rec) + [out]) + "\n")
            else:
                f.write(out + "\n")


def read_pairs(path: str | Path, n: int | None = None) -> list[tuple[str, str]]:
    """English<TAB>Vietnamese[<TAB>...] pairs; the first n, spread over the file when n is smaller."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) >= 2]
    except OSError as e:
        raise TrimError(f"{path}: cannot read ({e.strerror})") from None
    if not rows:
        raise TrimError(f"{path}: no English<TAB>Vietnamese pairs")
    if n and n < len(rows):
        step = len(rows) / n
        rows = [rows[int(i * step)] for i in range(n)]
    return [(r[0], r[1]) for r in rows]


def evaluate(spec: str, pairs: list[tuple[str, str]], directions: Iterable[str] = ("en-vi", "vi-en"),
             temperature: float = 0.0, seed: int | None = None, threads: int | None = None,
             progress: bool = False) -> dict[str, Any]:
    """One model (`path`, `path:guard` or `path:noguard`) over the pairs, both directions."""
    import sacrebleu

    path, _, mode = spec.partition(":")
    guard = {"": None, "guard": True, "noguard": False}.get(mode)
    if mode and guard is None:
        raise TrimError(f"{spec}: suffix must be :guard or :noguard")
    tr = Translator(path, temperature=temperature, seed=seed, guard=guard, threads=threads)
    result: dict[str, Any] = {"model": spec, "guard": tr._guard is not None, "prompt": tr.prompt,
                              "temperature": temperature, "seed": seed, "directions": {}}
    try:
        for direction in directions:
            src, dst = direction.split("-")
            sources = [en if src == "en" else vi for en, vi in pairs]
            refs = [vi if dst == "vi" else en for en, vi in pairs]
            hyps, tokens, secs, confused, foreign = [], 0, 0.0, [], 0
            it = sources
            if progress:
                from tqdm import tqdm

                it = tqdm(sources, desc=f"{Path(path).name} {direction}", unit="seg", leave=False)
            for text in it:
                t = tr.translate(text, dst, src)
                hyps.append(t.text)
                tokens += t.tokens
                secs += t.seconds
                bad = foreign_chars(t.text)
                foreign += len(bad)
                if bad:
                    confused.append({"source": text, "output": t.text})
            chars = sum(len(h) for h in hyps)
            result["directions"][direction] = {
                "segments": len(hyps), "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
                "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score,
                "foreign_chars": foreign, "foreign_char_rate": foreign / chars if chars else 0.0,
                "outputs_with_foreign": len(confused), "examples_with_foreign": confused[:5],
                "tokens": tokens, "tok_per_s": tokens / secs if secs else 0.0,
                "outputs": hyps}
    finally:
        tr.close()
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | guard | direction | chrF | BLEU | outputs with foreign chars | foreign char rate | tok/s |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        for d, x in r["directions"].items():
            lines.append(f"| {Path(r['model'].split(':')[0]).name} | {'on' if r['guard'] else 'off'} | {d} | "
                         f"{x['chrf']:.2f} | {x['bleu']:.2f} | {x['outputs_with_foreign']}/{x['segments']} | "
                         f"{x['foreign_char_rate']:.5f} | {x['tok_per_s']:.1f} |")
    return "\n".join(lines)
