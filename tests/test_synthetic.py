"""Tiny models with real vocabularies and random weights in every common tensor type:
trim -> loads in llama-cpp-python -> logits at kept ids exactly equal -> ids map back."""

from __future__ import annotations

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim import GGUFFile, trim
from gguf_trim.rewrite.verify import kept_ids_of, logits_diff
from gguf_trim.runtime.llama import load_llama, tokenize
from tests.synth import build_model

from .conftest import vocab_file

TEXT = ["Hello, world! The quick brown fox jumps over the lazy dog.",
        "Xin chào thế giới! Tôi là học sinh ở Việt Nam, năm 2024.",
        "Naïve café résumé — “quotes”, 3.14 ≤ π, ₫100 → €5 😀"]

CASES = [
    # vocab, arch, token_embd type, output type (None: tied), output.bias
    ("qwen2", "qwen2", Q.Q4_K, Q.Q6_K, True),
    ("llama-bpe", "llama", Q.Q8_0, None, False),
    ("llama-bpe", "llama", Q.Q4_0, Q.F16, False),
    ("llama-spm", "llama", Q.F32, None, False),
    ("llama-spm", "llama", Q.F16, Q.F32, False),
    ("phi-3", "llama", Q.Q6_K, Q.Q4_K, False),
]


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-{c[2].name}-{c[3].name if c[3] else 'tied'}")
def pair(request, tmp_path_factory):
    vocab, arch, embd, out, bias = request.param
    d = tmp_path_factory.mktemp("synth")
    src = build_model(d / "model.gguf", vocab_file(vocab), embd, out, arch=arch, output_bias=bias)
    # the copy-while-choosing path (default only above 1 GiB) on every other case
    overlap = CASES.index(request.param) % 2 == 0
    res, sel = trim(src, d / "model.envi.gguf", overlap=overlap)
    with GGUFFile(d / "model.envi.gguf") as g:
        padding = len(g.get("gguf_trim.header_padding", b""))
        # copying before the selection reserves a bound; otherwise only page alignment is padded
        assert padding > 4096 if overlap else padding < 4096
    return src, d / "model.envi.gguf", res, sel


def test_loads_and_logits_are_exact(pair):
    src, dst, res, sel = pair
    kept = kept_ids_of(dst)
    r = logits_diff(src, dst, kept, TEXT)
    assert r["logits_lines"] == len(TEXT)
    assert r["logits_max_abs_diff"] == 0.0


def test_ids_map_back_exactly(pair):
    src, dst, res, sel = pair
    kept = kept_ids_of(dst)
    assert np.array_equal(kept, sel.kept_ids)
    a, b = load_llama(src, vocab_only=True), load_llama(dst, vocab_only=True)
    assert b.n_vocab() == res.n_vocab_trimmed < a.n_vocab()
    for line in TEXT:
        ids_a, ids_b = tokenize(a, line), tokenize(b, line)
        assert kept[ids_b].tolist() == ids_a
        assert b.detokenize(ids_b) == a.detokenize(ids_a)


def test_vocab_rows_are_sliced_byte_exactly(pair):
    src, dst, res, sel = pair
    kept = sel.kept_ids
    with GGUFFile(src) as g, GGUFFile(dst) as h:
        n = len(g.get("tokenizer.ggml.tokens"))
        sliced = [t.name for t in g.tensors if t.shape[-1] == n]
        assert sorted(sliced) == res.sliced_tensors
        for t in g.tensors:
            u = h.tensor(t.name)
            assert u.ggml_type == t.ggml_type
            a = np.frombuffer(g.tensor_bytes(t), np.uint8)
            b = np.frombuffer(h.tensor_bytes(u), np.uint8)
            if t.name in sliced:
                a = a.reshape(n, -1)
                b = b.reshape(res.n_vocab_trimmed, -1)
                assert np.array_equal(b[: len(kept)], a[kept])
                pad_src = h.get("gguf_trim.padding_rows")
                n_new = 0 if pad_src is None else len(pad_src)
                assert res.n_vocab_trimmed == len(kept) + n_new
                assert (res.n_vocab_original - res.n_vocab_trimmed) % 16 == 0  # same kernel class
                assert res.n_padding >= n_new
                if n_new:  # new padding tokens repeat an existing row
                    assert np.array_equal(b[len(kept):], a[pad_src])
            else:
                assert np.array_equal(a, b)


