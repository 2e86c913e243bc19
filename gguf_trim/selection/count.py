"""Counting how often each token of a vocabulary is used on a corpus, exactly as llama.cpp tokenizes.

Why not llama.cpp itself: llama-cpp-python tokenizes 0.5-1.8 MB/s here, too slow for corpora
of gigabytes. llama.cpp cuts text into independent units before any merge happens: first at
user-defined tokens (which it matches even without parse_special), then (BPE) at the pieces of
the pre-tokenizer regex named by `tokenizer.ggml.pre`, or (SPM) nowhere, although no merge can
cross a point where a run of U+2581 follows another character unless a vocab token spans one.
Gemma 4 (BPE on SentencePiece-style text) is cut like SPM after llama.cpp's own cut at runs of
newlines, and no merge of its crosses such a point unless its result spans one. So worker
processes (one per core) cut the corpus into such units with the `regex` module and count them;
each distinct unit is then tokenized once by a `tokenizers` model built from the vocab (BPE from
its merges, for Gemma 4 with <0xNN> byte fallback; SPM as a BPE whose merges are ranked by the
score of their result, which is llama.cpp's bigram order), and its tokens are counted as often
as the unit occurs. The regex module's Unicode tables and llama.cpp's may disagree on rare characters, and the
`tokenizers` model may break a tie differently: so before the counts are trusted, a uniform
sample of 2,000 segments is tokenized by this path and by llama.cpp, and on any difference the
whole corpus is counted by llama.cpp instead (in the same workers). Counts are cached by
(tokenizer identity, corpus sha256).
"""

from __future__ import annotations

import collections
import hashlib
import math
import os
import queue
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.selection.selection import literal_regex
from gguf_trim.vocab.vocabulary import NORMAL, SPM_SPACE, USER_DEFINED, Vocab

# tokenizer.ggml.pre -> llama.cpp's regexes (src/llama-vocab.cpp, llm_tokenizer_bpe) and ignore_merges.
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
           r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool]] = {}
