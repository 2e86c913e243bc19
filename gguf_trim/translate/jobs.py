"""Translation files in and out: segments read from .txt/.jsonl/.tsv and written back in the same shape,
as resumable jobs (`OutputJob`: each segment appended as it is done, a sidecar recording input and
settings), and `translate_file`, which runs a Translator over a file through one and says how many
output tokens it generated and how fast (so throughput is read from the job, without re-tokenizing)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError
from gguf_trim.files import atomic_write, file_sha256


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
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(state, ensure_ascii=False, indent=1) + "\n")


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


@dataclasses.dataclass
class FileResult:
    """What a file job did in this run: segments translated (after a --resume, those of this run only),
    output tokens generated (re-asks included, as in Translation.tokens), wall seconds of the decoding
    (model load excluded), and the Translations when kept."""

    segments: int = 0
    tokens: int = 0
    seconds: float = 0.0
    translations: list[Any] = dataclasses.field(default_factory=list)
    wrong_lang: int | None = None  # outputs not detected in the target language (None: no detector installed)
    dst: str = "vi"
    reask: bool = False

    @property
    def tok_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """The end-of-job line: "N segments, T output tokens in S s, X tok/s"."""
        line = (f"{self.segments} segments, {self.tokens} output tokens in {self.seconds:.1f} s, "
                f"{self.tok_per_s:.1f} tok/s")
        if self.wrong_lang:
            line += f"; warning: {wrong_lang_note(self.wrong_lang, self.dst, self.reask)}"
        return line


def wrong_lang_note(n: int, dst: str, reask: bool = False, what: str | None = None) -> str:
    """The one-line warning for outputs not in the target language (never silent: issue 27); `what`
    names them instead of the count ("the output (en) is")."""
    from gguf_trim.translate.prompts import language

    what = what or (f"{n} output is" if n == 1 else f"{n} outputs are")
    return (f"{what} not in {language(dst).name} (by the language detector)"
            + ("" if reask else "; --reask asks the model again"))


def translate_file(tr: Any, in_path: str | Path, out_path: str | Path | None, dst: str, src: str = "auto",
                   field: str = "text", column: int = 0, parallel: int | None = None, resume: bool = False,
                   keep: bool = False, progress: bool | None = None,
                   log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> FileResult:
    """Batched translation of a file by the Translator `tr`, each finished segment appended to `out_path`
    in order (an OutputJob: `resume` continues an interrupted one). Returns the counts of this run (and the
    Translations when `keep`) and logs them as the job's last line (FileResult.summary). An interrupt or a
    full disk leaves the finished segments saved and says how to go on."""
    from tqdm import tqdm

    segments, records = read_segments(in_path, field, column)
    job = None
    if out_path:
        opts = {"prompt": tr.prompt, "guard": tr.guard, "temperature": tr.temperature, "seed": tr.seed,
                "n_ctx": tr.n_ctx, "style": tr.style, "reask": tr.reask}
        job = OutputJob(out_path, in_path, job_settings(tr.model, opts, dst, src, field, column, in_path), records,
                        resume=resume)
    start = job.done if job else 0
    res = FileResult(dst=dst, reask=bool(tr.reask))
    from gguf_trim.runtime.langid import detector

    det = detector(required=False)
    if det is not None:
        res.wrong_lang = 0
    bar = tqdm(total=len(segments), initial=start, unit="seg",
               disable=not (sys.stderr.isatty() if progress is None else progress))
    t0 = time.perf_counter()
    try:
        for t in tr.translate_many(segments[start:], dst, src, parallel=parallel):
            if job:
                try:
                    job.write(t.text)
                except OSError as e:
                    raise TrimError(f"{out_path}: cannot write ({e.strerror or e}); {job.done} of {len(segments)} "
                                    "segments are saved: make room and continue with --resume") from None
            if keep:
                res.translations.append(t)
            res.segments += 1
            res.tokens += t.tokens
            if det is not None and t.text and det.check(t.text, t.dst, tr.langs)[1]:
                res.wrong_lang += 1
            bar.update(1)
            bar.set_postfix_str(f"{res.tokens / max(time.perf_counter() - t0, 1e-9):.1f} tok/s", refresh=False)
    except KeyboardInterrupt:
        if job:
            job.close()
            log(f"gguf-trim: interrupted: {job.done} of {len(segments)} segments saved in {out_path}; "
                "continue with --resume")
        raise
    finally:
        bar.close()
        if job:
            job.close()
    res.seconds = time.perf_counter() - t0
    if job and start:
        log(f"{out_path}: resumed at segment {start + 1}, {len(segments)} of {len(segments)} done")
    log(f"{out_path or in_path}: {res.summary()}")
    return res