def test_without_copy_file_range_the_map_is_used(tmp_path, monkeypatch):
    """Filesystems or kernels without copy_file_range: the bytes go through the memory map."""
    src = build_model(tmp_path / "m.gguf", vocab_file("qwen2"), Q.Q8_0, Q.Q4_K)

    def refuse(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("os.copy_file_range", refuse)
    for overlap in (False, True):
        out = tmp_path / f"t{overlap}.gguf"
        res, sel = trim(src, out, overlap=overlap)
        assert logits_diff(src, out, kept_ids_of(out), TEXT[:2])["logits_max_abs_diff"] == 0.0
        with GGUFFile(src) as g, GGUFFile(out) as h:
            for name in ("blk.0.ffn_down.weight", "output.weight"):
                a, b = g.tensor(name), h.tensor(name)
                if name == "output.weight":
                    rows = np.frombuffer(g.tensor_bytes(a), np.uint8).reshape(res.n_vocab_original, -1)
                    got = np.frombuffer(h.tensor_bytes(b), np.uint8).reshape(res.n_vocab_trimmed, -1)
                    assert np.array_equal(got[: sel.n_kept], rows[sel.kept_ids])
                else:
                    assert bytes(g.tensor_bytes(a)) == bytes(h.tensor_bytes(b))


def test_trimming_a_trimmed_file_maps_back_to_the_first_source(tmp_path):
    src = build_model(tmp_path / "m.gguf", vocab_file("llama-spm"), Q.F16, Q.Q4_K)
    once, sel1 = trim(src, tmp_path / "once.gguf")
    drop = tmp_path / "drop.txt"
    drop.write_text("▁hello\n", encoding="utf-8")  # a leaf: no kept token is built from it
    twice, sel2 = trim(tmp_path / "once.gguf", tmp_path / "twice.gguf", drop=drop)
    assert len(kept_ids_of(tmp_path / "twice.gguf")) == len(kept_ids_of(tmp_path / "once.gguf")) - 1
    assert (twice.n_vocab_original - twice.n_vocab_trimmed) % 16 == 0
    kept = kept_ids_of(tmp_path / "twice.gguf", 32000)  # ids of the first source
    with GGUFFile(src) as g, GGUFFile(tmp_path / "twice.gguf") as h:
        assert h.fields["gguf_trim.source_file"].text() == src.name
        assert h.get("gguf_trim.source_n_vocab") == 32000
        toks = g.get("tokenizer.ggml.tokens")
        assert [toks[i] for i in kept] == h.get("tokenizer.ggml.tokens")[: len(kept)]
        assert "▁hello".encode() not in h.get("tokenizer.ggml.tokens")
    assert logits_diff(src, tmp_path / "twice.gguf", kept, TEXT)["logits_max_abs_diff"] == 0.0


def test_source_sha256_only_when_asked_and_carried_through_a_second_trim(tmp_path):
    import hashlib

    from click.testing import CliRunner

    from gguf_trim.cli import main

    src = build_model(tmp_path / "m.gguf", vocab_file("llama-bpe"), Q.Q8_0, None)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    for overlap in (False, True):  # the hash thread runs beside the copy either way
        trim(src, tmp_path / f"h{overlap}.gguf", overlap=overlap, hash_source=True)
        with GGUFFile(tmp_path / f"h{overlap}.gguf") as h:
            assert h.fields["gguf_trim.source_sha256"].text() == sha
            assert h.get("gguf_trim.source_size") == src.stat().st_size
    r = CliRunner().invoke(main, ["trim", str(src), "-o", str(tmp_path / "plain.gguf")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["trim", str(src), "-o", str(tmp_path / "cli.gguf"), "--source-sha256"])
    assert r.exit_code == 0, r.output
    with GGUFFile(tmp_path / "plain.gguf") as p, GGUFFile(tmp_path / "cli.gguf") as c:
        assert "gguf_trim.source_sha256" not in p.fields
        assert c.fields["gguf_trim.source_sha256"].text() == sha
    # a second trim keeps describing the first source, hashed or not
    for first, want in (("cli.gguf", sha), ("plain.gguf", None)):
        trim(tmp_path / first, tmp_path / "again.gguf", hash_source=True)
        with GGUFFile(tmp_path / "again.gguf") as a:
            got = a.fields.get("gguf_trim.source_sha256")
            assert (got.text() if got is not None else None) == want
            assert a.fields["gguf_trim.source_file"].text() == src.name
            assert a.get("gguf_trim.source_size") == src.stat().st_size
