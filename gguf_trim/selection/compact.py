"""The compact profile: from the lossless set of the languages, keep the tokens their text is likely to
use, up to a target size (or above a minimum count), and drop the rest leaf first.

Why several signals: a corpus of a few MB uses only ~30k ids, and a kept set of just those makes
10-30% of unseen lines tokenize differently. Three rankings are combined, each over the same
candidates (the lossless set minus what must stay):

- corpus: how often the token occurs in the given corpus, counted as llama.cpp tokenizes;
- words: how much word-frequency mass of the languages' common words (wordfreq's lists, Zipf >= 3,
  i.e. at least once per million words; as "w", " w", "W", " W") the token takes part in; a language
  wordfreq has no list for (Thai) is chosen by the corpus alone, which it then needs;
- prior: the tokenizer's own order, the BPE merge rank or the SPM score, which follows how common
  the token was in the tokenizer's (multilingual) training text.

A token's priority is its best rank in any of the three (a round robin over the lists), so each
signal brings its most certain tokens first; the plan says which signal kept each token. The
prior knows nothing of languages, so a token that only common words of other languages of the same
scripts use (and neither the corpus nor the kept languages' words) is moved behind all others in it.
Dropping goes from the lowest priority up, but only tokens no kept token is built from (leaves),
so the kept set stays closed: a token becomes droppable once everything built from it is gone.
"""

from __future__ import annotations

import heapq
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.langs import LanguageSet, language_set
from gguf_trim.langs.table import LANGUAGES
from gguf_trim.rewrite.padding import PAD_MODULUS  # the rewrite keeps n_vocab congruent to the original modulo this
from gguf_trim.selection.selection import Selection, select_lossless
from gguf_trim.vocab.vocabulary import SPECIAL_TYPES, Vocab

WORD_MIN_FREQ = 1e-6  # Zipf 3: the usual cut-off for a "common" word
SIGNALS = ("corpus", "words", "prior")
PROTECTED = ("special", "special-id", "byte", "keep-list")


@dataclass
class Evidence:
    """Per-token signals for the compact profile (arrays of length n_vocab)."""
    corpus: np.ndarray  # int64 counts (zeros without a corpus)
    words: np.ndarray  # float64 word-frequency mass
    prior: np.ndarray  # int64 rank in the tokenizer's own order, 0 = most common
    foreign: np.ndarray | None = None  # common word forms of other Latin-script languages using the token
    info: dict = field(default_factory=dict)  # how the counts were made (for the plan header)


def prior_rank(vocab: Vocab) -> np.ndarray:
    """Rank of each token in the tokenizer's own order: for BPE the rank of the merge forming it
    (single characters first), for SPM the score, best first."""
    n = vocab.n
    if vocab.is_bpe:
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        t2i = vocab.token_to_id
        for (a, b), r in vocab.merge_ranks.items():
            j = t2i.get((a + b).encode())
            if j is not None and r < first[j]:
                first[j] = r
        single = np.array([len(t.decode("utf-8", "replace")) == 1 for t in vocab.tokens])
        first[single] = -1
        key = first
    else:
        scores = vocab.scores if vocab.scores is not None else np.zeros(n, np.float32)
        key = -scores.astype(np.float64)
    order = np.lexsort((np.arange(n), key))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


# wordfreq's languages written mostly in the letters the En/Vi profile keeps (>= 50% of their 200
# commonest words pass charset.judge_bytes; tests/test_compact.py recomputes this list). Their
# common words show which Latin-script tokens belong to other languages.
LATIN_LANGS = ("ca", "cs", "da", "de", "en", "es", "fi", "fil", "fr", "hu", "id", "is", "it", "lt", "lv", "ms",
               "nb", "nl", "pl", "pt", "ro", "sh", "sk", "sl", "sv", "tr", "vi")
WORDS_FORMAT = 2  # bump when the word evidence changes, to invalidate caches


def word_langs(lset: LanguageSet) -> tuple[str, ...]:
    """wordfreq codes of the set's languages that have a list."""
    return tuple(dict.fromkeys(lang.entry.wordfreq for lang in lset.languages if lang.entry.wordfreq))


def peer_langs(lset: LanguageSet) -> tuple[str, ...]:
    """wordfreq languages written in the set's scripts but not in it: their common words show which
    tokens belong to other languages. Latin: LATIN_LANGS (measured above); other scripts: the table's
    languages of that script."""
    mine = set(word_langs(lset))
    out: list[str] = []
    for sc in sorted(lset.scripts):
        peers = LATIN_LANGS if sc == "Latn" else tuple(e.wordfreq for e in LANGUAGES
                                                       if sc in e.scripts and e.wordfreq)
        out += [x for x in peers if x not in mine and x not in out]
    return tuple(out)


