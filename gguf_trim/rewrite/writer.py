"""Writing the trimmed GGUF: new vocabulary metadata, vocab tensors sliced row by row.

Every row of a quantized matrix is an independent run of blocks, so keeping rows `kept` of
token_embd/output is byte-exact whatever the quant type. Tensors are streamed from the
memory map to a temp file next to the output, which is renamed into place only after it
has been re-read and (by default) loaded by llama.cpp in a child process: a vocabulary that
llama.cpp rejects can abort the process, and the child absorbs that.
"""

from __future__ import annotations

import concurrent.futures
import json
import mmap
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType

from gguf_trim import __version__
from gguf_trim.errors import GGUFError, TrimError
from gguf_trim.format.gguffile import GGUF_MAGIC, GGUFFile, TensorInfo, enc_string, encode_field, pad_to
from gguf_trim.format.shards import SPLIT_KEYS, GGUFModel, output_paths, split_keys
from gguf_trim.selection.selection import Selection, kept_merges
from gguf_trim.vocab.vocabulary import CONTROL, NORMAL, SPECIAL_ID_KEYS, SUPPRESS_KEY, UNUSED

PROVENANCE_PREFIX = "gguf_trim."
ROW_CHUNK_BYTES = 32 << 20
PAD_MODULUS = 16
PAD_TEXT = "<|gguf_trim_pad_{}|>"
# placeholder tokens no text produces, whatever their type (Gemma 4 stores <unusedN> as NORMAL)
UNTRAINED_TEXT = re.compile(rb"^<(unused\d+|\|reserved_special_token_\d+\|)>$")


def add_padding(sel: Selection, has_vocab_tensors: bool) -> list[int]:
    """Make the trimmed count congruent to the original modulo 16, so logits stay bit-exact on CPU.

    llama.cpp picks the kernel for the output matrix by its row count: tinyBLAS for F32/F16/BF16
    only when rows % 4 == 0, the interleaved "repack" kernels for Q4_0/Q4_K/IQ4_NL only when
    rows % 8 == 0, ggml's own dot product otherwise; they round differently. Padding uses
    tokens the model never emits: first dropped UNUSED tokens (Qwen's [PAD...]), kept as they
    are (added to the selection with reason "padding"); then new UNUSED tokens that repeat the
    row of an untrained control token (<unusedN>, <|reserved_special_token_N|>), else of the
    rarest kept token. Returns the source rows of the new tokens (appended after the kept ones).
    """
    vocab, keep = sel.vocab, sel.keep
    n_pad = (vocab.n - sel.n_kept) % PAD_MODULUS if has_vocab_tensors else 0
    if not n_pad:
        return []
    for i in np.flatnonzero(~keep & (vocab.types == UNUSED)).tolist()[:n_pad]:
        keep[i] = True
        sel.why[i] = "padding"
        sel.dropped_label.pop(i, None)
        n_pad -= 1
    if not n_pad:
        return []
    kept = sel.kept_ids.tolist()
    untrained = [i for i in kept if (vocab.types[i] == CONTROL and any(w in vocab.tokens[i] for w in
                                                                       (b"unused", b"reserved")))
                 or UNTRAINED_TEXT.match(vocab.tokens[i])]
    if untrained:
        src = untrained[-1]
    elif vocab.is_bpe or vocab.scores is None:
        src = kept[-1]  # BPE ids follow merge order: the last is the rarest
    else:
        normal = [i for i in kept if vocab.types[i] == NORMAL]
        src = min(normal, key=lambda i: vocab.scores[i]) if normal else kept[-1]
    return [src] * n_pad


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
    outputs: list[Path] = field(default_factory=list)  # every file written (the shards of a split output)




def sha_placeholder(n_files: int) -> str:
    """Stands in the metadata for the source's sha256 (one per shard, comma-separated) until it
    is known: the same length, so the header does not move when it is filled in."""
    return ",".join(f"sha256-of-source-file-{i + 1}-is-being-computed".ljust(64, "-") for i in range(n_files))


HEADER_SLACK = 64 << 10  # provenance strings, padding tokens, the padding key itself
COPY_CHUNK = 256 << 20
KERNEL_RUN_MIN_BYTES = 16 << 10
HEADER_FILLER_MIN = 64  # room for the header padding key itself


