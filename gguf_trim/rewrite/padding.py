"""Padding tokens: keeping the trimmed vocabulary's size congruent to the original's modulo 16.

llama.cpp picks the matrix kernel for the output layer by its row count, and different kernels
round differently; padding keeps the logits of the kept tokens bit-exact on CPU (see add_padding).
"""

from __future__ import annotations

import re

import numpy as np

from gguf_trim.selection.selection import Selection
from gguf_trim.vocab.vocabulary import CONTROL, NORMAL, UNUSED

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
