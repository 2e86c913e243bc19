"""VRAM planner: exact arithmetic on the shipped table, the table against the public parameter
counts and llama.cpp's quantizer rules, and estimate_file against real GGUFs and their real trims."""

from __future__ import annotations

import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from gguf_trim import GGUFFile, TrimError, Vocab, trim
from gguf_trim.bench.vram import (
    ALL_QUANTS,
    BLOCKS,
    CARDS,
    CUDA_OVERHEAD,
    GIB,
    MODELS,
    QUANTS,
    estimate_all,
    estimate_file,
    estimate_spec,
    format_table,
    newly_fitting,
    tensor_type,
    trimmed_n_vocab,
)
from gguf_trim.rewrite.padding import PAD_MODULUS, add_padding
from gguf_trim.selection.selection import select_lossless

from .conftest import GEMMA, QWEN, need, vocab_file


def test_table_hyperparameters_give_the_published_parameter_counts():
    """A typo in any hyper-parameter would show up as a parameter count off the published one."""
    for name, m in MODELS.items():
        bias = m.family == "qwen2"  # Qwen2 has q/k/v biases
        norms = 4 if m.family == "gemma" else 2  # Gemma 2: pre/post norms around attention and FFN
        q = m.n_embd * m.n_head * m.head_dim + (m.n_head * m.head_dim if bias else 0)
        kv = 2 * (m.n_embd * m.n_head_kv * m.head_dim + (m.n_head_kv * m.head_dim if bias else 0))
        o = m.n_head * m.head_dim * m.n_embd
        per_layer = q + kv + o + 3 * m.n_embd * m.n_ff + norms * m.n_embd
        total = m.n_layer * per_layer + m.vocab_params + m.n_embd
        assert total == m.n_params, name


def test_block_sizes_match_ggml():
    for name, (block, size) in BLOCKS.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType[name]] == (block, size), name


def test_kv_cache_exact():
    # 2 (K and V) x 32 layers x 8192 positions x 8 KV heads x 128 dims x 2 bytes (F16) = 1 GiB
    assert estimate_spec("llama-3.1-8b", "Q4_K_M")["original"]["kv_cache"] == 2 * 32 * 8192 * 8 * 128 * 2 == GIB
    r = estimate_spec("qwen2.5-7b", "Q8_0", n_ctx=32768)
    assert r["original"]["kv_cache"] == r["trimmed"]["kv_cache"] == 2 * 28 * 32768 * 4 * 128 * 2
    assert estimate_spec("gemma-2-27b", "Q4_K_M", n_ctx=4096)["original"]["kv_cache"] == 2 * 46 * 4096 * 16 * 128 * 2


