"""Tiny llama/qwen2-shaped GGUF models with a real vocabulary and random weights, for tests.

Tests need models of every quant type, tied and untied, with real tokenizers; no such models
can be downloaded here. gguf-py writes the file and quantizes the _0/_1/Q8_0 family; K-quants go
through gguf_trim.format.quant (libggml). `write_split` writes a split copy with gguf-py's own
writer, independent of gguf-trim's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGUFWriter
from gguf.constants import GGMLQuantizationType, GGUFValueType
from gguf.quants import quantize

from gguf_trim.format.gguffile import GGUFFile
from gguf_trim.format.quant import K_QUANTS, ggml_quantize


def encode_tensor(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    if qtype == GGMLQuantizationType.F32:
        return x.astype(np.float32)
    if qtype == GGMLQuantizationType.F16:
        return x.astype(np.float16)
    if qtype in K_QUANTS:
        return ggml_quantize(x, qtype)
    return quantize(x.astype(np.float32), qtype)


def copy_tokenizer(w: GGUFWriter, vocab_gguf: str | Path) -> int:
    """Copy every tokenizer.* key of a (vocab-only) GGUF into the writer; returns n_vocab."""
    with GGUFFile(vocab_gguf) as g:
        for name, f in g.fields.items():
            if not name.startswith("tokenizer."):
                continue
            value = f.value
            if f.vtype == GGUFValueType.ARRAY:
                value = value.tolist() if isinstance(value, np.ndarray) else list(value)
            w.add_key_value(name, value, f.vtype, sub_type=f.subtype)
        return len(g.get("tokenizer.ggml.tokens"))


def build_model(path: str | Path, vocab_gguf: str | Path, embd_type: GGMLQuantizationType,
                output_type: GGMLQuantizationType | None = None, arch: str = "llama", n_embd: int = 256,
                n_ff: int = 512, n_layer: int = 1, output_bias: bool = False, seed: int = 0) -> Path:
    """Write a tiny random model. output_type None means tied embeddings (no output.weight)."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    w = GGUFWriter(str(path), arch)
    w.add_name(f"synthetic-{arch}-{Path(vocab_gguf).stem}")
    n_vocab = copy_tokenizer(w, vocab_gguf)
    w.add_context_length(256)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(4)
    w.add_head_count_kv(4)
    w.add_rope_dimension_count(n_embd // 4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(1)

    def mat(rows: int, cols: int, scale: float = 0.05) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float32)

    def add(name: str, x: np.ndarray, qtype: GGMLQuantizationType = GGMLQuantizationType.F32) -> None:
        w.add_tensor(name, encode_tensor(x, qtype), raw_dtype=qtype)

    add("token_embd.weight", mat(n_vocab, n_embd, 1.0), embd_type)
    add("output_norm.weight", np.ones(n_embd, np.float32))
    if output_type is not None:
        add("output.weight", mat(n_vocab, n_embd, 0.5), output_type)
    if output_bias:
        add("output.bias", (rng.standard_normal(n_vocab) * 0.1).astype(np.float32))
    for b in range(n_layer):
        add(f"blk.{b}.attn_norm.weight", np.ones(n_embd, np.float32))
        for m in ("q", "k", "v"):
            add(f"blk.{b}.attn_{m}.weight", mat(n_embd, n_embd), GGMLQuantizationType.F16)
            if arch == "qwen2":
                add(f"blk.{b}.attn_{m}.bias", np.zeros(n_embd, np.float32))
        add(f"blk.{b}.attn_output.weight", mat(n_embd, n_embd), GGMLQuantizationType.F16)
        add(f"blk.{b}.ffn_norm.weight", np.ones(n_embd, np.float32))
        add(f"blk.{b}.ffn_gate.weight", mat(n_ff, n_embd), GGMLQuantizationType.F16)
        add(f"blk.{b}.ffn_up.weight", mat(n_ff, n_embd), GGMLQuantizationType.F16)
        add(f"blk.{b}.ffn_down.weight", mat(n_embd, n_ff), GGMLQuantizationType.F16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_split(src: str | Path, output: str | Path, split_max_size: int = 0, split_max_tensors: int = 0) -> list[Path]:
    """A split copy of a GGUF, written by gguf-py's `GGUFWriter(split_max_size=...)` the way
    llama.cpp's converters write one (all metadata in the first shard, split.* keys in every
    shard, tensors in order). An independent writer, so the tests of split input do not rest on
    gguf-trim's own; tensors are handed over as views of the source's map, never copied in RAM."""
    from gguf.constants import GGUFValueType as V

    output = Path(output)
    with GGUFFile(src) as g:
        w = GGUFWriter(str(output), g.arch, split_max_size=split_max_size, split_max_tensors=split_max_tensors)
        for name, f in g.fields.items():
            if name in ("general.architecture", "general.alignment") or name.startswith("split."):
                continue
            value = f.value
            if f.vtype == V.ARRAY:
                value = value.tolist() if isinstance(value, np.ndarray) else list(value)
            w.add_key_value(name, value, f.vtype, sub_type=f.subtype)
        for t in g.tensors:
            rows = np.frombuffer(g.tensor_bytes(t), dtype=np.uint8)
            byte_shape = tuple(reversed(t.shape[1:])) + (t.nbytes // max(1, int(np.prod(t.shape[1:]))),)
            w.add_tensor(t.name, rows.reshape(byte_shape), raw_dtype=GGMLQuantizationType(t.ggml_type))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        paths = w.format_shard_names(output)
    return [Path(p) for p in paths]


def with_key(src: str | Path, out: str | Path, name: str, value: list[int] | None) -> Path:
    """A copy of a GGUF with one INT32-array key set (or removed, value None); tensors copied as they are."""
    from gguf_trim.format.gguffile import GGUFFile, OutTensor, encode_field, write_gguf

    with GGUFFile(src) as g, open(out, "wb") as fh:
        kv = [f.raw for n, f in g.fields.items() if n != name]
        if value is not None:
            kv.append(encode_field(name, GGUFValueType.ARRAY, np.asarray(value, np.int32), GGUFValueType.INT32))

        def copier(t):
            return lambda f: f.write(g.tensor_bytes(t))

        write_gguf(fh, kv, [OutTensor(t.name, t.shape, t.ggml_type, t.nbytes, copier(t)) for t in g.tensors],
                   g.alignment, g.version)
    return Path(out)