def word_forms(langs: tuple[str, ...], capitals: bool = True,
               min_freq: float = WORD_MIN_FREQ) -> dict[str, float]:
    """Common words of the languages in the forms text uses them: "w", " w" (and "W", " W")."""
    import wordfreq

    forms: dict[str, float] = {}
    get = forms.get
    for lang in langs:
        for w, f in wordfreq.get_frequency_dict(lang, wordlist="best").items():
            if f < min_freq:
                break  # the dict is ordered by frequency
            variants = (w, w[:1].upper() + w[1:]) if capitals and not w[:1].isupper() else (w,)
            for x in variants:
                forms[x] = get(x, 0.0) + f
                sp = " " + x
                forms[sp] = get(sp, 0.0) + f
    return forms


def _tokenize_forms(vocab: Vocab, model_path: str | Path, forms: list[str]) -> list[list[int]]:
    """Token ids of many short texts: through the `tokenizers` equivalent when it agrees with
    llama.cpp on a sample of them, else through llama.cpp (exact, slower)."""
    from gguf_trim.runtime.llama import load_llama
    from gguf_trim.vocab.tokenizer import text_tokenizer

    tok = text_tokenizer(vocab)
    llm = load_llama(model_path, vocab_only=True)
    try:
        if tok is not None:
            ids = [e.ids for e in tok.encode_batch_fast(forms, add_special_tokens=False)]
            step = max(1, len(forms) // 2000)
            if all(llm.tokenize(forms[k].encode("utf-8"), add_bos=False, special=False) == ids[k]
                   for k in range(0, len(forms), step)):
                return ids
        return [llm.tokenize(f.encode("utf-8"), add_bos=False, special=False) for f in forms]
    finally:
        llm.close()


def word_evidence(vocab: Vocab, model_path: str | Path, lset: LanguageSet,
                  use_cache: bool = True, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(word-frequency mass of the kept languages' common words per token, number of common word forms
    of other languages of the same scripts per token); cached per tokenizer and languages."""
    from importlib.metadata import version

    from gguf_trim.files import cache_dir, save_cache
    from gguf_trim.selection.count import id_counts
    from gguf_trim.vocab.tokenizer import tokenizer_key

    langs = lset.codes
    others = peer_langs(lset)
    path = cache_dir() / (f"words-{tokenizer_key(vocab)[:20]}-{'.'.join(langs)}-"
                          f"{version('wordfreq')}-{WORDS_FORMAT}.npy")
    if use_cache:
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (2, vocab.n):
                return arr[0], arr[1]
        except (OSError, ValueError):
            pass
    if progress:
        print(f"gguf-trim: tokenizing the common words of {len(word_langs(lset)) + len(others)} languages "
              "(once per tokenizer, then cached) ...", file=sys.stderr, flush=True)
    mine = word_forms(word_langs(lset))
    theirs = [f for f in word_forms(others, capitals=False) if f not in mine]
    texts = list(mine) + theirs
    ids = _tokenize_forms(vocab, model_path, texts)
    n_mine = len(mine)
    mass = id_counts(ids[:n_mine], vocab.n, np.fromiter(mine.values(), dtype=np.float64, count=n_mine))
    foreign = id_counts(ids[n_mine:], vocab.n)
    if use_cache:
        arr = np.stack([mass, foreign])
        save_cache(path, lambda f: np.save(f, arr))
    return mass, foreign


def target_kept(n_vocab: int, target: int) -> int:
    """Most real tokens that, with the padding the rewrite adds, still fit in `target`."""
    k = target
    while k > 0 and k + (n_vocab - k) % PAD_MODULUS > target:
        k -= 1
    return k


def select_compact(vocab: Vocab, ev: Evidence, target: int | None = None, min_count: int | None = None,
                   langs: str | LanguageSet = "en,vi", keep_list: list[int] | None = None,
                   drop_list: list[int] | None = None) -> Selection:
    """The compact selection (see the module docstring). With `min_count`, every candidate seen
    fewer times in the corpus and in no common word goes, leaf first; otherwise the set is cut to
    `target` tokens (default: half the vocabulary) including the rewrite's padding."""
    if target is not None and min_count is not None:
        raise TrimError("give either --target-size or --min-count, not both")
    sel = select_lossless(vocab, langs, keep_list, drop_list)
    sel.profile = "compact"
    keep = sel.keep
    n = vocab.n
    protected = np.zeros(n, dtype=bool)
    for i, why in sel.why.items():
        if why in PROTECTED:
            protected[i] = True
    cand = keep & ~protected
    special = np.isin(vocab.types, SPECIAL_TYPES)

    # Everything a kept token is built from, and how many kept tokens need each token.
    deps: dict[int, list[int]] = {}
    needers = np.zeros(n, dtype=np.int64)
    for i in np.flatnonzero(keep & ~special).tolist():
        d = vocab.derivation(i) or []
        deps[i] = d
        for j in d:
            needers[j] += 1

    # Rank of each candidate in each signal (lower is better); a signal without evidence ranks it last.
    ids = np.flatnonzero(cand)
    inf = np.iinfo(np.int64).max
    prior = ev.prior
    if ev.foreign is not None:
        # a token only other languages' common words use, unseen in the corpus and in En/Vi
        # words, goes behind every other token in the prior (keeping their order)
        foreign_only = (ev.foreign > 0) & (ev.words <= 0) & (ev.corpus <= 0)
        prior = prior + foreign_only.astype(np.int64) * len(prior)
    ranks = {}
    for name, val in (("corpus", ev.corpus.astype(np.float64)), ("words", ev.words), ("prior", None)):
        r = np.full(n, inf, dtype=np.int64)
        if val is None:
            order = ids[np.argsort(prior[ids], kind="stable")]
        else:
            has = ids[val[ids] > 0]
            order = has[np.lexsort((prior[has], -val[has]))]
        r[order] = np.arange(len(order))
        ranks[name] = r
    stacked = np.stack([ranks[s] for s in SIGNALS])
    best = stacked.min(axis=0)
    best_signal = stacked.argmin(axis=0)

    if min_count is not None:
        if min_count < 1:
            raise TrimError("--min-count must be at least 1")
        doomed = cand & (ev.corpus < min_count) & (ev.words <= 0)
        limit = 0
    else:
        if target is None:
            target = n // 2
        limit = target_kept(n, target)
        floor = int(protected.sum())
        if limit < floor:
            raise TrimError(f"--target-size {target} is below the {floor} tokens that must stay "
                            "(specials, byte tokens, --keep)")
        doomed = cand
    heap = [(-int(best[i]), -int(prior[i]), i) for i in np.flatnonzero(doomed & (needers == 0)).tolist()]
    heapq.heapify(heap)
    n_kept = int(keep.sum())
    cutoff = inf
    while heap and n_kept > limit:
        b, _, i = heapq.heappop(heap)
        keep[i] = False
        n_kept -= 1
        cutoff = -b
        sel.why.pop(i, None)
        sel.dropped_label[i] = "compact"
        for j in deps.get(i, ()):
            needers[j] -= 1
            if needers[j] == 0 and doomed[j] and keep[j]:
                heapq.heappush(heap, (-int(best[j]), -int(prior[j]), j))
    if min_count is None and n_kept > limit:
        raise TrimError(f"cannot reach {target} tokens: the remaining {n_kept} are all needed")
    for i in np.flatnonzero(keep & cand).tolist():
        doomed_i = bool(doomed[i]) and (min_count is not None or best[i] > cutoff)
        sel.why[i] = "needed" if doomed_i else SIGNALS[int(best_signal[i])]
    sel.detail = {i: {"count": int(ev.corpus[i]), "words": float(f"{ev.words[i]:.3g}"),
                      "prior": int(ev.prior[i]), **({"foreign": int(ev.foreign[i])} if ev.foreign is not None else {})}
                  for i in np.flatnonzero(keep & cand).tolist()}
    sel.info = {"target_size": target, "min_count": min_count, **ev.info}
    # Closed by construction: only tokens no kept token was built from were dropped.
    broken = [(i, j) for i, d in deps.items() if keep[i] for j in d if not keep[j]]
    assert not broken, f"compact selection broke derivations: {broken[:5]}"
    return sel


def gather_evidence(vocab: Vocab, model_path: str | Path, corpus: list[str] | None = None,
                    field_name: str | None = None, columns: list[int] | None = None,
                    langs: str | LanguageSet = "en,vi",
                    words: bool = True, use_cache: bool = True, progress: bool = True,
                    workers: int | None = None) -> Evidence:
    """Corpus counts, word-list mass and prior rank for `select_compact`."""
    from gguf_trim.selection.corpus import open_corpus
    from gguf_trim.selection.count import count_tokens

    lset = language_set(langs)
    listless = [lang.code for lang in lset.languages if not lang.entry.wordfreq]
    if listless and words and not corpus:
        raise TrimError(f"the compact profile needs --corpus for {', '.join(listless)}: wordfreq has no word list "
                        "for it, so only text in it can say which tokens it uses")
    info: dict = {}
    counts = np.zeros(vocab.n, dtype=np.int64)
    if corpus:
        c = open_corpus(corpus, field=field_name, columns=columns)
        corpus_sha = c.sha256()  # reads every input once: not twice
        res = count_tokens(vocab, model_path, c.segments, corpus_sha, total_bytes=c.total_bytes(),
                           use_cache=use_cache, progress=progress, workers=workers,
                           blocks=c.txt_blocks if c.plain_text else None)
        counts = res.counts
        info = {"corpus": list(c.sources), "corpus_sha256": corpus_sha, "segments": res.segments,
                "bytes": res.bytes, "count_method": res.method, "count_seconds": round(res.seconds, 2),
                "count_mb_per_s": round(res.mb_per_s, 1), "count_cached": res.cached,
                "checked_segments": res.checked_segments}
        if res.mismatch:
            info["fast_path_refused"] = res.mismatch
    if words:
        mass, foreign = word_evidence(vocab, model_path, lset, use_cache, progress)
    else:
        mass, foreign = np.zeros(vocab.n), None
    info["word_lists"] = "wordfreq " + ",".join(word_langs(lset)) if words else None
    return Evidence(counts, mass, prior_rank(vocab), foreign, info)
