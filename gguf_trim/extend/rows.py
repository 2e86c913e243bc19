"""Refining the rows that `extend` added: the half that needs no PyTorch.

`extend` gives each new compound token the mean of its pieces' rows, which costs bits per byte
until the rows are trained. Training (gguf_trim.extend.train, PyTorch) changes only those rows;
this module finds them (gguf_trim.extended_from_n_vocab), reads them as float32, and writes
trained rows back into a copy of the file: each row quantized to its tensor's own type with
extend's encoders, every other byte copied unchanged in the kernel, the copy re-read and loaded
by llama.cpp with its weights before it is renamed into place. Rows trained elsewhere come in
through an .npz (`--import-rows`), in the format `extend --export-rows` writes.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gguf_trim.errors import GGUFError, InternalError, TrimError
from gguf_trim.files import atomic_write, check_output, copy_range
from gguf_trim.format.gguffile import GGUFFile, OutTensor, write_gguf
from gguf_trim.format.keys import EXTENDED_FROM_N_VOCAB, REFINED_PREFIX, encode_record
from gguf_trim.format.quant import encode_rows, rows_float
from gguf_trim.format.shards import open_model
from gguf_trim.rewrite.metadata import vocab_tensors
from gguf_trim.runtime.loadcheck import weights_load_check
from gguf_trim.selection.corpus import open_corpus
from gguf_trim.vocab.vocabulary import USER_DEFINED, Vocab

TRAIN_HINT = ('refine trains with PyTorch and transformers, which are not installed: '
              'pip install -e ".[train]" (or make setup-train)')
SELF_TEXT = "self-text"  # the name refine's report gives the model's own continuations (self_text)


@dataclass
class AddedRows:
    """The tokens `extend` added and the matrices that hold a row for each."""

    ids: np.ndarray  # int64, ascending
    texts: list[str]
    tensors: list[str]  # 2-D tensors with one row per token: token_embd.weight, output.weight (untied)
    n_vocab: int
    n_embd: int


def npz_key(tensor: str) -> str:
    """The .npz name of a tensor's rows (as extend --export-rows writes them)."""
    return tensor.replace(".", "_")


def require_train_stack() -> None:
    """PyTorch and transformers are an optional extra: say in one line how to get them."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise TrimError(TRAIN_HINT) from None


def parse_mix(mix: str, n_corpora: int, self_text: bool = False) -> str | list[float]:
    """`--mix`: how often each `--corpus` is drawn for a training sequence. `auto` (in proportion to
    how many of its tokens are added ones: text that never uses them, such as English next to
    Vietnamese compounds, only teaches the new output rows to stay low, which they do anyway; the
    self-text, when it holds added tokens, a quarter of the sequences),
    `lines` (in proportion to its lines: all text pooled) or one weight per corpus (and one more,
    last, for the self-text when it is on)."""
    if mix in ("auto", "lines"):
        return mix
    try:
        weights = [float(x) for x in mix.split(",")]
    except ValueError:
        raise TrimError(f"--mix {mix!r}: give auto, lines or one weight per --corpus (e.g. 0.9,0.1)") from None
    if len(weights) != n_corpora + self_text:
        raise TrimError(f"--mix {mix!r}: {len(weights)} weights for {n_corpora} --corpus files"
                        + (" and the --self-text (give it the last weight, or --self-text 0)" if self_text else ""))
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise TrimError(f"--mix {mix!r}: weights must be >= 0 and not all 0")
    return weights


def check_texts(corpora: list[str], eval_texts: list[str]) -> None:
    """Each text once: the report keys its figures by path, and an --eval-text that is also a
    --corpus would be trained on."""
    seen = set()
    for c in [*corpora, *eval_texts]:
        key = c if c.startswith("hf:") else str(Path(c).resolve())
        if key in seen:
            raise TrimError(f"{c}: given twice (as --corpus or --eval-text)")
        seen.add(key)


def split_corpora(paths: list[str], heldout: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """(training, held-out) lines of each corpus: its segments shuffled (seeded), `heldout` of
    them (at most 5%) held out."""
    out = []
    rng = random.Random(seed)
    for p in paths:
        lines = text_segments(p)
        if len(lines) < 2:
            raise TrimError(f"{p}: fewer than 2 text segments")
        rng.shuffle(lines)
        k = max(1, min(heldout, len(lines) // 20))
        out.append((lines[k:], lines[:k]))
    return out


def text_segments(path: str) -> list[str]:
    """A text's non-blank segments."""
    return [x for x in open_corpus([path]).segments() if x.strip()]


