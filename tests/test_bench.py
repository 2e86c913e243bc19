"""The benchmark's bookkeeping: bytes per decode step, pairing, the trim-vs-cp runner. Timings are
never asserted (they belong in `make bench`); what is asserted is exact."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim import GGUFFile, trim
from gguf_trim.bench.infer import bench_models, compare, decode_bytes_per_token, markdown, vocab_bytes
from gguf_trim.cli import main
from tests.synth import build_model, write_split

from .conftest import GEMMA, QWEN, need, vocab_file


@pytest.mark.parametrize("model", [GEMMA, QWEN], ids=["gemma-tied", "qwen-untied"])
def test_decode_bytes_shrink_by_exactly_the_dropped_rows(model, tmp_path):
    src = need(model)
    out = tmp_path / "t.gguf"
    res, _ = trim(src, out)
    dropped = res.n_vocab_original - res.n_vocab_trimmed
    with GGUFFile(src) as g:
        rows = {t.name: t.row_bytes for t in g.tensors if t.shape[-1] == res.n_vocab_original}
        total = sum(t.nbytes for t in g.tensors)
    assert vocab_bytes(src) - vocab_bytes(out) == dropped * sum(rows.values())
    if "output.weight" in rows:  # untied: the input embedding costs one row per step, the output all rows
        assert decode_bytes_per_token(src) == total - (res.n_vocab_original - 1) * rows["token_embd.weight"]
        assert decode_bytes_per_token(src) - decode_bytes_per_token(out) == dropped * rows["output.weight"]
    else:  # tied: token_embd is the output matrix, read whole
        assert decode_bytes_per_token(src) == total
        assert decode_bytes_per_token(src) - decode_bytes_per_token(out) == dropped * rows["token_embd.weight"]


def test_bench_pairs_each_trim_with_its_original(tmp_path):
    src = build_model(tmp_path / "m.gguf", vocab_file("llama-bpe"), Q.Q8_0, Q.Q4_K)
    trim(src, tmp_path / "m.envi.gguf")
    models = [str(src), str(tmp_path / "m.envi.gguf")]
    rows = bench_models(models, runs=1, n_prompt=16, n_gen=4, threads=1)
    assert [r["model"] for r in rows] == models
    for r in rows:
        assert r["runs"] == 1 and r["tg_tok_s"] > 0 and r["pp_tok_s"] > 0 and r["peak_rss"] > 0
    (pair,) = compare(rows)
    assert pair["original"] == models[0] and pair["trimmed"] == models[1]
    assert pair["byte_ideal_tg_speedup"] == decode_bytes_per_token(models[0]) / decode_bytes_per_token(models[1])
    assert pair["byte_ideal_tg_speedup"] > 1
    table = markdown(rows, [pair])
    assert "m.envi.gguf" in table and f"{pair['byte_ideal_tg_speedup']:.3f}" in table


def test_bench_trim_runs_the_real_trim_and_cp(tmp_path):
    src = build_model(tmp_path / "m.gguf", vocab_file("qwen2"), Q.Q4_K, Q.Q6_K, arch="qwen2", output_bias=True)
    res, _ = trim(src, tmp_path / "ref.gguf")
    r = CliRunner().invoke(main, ["bench-trim", str(src), "--runs", "2", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    (row,) = json.loads((tmp_path / "b.json").read_text())
    assert row["size"] == res.size_original and row["trimmed_size"] == res.size_trimmed
    assert len(row["cp_all_s"]) == len(row["trim_all_s"]) == 2 and row["flags"] == []
    assert "| m.gguf |" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json", "m.gguf", "ref.gguf"]  # its temp folder is gone


def test_bench_trim_copies_and_trims_every_shard(tmp_path):
    src = build_model(tmp_path / "m.gguf", vocab_file("qwen2"), Q.Q4_K, Q.Q6_K, arch="qwen2", n_layer=3)
    (tmp_path / "s").mkdir()
    shards = write_split(src, tmp_path / "s" / "m.gguf", split_max_tensors=10)
    assert len(shards) > 2
    res, _ = trim(shards[0], tmp_path / "ref.gguf")
    r = CliRunner().invoke(main, ["bench-trim", str(shards[1]), "--runs", "1", "--json", str(tmp_path / "b.json")])
    assert r.exit_code == 0, r.output
    (row,) = json.loads((tmp_path / "b.json").read_text())
    assert row["shards"] == row["outputs"] == len(shards) == len(res.outputs)
    assert row["size"] == res.size_original == sum(p.stat().st_size for p in shards)
    assert row["trimmed_size"] == res.size_trimmed
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(p.name for p in shards)


@pytest.mark.server
def test_bench_translate_runs_llama_server_on_the_same_prompts(tmp_path):
    """The llama-server row: the same 4 segments through stock llama-server (token-id prompts, greedy),
    counted as gguf-trim counts, compared with the batched row; no speed asserted."""
    from gguf_trim.bench.translate import markdown, measure

    from .conftest import DEV

    model = tmp_path / "q.envi.gguf"
    trim(need(QWEN), model)
    rows = measure([str(model)], need(DEV / "prose.en-vi.tsv"), 4, parallels="2", n_ctx=2048, threads=2, flash="on",
                   server_parallel=2, log=lambda m: None)
    assert [(r["path"], r["parallel"]) for r in rows] == [("sequential", 1), ("batched", 2), ("llama-server", 2)]
    srv = rows[2]
    assert srv["errors"] == 0 and srv["segments"] == 4 and srv["batched_parallel"] == 2
    assert 0 < srv["tokens"] <= srv["tokens_predicted"] <= srv["tokens"] + 4  # less one end token per segment
    assert srv["prompt_cached"] > 0  # the shared prefix was reused in the slots
    assert 0 <= srv["identical"] <= 4 and 0 <= srv["identical_batched"] <= 4
    assert srv["batched_over_server"] > 0
    table = markdown(rows)
    assert "gguf-trim batched / llama-server" in table and f"{srv['batched_over_server']:.2f}x" in table
    assert f"({srv['identical_batched']}/4 batched)" in table
