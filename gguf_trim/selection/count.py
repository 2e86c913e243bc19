"""Counting how often each token of a vocabulary is used on a corpus, exactly as llama.cpp tokenizes.

Why not llama.cpp itself: llama-cpp-python tokenizes 0.5-1.8 MB/s here, too slow for corpora
of gigabytes. So worker processes (one per core) cut the corpus into the units llama.cpp
tokenizes independently (vocab/tokenizer.py's `Splitter`) and count them; each distinct unit is
then tokenized once by a `tokenizers` model built from the vocab (`unit_tokenizer`), and its
tokens are counted as often as the unit occurs. The regex module's Unicode tables and
llama.cpp's may disagree on rare characters, and the `tokenizers` model may break a tie
differently: so before the counts are trusted, a uniform sample of 2,000 segments is tokenized
by this path and by llama.cpp, and on any difference the whole corpus is counted by llama.cpp
instead (in the same workers). Counts are cached by (tokenizer identity, corpus sha256).
"""

from __future__ import annotations

import collections
import math
import os
import queue
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.files import cache_dir, save_cache
from gguf_trim.vocab.tokenizer import Splitter, Tally, fast_tokenize, splitter_for, tokenizer_key, unit_tokenizer
from gguf_trim.vocab.vocabulary import Vocab

SAMPLE_SEGMENTS = 2000  # segments compared with llama.cpp before the fast counts are trusted


# -- worker processes --------------------------------------------------------------------------
class Reservoir:
    """A uniform sample of k items from a stream of unknown length (Li's algorithm L: geometric
    skips, so most items cost no random draw)."""

    def __init__(self, k: int, seed: int = 0) -> None:
        self.k, self.n, self.items = k, 0, []
        self.rng = random.Random(seed)
        self.w = math.exp(math.log(self.rng.random()) / k)
        self.next = k + int(math.log(self.rng.random()) / math.log(1 - self.w))

    def add(self, xs: list) -> None:
        start = self.n
        if len(self.items) < self.k:
            take = xs[: self.k - len(self.items)]
            self.items.extend(take)
        end = start + len(xs)
        while self.next < end:
            self.items[self.rng.randrange(self.k)] = xs[self.next - start]
            self.w *= math.exp(math.log(self.rng.random()) / self.k)
            self.next += 1 + int(math.log(self.rng.random()) / math.log(1 - self.w))
        self.n = end


def merge_samples(parts: list[tuple[list, int]], k: int, seed: int = 0) -> list:
    """One sample of about k items from per-worker samples of (items, stream length), each
    worker's share proportional to how many items it saw."""
    rng = random.Random(seed)
    total = sum(n for _, n in parts) or 1
    out: list = []
    for items, n in parts:
        out += rng.sample(items, min(len(items), round(k * n / total)))
    return out


def _segments_of(item: list[str] | str) -> list[str]:
    """A work item is a list of segments, or a block of a plain-text corpus to split here."""
    if isinstance(item, str):
        from gguf_trim.selection.corpus import txt_block_segments

        return txt_block_segments(item)
    return item


def _fast_worker(splitter: Splitter, todo, done) -> None:
    """Count units of the work items in `todo` until None; report bytes per item, then
    (unit counts, sample of segments, segments seen)."""
    acc = Tally()
    sample = Reservoir(SAMPLE_SEGMENTS)
    try:
        while (item := todo.get()) is not None:
            segs = _segments_of(item)
            sample.add(segs)
            splitter.add_batch(segs, acc)
            done.put(("bytes", sum(map(len, map(str.encode, segs)))))
        done.put(("result", (splitter.total(acc), sample.items, sample.n)))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises
        done.put(("error", f"{type(e).__name__}: {e}"))


def _llama_worker(model_path: str, todo, done) -> None:
    try:
        from gguf_trim.runtime.llama import load_llama

        llm = load_llama(model_path, vocab_only=True)
        counts = np.zeros(llm.n_vocab(), dtype=np.int64)
        n = 0
        while (item := todo.get()) is not None:
            segs = _segments_of(item)
            ids: list[int] = []
            for seg in segs:
                ids.extend(llm.tokenize(seg.encode("utf-8"), add_bos=False, special=False))
            counts += np.bincount(np.asarray(ids, dtype=np.int64), minlength=len(counts))
            n += len(segs)
            done.put(("bytes", sum(map(len, map(str.encode, segs)))))
        done.put(("result", (counts, [], n)))
    except BaseException as e:  # noqa: BLE001
        done.put(("error", f"{type(e).__name__}: {e}"))