def sample_lines(path: str, n: int, seed: int) -> list[str]:
    """Up to n segments of a text that is only scored (--eval-text), shuffled with its own seeded
    generator."""
    lines = text_segments(path)
    if not lines:
        raise TrimError(f"{path}: no text segments")
    random.Random(seed).shuffle(lines)
    return lines[:n]


def self_text(model: str | Path, start: int, lines: list[str], n: int, max_tokens: int = 48,
              seed: int = 0) -> list[str]:
    """The model's own greedy continuations (greedy_continuations) of the heads (first 4 words) of
    n lines with 6 words or more, each one line (head and continuation), dropped when a repetition
    loop fills it (fewer than half of its words distinct: a small model's loops would otherwise be
    much of the text).

    Why: greedy decoding writes a compound whole only where the compound scores above its first
    piece. In the model's own greedy text a compound follows exactly where the model was sure of
    it, so the choice loss there teaches the rows the model's own choices; in human text many
    compounds follow where the frozen model expected something else."""
    heads = [" ".join(x.split()[:4]) for x in lines if len(x.split()) >= 6]
    random.Random(seed).shuffle(heads)
    heads = heads[:n]
    out = []
    for h, c in zip(heads, greedy_continuations(model, start, heads, max_tokens)):
        words = (h + c).split()
        if len(words) >= 6 and len(set(words)) >= len(words) / 2:
            out.append(" ".join(words))
    return out


def greedy_continuations(model: str | Path, start: int, heads: list[str], max_tokens: int,
                         parallel: int = 16) -> list[str]:
    """What the model wrote before `extend`: greedy continuations (up to a newline or max_tokens)
    of each head through llama.cpp's batched decoding, with the added tokens (ids from `start`,
    AddedRows.ids[0]) banned and the head tokenized word by word (a compound spans two words, so
    none is matched): the token ids and the rows they use are the original file's."""
    from gguf_trim.runtime.batch import BatchEngine, Job
    from gguf_trim.runtime.llama import load_llama

    if not heads:
        return []
    llm = load_llama(model, n_ctx=512, flash_attn=True)
    try:
        jobs = [Job(k, head_tokens(llm, h), max_tokens) for k, h in enumerate(heads)]
        if any(not j.prompt for j in jobs):
            raise TrimError("an empty head line")
        n_ctx = parallel * (max(len(j.prompt) for j in jobs) + max_tokens + 8) + 64
        ban = np.zeros(llm.n_vocab(), dtype=bool)
        ban[start:] = True
        eng = BatchEngine(llm, n_ctx=n_ctx, parallel=parallel)
        try:
            done = {d.index: d.text for d in eng.run(jobs, ban=ban)}
        finally:
            eng.close()
    finally:
        llm.close()
    return [done[k] for k in range(len(heads))]


def head_tokens(llm, head: str) -> list[int]:
    """BOS (where the model adds one) and the head's words tokenized one by one."""
    ids = llm.tokenize(b"", add_bos=True, special=False)
    for j, w in enumerate(head.split()):
        ids += llm.tokenize((" " + w if j else w).encode(), add_bos=False, special=False)
    return ids


def open_single(model: str | Path) -> GGUFFile:
    """The model as one file: extend writes one, and refine copies it byte for byte."""
    with open_model(model) as m:
        if len(m.shards) > 1:
            raise TrimError(f"{model}: a split model; refine reads the single file that extend writes")
    return GGUFFile(model)


