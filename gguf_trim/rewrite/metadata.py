"""What the trimmed file says about itself: its metadata, its provenance, and which tensors carry the vocabulary."""

from __future__ import annotations

import json

import numpy as np
from gguf.constants import GGUFValueType

from gguf_trim import __version__
from gguf_trim.errors import TrimError
from gguf_trim.format import keys
from gguf_trim.format.gguffile import GGUFFile, TensorInfo, encode_field
from gguf_trim.format.keys import PROVENANCE_PREFIX
from gguf_trim.format.shards import SPLIT_KEYS, GGUFModel
from gguf_trim.rewrite.padding import PAD_TEXT
from gguf_trim.selection.selection import Selection, kept_merges
from gguf_trim.vocab.suppress import suppressible
from gguf_trim.vocab.vocabulary import SPECIAL_ID_KEYS, SUPPRESS_KEY, UNUSED


def sha_placeholder(n_files: int) -> str:
    """Stands in the metadata for the source's sha256 (one per shard, comma-separated) until it
    is known: the same length, so the header does not move when it is filled in."""
    return ",".join(f"sha256-of-source-file-{i + 1}-is-being-computed".ljust(64, "-") for i in range(n_files))


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
    return isinstance(g.get(keys.KEPT_IDS), np.ndarray)


def provenance(g: GGUFModel, sel: Selection, source_sha: str | None, pad: list[int]) -> list[bytes]:
    """gguf_trim.* keys: where the file came from and how each new id maps back to the source
    (kept_ids[new_id]; padding tokens, appended last, repeat the rows named in padding_rows).
    The source's sha256 is recorded only when it was computed (`source_sha`)."""
    kept = sel.kept_ids.astype(np.int64)
    pad_rows = np.asarray(pad, dtype=np.int64)
    src_name, src_size, src_n = g.path.name, g.size, sel.vocab.n
    if is_trimmed(g):
        # trimming a trimmed file: map every id to the first source. Its ids past kept_ids are its
        # own padding tokens; kept again they stay padding, after the real tokens.
        prev = g.get(keys.KEPT_IDS).astype(np.int64)
        prev_pad = g.get(keys.PADDING_ROWS)
        first = np.concatenate([prev, np.asarray([] if prev_pad is None else prev_pad, dtype=np.int64)])
        if len(first) < sel.vocab.n:
            raise TrimError(f"{g.path}: gguf_trim.kept_ids/padding_rows do not cover its {sel.vocab.n} tokens")
        real, old_pad = kept[kept < len(prev)], kept[kept >= len(prev)]
        kept, pad_rows = first[real], np.concatenate([first[old_pad], first[pad_rows]])
        try:
            src_name = g.fields[keys.SOURCE_FILE].text()
            src_n = int(g.get(keys.SOURCE_N_VOCAB))
        except (KeyError, TypeError):
            raise TrimError(f"{g.path}: incomplete gguf_trim provenance (source file, n_vocab)") from None
        sha_field = g.fields.get(keys.SOURCE_SHA256)
        source_sha = sha_field.text() if sha_field is not None else None
        size = g.get(keys.SOURCE_SIZE)
        src_size = int(size) if size is not None else None
    S, U, A = GGUFValueType.STRING, GGUFValueType.UINT32, GGUFValueType.ARRAY
    return [
        encode_field(keys.VERSION, S, __version__),
        encode_field(keys.SOURCE_FILE, S, src_name),
        *([encode_field(keys.SOURCE_SIZE, GGUFValueType.UINT64, src_size)]
          if src_size is not None else []),
        *([encode_field(keys.SOURCE_SHA256, S, source_sha)] if source_sha else []),
        encode_field(keys.SOURCE_N_VOCAB, U, src_n),
        encode_field(keys.SOURCE_VOCAB_SHA256, S, sel.vocab.sha256),
        encode_field(keys.LANGS, S, ",".join(sel.langs)),
        encode_field(keys.PROFILE, S, sel.profile),
        encode_field(keys.KEPT_BY_REASON, S, json.dumps(sel.summary())),
        encode_field(keys.KEPT_IDS, A, kept, U),
    ] + ([encode_field(keys.PADDING_ROWS, A, pad_rows, U)] if len(pad_rows) else [])


def suppress_list(sel: Selection, n_pad: int, source_ids: np.ndarray | None = None) -> np.ndarray:
    """The output's suppress list (new ids): the kept tokens the script guard forbids in every UTF-8
    state (vocab/suppress.py) plus the source's own list (`source_ids`, new ids), never a special id."""
    vocab, kept = sel.vocab, sel.kept_ids
    new_id = np.full(vocab.n, -1, dtype=np.int64)
    new_id[kept] = np.arange(len(kept))
    pieces = [vocab.pieces[i] for i in kept.tolist()] + [b""] * n_pad
    types = np.concatenate([vocab.types[kept], np.full(n_pad, UNUSED, dtype=vocab.types.dtype)])
    ids = suppressible(pieces, types, sel.language_set.chars,
                       [new_id[i] for i in vocab.named_special_ids if new_id[i] >= 0])
    if source_ids is not None and len(source_ids):
        ids = np.union1d(ids, source_ids)
    return ids.astype(np.int32)


def trimmed_metadata(g: GGUFModel, sel: Selection, source_sha: str | None, pad: list[int],
                     suppress: bool = True) -> tuple[list[bytes], int, int]:
    """The trimmed model's key/values (encoded), its number of merges and of suppressed ids: the vocabulary arrays
    cut to the kept ids plus the padding tokens (`pad`: their source rows), special ids renumbered,
    the suppress list (`suppress`: the guard's plus the source's, else the source's alone, remapped),
    every other key copied as it is, then the provenance."""
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
        elif name == SUPPRESS_KEY:
            continue  # written below, remapped
        elif name == f"{arch}.vocab_size":
            kv.append(encode_field(name, f.vtype, n_new))
        else:
            assert f.raw is not None
            kv.append(f.raw)
    src_list = g.get(SUPPRESS_KEY)
    src_ids = np.asarray([int(new_id[i]) for i in src_list.tolist() if 0 <= i < vocab.n and new_id[i] >= 0]
                         if isinstance(src_list, np.ndarray) else [], dtype=np.int64)
    ids = suppress_list(sel, len(pad), src_ids) if suppress else src_ids
    if len(ids):  # an empty array would be skipped by readers anyway: leave the key out
        kv.append(encode_field(SUPPRESS_KEY, GGUFValueType.ARRAY, ids.astype(np.int32), GGUFValueType.INT32))
    for name, old in vocab.implicit_special_ids.items():
        # llama.cpp gave the source this default id; after renumbering the default would name
        # another token, so the trimmed file says which one explicitly
        kv.append(encode_field(name, GGUFValueType.UINT32, int(new_id[old])))
    kv.extend(provenance(g, sel, source_sha, pad))
    return kv, len(merges or ()), len(ids)