def _run_workers(target, arg, items: Iterable, workers: int, bar) -> tuple[list, int]:
    """Feed work items to `workers` processes running target(arg, todo, done); their final
    results and the bytes they counted. Each worker keeps its own totals, so the parent only reads."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    todo, done = ctx.Queue(maxsize=2 * workers), ctx.Queue()
    procs = [ctx.Process(target=target, args=(arg, todo, done), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    results: list = []
    nbytes = 0

    def handle(kind: str, val) -> None:
        nonlocal nbytes
        if kind == "bytes":
            nbytes += val
            bar.update(val)
        elif kind == "error":
            raise TrimError(f"counting failed in a worker: {val}")
        else:
            results.append(val)

    def drain() -> None:
        while True:
            try:
                handle(*done.get_nowait())
            except queue.Empty:
                return

    def check_alive() -> None:
        if not all(p.is_alive() or p.exitcode == 0 for p in procs):
            drain()
            raise TrimError("a counting worker died (out of memory?)")

    try:
        for item in items:
            while True:
                try:
                    todo.put(item, timeout=0.2)
                    break
                except queue.Full:  # read progress meanwhile
                    drain()
                    check_alive()
            drain()
        for _ in procs:
            todo.put(None)
        while len(results) < workers:
            try:
                handle(*done.get(timeout=0.2))
            except queue.Empty:
                check_alive()
    finally:
        for p in procs:
            if p.is_alive() and len(results) < workers:
                p.terminate()
            p.join()
    return results, nbytes


# -- driver ------------------------------------------------------------------------------------
@dataclass
class Counts:
    counts: np.ndarray  # int64 per token id
    segments: int
    bytes: int
    method: str  # "tokenizers" or "llama.cpp"
    seconds: float
    checked_segments: int = 0
    mismatch: str | None = None  # why the fast path was not trusted
    cached: bool = False

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / self.seconds if self.seconds else float("inf")


def _batches(segments: Iterable[str], batch_bytes: int = 1 << 20) -> Iterator[list[str]]:
    """Segments in lists of about batch_bytes characters."""
    batch: list[str] = []
    size = 0
    for s in segments:
        batch.append(s)
        size += len(s)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def count_tokens(vocab: Vocab, model_path: str | Path, segments: Callable[[], Iterable[str]], corpus_key: str,
                 total_bytes: int | None = None, workers: int | None = None, use_cache: bool = True,
                 progress: bool = True, force_llama: bool = False,
                 blocks: Callable[[], Iterable[str]] | None = None) -> Counts:
    """Token counts of the corpus (see the module docstring). `segments` is called again for a
    fallback; `blocks`, if given, yields the same text as plain-text blocks that the workers split
    (corpus.Corpus.txt_blocks), which keeps the parent from walking every line."""
    key = f"{tokenizer_key(vocab)[:20]}-{corpus_key[:20]}"
    path = cache_dir() / f"counts-{key}.npz"
    if use_cache and path.is_file() and not force_llama:
        try:
            with np.load(path, allow_pickle=False) as z:
                if len(z["counts"]) == vocab.n:
                    return Counts(z["counts"].astype(np.int64), int(z["segments"]), int(z["bytes"]), str(z["method"]),
                                  float(z["seconds"]), int(z["checked"]), None, cached=True)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recounted
    workers = max(1, workers or os.cpu_count() or 1)
    splitter = None if force_llama else splitter_for(vocab)
    res = None
    why_not = "asked for" if force_llama else None
    if splitter is None and not force_llama:
        why_not = f"no fast tokenizer for pre-tokenizer {vocab.pre!r}"
    source = blocks or (lambda: _batches(segments()))
    if splitter is not None:
        res, why_not = _count_fast(vocab, model_path, splitter, source(), total_bytes, workers, progress)
    if res is None:
        res = _count_with_llama(vocab, model_path, source(), total_bytes, workers, progress)
        res.mismatch = why_not
    if res.segments == 0:
        raise TrimError("the corpus holds no text")
    if use_cache:
        _save(path, res)
    return res


def _bar(total: int | None, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000, desc=desc, disable=not progress,
                leave=False, dynamic_ncols=True)


def _count_fast(vocab: Vocab, model_path, splitter: Splitter, items: Iterable, total_bytes, workers: int,
                progress: bool) -> tuple[Counts | None, str | None]:
    import concurrent.futures as cf

    from gguf_trim.runtime.llama import load_llama

    t0 = time.perf_counter()
    # The parent mostly waits on the workers: build the unit tokenizer and load llama.cpp's
    # vocabulary for the check meanwhile.
    with cf.ThreadPoolExecutor(2) as ex:
        tok_f = ex.submit(unit_tokenizer, vocab)
        llm_f = ex.submit(load_llama, model_path, True)
        with _bar(total_bytes, "counting tokens", progress) as bar:
            parts, nbytes = _run_workers(_fast_worker, splitter, items, workers, bar)
        tok, llm = tok_f.result(), llm_f.result()
    units = parts[0][0]
    for c, _, _ in parts[1:]:
        units.update(c)
    n_seg = sum(n for _, _, n in parts)
    sample = merge_samples([(x, n) for _, x, n in parts], SAMPLE_SEGMENTS)
    counts = np.zeros(vocab.n, dtype=np.int64)
    texts = [u for u in units if isinstance(u, str)]
    for u, c in units.items():
        if isinstance(u, int):
            counts[u] += c
    if texts:
        enc = tok.encode_batch_fast(texts, add_special_tokens=False)
        weights = np.fromiter((units[u] for u in texts), dtype=np.int64, count=len(texts))
        counts += id_counts([e.ids for e in enc], vocab.n, weights).astype(np.int64)
    try:
        mismatch = check_sample(vocab, llm, splitter, tok, sample)
    finally:
        llm.close()
    if mismatch is not None:
        return None, mismatch
    return Counts(counts, n_seg, nbytes, "tokenizers", time.perf_counter() - t0, len(sample)), None


def id_counts(id_lists: list[list[int]], n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """How often each of n ids occurs in the lists, each list counted weights[k] times (float64)."""
    lens = np.fromiter(map(len, id_lists), dtype=np.int64, count=len(id_lists))
    flat = np.fromiter((i for x in id_lists for i in x), dtype=np.int64, count=int(lens.sum()))
    w = None if weights is None else np.repeat(weights, lens)
    return np.bincount(flat, weights=w, minlength=n)[:n].astype(np.float64)


def check_sample(vocab: Vocab, llm, splitter: Splitter, tok, sample: list[str]) -> str | None:
    """None if the fast path tokenizes every sample segment as llama.cpp (`llm`) does, and cuts the
    sample, joined in batches, into the same units as one by one; else the first difference."""
    one_by_one = collections.Counter(p for s in sample for p in splitter.parts(s))
    if splitter.count_batch(sample) != one_by_one:
        return "cutting segments joined in a batch differs from cutting them one by one"
    if llm.n_vocab() != vocab.n:
        return f"llama.cpp reads {llm.n_vocab()} tokens, not {vocab.n}"
    for s, b in zip(sample, fast_tokenize(splitter, tok, sample)):
        if llm.tokenize(s.encode("utf-8"), add_bos=False, special=False) != b:
            return f"the fast tokenizer differs from llama.cpp on {s[:60]!r}"
    return None


def _count_with_llama(vocab: Vocab, model_path, items: Iterable, total_bytes, workers: int,
                      progress: bool) -> Counts:
    t0 = time.perf_counter()
    with _bar(total_bytes, "counting tokens with llama.cpp", progress) as bar:
        parts, nbytes = _run_workers(_llama_worker, str(model_path), items, workers, bar)
    counts = np.zeros(vocab.n, dtype=np.int64)
    for c, _, _ in parts:
        counts[: len(c)] += c[: vocab.n]
    n_seg = sum(n for _, _, n in parts)
    return Counts(counts, n_seg, nbytes, "llama.cpp", time.perf_counter() - t0)


def _save(path: Path, res: Counts) -> None:
    save_cache(path, lambda f: np.savez(f, counts=res.counts, segments=res.segments, bytes=res.bytes,
                                        method=res.method, seconds=res.seconds, checked=res.checked_segments))