def vocab_tensors(g: GGUFFile | GGUFModel, n_vocab: int) -> list[TensorInfo]:
    """Tensors with one row per token (token_embd, output, output.bias, per_layer_token_embd...)."""
    out = []
    for t in g.tensors:
        if t.shape[-1] == n_vocab:
            if t.nbytes % n_vocab:  # a 1-D quantized tensor: one block holds several tokens' values
                raise TrimError(f"{g.path}: tensor {t.name} {t.shape} of type {t.type_name} has one value per token "
                                "packed in blocks; gguf-trim cannot slice it by token")
            out.append(t)
        elif n_vocab in t.shape[:-1]:
            raise TrimError(f"{g.path}: tensor {t.name} {t.shape} has an n_vocab dimension that is not its "
                            "row dimension; gguf-trim does not know how to slice it")
    return out


def is_trimmed(g: GGUFFile | GGUFModel) -> bool:
    """Was this file written by gguf-trim (its ids then map back through gguf_trim.kept_ids)?"""
    return isinstance(g.get(PROVENANCE_PREFIX + "kept_ids"), np.ndarray)


def _provenance(g: GGUFModel, sel: Selection, source_sha: str | None, pad: list[int]) -> list[bytes]:
    """gguf_trim.* keys: where the file came from and how each new id maps back to the source
    (kept_ids[new_id]; padding tokens, appended last, repeat the rows named in padding_rows).
    The source's sha256 is recorded only when it was computed (`source_sha`)."""
    kept = sel.kept_ids.astype(np.int64)
    pad_rows = np.asarray(pad, dtype=np.int64)
    src_name, src_size, src_n = g.path.name, g.size, sel.vocab.n
    if is_trimmed(g):
        # trimming a trimmed file: map every id to the first source. Its ids past kept_ids are its
        # own padding tokens; kept again they stay padding, after the real tokens.
        prev = g.get(PROVENANCE_PREFIX + "kept_ids").astype(np.int64)
        prev_pad = g.get(PROVENANCE_PREFIX + "padding_rows")
        first = np.concatenate([prev, np.asarray([] if prev_pad is None else prev_pad, dtype=np.int64)])
        if len(first) < sel.vocab.n:
            raise TrimError(f"{g.path}: gguf_trim.kept_ids/padding_rows do not cover its {sel.vocab.n} tokens")
        real, old_pad = kept[kept < len(prev)], kept[kept >= len(prev)]
        kept, pad_rows = first[real], np.concatenate([first[old_pad], first[pad_rows]])
        try:
            src_name = g.fields[PROVENANCE_PREFIX + "source_file"].text()
            src_n = int(g.get(PROVENANCE_PREFIX + "source_n_vocab"))
        except (KeyError, TypeError):
            raise TrimError(f"{g.path}: incomplete gguf_trim provenance (source file, n_vocab)") from None
        sha_field = g.fields.get(PROVENANCE_PREFIX + "source_sha256")
        source_sha = sha_field.text() if sha_field is not None else None
        size = g.get(PROVENANCE_PREFIX + "source_size")
        src_size = int(size) if size is not None else None
    S, U, A = GGUFValueType.STRING, GGUFValueType.UINT32, GGUFValueType.ARRAY
    return [
        encode_field(PROVENANCE_PREFIX + "version", S, __version__),
        encode_field(PROVENANCE_PREFIX + "source_file", S, src_name),
        *([encode_field(PROVENANCE_PREFIX + "source_size", GGUFValueType.UINT64, src_size)]
          if src_size is not None else []),
        *([encode_field(PROVENANCE_PREFIX + "source_sha256", S, source_sha)] if source_sha else []),
        encode_field(PROVENANCE_PREFIX + "source_n_vocab", U, src_n),
        encode_field(PROVENANCE_PREFIX + "source_vocab_sha256", S, sel.vocab.sha256),
        encode_field(PROVENANCE_PREFIX + "langs", S, ",".join(sel.langs)),
        encode_field(PROVENANCE_PREFIX + "profile", S, sel.profile),
        encode_field(PROVENANCE_PREFIX + "kept_by_reason", S, json.dumps(sel.summary())),
        encode_field(PROVENANCE_PREFIX + "kept_ids", A, kept, U),
    ] + ([encode_field(PROVENANCE_PREFIX + "padding_rows", A, pad_rows, U)] if len(pad_rows) else [])