def test_spec_breakdown_arithmetic():
    r = estimate_spec("llama-3.1-8b", "Q4_K_M")
    a, b = r["original"], r["trimmed"]
    assert (r["token_embd_type"], r["output_type"]) == ("Q4_K", "Q6_K")
    assert (a["n_vocab"], b["n_vocab"]) == (128256, 105280)
    body = round((8_030_261_248 - 2 * 128256 * 4096) * 4.85 / 8)
    for side, nv in ((a, 128256), (b, 105280)):
        assert side["weights_host"] == nv * 4096 // 256 * 144  # token_embd Q4_K, on the CPU
        assert side["weights_gpu"] == body + nv * 4096 // 256 * 210  # + output.weight Q6_K
        assert side["compute"] == nv * 512 * 4 + 512 * (4096 + 14336) * 4 * 2
        assert side["logits_host"] == nv * 512 * 4
        assert side["total_gpu"] == side["weights_gpu"] + side["kv_cache"] + side["compute"] + CUDA_OVERHEAD
        assert side["fits_24gb"] == (side["total_gpu"] <= 24 * GIB)
    assert r["savings"]["gpu_bytes"] == a["total_gpu"] - b["total_gpu"] == (128256 - 105280) * (
        4096 // 256 * 210 + 512 * 4)


def test_quantizer_type_rules():
    # tied models: the quantizer treats token_embd as the output matrix -> Q6_K in K mixes
    assert estimate_spec("gemma-2-9b", "Q4_K_M")["token_embd_type"] == "Q6_K"
    assert estimate_spec("llama-3.2-1b", "Q4_0")["output_type"] == "Q6_K"
    assert estimate_spec("llama-3.1-70b", "Q8_0")["output_type"] == "Q8_0"
    assert estimate_spec("qwen2.5-7b", "Q5_K_M")["token_embd_type"] == "Q5_K"
    # 896 is not a multiple of 256: output falls back to Q8_0
    assert estimate_spec("qwen2.5-0.5b", "Q4_K_M")["output_type"] == "Q8_0"


def test_quantizer_type_rules_match_a_real_q4_k_m_file():
    # (the 1.5B file, Q4_K/Q6_K, comes from `make models-big` and is not part of every test run)
    with GGUFFile(need(QWEN)) as g:
        assert g.get("general.file_type") == 15  # Q4_K_M
        n_embd = g.get("qwen2.embedding_length")
        q = QUANTS["Q4_K_M"]
        assert tensor_type(q.embd_type, n_embd, is_output=False) == g.tensor("token_embd.weight").type_name
        assert tensor_type(q.output_type, n_embd, is_output=True) == g.tensor("output.weight").type_name


def test_trimmed_vocab_defaults():
    assert trimmed_n_vocab("qwen2", 151936) == 103808
    assert trimmed_n_vocab("qwen2", 152064) == 103808  # the 128 extra rows are unused padding
    assert trimmed_n_vocab("llama3", 128256) == 105280
    assert trimmed_n_vocab("gemma", 262144) == 166768
    for name, m in MODELS.items():
        n = estimate_spec(name, "Q4_K_M")["trimmed"]["n_vocab"]
        assert n < m.n_vocab and (m.n_vocab - n) % PAD_MODULUS == 0, name


def test_every_spec_and_quant_computes_and_trimming_always_helps():
    rows = estimate_all(ALL_QUANTS)
    assert len(rows) == len(MODELS) * len(QUANTS)
    for r in rows:
        a, b = r["original"], r["trimmed"]
        assert b["total_gpu"] < a["total_gpu"], (r["model"], r["quant"])
        assert b["total_host"] < a["total_host"]
        assert b["weights_gpu"] < a["weights_gpu"]
        assert r["savings"]["gpu_bytes"] > 0
        for card in CARDS:
            assert b[f"fits_{card}"] or not a[f"fits_{card}"]  # trimming never un-fits a model
    table = format_table(rows)
    assert len(table.splitlines()) == len(rows) + 2
    assert "| qwen2.5-32b | Q5_K_M | 152,064 -> 103,808 |" in table


def test_newly_fitting():
    at_8k = newly_fitting(estimate_all(ALL_QUANTS, n_ctx=8192))
    print("newly fitting at n_ctx 8192:", at_8k)
    # Checked by hand at n_ctx 9216, qwen2.5-32b Q5_K_M (untied, 152,064 -> 103,808 rows):
    # body 31,206,740,992 params x 5.69 / 8 = 22,195,794,531; output Q6_K 152,064 x 20 x 210 = 638,668,800;
    # KV 2 x 64 x 9216 x 8 x 128 x 2 = 2,415,919,104; compute 152,064 x 2048 + 512 x 32,768 x 8 = 445,644,800;
    # + 314,572,800 overhead = 26,010,600,035 B = 24.22 GiB. Trimmed: output -48,256 x 4,200 = -202,675,200
    # and compute -48,256 x 2,048 = -98,828,288 -> 25,709,096,547 B = 23.94 GiB <= 24 GiB.
    r = estimate_spec("qwen2.5-32b", "Q5_K_M", n_ctx=9216)
    assert r["original"]["total_gpu"] == 26_010_600_035
    assert r["trimmed"]["total_gpu"] == 25_709_096_547
    lines = newly_fitting(estimate_all(ALL_QUANTS, n_ctx=9216))
    print("newly fitting at n_ctx 9216:", lines)
    assert any(x.startswith("qwen2.5-32b Q5_K_M now fits 24 GB") for x in lines)
    assert newly_fitting([estimate_spec("qwen2.5-0.5b", "Q4_K_M")]) == []


def test_override_and_bad_input():
    r = estimate_spec("Llama-3.1-8B", "q4_k_m", trimmed_vocab=64000)
    assert (r["model"], r["quant"], r["trimmed"]["n_vocab"]) == ("llama-3.1-8b", "Q4_K_M", 64000)
    with pytest.raises(TrimError, match="unknown model 'qwen9-1b'; known: qwen2.5-0.5b, .*gemma-2-27b"):
        estimate_spec("qwen9-1b", "Q4_K_M")
    with pytest.raises(TrimError, match="unknown quant type 'Q7_K'; known: F16, Q8_0"):
        estimate_spec("qwen2.5-7b", "Q7_K")
    with pytest.raises(TrimError, match="larger than"):
        estimate_spec("qwen2.5-7b", "Q4_K_M", trimmed_vocab=200_000)
    for bad in (0, -5, 1.5, True):
        with pytest.raises(TrimError, match="positive integer"):
            estimate_spec("qwen2.5-7b", "Q4_K_M", n_ctx=bad)
    with pytest.raises(TrimError):
        estimate_file(vocab_file("llama-bpe"))  # vocab only: no tensors to size


@pytest.mark.parametrize("path", [GEMMA, QWEN], ids=["gemma", "qwen"])
def test_estimate_file_real_model(path, tmp_path):
    src = need(path)
    r = estimate_file(src)
    with GGUFFile(src) as g:
        file_bytes = sum(t.nbytes for t in g.tensors)
        sel = select_lossless(Vocab.from_gguf(g))
        n_kept = sel.n_kept
        n_pad_rows = len(add_padding(sel, True))
        n_trimmed = sel.n_kept + n_pad_rows
        n_vocab = g.tensor("token_embd.weight").n_rows
        arch = g.arch
        n_layer, n_kv = g.get(f"{arch}.block_count"), g.get(f"{arch}.attention.head_count_kv")
        head_dim = g.get(f"{arch}.attention.key_length",
                         g.get(f"{arch}.embedding_length") // g.get(f"{arch}.attention.head_count"))
        tied = g.tensor("output.weight") is None
        embd_bytes = g.tensor("token_embd.weight").nbytes
    a, b = r["original"], r["trimmed"]
    assert r["tied"] == tied == (path == GEMMA)
    assert r["n_kept"] == n_kept
    assert (a["n_vocab"], b["n_vocab"]) == (n_vocab, n_trimmed)
    assert (n_vocab - b["n_vocab"]) % PAD_MODULUS == 0
    # every tensor byte is on the host or the GPU; a tied embedding is on both
    assert a["weights_host"] == embd_bytes
    assert a["weights_host"] + a["weights_gpu"] - r["tied_copy"] == file_bytes == r["weights_file"]
    assert a["kv_cache"] == 2 * n_layer * 8192 * n_kv * head_dim * 2
    assert b["total_gpu"] < a["total_gpu"]
    # the planned trimmed weights are the bytes `trim` really writes
    out = tmp_path / "trimmed.gguf"
    trim(src, out, check=False)
    with GGUFFile(out) as t:
        assert t.tensor("token_embd.weight").n_rows == b["n_vocab"]
        trimmed_bytes = sum(x.nbytes for x in t.tensors)
        tied_copy = t.tensor("token_embd.weight").nbytes if tied else 0
    assert b["weights_host"] + b["weights_gpu"] - tied_copy == trimmed_bytes
    print(format_table([r]))