def added_rows(g: GGUFFile) -> AddedRows:
    """The ids extend appended (gguf_trim.extended_from_n_vocab .. n_vocab), checked to be what
    extend writes: USER_DEFINED tokens after the original vocabulary."""
    start = g.get(EXTENDED_FROM_N_VOCAB)
    if start is None:
        raise TrimError(f"{g.path}: not extended by gguf-trim (no {EXTENDED_FROM_N_VOCAB}); "
                        "run `gguf-trim extend` first")
    vocab = Vocab.from_gguf(g)
    start = int(start)
    if not 0 < start < vocab.n:
        raise TrimError(f"{g.path}: {EXTENDED_FROM_N_VOCAB} is {start}, but the file has {vocab.n} tokens")
    ids = np.arange(start, vocab.n, dtype=np.int64)
    types = g.get("tokenizer.ggml.token_type")
    if types is None or (np.asarray(types)[start:vocab.n] != USER_DEFINED).any():
        raise TrimError(f"{g.path}: the tokens after id {start} are not all USER_DEFINED as extend writes them")
    tensors = [t for t in vocab_tensors(g, vocab.n) if len(t.shape) == 2]
    if not any(t.name == "token_embd.weight" for t in tensors):
        raise TrimError(f"{g.path}: no token_embd.weight with {vocab.n} rows (a vocab-only file?)")
    texts = [vocab.tokens[i].decode("utf-8", "replace") for i in ids]
    return AddedRows(ids, texts, [t.name for t in tensors], vocab.n, int(tensors[0].shape[0]))


def read_rows(g: GGUFFile, added: AddedRows) -> dict[str, np.ndarray]:
    """The added rows of each tensor, dequantized to float32 (n_added, n_embd)."""
    return {name: rows_float(g, name, added.n_vocab, added.ids.tolist()) for name in added.tensors}


def save_rows(path: str | Path, added: AddedRows, rows: dict[str, np.ndarray]) -> None:
    """Rows as an .npz: ids, texts and one float32 array per tensor (extend --export-rows' format)."""
    arrays = {"ids": added.ids, "texts": np.asarray(added.texts)}
    arrays.update({npz_key(k): np.asarray(v, np.float32) for k, v in rows.items()})
    try:
        np.savez(path, **arrays)
    except OSError as e:
        raise TrimError(f"{path}: cannot write ({e.strerror or e})") from None


def load_rows(path: str | Path, added: AddedRows) -> dict[str, np.ndarray]:
    """Rows from an .npz, checked against the file they go into: the same ids and token texts,
    one finite (n_added, n_embd) array for each of the file's row tensors."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise TrimError(f"{path}: cannot read rows ({e})") from None
    with data:
        if "ids" not in data.files:
            raise TrimError(f"{path}: no 'ids' array (write it with --export-rows)")
        ids = np.asarray(data["ids"])
        if ids.shape != added.ids.shape or (ids != added.ids).any():
            raise TrimError(f"{path}: its ids ({len(ids)}, from {ids[:1].tolist()}) are not the {len(added.ids)} "
                            f"ids the model's extension added (from {int(added.ids[0])})")
        if "texts" in data.files and [str(x) for x in data["texts"]] != added.texts:
            raise TrimError(f"{path}: its token texts differ from the model's added tokens")
        rows = {}
        for name in added.tensors:
            key = npz_key(name)
            if key not in data.files:
                raise TrimError(f"{path}: no rows for {name} (array {key!r})")
            x = np.asarray(data[key])
            if x.shape != (len(added.ids), added.n_embd) or x.dtype.kind != "f":
                raise TrimError(f"{path}: {key} is {x.dtype} {x.shape}, expected float "
                                f"({len(added.ids)}, {added.n_embd})")
            if not np.isfinite(x).all():
                raise TrimError(f"{path}: {key} holds NaN or infinite values")
            rows[name] = x.astype(np.float32)
    return rows


def _runs(ids: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of consecutive ids."""
    cut = np.flatnonzero(np.diff(ids) != 1) + 1
    return [(int(r[0]), int(r[-1]) + 1) for r in np.split(ids, cut)]