def _new_metadata(g: GGUFModel, sel: Selection, source_sha: str | None, pad: list[int]) -> tuple[list[bytes], int]:
    vocab, keep = sel.vocab, sel.keep
    kept = sel.kept_ids
    new_id = np.full(vocab.n, -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))
    n_new = len(kept) + len(pad)
    existing = vocab.token_to_id
    pad_texts, k = [], 0
    while len(pad_texts) < len(pad):
        if PAD_TEXT.format(k).encode() not in existing:
            pad_texts.append(PAD_TEXT.format(k).encode())
        k += 1
    arch = g.arch
    merges = kept_merges(vocab, keep) if vocab.merges else None
    if vocab.merges and not merges:
        raise TrimError("the trim would leave no BPE merges, which llama.cpp refuses to load")
    kv: list[bytes] = []
    for name, f in g.fields.items():
        if name.startswith(PROVENANCE_PREFIX) or name in SPLIT_KEYS:
            continue  # a split output gets fresh split keys from its writer
        if name == "tokenizer.ggml.tokens":
            kv.append(encode_field(name, f.vtype, [vocab.tokens[i] for i in kept.tolist()] + pad_texts, f.subtype))
        elif name == "tokenizer.ggml.scores" and isinstance(f.value, np.ndarray):
            low = f.value[:vocab.n].min() if vocab.n else 0
            kv.append(encode_field(name, f.vtype, np.concatenate([f.value[:vocab.n][kept], [low] * len(pad)]),
                                   f.subtype))
        elif name == "tokenizer.ggml.token_type" and isinstance(f.value, np.ndarray):
            kv.append(encode_field(name, f.vtype, np.concatenate([f.value[:vocab.n][kept], [UNUSED] * len(pad)]),
                                   f.subtype))
        elif name == "tokenizer.ggml.merges":
            kv.append(encode_field(name, f.vtype, merges, f.subtype))
        elif name in SPECIAL_ID_KEYS and name in vocab.special_ids:
            old = vocab.special_ids[name]
            if not 0 <= old < vocab.n:
                continue  # out of range in the source too: llama.cpp ignored it there, drop it
            kv.append(encode_field(name, GGUFValueType.UINT32, int(new_id[old])))
        elif name == SUPPRESS_KEY and isinstance(f.value, np.ndarray):
            ids = [int(new_id[i]) for i in f.value.tolist() if 0 <= i < vocab.n and new_id[i] >= 0]
            if ids:
                kv.append(encode_field(name, f.vtype, ids, f.subtype))
        elif name == f"{arch}.vocab_size":
            kv.append(encode_field(name, f.vtype, n_new))
        else:
            assert f.raw is not None
            kv.append(f.raw)
    for name, old in vocab.implicit_special_ids.items():
        # llama.cpp gave the source this default id; after renumbering the default would name
        # another token, so the trimmed file says which one explicitly
        kv.append(encode_field(name, GGUFValueType.UINT32, int(new_id[old])))
    kv.extend(_provenance(g, sel, source_sha, pad))
    return kv, len(merges or ())


