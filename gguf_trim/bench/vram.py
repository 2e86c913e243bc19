"""VRAM estimates: how much GPU memory a model needs before and after trimming its vocabulary.

Why: trimming shrinks only the tensors with one row per token, and with llama.cpp on a GPU the
input embedding does not live in VRAM anyway, so the saving that matters on a card is the
output matrix (lm_head) and the logits. This module puts numbers on that, for a shipped table
of public models (`estimate_spec`, `estimate_all`) or for a real GGUF (`estimate_file`).

Memory model (llama.cpp, every layer offloaded, one sequence; all sizes in bytes):

* Weights. Spec mode: body = (total params - vocab params) x the quant's average bits per
  weight (llama.cpp's published mixture averages; norms are counted at that rate too, a
  negligible error); the vocab tensors are sized exactly from their block sizes at the types
  llama.cpp's quantizer gives them (see QUANTS). File mode: the real tensor bytes.
* token_embd stays on the host: llama.cpp keeps the input layer on the CPU (get_rows runs
  there), so it is reported as `weights_host` and is not in VRAM. output.weight is on the GPU.
  A model with tied embeddings has no output.weight: llama.cpp loads token_embd a second time
  into the output layer's GPU buffer (TENSOR_DUPLICATED), so that copy is counted on the GPU.
* KV cache, F16, every layer over the full context = n_ctx x n_layer x n_head_kv x
  (key_length + value_length) x 2 bytes (= 2 x n_layer x n_ctx x n_head_kv x head_dim x 2). An
  upper bound for sliding-window models (Gemma 2/3), whose local layers may need less.
* Compute buffer (GPU) = n_vocab x n_ubatch x 4 (the F32 lm_head result for a whole ubatch, all
  logits requested) + n_ubatch x (n_embd + n_ff) x 4 x ACTIVATION_FACTOR (about two live copies
  of the residual stream and FFN intermediates per token). Flash attention is assumed (the
  llama.cpp default on CUDA), so no n_ctx x n_ubatch attention-score matrix is counted.
* Logits buffer (host) = n_vocab x n_outputs x 4.
* Fixed GPU overhead: CUDA_OVERHEAD (300 MiB) for the CUDA context, cuBLAS workspace and small
  buffers.
* A model fits a card when total_gpu <= the card's size (24 GiB, 40 GiB); nothing is held back
  for a display or other processes.

"After trimming" uses n_vocab as gguf-trim's lossless en+vi profile leaves it, padded so the
dropped count is a multiple of 16 like `trim` does (see TRIM_FAMILIES), unless `trimmed_vocab`
is given. In file mode it is measured on the file's own tokenizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from gguf_trim.errors import TrimError
from gguf_trim.format.gguffile import GGUFFile, tensor_nbytes
from gguf_trim.format.shards import open_model
from gguf_trim.rewrite.metadata import vocab_tensors
from gguf_trim.rewrite.padding import PAD_MODULUS, add_padding
from gguf_trim.selection.selection import select_lossless
from gguf_trim.tables import markdown_table
from gguf_trim.vocab.vocabulary import Vocab

MIB = 1 << 20
GIB = 1 << 30
CARDS: dict[str, int] = {"24gb": 24 * GIB, "40gb": 40 * GIB}
CUDA_OVERHEAD = 300 * MIB
ACTIVATION_FACTOR = 2
DEFAULT_N_CTX = 8192
DEFAULT_N_UBATCH = 512
DEFAULT_N_OUTPUTS = 512
# Tensors llama.cpp keeps on the input (CPU) layer: looked up row by row with get_rows.
HOST_TENSORS = ("token_embd.weight", "per_layer_token_embd.weight")


@dataclass(frozen=True)
class ModelSpec:
    family: str  # key of TRIM_FAMILIES: which tokenizer, hence how much trimming keeps
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_vocab: int
    tied: bool  # tie_word_embeddings: no separate output matrix
    n_params: int  # total parameters, embeddings (once if tied) included

    @property
    def vocab_params(self) -> int:
        return self.n_vocab * self.n_embd * (1 if self.tied else 2)


# The public config.json values (Hugging Face) of each model; n_params is the published total
# and equals the count these hyper-parameters give (tests/test_vram.py checks it).
MODELS: dict[str, ModelSpec] = {
    "qwen2.5-0.5b": ModelSpec("qwen2", 24, 896, 14, 2, 64, 4864, 151936, True, 494_032_768),
    "qwen2.5-1.5b": ModelSpec("qwen2", 28, 1536, 12, 2, 128, 8960, 151936, True, 1_543_714_304),
    "qwen2.5-3b": ModelSpec("qwen2", 36, 2048, 16, 2, 128, 11008, 151936, True, 3_085_938_688),
    "qwen2.5-7b": ModelSpec("qwen2", 28, 3584, 28, 4, 128, 18944, 152064, False, 7_615_616_512),
    "qwen2.5-14b": ModelSpec("qwen2", 48, 5120, 40, 8, 128, 13824, 152064, False, 14_770_033_664),
    "qwen2.5-32b": ModelSpec("qwen2", 64, 5120, 40, 8, 128, 27648, 152064, False, 32_763_876_352),
    "qwen2.5-72b": ModelSpec("qwen2", 80, 8192, 64, 8, 128, 29568, 152064, False, 72_706_203_648),
    "llama-3.2-1b": ModelSpec("llama3", 16, 2048, 32, 8, 64, 8192, 128256, True, 1_235_814_400),
    "llama-3.2-3b": ModelSpec("llama3", 28, 3072, 24, 8, 128, 8192, 128256, True, 3_212_749_824),
    "llama-3.1-8b": ModelSpec("llama3", 32, 4096, 32, 8, 128, 14336, 128256, False, 8_030_261_248),
    "llama-3.1-70b": ModelSpec("llama3", 80, 8192, 64, 8, 128, 28672, 128256, False, 70_553_706_496),
    "llama-3.1-405b": ModelSpec("llama3", 126, 16384, 128, 8, 128, 53248, 128256, False, 405_853_388_800),
    "gemma-2-2b": ModelSpec("gemma", 26, 2304, 8, 4, 256, 9216, 256000, True, 2_614_341_888),
    "gemma-2-9b": ModelSpec("gemma", 42, 3584, 16, 8, 256, 14336, 256000, True, 9_241_705_984),
    "gemma-2-27b": ModelSpec("gemma", 46, 4608, 32, 16, 128, 36864, 256000, True, 27_227_128_320),
}


@dataclass(frozen=True)
class TrimFamily:
    ref_n_vocab: int
    ref_kept: int  # tokens select_lossless keeps (before padding) on the reference vocabulary
    rows_beyond_are_padding: bool  # True: a larger n_vocab only adds unused rows (dropped)
    measured_on: str


# Measured with select_lossless on real vocabularies: Qwen2.5-Coder-0.5B-Instruct's GGUF
# (151,936 -> 103,806 + 2 padding = 103,808), llama.cpp's vocab-llama-bpe.gguf (Llama 3:
# 128,256 -> 105,279) and Gemma-3-270m (262,144 -> 166,758 + 10 = 166,768). Qwen2.5-7B+ has
# 152,064 rows, the extra ones unused: the same tokens survive. Gemma 2's 256,000-token
# SentencePiece vocabulary is a different one: its kept count is estimated by Gemma 3's ratio.
TRIM_FAMILIES: dict[str, TrimFamily] = {
    "qwen2": TrimFamily(151936, 103806, True, "qwen2.5-coder-0.5b-instruct"),
    "llama3": TrimFamily(128256, 105279, True, "vocab-llama-bpe (Llama 3)"),
    "gemma": TrimFamily(262144, 166758, False, "gemma-3-270m (ratio applied to Gemma 2)"),
}

# Block size (weights) and bytes per block of the ggml types involved, from gguf-py.
BLOCKS: dict[str, tuple[int, int]] = {
    name: GGML_QUANT_SIZES[GGMLQuantizationType[name]]
    for name in ("F32", "F16", "Q8_0", "Q5_1", "Q5_0", "Q4_0", "IQ4_NL", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K")
}
# llama.cpp's fallback when a row length is not a multiple of the 256-weight K-quant block
# (llama_tensor_get_type), e.g. Qwen2.5-0.5B's 896.
K_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


@dataclass(frozen=True)
class Quant:
    body_bpw: float  # average bits per weight of the repeating layers (mixture average)
    embd_type: str  # token_embd.weight when the model has a separate output matrix
    output_type: str  # output.weight, or token_embd when tied (the quantizer treats it as output)


# llama.cpp quantizer: token_embd keeps the base type of the mix; output.weight (and a tied
# token_embd) becomes Q6_K for every quantized mix except Q8_0; F16/Q8_0 files are uniform.
QUANTS: dict[str, Quant] = {
    "F16": Quant(16.0, "F16", "F16"),
    "Q8_0": Quant(8.5, "Q8_0", "Q8_0"),
    "Q6_K": Quant(6.5625, "Q6_K", "Q6_K"),
    "Q5_K_M": Quant(5.69, "Q5_K", "Q6_K"),
    "Q4_K_M": Quant(4.85, "Q4_K", "Q6_K"),
    "Q4_0": Quant(4.5, "Q4_0", "Q6_K"),
    "Q3_K_M": Quant(3.91, "Q3_K", "Q6_K"),
    "Q2_K": Quant(3.35, "Q2_K", "Q6_K"),
}
ALL_QUANTS: tuple[str, ...] = tuple(QUANTS)


def tensor_type(ggml_type: str, row_len: int, is_output: bool) -> str:
    """The type llama.cpp actually uses for a vocab tensor whose rows are `row_len` long."""
    block = BLOCKS[ggml_type][0]
    if row_len % block == 0:
        return ggml_type
    if is_output:
        return "Q8_0"  # llama_tensor_get_type: output with nx % QK_K != 0 -> Q8_0
    return K_FALLBACK.get(ggml_type, "F16")


def tensor_bytes(ggml_type: str, n_rows: int, row_len: int) -> int:
    return tensor_nbytes((row_len, n_rows), GGMLQuantizationType[ggml_type])


def trimmed_n_vocab(family: str, n_vocab: int) -> int:
    """n_vocab after a lossless en+vi trim, padded as `trim` pads (dropped count % 16 == 0)."""
    f = TRIM_FAMILIES[family]
    if f.rows_beyond_are_padding and n_vocab >= f.ref_n_vocab:
        kept = f.ref_kept
    else:
        kept = round(n_vocab * f.ref_kept / f.ref_n_vocab)
    return kept + (n_vocab - kept) % PAD_MODULUS


def _check_n(name: str, v: int | None, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise TrimError(f"{name} must be a positive integer, got {v!r}")


def kv_cache_bytes(n_ctx: int, n_head_kv_per_layer: list[int], k_len: int, v_len: int) -> int:
    return n_ctx * sum(n_head_kv_per_layer) * (k_len + v_len) * 2


def compute_bytes(n_vocab: int, n_embd: int, n_ff: int, n_ubatch: int = DEFAULT_N_UBATCH) -> int:
    return n_vocab * n_ubatch * 4 + n_ubatch * (n_embd + n_ff) * 4 * ACTIVATION_FACTOR


def _breakdown(n_vocab: int, weights_gpu: int, weights_host: int, kv: int, n_embd: int, n_ff: int,
               n_ubatch: int, n_outputs: int) -> dict[str, Any]:
    compute = compute_bytes(n_vocab, n_embd, n_ff, n_ubatch)
    logits = n_vocab * n_outputs * 4
    total_gpu = weights_gpu + kv + compute + CUDA_OVERHEAD
    out: dict[str, Any] = {
        "n_vocab": n_vocab, "weights_gpu": weights_gpu, "weights_host": weights_host, "kv_cache": kv,
        "compute": compute, "logits_host": logits, "overhead": CUDA_OVERHEAD, "total_gpu": total_gpu,
        "total_host": weights_host + logits,
    }
    for card, cap in CARDS.items():
        out[f"fits_{card}"] = total_gpu <= cap
    return out


def _savings(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {
        "gpu_bytes": a["total_gpu"] - b["total_gpu"],
        "host_bytes": a["total_host"] - b["total_host"],
        "gpu_pct": round(100 * (a["total_gpu"] - b["total_gpu"]) / a["total_gpu"], 2),
    }
    for card in CARDS:
        s[f"newly_fits_{card}"] = b[f"fits_{card}"] and not a[f"fits_{card}"]
    return s


def _known(kind: str, names: Any) -> str:
    return f"unknown {kind}; known: " + ", ".join(names)


def estimate_spec(spec: str, quant: str, n_ctx: int = DEFAULT_N_CTX, trimmed_vocab: int | None = None,
              n_ubatch: int = DEFAULT_N_UBATCH, n_outputs: int = DEFAULT_N_OUTPUTS) -> dict[str, Any]:
    """Before/after memory of a model from the shipped table at one quant type."""
    key, q = spec.strip().lower(), quant.strip().upper()
    if key not in MODELS:
        raise TrimError(_known(f"model {spec!r}", MODELS))
    if q not in QUANTS:
        raise TrimError(_known(f"quant type {quant!r}", QUANTS))
    for name, v in (("n_ctx", n_ctx), ("n_ubatch", n_ubatch), ("n_outputs", n_outputs)):
        _check_n(name, v)
    _check_n("trimmed_vocab", trimmed_vocab, allow_none=True)
    m, qt = MODELS[key], QUANTS[q]
    n_trim = trimmed_n_vocab(m.family, m.n_vocab) if trimmed_vocab is None else int(trimmed_vocab)
    if n_trim > m.n_vocab:
        raise TrimError(f"trimmed_vocab {n_trim} is larger than {key}'s n_vocab {m.n_vocab}")
    body = round((m.n_params - m.vocab_params) * qt.body_bpw / 8)
    out_t = tensor_type(qt.output_type, m.n_embd, is_output=True)
    embd_t = out_t if m.tied else tensor_type(qt.embd_type, m.n_embd, is_output=False)
    kv = kv_cache_bytes(n_ctx, [m.n_head_kv] * m.n_layer, m.head_dim, m.head_dim)

    def side(n_vocab: int) -> dict[str, Any]:
        host = tensor_bytes(embd_t, n_vocab, m.n_embd)
        gpu = body + tensor_bytes(out_t, n_vocab, m.n_embd)  # output.weight, or the tied copy
        return _breakdown(n_vocab, gpu, host, kv, m.n_embd, m.n_ff, n_ubatch, n_outputs)

    before, after = side(m.n_vocab), side(n_trim)
    return {"model": key, "quant": q, "n_ctx": n_ctx, "source": "table", "tied": m.tied,
            "token_embd_type": embd_t, "output_type": out_t,
            "original": before, "trimmed": after, "savings": _savings(before, after)}


def _scalar(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _per_layer(g: GGUFFile, key: str, n_layer: int, default: int | None = None) -> list[int]:
    v = g.get(key)
    if v is None:
        if default is None:
            raise TrimError(f"{g.path}: {key} is missing; cannot size the KV cache")
        return [default] * n_layer
    if isinstance(v, np.ndarray):
        if len(v) != n_layer:
            raise TrimError(f"{g.path}: {key} has {len(v)} entries for {n_layer} layers")
        return [int(x) for x in v]
    return [int(_scalar(v))] * n_layer


def estimate_file(path: str | os.PathLike, n_ctx: int = DEFAULT_N_CTX, trimmed_vocab: int | None = None,
              n_ubatch: int = DEFAULT_N_UBATCH, n_outputs: int = DEFAULT_N_OUTPUTS) -> dict[str, Any]:
    """Before/after memory of a real GGUF, from its actual tensor bytes and its own tokenizer."""
    for name, v in (("n_ctx", n_ctx), ("n_ubatch", n_ubatch), ("n_outputs", n_outputs)):
        _check_n(name, v)
    _check_n("trimmed_vocab", trimmed_vocab, allow_none=True)
    with open_model(path) as g:
        arch = g.arch
        embd = g.tensor("token_embd.weight")
        if embd is None:
            raise TrimError(f"{g.path}: no token_embd.weight tensor (a vocab-only file?); nothing to plan")
        n_vocab, n_embd = embd.n_rows, embd.shape[0]
        n_layer = g.get(f"{arch}.block_count")
        if n_layer is None:
            raise TrimError(f"{g.path}: {arch}.block_count is missing")
        n_layer = int(_scalar(n_layer))
        n_head = _per_layer(g, f"{arch}.attention.head_count", n_layer)
        n_head_kv = _per_layer(g, f"{arch}.attention.head_count_kv", n_layer, default=max(n_head))
        k_len = int(_scalar(g.get(f"{arch}.attention.key_length", n_embd // max(n_head))))
        v_len = int(_scalar(g.get(f"{arch}.attention.value_length", k_len)))
        n_ff = max(_per_layer(g, f"{arch}.feed_forward_length", n_layer, default=4 * n_embd))
        vt = {t.name for t in vocab_tensors(g, n_vocab)}
        if trimmed_vocab is None:
            sel = select_lossless(Vocab.from_gguf(g))
            n_kept = sel.n_kept
            new_rows = add_padding(sel, has_vocab_tensors=True)  # may also re-keep UNUSED tokens
            n_trim = sel.n_kept + len(new_rows)
        else:
            n_kept = n_trim = int(trimmed_vocab)
        if n_trim > n_vocab:
            raise TrimError(f"trimmed_vocab {n_trim} is larger than the model's n_vocab {n_vocab}")
        tied = g.tensor("output.weight") is None
        kv = kv_cache_bytes(n_ctx, n_head_kv, k_len, v_len)

        def side(nv: int) -> dict[str, Any]:
            host = gpu = 0
            for t in g.tensors:
                b = t.nbytes // n_vocab * nv if t.name in vt else t.nbytes
                if t.name in HOST_TENSORS:
                    host += b
                    if tied and t.name == "token_embd.weight":
                        gpu += b  # duplicated into the output layer on the GPU
                else:
                    gpu += b
            return _breakdown(nv, gpu, host, kv, n_embd, n_ff, n_ubatch, n_outputs)

        before, after = side(n_vocab), side(n_trim)
        return {"model": Path(path).name, "quant": _file_type_name(g), "n_ctx": n_ctx, "source": "file",
                "arch": arch, "tied": tied, "n_kept": n_kept,
                "weights_file": sum(t.nbytes for t in g.tensors),
                "tied_copy": embd.nbytes if tied else 0,
                "token_embd_type": embd.type_name,
                "output_type": embd.type_name if tied else g.tensor("output.weight").type_name,
                "original": before, "trimmed": after, "savings": _savings(before, after)}


# llama_ftype values (include/llama.h) of the mixes this planner knows, for display.
_FTYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
           11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
           17: "Q5_K_M", 18: "Q6_K", 32: "BF16"}


def _file_type_name(g: GGUFFile) -> str:
    ft = g.get("general.file_type")
    if ft is None:
        return "?"
    ft = int(_scalar(ft))
    return _FTYPES.get(ft, f"ftype{ft}")


def estimate_all(quants: tuple[str, ...] | list[str] = ALL_QUANTS, n_ctx: int = DEFAULT_N_CTX) -> list[dict[str, Any]]:
    """Every model of the table at every requested quant type."""
    return [estimate_spec(spec, q, n_ctx) for spec in MODELS for q in quants]


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _yn(a: bool, b: bool) -> str:
    return f"{'yes' if a else 'no'} -> {'yes' if b else 'no'}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: GPU GiB and fit on 24/40 GB cards, before -> after trimming."""
    cells = []
    for r in rows:
        a, b = r["original"], r["trimmed"]
        cells.append([r["model"], r["quant"], f"{a['n_vocab']:,} -> {b['n_vocab']:,}",
                      f"{_gib(a['total_gpu'])} -> {_gib(b['total_gpu'])}", f"{r['savings']['gpu_bytes'] / MIB:.0f}",
                      _yn(a["fits_24gb"], b["fits_24gb"]), _yn(a["fits_40gb"], b["fits_40gb"])])
    return markdown_table(["model", "quant", "n_vocab", "GPU GiB", "saved MiB", "fits 24 GB", "fits 40 GB"], cells)


def newly_fitting(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (model, quant, card) that fits only after trimming."""
    out = []
    for r in rows:
        for card in CARDS:
            if r["savings"][f"newly_fits_{card}"]:
                out.append(f"{r['model']} {r['quant']} now fits {card[:-2]} GB "
                           f"({_gib(r['original']['total_gpu'])} -> {_gib(r['trimmed']['total_gpu'])} GiB "
                           f"at n_ctx {r['n_ctx']})")
    return out


def estimate(model: str | os.PathLike | None = None, spec: str | None = None, quant: str = "Q4_K_M",
             n_ctx: int = DEFAULT_N_CTX) -> list[dict[str, Any]]:
    """`gguf-trim bench vram`'s rows: one GGUF file, or a model of the table (`spec`; 'all': every one)
    at `quant` ('all': every quant type)."""
    if bool(model) == bool(spec):
        raise TrimError("give either MODEL.gguf or --spec NAME")
    if model:
        return [estimate_file(model, n_ctx=n_ctx)]
    quants = ALL_QUANTS if quant == "all" else (quant,)
    return estimate_all(quants, n_ctx=n_ctx) if spec == "all" else [estimate_spec(spec, q, n_ctx=n_ctx) for q in quants]