def _copy(g: GGUFFile, fh, start: int, n: int) -> None:
    """Copy n bytes from offset `start` of g's file to the end of fh, in the kernel."""
    fh.flush()
    at = fh.tell()
    copy_range(g, fh.fileno(), start, at, n, threading.Event())
    fh.seek(at + n)


def _writer(g: GGUFFile, t, ids: np.ndarray | None = None, new: bytes = b""):
    """Stream tensor t: unchanged bytes copied, rows `ids` replaced by `new` (encoded rows)."""
    base = g.data_offset + t.offset

    def write(fh) -> None:
        if ids is None:
            _copy(g, fh, base, t.nbytes)
            return
        row = t.nbytes // t.shape[-1]
        done, used = 0, 0
        for a, b in _runs(ids):
            if a > done:
                _copy(g, fh, base + done * row, (a - done) * row)
            fh.write(new[used:used + (b - a) * row])
            used += (b - a) * row
            done = b
        if done < t.shape[-1]:
            _copy(g, fh, base + done * row, (t.shape[-1] - done) * row)
    return write


def write_rows(model: str | Path, output: str | Path, rows: dict[str, np.ndarray],
               meta: dict[str, str | int | float] | None = None, check: bool = True) -> Path:
    """Write a copy of `model` whose added rows are `rows` (float32, one array per row tensor),
    quantized to each tensor's own type; every other byte is copied unchanged (the metadata
    gains gguf_trim.refined_* keys). Atomic: temp file, re-read, llama.cpp load, rename."""
    out, _ = check_output(output, model)
    with open_single(model) as g:
        added = added_rows(g)
        if sorted(rows) != sorted(added.tensors):
            raise TrimError(f"rows given for {sorted(rows)}, the model's row tensors are {added.tensors}")
        encoded: dict[str, bytes] = {}
        for name, x in rows.items():
            t = g.tensor(name)
            x = np.asarray(x, np.float32)
            if x.shape != (len(added.ids), t.shape[0]) or not np.isfinite(x).all():
                raise TrimError(f"rows for {name}: {x.shape}, finite {bool(np.isfinite(x).all())}; expected finite "
                                f"({len(added.ids)}, {t.shape[0]})")
            encoded[name] = encode_rows(x, t.ggml_type)
            assert len(encoded[name]) == len(added.ids) * (t.nbytes // t.shape[-1])
        kv = [f.raw for name, f in g.fields.items() if not name.startswith(REFINED_PREFIX)]
        kv += encode_record(REFINED_PREFIX, meta or {})
        tensors = [OutTensor(t.name, t.shape, t.ggml_type, t.nbytes,
                             _writer(g, t, added.ids, encoded[t.name]) if t.name in encoded else _writer(g, t))
                   for t in g.tensors]

        def check_written(tmp: str) -> None:
            try:
                with GGUFFile(tmp) as h:
                    ok = [t.name for t in h.tensors] == [t.name for t in g.tensors] and \
                        len(h.get("tokenizer.ggml.tokens")) == added.n_vocab
            except GGUFError as e:
                raise InternalError(f"the written file does not parse: {e}") from None
            if not ok:
                raise InternalError("the written file does not hold the model's tensors and vocabulary")
            if check:
                weights_load_check(tmp, added.n_vocab)

        with atomic_write(out, check=check_written) as fh:
            write_gguf(fh, kv, tensors, g.alignment, g.version)
    return out


def import_rows(model: str | Path, rows_path: str | Path, output: str | Path, check: bool = True) -> Path:
    """Write `model` with the added rows taken from an .npz (rows trained elsewhere)."""
    check_output(output, model)
    with open_single(model) as g:
        rows = load_rows(rows_path, added_rows(g))
    return write_rows(model, output, rows, {"from": f"rows {Path(rows_path).name}"}, check=check)