def check_output(out: str | Path, source: str | Path | list[Path]) -> tuple[Path, Path]:
    """Refuse an output that is the input (any of its shards), a directory, or in a missing or
    unwritable folder. Returns (output path, its folder)."""
    out = Path(out)
    sources = source if isinstance(source, list) else [source]
    if out.exists() and any(out.resolve() == Path(s).resolve() for s in sources):
        raise TrimError(f"-o {out} is the input file; refusing to overwrite the input")
    if out.is_dir():
        raise TrimError(f"-o {out} is a directory; give a file name")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise TrimError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrimError(f"output folder {folder} is not writable")
    return out, folder


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
                 split: tuple[int, int, int] | None = None):
        out, folder = check_output(out, src.paths)
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
        kv, n_merges = _new_metadata(self.src, sel, self._sha_slot, self._pad)
        return kv + tail, n_merges

    def _header_bound(self) -> int:
        """An upper bound of the trimmed header: the source metadata (the vocabulary only shrinks),
        one id per token of provenance, the split keys and this file's tensor infos, plus slack."""
        kv = sum(len(f.raw or b"") for f in self.src.fields.values()) if self.metadata else 0
        infos = sum(len(t.name) + 40 + 8 * len(t.shape) for t in self.fixed + self.sliced)
        return 24 + kv + 4 * self.n_vocab + infos + HEADER_SLACK

    def start(self, sel: Selection | None = None) -> TrimWriter:
        """Begin copying. With `sel`, the header reserve is exact; without, a bound."""
        if sel is None:
            base = pad_to(self._header_bound(), self.src.alignment)
        else:
            assert self._sel is sel, "prepare(sel) first"
            self._kv = self._metadata(sel)
            base = pad_to(len(self._header(self._kv[0], self._infos(), reserve=False)), self.src.alignment)
        self.data_start = self._page_congruent(base)
        self._fd, self.tmp = _temp_in(self.folder, self.out)
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
            _copy_range(g, self._fd, s, self.data_start + off, n, self._stop)

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
                _copy_range(g, self._fd, base + i * row, at, n * row, self._stop)
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
                raise TrimError("internal error: the source sha256 was not computed")
        self.n_merges = self._kv[1]
        os.pwrite(self._fd, self._header(kv, infos), 0)
        os.ftruncate(self._fd, end)
        os.close(self._fd)
        self._fd = -1
        os.chmod(self.tmp, 0o644)
        _check_written(self.tmp, len(rows) if self.metadata else 0, [name for name, *_ in infos])
        if checker is not None:
            _finish_load_check(checker, len(rows))
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
        fd, self._twin = tempfile.mkstemp(dir=self.folder, prefix=f".{self.out.name}.", suffix=".vocab.tmp")
        if self.split:
            kv = kv[:-len(SPLIT_KEYS)]
        with os.fdopen(fd, "wb") as f:
            f.write(GGUF_MAGIC + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv))
        return _spawn_load_check(self._twin)

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
        filler_key = PROVENANCE_PREFIX + "header_padding"
        room = self.data_start - len(plain) - len(encode_field(filler_key, GGUFValueType.STRING, b""))
        if room < 0:
            raise TrimError(f"internal error: the trimmed header ({len(plain)} bytes) exceeds its reserve "
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


class ShardCopier:
    """An unchanged shard of a split model, copied whole in the kernel to a temp file."""

    def __init__(self, src: GGUFFile, out: Path, sources: list[Path]):
        self.src, (self.out, self.folder) = src, check_output(out, sources)
        self.tmp: str | None = None
        self._fd = -1
        self._stop = threading.Event()

    def copy(self) -> None:
        self._fd, self.tmp = _temp_in(self.folder, self.out)
        _copy_range(self.src, self._fd, 0, 0, self.src.size, self._stop)
        os.close(self._fd)
        self._fd = -1
        os.chmod(self.tmp, 0o644)
        if os.path.getsize(self.tmp) != self.src.size:
            raise TrimError(f"copy of {self.src.path} to {self.tmp} is incomplete")

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
                 hash_source: bool = False, layout: str = "same", max_size: int | None = None):
        if layout not in LAYOUTS:
            raise TrimError(f"unknown output layout {layout!r} ({', '.join(LAYOUTS)})")
        if (layout == "max-size") != (max_size is not None):
            raise TrimError("--split-max-size gives the size of each output shard")
        if max_size is not None and max_size <= 0:
            raise TrimError("--split-max-size must be a positive size")
        self.src, self.output, self.n_vocab = src, Path(output), n_vocab
        self.check, self.hash_source, self.layout, self.max_size = check, hash_source, layout, max_size
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
                                               meta, split))

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
        copiers = [w for w in self.writers if isinstance(w, ShardCopier)]
        if copiers:  # one after the other, beside the trimmed files
            self._copy_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
            self._copies = self._copy_pool.submit(lambda: [c.copy() for c in copiers])
        return self

    def finish(self, sel: Selection) -> TrimResult:
        """Write the vocab tensors and headers, check the set, rename every file into place."""
        if not self.started:
            self.start(sel)
        self._prepare(sel)
        main = self.writers[0]
        assert isinstance(main, TrimWriter)
        for w in self.writers:
            if isinstance(w, TrimWriter):
                w.finish(sel)
        if self._copies is not None:
            self._copies.result()
        if len(self.writers) > 1:
            try:  # the temp set, read as llama.cpp reads a split model
                GGUFModel(None, paths=[w.tmp for w in self.writers]).close()
            except GGUFError as e:
                raise TrimError(f"internal error: the written shards do not form a split model: {e}") from None
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
                          len(vocab.merges or ()), main.n_merges, n_rows - self._n_kept_before, done)

    def abort(self) -> None:
        """Stop every copy, then remove every temp file (no-op after a successful finish)."""
        for w in self.writers:
            w._stop.set()
        if self._copy_pool is not None:
            self._copy_pool.shutdown(wait=True)
        for w in self.writers:
            w.abort()


