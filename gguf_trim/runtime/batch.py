"""Continuous batched decoding through llama.cpp's batch API (llama_batch / llama_decode).

Why: one segment at a time, a small model on a CPU spends each decode step reading every
weight to produce one token. Decoding many sequences in one llama_decode call reads the
weights once per step for all of them, so a file of segments is translated several times
faster. Each segment is its own sequence id; when one finishes, its slot (sequence id and KV
cells) takes the next segment, so the batch stays full (continuous batching). Segments enter
longest first within blocks of a few batches (see longest_first), so the last steps of a file
are not one long segment decoded alone.

The tokens a segment's prompt shares with every other prompt (the chat template's system
turn, the few-shot examples) are decoded once into a holder sequence and copied to each slot
with llama_memory_seq_cp, which in a unified KV cache only tags cells: a slot then evaluates
only its own tail.

The context takes the loaded model's settings, flash attention included (Translator turns it
on): in a unified cache every token's attention spans the cells of all sequences, masked, and
llama.cpp's flash-attention kernel skips masked cells where the plain path multiplies them.

Greedy decoding follows llama-cpp-python's create_completion step by step (same prompt
tokens, same stop rules, same detokenizer, the script guard's mask per sequence), so a
segment's output can be compared with the one-at-a-time path token for token.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.runtime.guard import ScriptGuard


@dataclass
class Job:
    """One segment to decode: its prompt tokens and output budget."""

    index: int
    prompt: list[int]
    max_tokens: int
    attempt: int = 0  # 1 for a segment asked again (see Translator.reask)


@dataclass
class Done:
    """A finished segment: the raw output bytes and the number of generated tokens."""

    index: int
    text: str
    tokens: list[int]
    finish: str  # stop | length
    attempt: int = 0


@dataclass
class _Seq:
    job: Job
    slot: int
    fed: int  # prompt tokens already in the KV cache (shared prefix included)
    gen: list[int] = field(default_factory=list)
    text: bytes = b""
    multibyte_fix: int = 0
    rng: np.random.Generator | None = None


def common_prefix(seqs: list[list[int]]) -> list[int]:
    """The longest token prefix all sequences share."""
    if not seqs:
        return []
    first = seqs[0]
    n = len(first)
    for s in seqs[1:]:
        m = 0
        for a, b in zip(first[:n], s):
            if a != b:
                break
            m += 1
        n = m
    return first[:n]


def longest_first(jobs: Iterable[Job], block: int) -> Iterator[Job]:
    """The jobs in blocks of `block`, each block reordered by need (prompt plus output budget),
    largest first, ties in input order.

    Why: a step costs nearly as much for one sequence as for several, so a long segment that
    starts last leaves the batch nearly empty for its final steps; started first, it overlaps
    with the short ones. Blocks (not the whole input) keep the order local: a result waits for
    the segments before it for about a block (plus the slots), which bounds what the in-order
    writer holds and what an interrupted job redoes."""
    it = iter(jobs)
    while chunk := list(itertools.islice(it, max(1, block))):
        chunk.sort(key=lambda j: -(len(j.prompt) + j.max_tokens))
        yield from chunk


class BatchEngine:
    """A llama.cpp context with `parallel` sequence slots (plus one holding the shared prefix)
    on an already loaded llama_cpp.Llama, and the loop that keeps them busy."""

    def __init__(self, llm, n_ctx: int, parallel: int, threads: int | None = None, n_batch: int = 512):
        import llama_cpp
        from llama_cpp import _internals

        if parallel < 1:
            raise TrimError("--parallel must be at least 1")
        if parallel + 1 > llama_cpp.llama_max_parallel_sequences():
            raise TrimError(f"--parallel {parallel}: llama.cpp allows at most "
                            f"{llama_cpp.llama_max_parallel_sequences() - 1} sequences")
        self.llm = llm
        self.n_ctx = n_ctx
        self.parallel = parallel
        self.n_batch = n_batch
        self.n_vocab = llm.n_vocab()
        p = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
        p.n_ctx = n_ctx
        p.n_batch = n_batch
        p.n_ubatch = n_batch
        p.n_seq_max = parallel + 1
        p.kv_unified = True  # slots share the prefix cells (a non-unified cache would copy them)
        p.swa_full = True  # a sliding-window cache keeps every cell, so shared prefix cells stay valid
        if threads:
            p.n_threads = p.n_threads_batch = threads
        try:
            self._ctx = _internals.LlamaContext(model=llm._model, params=p, verbose=False)
        except ValueError as e:
            raise TrimError(f"llama.cpp cannot make a context of {n_ctx} tokens for {parallel} sequences: "
                            f"{e}") from None
        self.n_ctx = llama_cpp.llama_n_ctx(self._ctx.ctx)
        self._mem = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._prefix: list[int] = []
        self._extra: deque[Job] = deque()
        self._pieces: dict[int, bytes] = {}
        vocab = llm._model.vocab
        self._eog = np.zeros(self.n_vocab, dtype=bool)
        for i in range(self.n_vocab):
            self._eog[i] = llama_cpp.llama_vocab_is_eog(vocab, i)

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            self._ctx.close()
            self._ctx = None

    # -- low-level helpers -------------------------------------------------------------------

    def _piece(self, tok: int) -> bytes:
        """The bytes llama-cpp-python's detokenize gives a generated token (cached)."""
        got = self._pieces.get(tok)
        if got is None:
            got = self._pieces[tok] = self.llm._model.detokenize([tok])
        return got

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        """One llama_decode of (token, pos, seq, wants_logits) entries."""
        import llama_cpp

        b = self._batch
        for i, (tok, pos, seq, out) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = out
        b.n_tokens = len(entries)
        rc = llama_cpp.llama_decode(self._ctx.ctx, b)
        if rc == 1:
            raise TrimError(f"llama.cpp found no room in its KV cache ({self.n_ctx} tokens for {self.parallel} "
                            "sequences): raise --n-ctx or lower --parallel")
        if rc != 0:
            raise TrimError(f"llama_decode failed ({rc})")

    def _logits(self, i: int) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _set_prefix(self, prefix: list[int]) -> None:
        """Decode the shared prefix into sequence 0 (once per distinct prefix)."""
        import llama_cpp

        if prefix == self._prefix:
            return
        llama_cpp.llama_memory_clear(self._mem, True)
        self._prefix = []
        for s in range(0, len(prefix), self.n_batch):
            chunk = prefix[s:s + self.n_batch]
            self._decode([(t, s + j, 0, False) for j, t in enumerate(chunk)])
        self._prefix = list(prefix)

    # -- the loop ----------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job ahead of the input (while run() is going): a segment asked again."""
        self._extra.append(job)

    def run(self, jobs: Iterable[Job], guard: ScriptGuard | None = None, temperature: float = 0.0,
            seed: int | None = None, prefix: list[int] | None = None,
            stop: tuple[bytes, ...] = (b"\n",), ban: np.ndarray | None = None) -> Iterator[Done]:
        """Decode every job; yields each as it finishes (not in input order).

        `prefix`: tokens every job's prompt starts with (decoded once; a job whose prompt does
        not start with them is decoded whole). Greedy when temperature is 0; otherwise plain
        temperature sampling from a generator seeded by (seed, job index), so a segment's output
        does not depend on which segments share its batch. `ban`: a boolean mask of token ids
        never chosen. Jobs are admitted longest first within blocks of four batches (see
        longest_first); with one slot, in input order."""
        import llama_cpp

        prefix = list(prefix or [])
        pending = longest_first(jobs, 4 * self.parallel) if self.parallel > 1 else iter(jobs)
        self._extra.clear()
        free = list(range(self.parallel, 0, -1))  # slot ids 1..parallel; 0 holds the prefix
        active: list[_Seq] = []
        reserved = 0  # KV cells promised to active sequences
        exhausted = False
        self._set_prefix(prefix)
        plen = len(self._prefix)
        budget = self.n_ctx - plen

        def need(job: Job) -> int:
            own = len(job.prompt) - (plen if job.prompt[:plen] == self._prefix else 0)
            return own + job.max_tokens + 4  # llama-cpp-python may run 3 tokens past max_tokens inside a character

        waiting: Job | None = None
        while True:
            # admit jobs (re-asks first) into free slots while the KV budget allows
            while free:
                if waiting is None:
                    if self._extra:
                        waiting = self._extra.popleft()
                    elif not exhausted:
                        waiting = next(pending, None)
                        if waiting is None:
                            exhausted = True
                            break
                    else:
                        break
                    if not waiting.prompt:
                        raise TrimError("empty prompt")
                    if need(waiting) > budget:
                        raise TrimError(f"segment {waiting.index + 1}: its prompt and output ({need(waiting)} "
                                        f"tokens) do not fit --n-ctx {self.n_ctx}; raise --n-ctx")
                if reserved + need(waiting) > budget:
                    break
                slot = free.pop()
                llama_cpp.llama_memory_seq_rm(self._mem, slot, -1, -1)
                fed = 0
                if plen and waiting.prompt[:plen] == self._prefix and len(waiting.prompt) > plen:
                    llama_cpp.llama_memory_seq_cp(self._mem, 0, slot, -1, -1)
                    fed = plen
                rng = np.random.default_rng([seed or 0, waiting.index, waiting.attempt]) if temperature > 0 else None
                active.append(_Seq(waiting, slot, fed, rng=rng))
                reserved += need(waiting)
                waiting = None
            if not active:
                return
            # one step: a token for every generating sequence, then prompt chunks as room allows
            entries: list[tuple[int, int, int, bool]] = []
            owners: list[tuple[_Seq, int]] = []  # sequences whose logits this step gives, and where
            for s in active:
                if s.fed == len(s.job.prompt) and s.gen:
                    owners.append((s, len(entries)))
                    entries.append((s.gen[-1], len(s.job.prompt) + len(s.gen) - 1, s.slot, True))
            room = self.n_batch - len(entries)
            for s in active:
                if s.fed < len(s.job.prompt) and room > 0:
                    take = min(room, len(s.job.prompt) - s.fed)
                    last = s.fed + take == len(s.job.prompt)
                    for j in range(s.fed, s.fed + take):
                        entries.append((s.job.prompt[j], j, s.slot, last and j == s.fed + take - 1))
                    s.fed += take
                    room -= take
                    if last:
                        owners.append((s, len(entries) - 1))
            self._decode(entries)
            finished: list[_Seq] = []
            for s, k in owners:
                done = self._step(s, self._logits(k), guard, temperature, stop, ban)
                if done is not None:
                    finished.append(s)
                    yield done
            for s in finished:
                active.remove(s)
                reserved -= need(s.job)
                llama_cpp.llama_memory_seq_rm(self._mem, s.slot, -1, -1)
                free.append(s.slot)

    def _step(self, s: _Seq, logits: np.ndarray, guard: ScriptGuard | None, temperature: float,
              stop: tuple[bytes, ...], ban: np.ndarray | None = None) -> Done | None:
        """Choose the next token of one sequence and apply create_completion's stop rules to it."""
        if guard is not None or ban is not None:
            logits = logits.copy()
        if guard is not None:
            logits[guard.forbidden(guard.state_after(s.gen))] = -np.inf
        if ban is not None:
            logits[ban] = -np.inf
        if temperature > 0:
            z = logits.astype(np.float64) / temperature
            z -= z.max()
            p = np.exp(z)
            p /= p.sum()
            tok = int(s.rng.choice(self.n_vocab, p=p))
        else:
            tok = int(np.argmax(logits))
        if self._eog[tok]:
            return Done(s.job.index, s.text.decode("utf-8", errors="ignore"), s.gen, "stop", s.job.attempt)
        s.gen.append(tok)
        s.text += self._piece(tok)
        # llama-cpp-python holds back text that ends inside a UTF-8 character (its exact rule)
        for k, char in enumerate(s.text[-3:]):
            k = 3 - k
            for num, pattern in ((2, 192), (3, 224), (4, 240)):
                if num > k and pattern & char == pattern:
                    s.multibyte_fix = num - k
        if s.multibyte_fix > 0:
            s.multibyte_fix -= 1
            return None
        hits = [x for x in stop if x in s.text]
        if hits:
            cut = s.text[:s.text.index(hits[0])]
            return Done(s.job.index, cut.decode("utf-8", errors="ignore"), s.gen, "stop", s.job.attempt)
        if len(s.gen) >= s.job.max_tokens:
            return Done(s.job.index, s.text.decode("utf-8", errors="ignore"), s.gen, "length", s.job.attempt)
        return None
