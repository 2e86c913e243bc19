"""llama.cpp's tokenization, reproduced fast: the pre-tokenizer cut and the merge loop.

llama.cpp cuts text into independent units before any merge happens: first at user-defined
tokens (which it matches even without parse_special), then (BPE) at the pieces of the
pre-tokenizer regex named by `tokenizer.ggml.pre`, or (SPM) nowhere, although no merge can cross
a point where a run of U+2581 follows another character unless a vocab token spans one. Gemma 4
(BPE on SentencePiece-style text) is cut like SPM after llama.cpp's own cut at runs of newlines.
`Splitter` does this cut with the `regex` module (picklable, for worker processes); each unit is
then tokenized by a `tokenizers` model built from the vocabulary (`unit_tokenizer`: BPE from its
merges; SPM as a BPE whose merges are ranked by the score of their result, llama.cpp's bigram
order). The counting in selection/count.py checks this path against llama.cpp on a sample
before trusting it.
"""

from __future__ import annotations

import collections
import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from gguf_trim.files import cache_dir, save_cache
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


def literal_regex(words: list[str]) -> re.Pattern:
    """A fast "contains any of these" pattern: words holding another word are dropped, and the
    rest is factored into a trie, which the stdlib engine scans at hundreds of MB/s."""
    words = sorted(set(w for w in words if w))
    if len(words) <= 2000:  # quadratic, and only worth it for small sets
        words = [w for w in words if not any(o != w and o in w for o in words)]
    trie: dict = {}
    for w in words:
        d = trie
        for ch in w:
            d = d.setdefault(ch, {})
        d[""] = {}

    def emit(d: dict) -> str:
        alts = [re.escape(ch) + emit(sub) for ch, sub in sorted(d.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in d else body

    return re.compile(emit(trie))


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


def tokenizer_key(vocab: Vocab) -> str:
    return hashlib.sha256(f"{vocab.sha256}\0{vocab.add_space_prefix}".encode()).hexdigest()


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


def fast_tokenize(splitter: Splitter, tok, texts: list[str]) -> list[list[int]]:
    """Segments through the fast path, one by one: what the counts add up."""
    parts = [splitter.parts(t) for t in texts]
    units = sorted({p for ps in parts for p in ps if isinstance(p, str)})
    ids = dict(zip(units, (e.ids for e in tok.encode_batch_fast(units, add_special_tokens=False))))
    return [[i for p in ps for i in ((p,) if isinstance(p, int) else ids[p])] for ps in parts]