def _temp_in(folder: Path, out: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise TrimError(f"cannot write in output folder {folder}: {e.strerror}") from None


def _copy_range(src: GGUFFile, fd: int, s: int, d: int, left: int, stop: threading.Event) -> None:
    """Copy bytes [s, s+left) of the source file to offset d of `fd`, in the kernel where
    copy_file_range works, else through the memory map."""
    while left and not stop.is_set():
        try:
            n = os.copy_file_range(src.fileno(), fd, min(left, COPY_CHUNK), s, d)
        except (OSError, AttributeError):
            n = os.pwrite(fd, src.view(s, min(left, COPY_CHUNK)), d)
        if n <= 0:
            raise OSError("copy of tensor data stalled")
        s, d, left = s + n, d + n, left - n


def _check_written(path: str, n_vocab: int, tensor_names: list[str]) -> None:
    """Re-read what was written with the same validating parser."""
    try:
        with GGUFFile(path) as g:
            n = len(g.get("tokenizer.ggml.tokens") or ())
            names = [t.name for t in g.tensors]
    except GGUFError as e:
        raise TrimError(f"internal error: the written file does not parse: {e}") from None
    if n != n_vocab or names != tensor_names:
        raise TrimError("internal error: the written file does not hold the expected vocabulary/tensors")


_LOAD_CHECK = r"""
import ctypes, os, sys
import llama_cpp
from llama_cpp import Llama, llama_n_vocab
err = os.fdopen(os.dup(2), "w")  # llama-cpp-python sends fd 2 to /dev/null while loading
last = [0]
@llama_cpp.llama_log_callback
def log(level, text, user_data):
    if level != 5:  # 5 continues the previous message
        last[0] = level
    if last[0] == 4:  # errors only: the reason a load fails
        err.write(text.decode("utf-8", "replace"))
        err.flush()
llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
llm = Llama(sys.argv[1], vocab_only=True, verbose=False)
n = llama_n_vocab(llm._model.vocab)
ids = llm.tokenize("Hello, thế giới! Tiếng Việt 123".encode(), add_bos=False, special=False)
print(n, len(ids))
"""


def _spawn_load_check(path: str | Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _LOAD_CHECK, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _failure_reason(err: str, returncode: int) -> str:
    """One line on why the child failed: llama.cpp's own error if it logged one, else the signal or
    the child's last line (the Python exception)."""
    lines = [ln.strip() for ln in (err or "").splitlines() if ln.strip()]
    for ln in lines:
        if "error loading model:" in ln:
            return ln.split("error loading model:", 1)[1].strip()
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"llama.cpp crashed ({name})"
    return lines[-1] if lines else f"exit code {returncode}"


def _finish_load_check(proc: subprocess.Popen, n_vocab: int | None, timeout: float = 300,
                       what: str = "the trimmed vocabulary") -> None:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TrimError("the llama.cpp load check timed out") from None
    if proc.returncode != 0:
        raise TrimError(f"llama.cpp cannot load {what}: {_failure_reason(err, proc.returncode)}")
    n = int(out.split()[0])
    if n_vocab is not None and n != n_vocab:
        raise TrimError(f"llama.cpp loaded {n} tokens, expected {n_vocab}")


def load_check(path: str | Path, n_vocab: int | None = None, timeout: float = 300,
               what: str = "the trimmed vocabulary") -> None:
    """Load the vocabulary with llama-cpp-python in a child process (llama.cpp aborts on some
    invalid vocabularies, which must not take this process down) and tokenize a probe text."""
    _finish_load_check(_spawn_load_check(path), n_vocab, timeout, what)