for _names, _rx, _ignore in (
        (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"), (_LLAMA3,), True),
        (("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2"), (_QWEN2,), False),
        (("qwen35",), (_QWEN35,), False),
        (("starcoder", "refact", "command-r", "smollm", "codeshell"), (r"\p{N}", _GPT2), False),
        (("gpt-2", "phi-2", "mpt", "olmo", "jais"), (_GPT2,), False)):
    for _n in _names:
        PRE_TOKENIZERS[_n] = (_rx, _ignore)

SPM_CHUNK = "\u2581+[^\u2581]*|[^\u2581]+"  # a run of U+2581 and the word after it
NEWLINE_RUNS = "[^\n]+|\n+"  # llama.cpp's pre-tokenizer for Gemma 4 (LLAMA_VOCAB_PRE_TYPE_GEMMA4)
SAMPLE_SEGMENTS = 2000  # segments compared with llama.cpp before the fast counts are trusted


@dataclass
class Tally:
    """What a worker accumulates: words of plain segments (all, and first of a segment), and the
    units of the segments cut one by one."""
    words: collections.Counter = field(default_factory=collections.Counter)
    firsts: collections.Counter = field(default_factory=collections.Counter)
    units: collections.Counter = field(default_factory=collections.Counter)


@dataclass(frozen=True)
class Splitter:
    """How llama.cpp cuts a text segment into units that tokenize independently (picklable)."""
    spm: bool
    regexes: tuple[str, ...]  # BPE pre-tokenizer regexes, applied in turn
    user_defined: tuple[tuple[str, int], ...]  # (text, id), longest first: llama.cpp's partition order
    add_space_prefix: bool
    crossing: tuple[str, ...]  # SPM tokens (Gemma 4: merge results) holding a U+2581 after another character
    # Gemma 4: cut at runs of newlines first; a run that is a token is taken whole (text, id)
    newline_runs: tuple[tuple[str, int], ...] | None = None

    @cached_property
    def _compiled(self):
        import regex

        ud = regex.compile("|".join(regex.escape(t) for t, _ in self.user_defined)) if self.user_defined else None
        cross = regex.compile("|".join(regex.escape(t) for t in self.crossing)) if self.crossing else None
        rxs = [regex.compile(r) for r in (self.regexes or (SPM_CHUNK,))]
        nl = None if self.newline_runs is None else (regex.compile(NEWLINE_RUNS), dict(self.newline_runs))
        # What sends a segment down the one-by-one path (see count_batch): user-defined or crossing
        # tokens, two spaces in a row, any whitespace but the plain space (BPE), U+2581 (SPM).
        lit = literal_regex([t for t, _ in self.user_defined] + [t.replace(SPM_SPACE, " ") for t in self.crossing]
                            + ["  "] + ([SPM_SPACE, "\n", "\r"] if self.spm else []))
        flag = re.compile(lit.pattern + ("" if self.spm else r"|[^\S ]"))
        return ud, cross, rxs, flag, nl

    def parts(self, text: str) -> list[str | int]:
        """The segment as units (str) and user-defined token ids (int), in order."""
        ud = self._compiled[0]
        frags: list[str | int] = [text]
        if ud is not None and ud.search(text):
            for tok, tid in self.user_defined:
                nxt: list[str | int] = []
                for f in frags:
                    if isinstance(f, str) and tok in f:
                        pieces = f.split(tok)
                        for k, p in enumerate(pieces):
                            if k:
                                nxt.append(tid)
                            if p:
                                nxt.append(p)
                    else:
                        nxt.append(f)
                frags = nxt
        out: list[str | int] = []
        prev_special = True
        for f in frags:
            if isinstance(f, int):
                out.append(f)
                prev_special = True
                continue
            out.extend(self.units(f, prev_special))
            prev_special = False
        return out

    def units(self, frag: str, prev_special: bool = True) -> list[str | int]:
        """The units of a fragment between user-defined tokens (ids for whole newline runs)."""
        _, cross, rxs, _, nl = self._compiled
        if self.spm:
            if self.add_space_prefix and prev_special:
                frag = " " + frag
            frag = frag.replace(" ", SPM_SPACE)
            if nl is not None:
                out: list[str | int] = []
                for run in nl[0].findall(frag):
                    if run[0] == "\n":
                        out.append(nl[1].get(run, run))
                    elif cross is not None and cross.search(run):
                        out.append(run)
                    else:
                        out.extend(rxs[0].findall(run))
                return out
            if cross is not None and cross.search(frag):
                return [frag]
            return rxs[0].findall(frag)
        return self._regex_pieces(frag)

    def _regex_pieces(self, text: str) -> list[str]:
        """BPE: the text cut by each pre-tokenizer regex in turn."""
        pieces = [text]
        for rx in self._compiled[2]:
            pieces = [q for p in pieces for q in _split_keeping_gaps(rx, p)]
        return pieces

    def count_batch(self, batch: list[str]) -> collections.Counter:
        """Units of many segments with their counts: `parts` of every segment, added up."""
        acc = Tally()
        self.add_batch(batch, acc)
        return self.total(acc)

    def add_batch(self, batch: list[str], acc: Tally) -> None:
        """Add a batch to the tally, at C speed for most text. A plain segment, whose only
        whitespace is single spaces and which holds no user-defined or crossing token, is cut at
        its spaces with str.split: every regex piece (BPE) or chunk (SPM) starts at the start of
        the segment or at a space that follows a non-space, and never holds a space past its first
        character, so each coarse unit (" " + word, or the first word) cuts into pieces on its own
        exactly as in context. Counting them needs no Python per segment: the words of the joined
        batch, minus the first words of the segments, are the ones after a space (`total`). Other
        segments are cut one by one (`parts`)."""
        special = self._special_segments(batch)
        if special:
            plain = [seg for k, seg in enumerate(batch) if k not in special]
            for k in special:
                acc.units.update(self.parts(batch[k]))
        else:
            plain = batch
        if plain:
            acc.words.update(" ".join(plain).split(" "))
            acc.firsts.update([seg.partition(" ")[0] for seg in plain])

    def total(self, acc: Tally) -> collections.Counter:
        """All units of a tally with their counts; each distinct coarse unit is cut once."""
        coarse: collections.Counter = collections.Counter()
        space = SPM_SPACE if self.spm else " "
        first_prefix = SPM_SPACE if self.spm and self.add_space_prefix else ""
        firsts = acc.firsts
        for w, n in acc.words.items():
            m = n - firsts.get(w, 0)
            if m:
                coarse[space + w] = m
        for w, n in firsts.items():
            if w or first_prefix:
                coarse[first_prefix + w] += n
        out = self.finish(coarse)
        out.update(acc.units)
        return out

    def finish(self, coarse: collections.Counter) -> collections.Counter:
        """Units of the coarse units (each distinct one cut once), with their counts."""
        if self.spm:
            return coarse  # a coarse unit is one SPM chunk already
        out: collections.Counter = collections.Counter()
        for u, n in coarse.items():
            pieces = self._regex_pieces(u)
            if len(pieces) == 1:
                out[u] += n
            else:
                for p in pieces:
                    out[p] += n
        return out

    def _special_segments(self, batch: list[str]) -> set[int]:
        """Indices of the segments that need the one-by-one path, found in one pass over the batch."""
        flag = self._compiled[3]  # Gemma 4: "\n" is in it, so newline runs only meet `parts`
        joined = "\x00".join(batch)
        special: set[int]
        if joined.count("\x00") != len(batch) - 1:  # NULs in the text: look at the segments one by one
            special = {k for k, seg in enumerate(batch) if flag.search(seg) or "\x00" in seg}
        else:
            starts = np.zeros(len(batch), dtype=np.int64)
            np.cumsum(np.fromiter(map(len, batch[:-1]), dtype=np.int64, count=len(batch) - 1) + 1, out=starts[1:])
            pos = [m.start() for m in flag.finditer(joined)]
            special = {i - 1 for i in np.searchsorted(starts, pos, side="right").tolist()}
        if self.spm and self.add_space_prefix:  # the prefix space would double a leading one
            special.update(k for k, seg in enumerate(batch) if seg.startswith(" "))
        return special


def _split_keeping_gaps(rx, text: str) -> list[str]:
    """Regex pieces of text plus the text between matches, as llama.cpp's unicode_regex_split keeps it."""
    found = rx.findall(text)
    if sum(map(len, found)) == len(text):
        return found
    out, at = [], 0
    for m in rx.finditer(text):
        if m.start() > at:
            out.append(text[at:m.start()])
        out.append(m.group())
        at = m.end()
    if at < len(text):
        out.append(text[at:])
    return out


def splitter_for(vocab: Vocab) -> Splitter | None:
    """The splitter for this vocabulary, or None if its pre-tokenizer is not known here."""
    ud = sorted(((vocab.pieces[i].decode("utf-8", "replace"), i)
                 for i in np.flatnonzero(vocab.types == USER_DEFINED).tolist()),
                key=lambda x: -len(x[0].encode()))
    ud = [(t, i) for t, i in ud if t]
    if vocab.is_bpe and not vocab.byte_level:
        if not vocab.whole_newline_runs:
            return None  # sarvam-moe and the like: no fast path checked against llama.cpp here
        # Gemma 4: no merge crosses where a U+2581 run follows another character, unless its result spans one
        crossing = tuple(sorted({a + b for a, b in vocab.merge_ranks if _crosses(a + b)}))
        runs = tuple((t, i) for t, i in ((x.decode("utf-8", "replace"), i) for i, x in enumerate(vocab.tokens))
                     if t and not t.strip("\n"))
        return Splitter(True, (), tuple(ud), False, crossing, runs)
    if vocab.is_bpe:
        pre = PRE_TOKENIZERS.get(vocab.pre or "")
        if pre is None:
            return None
        return Splitter(False, pre[0], tuple(ud), False, ())
    crossing = tuple(t for t in (x.decode("utf-8", "replace") for x in vocab.tokens) if _crosses(t))
    return Splitter(True, (), tuple(ud), vocab.add_space_prefix, crossing)


def _crosses(t: str) -> bool:
    """Does t hold a U+2581 right after another character (a point SPM chunks are cut at)?"""
    return SPM_SPACE in t[1:] and any(t[k] == SPM_SPACE and t[k - 1] != SPM_SPACE for k in range(1, len(t)))


def unit_tokenizer(vocab: Vocab):
    """A `tokenizers` model that tokenizes one unit the way llama.cpp's merge loop does."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    texts = [t.decode("utf-8", "replace") for t in vocab.tokens]
    ids: dict[str, int] = {}
    for i, t in enumerate(texts):
        ids.setdefault(t, i)
    if vocab.is_bpe and not vocab.byte_level:
        # Gemma 4: the merge loop on raw UTF-8; a character no token holds falls back to <0xNN>
        # tokens (the merges only join tokens into tokens, so it never takes part in one)
        merges = [(a, b) for a, b in vocab.merge_ranks if a in ids and b in ids and a + b in ids]
        return Tokenizer(models.BPE(ids, merges, byte_fallback=True, fuse_unk=False))
    if vocab.is_bpe:
        ignore = PRE_TOKENIZERS.get(vocab.pre or "", ((), False))[1]
        tok = Tokenizer(models.BPE(ids, list(vocab.merge_ranks), ignore_merges=ignore))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        return tok
    # SPM: llama.cpp merges the adjacent pair whose concatenation is the best-scored token (ties:
    # leftmost), so every split of a token into two tokens is a merge ranked by that token's score.
    cached = cache_dir() / f"spm-merges-{tokenizer_key(vocab)[:20]}.npy"
    try:
        pairs = np.load(cached, allow_pickle=False)
    except (OSError, ValueError):
        pairs = _spm_merges(vocab, texts, ids)
        save_cache(cached, lambda f: np.save(f, pairs))
    merges = [(texts[a], texts[b]) for a, b in pairs.tolist()]
    return Tokenizer(models.BPE(ids, merges, byte_fallback=True, fuse_unk=False))


def _spm_merges(vocab: Vocab, texts: list[str], ids: dict[str, int]) -> np.ndarray:
    """(left id, right id) of every split of a normal token into two tokens, best result first."""
    get = ids.get
    res, left, right = [], [], []
    for i in np.flatnonzero(vocab.types == NORMAL).tolist():
        t = texts[i]
        for k in range(1, len(t)):
            ia = get(t[:k])
            if ia is not None:
                ib = get(t[k:])
                if ib is not None:
                    res.append(i)
                    left.append(ia)
                    right.append(ib)
    scores = vocab.scores if vocab.scores is not None else np.zeros(vocab.n, np.float32)
    res_a = np.asarray(res, dtype=np.int64)
    left_a, right_a = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    order = np.lexsort((right_a, left_a, res_a, -scores[res_a].astype(np.float64)))
    return np.stack([left_a[order], right_a[order]], axis=1).astype(np.int32)


def save_cache(path: Path, write: Callable) -> None:
    """Write a cache file atomically with write(binary file); a cache that cannot be written is
    skipped, not an error (a read-only home must not stop a trim)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def text_tokenizer(vocab: Vocab):
    """The unit tokenizer with llama.cpp's cutting in front (regex pre-tokenizer for BPE, space
    escaping for SPM): for many short texts such as word lists, where one Rust call beats the
    per-segment path. Only for text without user-defined tokens or line breaks."""
    from tokenizers import Regex, normalizers, pre_tokenizers

    tok = unit_tokenizer(vocab)
    if vocab.is_bpe and not vocab.byte_level:  # Gemma 4: one unit per line of text, spaces escaped
        tok.normalizer = normalizers.Replace(" ", SPM_SPACE)
    elif vocab.is_bpe:
        regexes = PRE_TOKENIZERS.get(vocab.pre or "", (None,))[0]
        if regexes is None:
            return None
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), "isolated") for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        steps = [normalizers.Prepend(" ")] if vocab.add_space_prefix else []
        tok.normalizer = normalizers.Sequence(steps + [normalizers.Replace(" ", SPM_SPACE)])
    return tok


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
        from gguf_trim.rewrite.verify import load_llama

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


def cache_dir() -> Path:
    env = os.environ.get("GGUF_TRIM_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gguf-trim"


def tokenizer_key(vocab: Vocab) -> str:
    return hashlib.sha256(f"{vocab.sha256}\0{vocab.add_space_prefix}".encode()).hexdigest()


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

    from gguf_trim.rewrite.verify import load_llama

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


def fast_tokenize(splitter: Splitter, tok, texts: list[str]) -> list[list[int]]:
    """Segments through the fast path, one by one: what the counts add up."""
    parts = [splitter.parts(t) for t in texts]
    units = sorted({p for ps in parts for p in ps if isinstance(p, str)})
    ids = dict(zip(units, (e.ids for e in tok.encode_batch_fast(units, add_special_tokens=False))))
    return [[i for p in ps for i in ((p,) if isinstance(p, int) else ids[p])] for ps in parts]


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
