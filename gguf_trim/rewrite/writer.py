"""Writing one trimmed GGUF file: its header, the unchanged tensors copied, the vocab tensors sliced row by row.

Every row of a quantized matrix is an independent run of blocks, so keeping rows `kept` of
token_embd/output is byte-exact whatever the quant type. Tensors are streamed from the
memory map to a temp file next to the output, which is renamed into place only after it
has been re-read and (by default) loaded by llama.cpp in a child process: a vocabulary that
llama.cpp rejects can abort the process, and the child absorbs that. The temp file is open
across threads and written with pwrite, and a split set's files are renamed together
(rewrite/model.py), so this writer makes its temp files itself instead of using
files.atomic_write.
"""

from __future__ import annotations

import concurrent.futures
import mmap
import os
import struct
import subprocess
import threading
from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType

from gguf_trim.errors import GGUFError, InternalError
from gguf_trim.files import check_output, copy_range, temp_file
from gguf_trim.format import keys
from gguf_trim.format.gguffile import GGUF_MAGIC, GGUFFile, TensorInfo, enc_string, encode_field, pad_to
from gguf_trim.format.shards import SPLIT_KEYS, GGUFModel, split_keys
from gguf_trim.rewrite.metadata import is_trimmed, sha_placeholder, trimmed_metadata, vocab_tensors
from gguf_trim.runtime.loadcheck import finish_load_check, spawn_load_check
from gguf_trim.selection.selection import Selection

ROW_CHUNK_BYTES = 32 << 20


HEADER_SLACK = 64 << 10  # provenance strings, padding tokens, the padding key itself
KERNEL_RUN_MIN_BYTES = 16 << 10
HEADER_FILLER_MIN = 64  # room for the header padding key itself


