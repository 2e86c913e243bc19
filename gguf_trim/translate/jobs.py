"""Translation files in and out, and side-by-side evaluation (chrF/BLEU with sacrebleu,
characters outside English/Vietnamese, tokens per second)."""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError
from gguf_trim.selection.corpus import file_sha256
from gguf_trim.translate.translator import Translation, Translator, foreign_chars


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


def format_record(suffix: str, out: str, rec: Any) -> str:
    """One output line in the input's format: .txt the translation, .jsonl the record with
    `translation`, .tsv the row with the translation appended as a column."""
    out = " ".join(out.split("\n"))
    if suffix == ".jsonl":
        return json.dumps({**rec, "translation": out}, ensure_ascii=False) + "\n"
    if suffix == ".tsv":
        return "\t".join(list(rec) + [out.replace("\t", " ")]) + "\n"
    return out + "\n"


def write_segments(path: str | Path, src_path: str | Path, outputs: list[str], records: list[Any],
                   field: str = "text") -> None:
    """Line-aligned output in the input's format (see format_record)."""
    p, suffix = Path(path), Path(src_path).suffix
    with open(p, "w", encoding="utf-8") as f:
        for out, rec in zip(outputs, records):
            f.write(format_record(suffix, out, rec))


STATE_SUFFIX = ".gguf-trim-job.json"


def state_path(out_path: str | Path) -> Path:
    """The sidecar of an unfinished job: OUTPUT.gguf-trim-job.json next to the output."""
    p = Path(out_path)
    return p.with_name(p.name + STATE_SUFFIX)


def count_lines(path: str | Path) -> int:
    """Complete lines (newlines) in a file."""
    with open(path, "rb") as f:
        return f.read().count(b"\n")


def job_settings(model: str | Path, opts: dict[str, Any], dst: str, src: str, field: str, column: int,
                 in_path: str | Path) -> dict[str, Any]:
    """What a resumed job must share with the interrupted one (`opts`: a Translator's resolved
    options: prompt, guard, temperature, seed, n_ctx, style, reask)."""
    p, suffix = Path(model).resolve(), Path(in_path).suffix
    return {"model": str(p), "model_size": p.stat().st_size, "to": dst, "from": src,
            "field": field if suffix == ".jsonl" else None, "column": column if suffix == ".tsv" else None,
            "prompt": opts["prompt"], "guard": bool(opts["guard"]), "temperature": opts["temperature"],
            "seed": opts["seed"], "n_ctx": opts["n_ctx"], "shots": opts["style"].shots,
            "lang_prefix": opts["style"].lang_prefix, "reask": opts["reask"]}


