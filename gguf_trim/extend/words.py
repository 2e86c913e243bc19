"""Adding Vietnamese compound words as new tokens (USER_DEFINED) with initialised embeddings.

Vietnamese only, by design: a file trimmed to a set without vi is refused (other languages' words
are not written syllable by syllable, and no lexicon for them ships here).

Vietnamese is written syllable by syllable, so "học sinh" costs several tokens. llama.cpp
matches USER_DEFINED tokens on the raw text before BPE/SPM (even with parse_special=false,
longest first), so an added " học sinh" becomes one id in stock llama.cpp. Each new row of
token_embd (and of output when untied) starts as the mean of the rows of the pieces the
original tokenizer produces for the same text (FVT), dequantized with gguf-py and quantized
back to the tensor's own type (K-quants through libggml's ggml_quantize_chunk).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf.constants import GGUFValueType

from gguf_trim.errors import TrimError
from gguf_trim.files import atomic_write, check_output
from gguf_trim.format import keys
from gguf_trim.format.gguffile import OutTensor, encode_field, write_gguf
from gguf_trim.format.quant import encode_rows, rows_float
from gguf_trim.format.shards import SPLIT_KEYS, open_model
from gguf_trim.langs import file_langs
from gguf_trim.rewrite.metadata import vocab_tensors
from gguf_trim.runtime.loadcheck import load_check
from gguf_trim.vocab.suppress import file_suppress, suppressible
from gguf_trim.vocab.vocabulary import SUPPRESS_KEY, USER_DEFINED, Vocab

MAX_PIECE_BYTES = 32  # llama-cpp-python's detokenize drops longer pieces


@dataclass
class ExtendResult:
    output: Path
    n_vocab_before: int
    n_vocab_after: int
    added: list[str]
    skipped: dict[str, int]


def read_words(path: str | Path) -> list[str]:
    """One word per line, or a TSV whose first column is the word (a 'word' header is skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise TrimError(f"{path}: cannot read word list ({e})") from None
    words = []
    for n, line in enumerate(lines):
        w = line.split("\t")[0].strip()
        if not w or (n == 0 and w.lower() == "word"):
            continue
        words.append(" ".join(w.split()))
    if not words:
        raise TrimError(f"{path}: no words")
    return words


def forms(word: str) -> list[str]:
    """The spellings real text needs: after a space (mid-sentence), capitalised after a space and
    at the start of a line (sentence start)."""
    cap = word[:1].upper() + word[1:]
    return list(dict.fromkeys([" " + word, " " + cap, cap]))  # in order, without repeats


def choose_forms(words: list[str], top: int, corpus_text: str | None, vocab: Vocab) -> tuple[list[str], dict]:
    """New token texts for the `top` most useful words: every chosen word gets its mid-sentence
    form (" học sinh"); the capitalised forms only where the corpus shows them (all of them when
    no corpus is given). Words are ranked by how often their forms occur in the corpus, then by
    their order in the list (a word list is itself ranked), skipping what llama.cpp cannot take:
    texts that already are tokens (a duplicate aborts the load) and pieces over 32 bytes."""
    existing = set(vocab.tokens)
    skipped = {"exists": 0, "too_long": 0, "single_word": 0, "unseen_capitalised": 0}
    ranked: list[tuple[int, int, list[str]]] = []
    for rank, w in enumerate(words):
        if " " not in w:
            skipped["single_word"] += 1
            continue
        keep, total = [], 0
        for k, f in enumerate(forms(w)):
            b = f.encode()
            if b in existing:
                skipped["exists"] += 1
                continue
            if len(b) > MAX_PIECE_BYTES:
                skipped["too_long"] += 1
                continue
            count = corpus_text.count(f) if corpus_text is not None else 0
            total += count
            if k > 0 and corpus_text is not None and count == 0:
                skipped["unseen_capitalised"] += 1
                continue
            keep.append(f)
        if keep:
            ranked.append((-total, rank, keep))
    ranked.sort()
    return [f for _, _, fs in ranked[:top] for f in fs], skipped


def extend_file(model: str | Path, words_path: str | Path, output: str | Path, top: int = 2000,
                corpus: str | Path | None = None, init: str = "mean", check: bool = True,
                suppress: bool = True) -> ExtendResult:
    """Write `model` plus new USER_DEFINED tokens for the most useful compound forms.
    `suppress`: for a file gguf-trim trimmed, the suppress list is the source's plus what the script
    guard of its language set never allows in the extended vocabulary (the added compounds are
    Vietnamese, so in practice the source's list); otherwise the source's list is copied as it is. A file
    trimmed to a set without vi is refused."""
    from gguf_trim.runtime.llama import load_llama

    out, _ = check_output(output, model)
    if init not in ("mean", "first", "weighted"):
        raise TrimError(f"unknown --init {init!r} (mean, first, weighted)")
    words = read_words(words_path)
    text = None
    if corpus is not None:
        try:
            text = Path(corpus).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise TrimError(f"{corpus}: cannot read ({e})") from None
    with open_model(model) as g:
        check_output(output, g.paths)  # also none of the other shards
        lset = file_langs(g)
        if lset is not None and "vi" not in lset:
            raise TrimError(f"{model}: extend adds Vietnamese compound words, and this file was trimmed to "
                            f"{lset.key} (no vi)")
        vocab = Vocab.from_gguf(g)
        new, skipped = choose_forms(words, top, text, vocab)
        if not new:
            raise TrimError("no new token to add (all forms exist, are too long, or never occur in the corpus)")
        tok = load_llama(model, vocab_only=True)
        pieces = [tok.tokenize(f.encode(), add_bos=False, special=False) for f in new]
        tok.close()
        n_old, n_new = vocab.n, vocab.n + len(new)
        sliced = vocab_tensors(g, n_old)
        extra: dict[str, bytes] = {}
        for t in sliced:
            if len(t.shape) < 2:
                extra[t.name] = np.zeros(len(new), np.float32).tobytes()  # e.g. output.bias
                continue
            rows = []
            for ids in pieces:
                vecs = rows_float(g, t.name, n_old, ids)
                if init == "first" and t.name == "output.weight":
                    rows.append(vecs[0])
                elif init == "weighted":  # later pieces carry more of the compound's meaning
                    w = np.arange(1, len(ids) + 1, dtype=np.float32)
                    rows.append((vecs * w[:, None]).sum(0) / w.sum())
                else:
                    rows.append(vecs.mean(0))
            extra[t.name] = encode_rows(np.stack(rows), t.ggml_type)
        kv = []
        for name, f in g.fields.items():
            if name in SPLIT_KEYS:
                continue  # a split model is written as one file
            if name == "tokenizer.ggml.tokens":
                kv.append(encode_field(name, f.vtype, list(f.value) + [x.encode() for x in new], f.subtype))
            elif name == "tokenizer.ggml.token_type":
                kv.append(encode_field(name, f.vtype, np.concatenate([f.value[:n_old], [USER_DEFINED] * len(new)]),
                                       f.subtype))
            elif name == "tokenizer.ggml.scores":
                kv.append(encode_field(name, f.vtype, np.concatenate([f.value[:n_old], [0.0] * len(new)]), f.subtype))
            elif name == f"{g.arch}.vocab_size":
                kv.append(encode_field(name, f.vtype, n_new))
            elif name == SUPPRESS_KEY:
                continue  # below
            else:
                kv.append(f.raw)
        listed = file_suppress(g)
        lset = file_langs(g)
        if suppress and lset is not None:
            pieces = vocab.pieces + [x.encode() for x in new]
            types = np.concatenate([vocab.types, np.full(len(new), USER_DEFINED, dtype=vocab.types.dtype)])
            listed = np.union1d(listed, suppressible(pieces, types, lset.chars, vocab.named_special_ids))
        if len(listed):
            kv.append(encode_field(SUPPRESS_KEY, GGUFValueType.ARRAY, listed.astype(np.int32), GGUFValueType.INT32))
        kv.append(encode_field(keys.EXTENDED_FROM_N_VOCAB, GGUFValueType.UINT32, n_old))
        kv.append(encode_field(keys.EXTENDED_INIT, GGUFValueType.STRING, init))
        def writer(t, add: bytes = b""):
            def write(fh) -> None:
                fh.write(g.tensor_bytes(t))
                fh.write(add)
            return write

        tensors = []
        for t in g.tensors:
            add = extra.get(t.name)
            if add is not None:
                tensors.append(OutTensor(t.name, t.shape[:-1] + (n_new,), t.ggml_type, t.nbytes + len(add),
                                         writer(t, add)))
            else:
                tensors.append(OutTensor(t.name, t.shape, t.ggml_type, t.nbytes, writer(t)))
        with atomic_write(out, check=(lambda tmp: load_check(tmp, n_new)) if check else None) as fh:
            write_gguf(fh, kv, tensors, g.alignment)
    return ExtendResult(out, n_old, n_new, new, skipped)


def export_rows(model: str | Path, out_path: str | Path) -> int:
    """Write the added tokens (ids, texts, initial vectors as float32) to an .npz for an
    embeddings-only finetune elsewhere; returns how many."""
    with open_model(model) as g:
        v = Vocab.from_gguf(g)
        start = g.get(keys.EXTENDED_FROM_N_VOCAB)
        if start is None:
            raise TrimError(f"{model}: not extended by gguf-trim (no gguf_trim.extended_from_n_vocab)")
        ids = list(range(int(start), v.n))
        arrays = {"ids": np.asarray(ids, np.int64),
                  "texts": np.asarray([v.tokens[i].decode() for i in ids])}
        for t in vocab_tensors(g, v.n):
            if len(t.shape) >= 2:
                arrays[t.name.replace(".", "_")] = rows_float(g, t.name, v.n, ids)
    np.savez(out_path, **arrays)
    return len(ids)


def detokenize_c(llm, ids: list[int]) -> str:
    """llama.cpp's own detokenizer (llama-cpp-python's wrapper drops pieces over 32 bytes)."""
    import ctypes

    import llama_cpp

    arr = (llama_cpp.llama_token * len(ids))(*ids)
    cap = 64 + 16 * len(ids)
    while True:
        buf = ctypes.create_string_buffer(cap)
        n = llama_cpp.llama_detokenize(llm._model.vocab, arr, len(ids), buf, cap, False, False)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", "replace")
        cap = -n


def tokenization_report(model: str | Path, lines: list[str]) -> dict:
    """Tokens, tokens per syllable, exact round trips and tokenize throughput on the lines."""
    import time

    from gguf_trim.runtime.llama import load_llama

    llm = load_llama(model, vocab_only=True)
    try:
        t0 = time.perf_counter()
        toks = [llm.tokenize(x.encode(), add_bos=False, special=False) for x in lines]
        secs = time.perf_counter() - t0
        bad = [x for x, ids in zip(lines, toks) if detokenize_c(llm, ids) != x]
    finally:
        llm.close()
    n_tok = sum(len(t) for t in toks)
    syllables = sum(len(x.split()) for x in lines)
    size = sum(len(x.encode()) for x in lines)
    return {"lines": len(lines), "tokens": n_tok, "syllables": syllables, "tokens_per_syllable": n_tok / syllables,
            "round_trip_failures": len(bad), "round_trip_examples": bad[:3], "tokenize_mb_s": size / secs / 1e6}
