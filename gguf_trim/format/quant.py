"""Encoding float rows into a tensor's own GGML type, and decoding them back.

gguf-py quantizes the _0/_1/Q8_0 family; K-quants go through `ggml_quantize_chunk` of the
libggml that llama-cpp-python ships (imported only when such a type is encoded).
"""

from __future__ import annotations

import ctypes

import numpy as np
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from gguf_trim.format.gguffile import GGUFFile

K_QUANTS = {GGMLQuantizationType.Q2_K, GGMLQuantizationType.Q3_K, GGMLQuantizationType.Q4_K,
            GGMLQuantizationType.Q5_K, GGMLQuantizationType.Q6_K}
# what gguf-py quantizes itself; every other type goes through libggml
GGUF_PY_TYPES = (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q5_0,
                 GGMLQuantizationType.Q5_1, GGMLQuantizationType.Q8_0, GGMLQuantizationType.BF16)


def ggml_quantize(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """Quantize rows of x with the C library (any type that needs no importance matrix)."""
    from llama_cpp._ggml import libggml

    q = libggml.ggml_quantize_chunk
    q.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int64,
                  ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_float)]
    q.restype = ctypes.c_size_t
    libggml.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    libggml.ggml_row_size.restype = ctypes.c_size_t
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], libggml.ggml_row_size(int(qtype), x.shape[1])), dtype=np.uint8)
    n = q(int(qtype), x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.ctypes.data, 0, x.shape[0],
          x.shape[1], None)
    assert n == out.nbytes
    return out


def rows_float(g: GGUFFile, name: str, n_vocab: int, ids: list[int]) -> np.ndarray:
    """Rows `ids` of tensor `name` (one row per token of n_vocab) as float32, whatever its type."""
    t = g.tensor(name)
    rows = g.tensor_rows_as(t, n_vocab)[ids]
    qt = GGMLQuantizationType(t.ggml_type)
    if qt == GGMLQuantizationType.F32:
        return rows.view(np.float32).astype(np.float32)
    if qt == GGMLQuantizationType.F16:
        return rows.view(np.float16).astype(np.float32)
    return dequantize(rows, qt).astype(np.float32).reshape(len(ids), -1)


def encode_rows(x: np.ndarray, ggml_type: int) -> bytes:
    """Float rows encoded in `ggml_type`, byte for byte as llama.cpp's own quantizer writes them."""
    qt = GGMLQuantizationType(ggml_type)
    if qt == GGMLQuantizationType.F32:
        return x.astype(np.float32).tobytes()
    if qt == GGMLQuantizationType.F16:
        return x.astype(np.float16).tobytes()
    if qt in K_QUANTS or qt not in GGUF_PY_TYPES:
        return ggml_quantize(x, qt).tobytes()
    return quantize(x.astype(np.float32), qt).tobytes()