class TrimWriter:
    """Streams one trimmed output file to a temp file next to it; `commit()` renames it into place.

    Layout: the header, then every tensor whose bytes stay the same, in the source order, then
    the vocab tensors (llama.cpp finds tensors by name, so their order is free). So the unchanged
    tensors' offsets depend only on the header size, and their kernel-side copy and (when asked
    for) the source's sha256 run in threads. Started before the selection is known (`start()`),
    the header is reserved to a bound (the trimmed metadata is never larger than the source's
    plus the provenance) and filled exactly with a `gguf_trim.header_padding` key: for multi-GB
    files the copy then overlaps choosing the tokens, at the cost of a few MB of padding. Started
    with the selection (`start(sel)`), the reserve is exact.

    One writer makes one file: the whole model, or one shard of a split output (`tensors`: the
    source tensors it holds; `metadata`: whether it carries the model's metadata, as the first
    shard does, or only the split keys; `split`: (index, count, tensor total) of the shard).
    """

    def __init__(self, src: GGUFModel, out: str | Path, n_vocab: int, check: bool = True,
                 hash_source: bool = False, tensors: list[TensorInfo] | None = None, metadata: bool = True,
                 split: tuple[int, int, int] | None = None, suppress: bool = True):
        out, folder = check_output(out, src.paths)
        self.suppress = suppress
        self.n_suppressed = 0  # ids in the written suppress list
        self.src, self.out, self.folder, self.n_vocab = src, out, folder, n_vocab
        self.metadata, self.split = metadata, split
        self.check = check and metadata
        # a trimmed source already records its first source's hash (if it was computed)
        self.hash_source = hash_source and metadata and not is_trimmed(src)
        names = {t.name for t in vocab_tensors(src, n_vocab)}
        tensors = src.tensors if tensors is None else tensors
        self.sliced = [t for t in tensors if t.name in names]
        self.fixed = [t for t in tensors if t.name not in names]
        al = src.alignment
        self.data_start = 0
        self.fixed_offsets, off = [], 0
        for t in self.fixed:
            self.fixed_offsets.append(off)
            off = pad_to(off + t.nbytes, al)
        self.fixed_end = off
        self.tmp: str | None = None
        self._twin: str | None = None
        self._kv: tuple[list[bytes], int] | None = None
        self._sel: Selection | None = None
        self._checker: subprocess.Popen | None = None
        self._fd = -1
        self._stop = threading.Event()
        self._copier: concurrent.futures.Future | None = None
        self._hasher: concurrent.futures.Future | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def _sha_slot(self) -> str | None:
        """What the metadata is made with: a same-length placeholder for the hash still being computed."""
        return sha_placeholder(len(self.src.shards)) if self.hash_source else None

    @property
    def fixed_bytes(self) -> int:
        return sum(t.nbytes for t in self.fixed)

    def _metadata(self, sel: Selection) -> tuple[list[bytes], int]:
        """This file's key/values: the trimmed model's (first shard or whole file), or only the
        split keys (later shards), plus the split keys of a split output."""
        tail = split_keys(*self.split) if self.split else []
        if not self.metadata:
            return tail, 0
        kv, n_merges, self.n_suppressed = trimmed_metadata(self.src, sel, self._sha_slot, self._pad, self.suppress)
        return kv + tail, n_merges

    def _header_bound(self) -> int:
        """An upper bound of the trimmed header: the source metadata (the vocabulary only shrinks),
        one id per token of provenance and one of the suppress list, the split keys and this file's
        tensor infos, plus slack."""
        kv = sum(len(f.raw or b"") for f in self.src.fields.values()) if self.metadata else 0
        infos = sum(len(t.name) + 40 + 8 * len(t.shape) for t in self.fixed + self.sliced)
        return 24 + kv + 8 * self.n_vocab + infos + HEADER_SLACK

    def start(self, sel: Selection | None = None) -> TrimWriter:
        """Begin copying. With `sel`, the header reserve is exact; without, a bound."""
        if sel is None:
            base = pad_to(self._header_bound(), self.src.alignment)
        else:
            assert self._sel is sel, "prepare(sel) first"
            self._kv = self._metadata(sel)
            base = pad_to(len(self._header(self._kv[0], self._infos(), reserve=False)), self.src.alignment)
        self.data_start = self._page_congruent(base)
        self._fd, self.tmp = temp_file(self.out)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        self._copier = self._pool.submit(self._copy_fixed)
        if self.hash_source:
            self._hasher = self._pool.submit(self.src.sha256, self._stop)
        return self

    def _runs(self) -> list[tuple[GGUFFile, int, int, int]]:
        """(source shard, source offset, output offset relative to data_start, bytes) of each
        stretch of unchanged tensors that lie back to back in one source file, so they stay back
        to back in the output."""
        runs: list[list] = []
        for t, off in zip(self.fixed, self.fixed_offsets):
            g = self.src.file_of(t)
            s = g.data_offset + t.offset
            if runs and runs[-1][0] is g and s - runs[-1][1] == off - runs[-1][2]:
                runs[-1][3] = s + t.nbytes - runs[-1][1]
            else:
                runs.append([g, s, off, t.nbytes])
        return [(g, a, b, c) for g, a, b, c in runs]

    def _page_congruent(self, base: int) -> int:
        """The first data offset >= base that puts the largest run of unchanged tensors at the same
        offset modulo the page size as in the source, so the kernel copies whole pages rather than
        shifted ones. The gap is filled by the header padding key."""
        runs = self._runs()
        if not runs:
            return base
        _, s, off, _ = max(runs, key=lambda r: r[3])
        page = max(mmap.PAGESIZE, self.src.alignment)
        want = (s - off) % page
        start = base if base % page == want else base + HEADER_FILLER_MIN
        return start + (want - start) % page

    def _copy_fixed(self) -> None:
        """Copy the unchanged tensors in the kernel (copy_file_range), one call per back-to-back
        stretch: their bytes never enter this process, so the resident set stays small."""
        for g, s, off, n in self._runs():
            copy_range(g, self._fd, s, self.data_start + off, n, self._stop)

    def _write_sliced(self, t: TensorInfo, rows: np.ndarray, at: int) -> None:
        """Write rows `rows` of vocab tensor t at output offset `at`. Long runs of consecutive
        kept rows (Qwen: ~16 rows of 2-3 KB) are copied in the kernel like the unchanged
        tensors; short ones (Gemma: ~3 rows of 720 B) are gathered with numpy in 32 MB chunks."""
        g = self.src.file_of(t)
        view = g.tensor_rows_as(t, self.n_vocab)
        row = view.shape[1]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate([[0], breaks])
        lengths = np.diff(np.concatenate([starts, [len(rows)]]))
        if len(rows) and lengths.mean() * row >= KERNEL_RUN_MIN_BYTES:
            base = g.data_offset + t.offset
            for i, n in zip(rows[starts].tolist(), lengths.tolist()):
                copy_range(g, self._fd, base + i * row, at, n * row, self._stop)
                at += n * row
            return
        step = max(1, ROW_CHUNK_BYTES // row)
        for a in range(0, len(rows), step):
            chunk = memoryview(view[rows[a:a + step]]).cast("B")
            done = 0
            while done < len(chunk):
                done += os.pwrite(self._fd, chunk[done:], at + done)
            at += len(chunk)
            # drop the mapped source pages just read from this process's resident set
            lo, hi = int(rows[a:a + step].min()), int(rows[a:a + step].max()) + 1
            g.release(t, lo * row, hi * row)

    def prepare(self, sel: Selection, pad: list[int]) -> None:
        """Fix the rows every vocab tensor keeps: the kept ids, then the padding rows (`pad`, which
        add_padding chose once for the whole model)."""
        if self._sel is sel:
            return
        self._sel, self._pad = sel, pad
        kept = sel.kept_ids
        self._rows = np.concatenate([kept, np.asarray(self._pad, dtype=kept.dtype)])

    def _infos(self) -> list[tuple[str, tuple[int, ...], int, int]]:
        """(name, shape, type, offset) of every output tensor: the unchanged ones, then the sliced."""
        infos = [(t.name, t.shape, t.ggml_type, off) for t, off in zip(self.fixed, self.fixed_offsets)]
        off, n = self.fixed_end, len(self._rows)
        for t in self.sliced:
            infos.append((t.name, t.shape[:-1] + (n,), t.ggml_type, off))
            off = pad_to(off + t.nbytes // self.n_vocab * n, self.src.alignment)
        self._end = off
        return infos

    def finish(self, sel: Selection) -> None:
        """Write the vocab tensors and the header for `sel`, re-read and load-check the temp file."""
        assert self._copier is not None and self.tmp is not None and self._sel is sel, "start(), prepare(sel) first"
        rows = self._rows
        infos = self._infos()
        if self._kv is None:
            self._kv = self._metadata(sel)
        checker = self._start_load_check(self._kv[0]) if self.check else None
        for t, (_, _, _, off) in zip(self.sliced, infos[len(self.fixed):]):
            self._write_sliced(t, rows, self.data_start + off)
        end = self.data_start + self._end
        self._copier.result()
        kv = self._kv[0]
        if self._hasher is not None:
            sha = self._hasher.result()
            # the metadata was made before the hash was known: only the placeholder changes
            slot = sha_placeholder(len(self.src.shards)).encode()
            kv = [x.replace(slot, sha.encode()) for x in kv]
            if len(sha) != len(slot) or sum(map(len, kv)) != sum(map(len, self._kv[0])):
                raise InternalError("the source sha256 was not computed")
        self.n_merges = self._kv[1]
        os.pwrite(self._fd, self._header(kv, infos), 0)
        os.ftruncate(self._fd, end)
        os.close(self._fd)
        self._fd = -1
        os.chmod(self.tmp, 0o644)
        check_written(self.tmp, len(rows) if self.metadata else 0, [name for name, *_ in infos])
        if checker is not None:
            finish_load_check(checker, len(rows))
            os.unlink(self._twin)
            self._twin = None

    def commit(self) -> Path:
        """Rename the finished temp file into place."""
        assert self.tmp is not None and self._fd < 0, "finish() first"
        os.replace(self.tmp, self.out)
        self.tmp = None
        return self.out

    def _start_load_check(self, kv: list[bytes]) -> subprocess.Popen:
        """llama.cpp loads the output's exact metadata from a header-only twin file, in a child
        process, while this one writes the tensors (our own parser re-reads the real file). The
        twin leaves out the split keys: llama.cpp would look for its shards."""
        fd, self._twin = temp_file(self.out, ".vocab.tmp")
        if self.split:
            kv = kv[:-len(SPLIT_KEYS)]
        with os.fdopen(fd, "wb") as f:
            f.write(GGUF_MAGIC + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv))
        return spawn_load_check(self._twin)

    def _header(self, kv: list[bytes], infos: list[tuple[str, tuple[int, ...], int, int]],
                reserve: bool = True) -> bytes:
        """Magic, counts, key/values, then (when the reserve exceeds the header by more than the
        alignment) a padding key sized so the data starts exactly at data_start, tensor infos."""
        ti = b"".join(enc_string(name) + struct.pack("<I", len(shape)) + struct.pack(f"<{len(shape)}Q", *shape)
                      + struct.pack("<IQ", ttype, off) for name, shape, ttype, off in infos)
        body = b"".join(kv)
        plain = GGUF_MAGIC + struct.pack("<IQQ", 3, len(infos), len(kv)) + body + ti
        if not reserve or pad_to(len(plain), self.src.alignment) == self.data_start:
            return plain + b"\0" * (pad_to(len(plain), self.src.alignment) - len(plain))
        filler_key = keys.HEADER_PADDING
        room = self.data_start - len(plain) - len(encode_field(filler_key, GGUFValueType.STRING, b""))
        if room < 0:
            raise InternalError(f"the trimmed header ({len(plain)} bytes) exceeds its reserve "
                            f"({self.data_start} bytes)")
        head = (GGUF_MAGIC + struct.pack("<IQQ", 3, len(infos), len(kv) + 1) + body
                + encode_field(filler_key, GGUFValueType.STRING, b" " * room) + ti)
        assert len(head) == self.data_start
        return head

    def abort(self) -> None:
        """Stop the threads and remove the temp files (no-op after a successful commit)."""
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for path in (self.tmp, self._twin):
            if path and os.path.exists(path):
                os.unlink(path)
        self.tmp = self._twin = None


def check_written(path: str, n_vocab: int, tensor_names: list[str]) -> None:
    """Re-read what was written with the same validating parser."""
    try:
        with GGUFFile(path) as g:
            n = len(g.get("tokenizer.ggml.tokens") or ())
            names = [t.name for t in g.tensors]
    except GGUFError as e:
        raise InternalError(f"the written file does not parse: {e}") from None
    if n != n_vocab or names != tensor_names:
        raise InternalError("the written file does not hold the expected vocabulary/tensors")