def job_state(in_path: str | Path, settings: dict[str, Any], segments: int,
              input_sha256: str | None = None) -> dict[str, Any]:
    """What a job records in its sidecar, and what a resumed job must match."""
    return {"input": str(Path(in_path).resolve()), "input_sha256": input_sha256 or file_sha256(in_path),
            "segments": segments, **settings}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Write a sidecar atomically (temp file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_state(path: Path, what: str) -> dict[str, Any]:
    """The sidecar of the unfinished job `what`, or a one-line error when there is none or it is unreadable."""
    if not path.exists():
        raise TrimError(f"--resume: no unfinished job for {what} ({path.name} is missing: the job finished, or "
                        "never started)")
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrimError(f"{path}: unreadable job state ({e})") from None
    if not isinstance(have, dict):
        raise TrimError(f"{path}: unreadable job state (not a JSON object)")
    return have


def check_state(path: Path, want: dict[str, Any], what: str) -> None:
    """Refuse to resume `what` unless its sidecar exists and records the same input and settings."""
    have = read_state(path, what)
    if "ray_shards" in have and "ray_shards" not in want:
        raise TrimError(f"--resume: {what} was started with --ray; resume it with --ray")
    diff = [f"{k}: {have.get(k)!r} then, {want.get(k)!r} now" for k in {**have, **want}
            if have.get(k) != want.get(k)]
    if diff:
        raise TrimError("--resume: the input or settings differ from the interrupted job (" + "; ".join(diff) + ")")


class OutputJob:
    """A translation job's output, written as it goes so that an interrupted run loses nothing.

    Why: translating a dataset takes hours. Each finished segment is appended in input order
    and flushed (fsync'd at most once a second), and a small sidecar file records the input's
    sha256 and the settings. `resume=True` checks both, cuts a partial last line (a killed
    process, a full disk) and continues after the last complete one; without it an unfinished
    job is refused rather than overwritten. The sidecar is removed when the job completes."""

    def __init__(self, out_path: str | Path, in_path: str | Path, settings: dict[str, Any], records: list[Any],
                 resume: bool = False, input_sha256: str | None = None):
        self.path, self.state = Path(out_path), state_path(out_path)
        self.suffix = Path(in_path).suffix
        self.records = records
        if self.path.resolve() == Path(in_path).resolve():
            raise TrimError(f"{out_path}: the output would overwrite the input")
        want = job_state(in_path, settings, len(records), input_sha256)
        self.done = 0
        if resume:
            self.done = self._check_resume(want)
            self._f = open(self.path, "a", encoding="utf-8")
        else:
            if self.state.exists():
                have = count_lines(self.path) if self.path.exists() else 0
                raise TrimError(f"{self.path} is an unfinished job ({have} of {len(records)} segments done): add "
                                f"--resume to continue it, or delete it and {self.state.name} to start over")
            write_state(self.state, want)
            self._f = open(self.path, "w", encoding="utf-8")
        self._synced = time.monotonic()

    def _check_resume(self, want: dict[str, Any]) -> int:
        check_state(self.state, want, f"{self.path}")
        data = self.path.read_bytes() if self.path.exists() else b""
        keep = data.rfind(b"\n") + 1  # a partial last line is dropped and redone
        if keep < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(keep)
        lines = data[:keep].decode("utf-8", errors="replace").split("\n")[:-1] if keep else []
        if len(lines) > len(self.records):
            raise TrimError(f"--resume: {self.path} has {len(lines)} lines for {len(self.records)} segments")
        for n, (line, rec) in enumerate(zip(lines, self.records), 1):
            if self.suffix == ".jsonl":
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                ok = isinstance(obj, dict) and {k: v for k, v in obj.items() if k != "translation"} == rec
            elif self.suffix == ".tsv":
                ok = line.split("\t")[:-1] == list(rec)
            else:
                ok = True
            if not ok:
                raise TrimError(f"--resume: {self.path}:{n} does not belong to input segment {n}")
        return len(lines)

    def write(self, out: str) -> None:
        """Append the next segment's line (in input order) and flush it."""
        self._f.write(format_record(self.suffix, out, self.records[self.done]))
        self._f.flush()
        self.done += 1
        if time.monotonic() - self._synced > 1.0:
            os.fsync(self._f.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        """Flush what was written; the job is complete when every segment is there."""
        if self._f.closed:
            return
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError:
            pass  # a full disk: the partial last line is cut on --resume
        try:
            self._f.close()
        except OSError:
            pass
        if self.done == len(self.records):
            self.state.unlink(missing_ok=True)


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
             progress: bool = False, sequential: bool = False, parallel: int | None = None,
             n_ctx: int = 4096, **translator_options: Any) -> dict[str, Any]:
    """One model (`path`, `path:guard` or `path:noguard`) over the pairs, both directions: chrF,
    BLEU, foreign characters, the detected language of every output and the share in the wrong
    one. Batched decoding unless `sequential` (the one-at-a-time path, for comparison)."""
    import sacrebleu

    from gguf_trim.runtime.langid import detector

    det = detector()
    path, _, mode = spec.partition(":")
    guard = {"": None, "guard": True, "noguard": False}.get(mode)
    if mode and guard is None:
        raise TrimError(f"{spec}: suffix must be :guard or :noguard")
    tr = Translator(path, temperature=temperature, seed=seed, guard=guard, threads=threads, n_ctx=n_ctx,
                    **translator_options)
    opts = {k: asdict(v) if is_dataclass(v) else v for k, v in {**translator_options, "style": tr.style}.items()}
    result: dict[str, Any] = {"model": spec, "guard": tr._guard is not None, "prompt": tr.prompt,
                              "temperature": temperature, "seed": seed, "decoding": "sequential" if sequential
                              else "batched", "options": opts, "directions": {}}
    try:
        for direction in directions:
            src, dst = direction.split("-")
            sources = [en if src == "en" else vi for en, vi in pairs]
            refs = [vi if dst == "vi" else en for en, vi in pairs]
            if sequential:
                outs: Iterable[Translation] = (tr.translate(text, dst, src) for text in sources)
            else:
                outs = tr.translate_many(sources, dst, src, parallel=parallel)
            if progress:
                from tqdm import tqdm

                outs = tqdm(outs, total=len(sources), desc=f"{Path(path).name} {direction}", unit="seg",
                            leave=False)
            done = list(outs)
            hyps = [t.text for t in done]
            tokens, secs = sum(t.tokens for t in done), sum(t.seconds for t in done)
            confused = [{"source": t.source, "output": t.text} for t in done if foreign_chars(t.text)]
            foreign = sum(len(foreign_chars(h)) for h in hyps)
            langs = [det.detect(h) for h in hyps]
            wrong = [{"source": t.source, "output": t.text, "lang": g} for t, g in zip(done, langs) if g != dst]
            chars = sum(len(h) for h in hyps)
            result["directions"][direction] = {
                "segments": len(hyps), "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
                "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score,
                "foreign_chars": foreign, "foreign_char_rate": foreign / chars if chars else 0.0,
                "outputs_with_foreign": len(confused), "examples_with_foreign": confused[:5],
                "wrong_lang": len(wrong), "wrong_lang_share": len(wrong) / len(hyps) if hyps else 0.0,
                "lang_counts": dict(Counter(langs).most_common()), "examples_wrong_lang": wrong[:5],
                "reasked": sum(1 for t in done if t.reasked),
                "tokens": tokens, "tok_per_s": tokens / secs if secs else 0.0,
                "outputs": hyps, "langs": langs}
    finally:
        tr.close()
    return result


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| model | guard | direction | chrF | BLEU | outputs with foreign chars | foreign char rate | "
             "wrong language | tok/s |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        o = r.get("options", {})
        flags = [k for k in ("shots", "lang_prefix") if o.get("style", {}).get(k)]
        flags += ["reask"] if o.get("reask") else []
        name = Path(r["model"].split(":")[0]).name + (f" ({', '.join(flags)})" if flags else "")
        for d, x in r["directions"].items():
            lines.append(f"| {name} | {'on' if r['guard'] else 'off'} | {d} | "
                         f"{x['chrf']:.2f} | {x['bleu']:.2f} | {x['outputs_with_foreign']}/{x['segments']} | "
                         f"{x['foreign_char_rate']:.5f} | {x['wrong_lang']}/{x['segments']} | "
                         f"{x['tok_per_s']:.1f} |")
    return "\n".join(lines)
