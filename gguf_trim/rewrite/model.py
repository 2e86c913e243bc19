"""Writing the trimmed model as one file or as a split set, all or nothing (`ModelWriter`).

Each output file is written by a `TrimWriter` (rewrite/writer.py), or, for a shard that holds no
vocab tensor, copied whole in the kernel by a `ShardCopier`. The files are renamed into place
together only after the set has been re-read.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from gguf_trim.errors import GGUFError, InternalError, TrimError
from gguf_trim.files import check_output, copy_range, temp_file
from gguf_trim.format.gguffile import GGUFFile, TensorInfo, pad_to
from gguf_trim.format.shards import GGUFModel, output_paths
from gguf_trim.rewrite.metadata import vocab_tensors
from gguf_trim.rewrite.padding import add_padding
from gguf_trim.rewrite.writer import TrimWriter
from gguf_trim.selection.selection import Selection


@dataclass
class TrimResult:
    output: Path
    n_vocab_original: int
    n_vocab_trimmed: int
    size_original: int
    size_trimmed: int
    sliced_tensors: list[str]
    merges_original: int
    merges_trimmed: int
    n_padding: int = 0  # tokens added to keep logits kernel-exact (see add_padding)
    n_suppressed: int = 0  # ids in tokenizer.ggml.suppress_tokens (vocab/suppress.py)
    outputs: list[Path] = field(default_factory=list)  # every file written (the shards of a split output)


class ShardCopier:
    """An unchanged shard of a split model, copied whole in the kernel to a temp file."""

    def __init__(self, src: GGUFFile, out: Path, sources: list[Path]):
        self.src, (self.out, self.folder) = src, check_output(out, sources)
        self.tmp: str | None = None
        self._fd = -1
        self._stop = threading.Event()

    def copy(self) -> None:
        self._fd, self.tmp = temp_file(self.out)
        copy_range(self.src, self._fd, 0, 0, self.src.size, self._stop)
        os.close(self._fd)
        self._fd = -1
        os.chmod(self.tmp, 0o644)
        if os.path.getsize(self.tmp) != self.src.size:
            raise InternalError(f"copy of {self.src.path} to {self.tmp} is incomplete")

    def commit(self) -> Path:
        os.replace(self.tmp, self.out)
        self.tmp = None
        return self.out

    def abort(self) -> None:
        self._stop.set()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.tmp and os.path.exists(self.tmp):
            os.unlink(self.tmp)
        self.tmp = None


LAYOUTS = ("same", "merge", "max-size")
# A trim copying at least this many bytes takes more than a few seconds: it shows a progress bar
# (when asked: the CLI asks when stderr is a terminal).
PROGRESS_MIN_BYTES = 10**9


class CopyProgress:
    """A tqdm bar (on stderr) of the bytes written so far to the temp files of a trim.

    Why by polling: the bytes are copied in the kernel (copy_file_range) by worker threads, in
    chunks of 256 MB; a thread here reads how much of each temp file is allocated (st_blocks)
    four times a second, which needs no hook in the copy loops and costs nothing measurable.
    The bar counts the unchanged bytes plus the vocab tensors' rows, the bulk of the output."""

    def __init__(self, writers: list, total: int, label: str):
        from tqdm import tqdm

        self.writers, self.total = writers, total
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr,
                        leave=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _written(self) -> int:
        n = 0
        for w in self.writers:
            try:
                n += os.stat(w.tmp).st_blocks * 512 if w.tmp else 0
            except OSError:
                pass
        return min(n, self.total)

    def _poll(self) -> None:
        while not self._stop.wait(0.25):
            self.bar.update(self._written() - self.bar.n)

    def close(self, done: bool = False) -> None:
        """Stop polling; `done`: show the bar full first."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        if done:
            self.bar.update(self.total - self.bar.n)
        self.bar.close()


class ModelWriter:
    """Writes the trimmed model, as one file or as a split set, all or nothing.

    `layout`: `same` keeps the source's files (one file stays one file; a split model keeps its
    shards, the vocab tensors in the shards that held them, every other shard copied whole in the
    kernel); `merge` writes one file; `max-size` splits like llama.cpp's gguf-split
    --split-max-size (tensors in the source order, a new shard when the next tensor would take the
    shard's tensor data past `max_size` bytes). Every file goes to a temp file first; the set is
    re-read as llama.cpp will read it, and only then are the files renamed into place (a failed
    rename takes back the ones already made), so no partial set of shards is left behind.
    """

    def __init__(self, src: GGUFModel, output: str | Path, n_vocab: int, check: bool = True,
                 hash_source: bool = False, layout: str = "same", max_size: int | None = None,
                 suppress: bool = True, progress: bool = False):
        if layout not in LAYOUTS:
            raise TrimError(f"unknown output layout {layout!r} ({', '.join(LAYOUTS)})")
        if (layout == "max-size") != (max_size is not None):
            raise TrimError("--split-max-size gives the size of each output shard")
        if max_size is not None and max_size <= 0:
            raise TrimError("--split-max-size must be a positive size")
        self.src, self.output, self.n_vocab = src, Path(output), n_vocab
        self.check, self.hash_source, self.layout, self.max_size = check, hash_source, layout, max_size
        self.suppress, self.progress = suppress, progress
        self._bar: CopyProgress | None = None
        check_output(self.output, src.paths)  # before anything else, for a fast refusal
        self.writers: list[TrimWriter | ShardCopier] = []
        self._sel: Selection | None = None
        self._copy_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._copies: concurrent.futures.Future | None = None
        self.started = False
        if layout != "max-size":
            self._make_writers(self._layout(None))

    @property
    def fixed_bytes(self) -> int:
        """Bytes copied unchanged: what starting before the selection is known overlaps."""
        return sum(w.fixed_bytes if isinstance(w, TrimWriter) else w.src.size for w in self.writers)

    def _layout(self, n_rows: int | None) -> list[tuple[list[TensorInfo], bool, GGUFFile | None]]:
        """Per output file: (tensors, carries the metadata, source shard copied whole or None)."""
        src = self.src
        if self.layout == "merge" or (self.layout == "same" and len(src.shards) == 1):
            return [(src.tensors, True, None)]
        vocab_names = {t.name for t in vocab_tensors(src, self.n_vocab)}
        if self.layout == "same":
            out = []
            for i, g in enumerate(src.shards):
                changed = i == 0 or any(t.name in vocab_names for t in g.tensors)
                out.append((g.tensors, i == 0, None if changed else g))
            return out
        assert n_rows is not None and self.max_size is not None
        shards: list[list[TensorInfo]] = [[]]
        size = 0
        for t in src.tensors:
            n = t.nbytes // self.n_vocab * n_rows if t.name in vocab_names else t.nbytes
            n = pad_to(n, src.alignment)
            if shards[-1] and size + n > self.max_size:
                shards.append([])
                size = 0
            shards[-1].append(t)
            size += n
        return [(ts, i == 0, None) for i, ts in enumerate(shards)]

    def _make_writers(self, layout: list[tuple[list[TensorInfo], bool, GGUFFile | None]]) -> None:
        paths = output_paths(self.output, len(layout))
        n, total = len(layout), len(self.src.tensors)
        for path, (tensors, meta, whole) in zip(paths, layout):
            if whole is not None:
                self.writers.append(ShardCopier(whole, path, self.src.paths))
            else:
                split = (len(self.writers), n, total) if n > 1 else None
                self.writers.append(TrimWriter(self.src, path, self.n_vocab, self.check, self.hash_source, tensors,
                                               meta, split, self.suppress))

    def _prepare(self, sel: Selection) -> None:
        """Pad the selection (once, for every file) and hand the rows to the writers."""
        if self._sel is not sel:
            self._sel, self._n_kept_before = sel, sel.n_kept
            self._pad = add_padding(sel, bool(vocab_tensors(self.src, self.n_vocab)))
            if self.layout == "max-size" and not self.writers:
                self._make_writers(self._layout(sel.n_kept + len(self._pad)))
        for w in self.writers:
            if isinstance(w, TrimWriter):
                w.prepare(sel, self._pad)

    def start(self, sel: Selection | None = None) -> ModelWriter:
        """Begin copying (without `sel`: before the tokens are chosen; not for `max-size`)."""
        if sel is not None:
            self._prepare(sel)
        elif self.layout == "max-size":
            return self
        self.started = True
        for w in self.writers:
            if isinstance(w, TrimWriter):
                w.start(sel)
        total = self.src.size
        if self.progress and total >= PROGRESS_MIN_BYTES:
            self._bar = CopyProgress(self.writers, total - self._vocab_bytes_dropped(sel), self.output.name)
        copiers = [w for w in self.writers if isinstance(w, ShardCopier)]
        if copiers:  # one after the other, beside the trimmed files
            self._copy_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            self._copies = self._copy_pool.submit(lambda: [c.copy() for c in copiers])
        return self

    def _vocab_bytes_dropped(self, sel: Selection | None) -> int:
        """Bytes of the vocab tensors' rows the output leaves out (0 before the selection is known)."""
        if sel is None:
            return 0
        n_rows = sel.n_kept + len(self._pad)
        return sum(t.nbytes // self.n_vocab * (self.n_vocab - n_rows) for t in vocab_tensors(self.src, self.n_vocab))

    def finish(self, sel: Selection) -> TrimResult:
        """Write the vocab tensors and headers, check the set, rename every file into place."""
        if not self.started:
            self.start(sel)
        self._prepare(sel)
        if self._bar is not None:  # started before the selection: now the dropped rows are known
            self._bar.total = self._bar.bar.total = self.src.size - self._vocab_bytes_dropped(sel)
        main = self.writers[0]
        assert isinstance(main, TrimWriter)
        for w in self.writers:
            if isinstance(w, TrimWriter):
                w.finish(sel)
        if self._copies is not None:
            self._copies.result()
        if self._bar is not None:
            self._bar.close(done=True)
        if len(self.writers) > 1:
            try:  # the temp set, read as llama.cpp reads a split model
                GGUFModel(None, paths=[w.tmp for w in self.writers]).close()
            except GGUFError as e:
                raise InternalError(f"the written shards do not form a split model: {e}") from None
        done: list[Path] = []
        try:
            for w in self.writers:
                done.append(w.commit())
        except OSError:
            for p in done:  # all or nothing
                p.unlink(missing_ok=True)
            raise
        vocab, n_rows = sel.vocab, len(main._rows)
        return TrimResult(done[0], vocab.n, n_rows, self.src.size, sum(p.stat().st_size for p in done),
                          sorted(t.name for w in self.writers if isinstance(w, TrimWriter) for t in w.sliced),
                          len(vocab.merges or ()), main.n_merges, n_rows - self._n_kept_before, main.n_suppressed,
                          done)

    def abort(self) -> None:
        """Stop every copy, then remove every temp file (no-op after a successful finish)."""
        if self._bar is not None:
            self._bar.close()
        for w in self.writers:
            w._stop.set()
        if self._copy_pool is not None:
            self._copy_pool.shutdown(wait=True)
        for w in self.writers:
            w.abort()
