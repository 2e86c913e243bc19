"""Trims at scale (`gguf-trim bench scale`, `make bench-scale`) in miniature, and trim's progress bar.

The real benchmark writes 2 GB and 20 GB files and takes many minutes; here the same code runs on a
tiny shape (a few MB), and the 70B-class shapes are checked on paper (tensor names, shapes, sizes)."""

from __future__ import annotations

from click.testing import CliRunner
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim import GGUFFile, trim
from gguf_trim.bench import scale
from gguf_trim.bench.trim import QWEN25_7B, Shape, make_synthetic, synthetic_size, synthetic_tensors
from gguf_trim.cli import main
from gguf_trim.rewrite import model as rewrite_model

from .conftest import vocab_file

TINY = Shape("qwen2", 256, 512, 4, 2, 64, True, "tiny")


def test_70b_shapes_are_the_real_models():
    shape, vocab = scale.SHAPES["qwen2.5-72b"]
    t = {name: (rows, cols) for name, rows, cols, _ in synthetic_tensors(shape, 151936, 1)}
    assert t["token_embd.weight"] == t["output.weight"] == (151936, 8192)
    assert t["blk.0.attn_k.weight"] == (1024, 8192) and t["blk.0.ffn_gate.weight"] == (29568, 8192)
    assert t["blk.0.attn_q.bias"] == (8192, 1) and vocab == "vocab-qwen2.gguf"
    types = {name: Q(qt).name for name, _, _, qt in synthetic_tensors(shape, 151936, 1)}
    assert types["output.weight"] == "Q6_K" and types["blk.0.ffn_up.weight"] == "Q4_K"
    assert types["blk.0.ffn_down.weight"] == "Q8_0"  # 29,568 wide: no whole K-quant blocks, llama.cpp's fallback
    shape, vocab = scale.SHAPES["llama-3.1-70b"]
    names = [name for name, *_ in synthetic_tensors(shape, 128256, 2)]
    assert "blk.1.ffn_down.weight" in names and not any(n.endswith(".bias") for n in names)
    # each target size is reached with as few layers as it takes
    n = scale.layers_for(shape, 128256, 20 * 10**9)
    assert synthetic_size(shape, 128256, n) >= 20 * 10**9 > synthetic_size(shape, 128256, n - 1)
    assert scale.layers_for(shape, 128256, 1) == 1


def test_fit_disk_keeps_source_and_one_copy():
    one = synthetic_size(TINY, 1000, 1)
    assert scale.fit_disk(TINY, 1000, 4, 10 * one + scale.DISK_MARGIN) == (4, None)
    n, note = scale.fit_disk(TINY, 1000, 40, 10 * one + scale.DISK_MARGIN)
    assert n < 40 and 2 * synthetic_size(TINY, 1000, n) + scale.DISK_MARGIN <= 10 * one + scale.DISK_MARGIN
    assert "free" in note


def test_synthetic_file_is_the_size_computed(tmp_path):
    vocab = vocab_file("qwen2")
    path = make_synthetic(tmp_path / "s.gguf", vocab, TINY, n_layer=2)
    with GGUFFile(path) as g:
        n_vocab = len(g.get("tokenizer.ggml.tokens"))
        assert g.size - g.data_offset == synthetic_size(TINY, n_vocab, 2)
        assert g.get("qwen2.block_count") == 2
        assert [t.name for t in g.tensors] == [name for name, *_ in synthetic_tensors(TINY, n_vocab, 2)]
    assert QWEN25_7B.n_layer == 28


def test_bench_scale_runs_trim_cp_and_verify(tmp_path, monkeypatch):
    monkeypatch.setitem(scale.SHAPES, "tiny", (TINY, "vocab-llama-spm.gguf"))
    models = vocab_file("qwen2").parent
    res = scale.bench_scale(["tiny"], [10**6, 20 * 10**6], tmp_path, runs=1, cache="warm", models_dir=models,
                            log=lambda m: None)
    assert res["cache"] == "warm" and len(res["rows"]) == 2
    small, big = res["rows"]
    assert small["n_layer"] == 1 and big["n_layer"] > 1 and big["size"] >= 20 * 10**6
    for r in res["rows"]:
        assert r["trimmed_size"] < r["size"] and r["trim_peak_rss"] > 0 and len(r["cp_sync_s"]) == 1
        assert r["verify"]["exit"] == 0 and r["verify"]["identical_lines"] == r["verify"]["lines"] == 4
    assert set(res["rss_flat"]) == {"tiny"}
    assert "| tiny-like, 1 of 64 layers |" in scale.markdown(res)
    assert list(tmp_path.iterdir()) == []  # generated files and outputs removed


def test_trim_progress_bar_only_on_a_terminal_and_output_unchanged(tmp_path, monkeypatch, capsys):
    src = make_synthetic(tmp_path / "m.gguf", vocab_file("llama-spm"), TINY, n_layer=1)
    # without and with the copy started before the selection (as for files over 1 GiB: another header reserve)
    refs = {overlap: trim(src, tmp_path / f"ref{overlap}.gguf", overlap=overlap)[0].output.read_bytes()
            for overlap in (False, True)}
    monkeypatch.setattr(rewrite_model, "PROGRESS_MIN_BYTES", 0)  # every file "large"
    # the CLI asks for the bar only when stderr is a terminal: under CliRunner it is not
    r = CliRunner().invoke(main, ["trim", str(src), "-o", str(tmp_path / "cli.gguf")])
    assert r.exit_code == 0, r.output
    assert r.stderr == "" and "%|" not in r.output
    assert (tmp_path / "cli.gguf").read_bytes() == refs[False]
    # asked for, the bar is drawn on stderr, and the bytes written are the same
    for overlap in (False, True):
        capsys.readouterr()
        trim(src, tmp_path / "bar.gguf", progress=True, overlap=overlap)
        err = capsys.readouterr().err
        assert "%|" in err and "bar.gguf" in err
        assert (tmp_path / "bar.gguf").read_bytes() == refs[overlap]
