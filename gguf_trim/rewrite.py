"""Writing the trimmed GGUF: new vocabulary metadata, vocab tensors sliced row by row.

Every row of a quantized matrix is an independent run of blocks, so keeping rows `kept` of
token_embd/output is byte-exact whatever the quant type. Tensors are streamed from the
memory map to a temp file next to the output, which is renamed into place only after it
has been re-read and (by default) loaded by llama.cpp in a child process: a vocabulary that
llama.cpp rejects can abort the process, and the child absorbs that.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from gguf.constants import GGUFValueType

from . import __version__
from .errors import GGUFError, TrimError
from .gguf_io import GGUFFile, OutTensor, TensorInfo, encode_field, write_gguf
from .select import Selection, kept_merges
from .vocab import CONTROL, NORMAL, SPECIAL_ID_KEYS, SUPPRESS_KEY, UNUSED

PROVENANCE_PREFIX = "gguf_trim."
ROW_CHUNK_BYTES = 32 << 20
PAD_MODULUS = 16
PAD_TEXT = "<|gguf_trim_pad_{}|>"


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
    untrained = [i for i in kept if vocab.types[i] == CONTROL
                 and any(w in vocab.tokens[i] for w in (b"unused", b"reserved"))]
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


SHA_PLACEHOLDER = "sha256-of-the-source-is-being-computed".ljust(64, "-")
KV_START = 24  # magic, version, tensor count, key/value count


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def vocab_tensors(g: GGUFFile, n_vocab: int) -> list[TensorInfo]:
    """Tensors with one row per token (token_embd, output, output.bias, per_layer_token_embd...)."""
    out = []
    for t in g.tensors:
        if t.shape[-1] == n_vocab:
            out.append(t)
        elif n_vocab in t.shape[:-1]:
            raise TrimError(f"{g.path}: tensor {t.name} {t.shape} has an n_vocab dimension that is not its "
                            "row dimension; gguf-trim does not know how to slice it")
    return out


def _sliced_writer(g: GGUFFile, t: TensorInfo, n_vocab: int, kept: np.ndarray):
    def write(fh: BinaryIO) -> None:
        rows = np.frombuffer(g.tensor_bytes(t), dtype=np.uint8).reshape(n_vocab, t.nbytes // n_vocab)
        step = max(1, ROW_CHUNK_BYTES // rows.shape[1])
        for a in range(0, len(kept), step):
            fh.write(rows[kept[a:a + step]].tobytes())
    return write


def _copy_writer(g: GGUFFile, t: TensorInfo):
    """Copy in the kernel (copy_file_range): the bytes never pass through this process, so the
    resident set stays small whatever the model size."""
    def write(fh: BinaryIO) -> None:
        fh.flush()
        src_off, dst_off, left = g.data_offset + t.offset, fh.tell(), t.nbytes
        try:
            while left:
                n = os.copy_file_range(g.fileno(), fh.fileno(), min(left, 1 << 30), src_off, dst_off)
                if n <= 0:
                    break
                src_off, dst_off, left = src_off + n, dst_off + n, left - n
        except (OSError, AttributeError):
            pass  # no copy_file_range here: finish from the memory map
        fh.seek(dst_off)
        if left:
            mv = g.tensor_bytes(t)[t.nbytes - left:]
            for a in range(0, left, 1 << 24):
                fh.write(mv[a:a + (1 << 24)])
    return write


def _provenance(g: GGUFFile, sel: Selection, source_sha: str, pad: list[int]) -> list[bytes]:
    """gguf_trim.* keys: where the file came from and how each new id maps back to the source
    (kept_ids[new_id]; padding tokens, appended last, repeat the rows named in padding_rows)."""
    kept = sel.kept_ids.astype(np.uint32)
    pad_rows = np.asarray(pad, dtype=np.uint32)
    src_name = g.path.name
    src_n = sel.vocab.n
    prev = g.get(PROVENANCE_PREFIX + "kept_ids")
    if isinstance(prev, np.ndarray) and len(prev) and kept.max() < len(prev):
        # trimming a trimmed file: map to the first source
        kept = prev.astype(np.uint32)[kept]
        pad_rows = prev.astype(np.uint32)[pad_rows]
        src_name = g.fields[PROVENANCE_PREFIX + "source_file"].text()
        source_sha = g.fields[PROVENANCE_PREFIX + "source_sha256"].text()
        src_n = int(g.get(PROVENANCE_PREFIX + "source_n_vocab"))
    S, U, A = GGUFValueType.STRING, GGUFValueType.UINT32, GGUFValueType.ARRAY
    return [
        encode_field(PROVENANCE_PREFIX + "version", S, __version__),
        encode_field(PROVENANCE_PREFIX + "source_file", S, src_name),
        encode_field(PROVENANCE_PREFIX + "source_sha256", S, source_sha),
        encode_field(PROVENANCE_PREFIX + "source_n_vocab", U, src_n),
        encode_field(PROVENANCE_PREFIX + "source_vocab_sha256", S, sel.vocab.sha256),
        encode_field(PROVENANCE_PREFIX + "langs", S, ",".join(sel.langs)),
        encode_field(PROVENANCE_PREFIX + "profile", S, sel.profile),
        encode_field(PROVENANCE_PREFIX + "kept_by_reason", S, json.dumps(sel.summary())),
        encode_field(PROVENANCE_PREFIX + "kept_ids", A, kept, U),
    ] + ([encode_field(PROVENANCE_PREFIX + "padding_rows", A, pad_rows, U)] if len(pad_rows) else [])


def _new_metadata(g: GGUFFile, sel: Selection, source_sha: str, pad: list[int]) -> tuple[list[bytes], int]:
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
        if name.startswith(PROVENANCE_PREFIX):
            continue
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
    kv.extend(_provenance(g, sel, source_sha, pad))
    return kv, len(merges or ())


def trim_file(src: GGUFFile, sel: Selection, out: str | Path, check: bool = True,
              source_sha256: str | None = None) -> TrimResult:
    """Write `src` restricted to the selection's tokens to `out`, atomically."""
    out = Path(out)
    if out.exists() and out.resolve() == src.path.resolve():
        raise TrimError(f"-o {out} is the input file; refusing to overwrite the input")
    if out.is_dir():
        raise TrimError(f"-o {out} is a directory; give a file name")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise TrimError(f"output folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise TrimError(f"output folder {folder} is not writable")
    vocab = sel.vocab
    # The source's sha256 (for provenance) is hashed in a thread while the tensors are copied:
    # hashlib releases the GIL, so on a multi-GB file this overlaps instead of adding seconds.
    # The header gets a same-length placeholder that is patched once the hash is known.
    hasher: concurrent.futures.Future | None = None
    sha = source_sha256
    if sha is None and PROVENANCE_PREFIX + "source_sha256" not in src.fields:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        hasher = pool.submit(file_sha256, src.path)
        pool.shutdown(wait=False)
        sha = SHA_PLACEHOLDER
    sliced = vocab_tensors(src, vocab.n)
    sliced_names = {t.name for t in sliced}
    n_kept_before = sel.n_kept
    pad = add_padding(sel, bool(sliced))
    kept = sel.kept_ids
    kv, n_merges = _new_metadata(src, sel, sha, pad)
    rows = np.concatenate([kept, np.asarray(pad, dtype=kept.dtype)])
    tensors = []
    for t in src.tensors:
        if t.name in sliced_names:
            shape = t.shape[:-1] + (len(rows),)
            tensors.append(OutTensor(t.name, shape, t.ggml_type, t.nbytes // vocab.n * len(rows),
                                     _sliced_writer(src, t, vocab.n, rows)))
        else:
            tensors.append(OutTensor(t.name, t.shape, t.ggml_type, t.nbytes, _copy_writer(src, t)))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as e:
        raise TrimError(f"cannot write in output folder {folder}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write_gguf(fh, kv, tensors, src.alignment, version=3)
            if hasher is not None:
                header = b"".join(kv)
                fh.seek(KV_START + header.index(SHA_PLACEHOLDER.encode()))
                fh.write(hasher.result().encode())
        os.chmod(tmp, 0o644)
        _check_written(tmp, len(rows), [t.name for t in src.tensors])
        if check:
            load_check(tmp, len(rows))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return TrimResult(out, vocab.n, len(rows), src.size, out.stat().st_size, sorted(sliced_names),
                      len(vocab.merges or ()), n_merges, len(rows) - n_kept_before)


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
import sys
from llama_cpp import Llama, llama_n_vocab
llm = Llama(sys.argv[1], vocab_only=True, verbose=False)
n = llama_n_vocab(llm._model.vocab)
ids = llm.tokenize("Hello, thế giới! Tiếng Việt 123".encode(), add_bos=False, special=False)
print(n, len(ids))
"""


def load_check(path: str | Path, n_vocab: int | None = None, timeout: float = 300) -> None:
    """Load the vocabulary with llama-cpp-python in a child process (llama.cpp aborts on some
    invalid vocabularies, which must not take this process down) and tokenize a probe text."""
    try:
        r = subprocess.run([sys.executable, "-c", _LOAD_CHECK, str(path)], capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TrimError(f"load check of {path} timed out") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr or "").strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {r.returncode}"
        raise TrimError(f"llama.cpp cannot load the trimmed vocabulary: {why}")
    n = int(r.stdout.split()[0])
    if n_vocab is not None and n != n_vocab:
        raise TrimError(f"llama.cpp loaded {n} tokens, expected {n_vocab}")
