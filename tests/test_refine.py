"""refine without PyTorch: rows from an .npz written back byte-exactly, bad input, the missing-torch line.

(Training itself needs the `train` extra: tests/test_refine_train.py, `make test-train`.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim import GGUFFile
from gguf_trim.extend.rows import (
    added_rows,
    greedy_continuations,
    head_tokens,
    open_single,
    read_rows,
    save_rows,
)
from gguf_trim.extend.words import detokenize_c, export_rows, extend_file
from gguf_trim.format.keys import REFINED_PREFIX
from gguf_trim.format.quant import encode_rows
from gguf_trim.runtime.llama import load_llama
from tests.synth import build_model

from .conftest import vocab_file
from .test_bad_input import assert_clean_failure, sha

WORDS = ["học sinh", "Việt Nam", "có thể", "thông tin", "sử dụng", "tập tin", "dữ liệu", "hiển thị"]
TEXT = ["Học sinh Việt Nam có thể sử dụng thông tin này.", "Tập tin dữ liệu được hiển thị ở đây.",
        "Hello, world: the quick brown fox."]


def extended_synth(folder: Path, embd: Q, output: Q | None, **kw) -> Path:
    """A tiny random qwen2-shaped model with Qwen2's real BPE vocabulary, extended with WORDS.
    (With a SentencePiece vocabulary that adds a space prefix, llama.cpp puts a space after a
    matched USER_DEFINED token, so text would not round-trip: an extend limit, not refine's.)"""
    src = build_model(folder / "m.gguf", vocab_file("qwen2"), embd, output, arch="qwen2", **kw)
    words = folder / "words.txt"
    words.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    out = folder / "m.ext.gguf"
    extend_file(src, words, out, top=len(WORDS))
    return out


def run_cli(*args: str, pre: str = "") -> subprocess.CompletedProcess:
    code = f"{pre}import sys; from gguf_trim.cli import main; sys.argv = ['gguf-trim', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def assert_only_new_rows_differ(a: Path, b: Path) -> None:
    """Every tensor byte-identical except the added rows of the row tensors; metadata equal but
    for the gguf_trim.refined_* keys."""
    with GGUFFile(a) as g, GGUFFile(b) as h:
        added = added_rows(g)
        start = int(added.ids[0])
        assert {k: f.raw for k, f in g.fields.items() if not k.startswith(REFINED_PREFIX)} == \
            {k: f.raw for k, f in h.fields.items() if not k.startswith(REFINED_PREFIX)}
        info = [[(t.name, t.shape, t.ggml_type) for t in f.tensors] for f in (g, h)]
        assert info[0] == info[1]
        for t, u in zip(g.tensors, h.tensors):
            x, y = bytes(g.tensor_bytes(t)), bytes(h.tensor_bytes(u))
            if t.name in added.tensors:
                row = t.nbytes // t.shape[-1]
                assert x[: start * row] == y[: start * row], f"old rows of {t.name} changed"
            else:
                assert x == y, f"{t.name} changed"


@pytest.mark.parametrize("embd,output", [(Q.F16, Q.Q6_K), (Q.Q8_0, None), (Q.Q4_K, Q.Q8_0)])
def test_import_rows_writes_exactly_the_encoded_rows(tmp_path, embd, output):
    ext = extended_synth(tmp_path, embd, output)
    before = sha(ext)
    with open_single(ext) as g:
        added = added_rows(g)
    rng = np.random.default_rng(1)
    rows = {name: rng.standard_normal((len(added.ids), added.n_embd)).astype(np.float32) for name in added.tensors}
    npz = tmp_path / "rows.npz"
    save_rows(npz, added, rows)
    out = tmp_path / "m.refined.gguf"
    r = run_cli("refine", str(ext), "--import-rows", str(npz), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert sha(ext) == before  # the input is never written
    assert_only_new_rows_differ(ext, out)
    with GGUFFile(out) as h:
        for name, x in rows.items():
            t = h.tensor(name)
            row = t.nbytes // t.shape[-1]
            got = bytes(h.tensor_bytes(t))[int(added.ids[0]) * row:]
            assert got == encode_rows(x, t.ggml_type)  # byte for byte what the tensor's own type encodes
        if embd == Q.F16:
            back = read_rows(h, added)["token_embd.weight"]
            assert np.array_equal(back, rows["token_embd.weight"].astype(np.float16).astype(np.float32))
        assert h.fields[REFINED_PREFIX + "from"].text() == "rows rows.npz"
    llm = load_llama(out, n_ctx=128)
    for line in TEXT:
        ids = llm.tokenize(line.encode(), add_bos=False, special=False)
        assert detokenize_c(llm, ids) == line
    assert llm.create_completion("Việt Nam", max_tokens=4, temperature=0.0)["choices"][0]["text"] is not None
    llm.close()


def test_export_then_import_round_trips_q8_rows(tmp_path):
    """extend --export-rows' file is accepted as is; Q8_0 rows dequantized and quantized again
    come back as the same bytes, so the whole file is unchanged but for the metadata."""
    ext = extended_synth(tmp_path, Q.Q8_0, Q.Q8_0)
    npz = tmp_path / "init.npz"
    export_rows(ext, npz)
    out = tmp_path / "same.gguf"
    r = run_cli("refine", str(ext), "--import-rows", str(npz), "-o", str(out))
    assert r.returncode == 0, r.stderr
    with GGUFFile(ext) as g, GGUFFile(out) as h:
        assert all(bytes(g.tensor_bytes(t)) == bytes(h.tensor_bytes(u)) for t, u in zip(g.tensors, h.tensors))


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
    ext = extended_synth(tmp_path, Q.Q8_0, None)
    plain = tmp_path / "m.gguf"
    with open_single(ext) as g:
        added = added_rows(g)
    out = tmp_path / "o.gguf"
    good = {"token_embd.weight": np.zeros((len(added.ids), added.n_embd), np.float32)}

    assert_clean_failure(run_cli("refine", str(plain), "--corpus", str(plain), "-o", str(out)), "not extended")
    assert_clean_failure(run_cli("refine", str(ext), "--import-rows", str(tmp_path / "none.npz"), "-o", str(out)),
                         "cannot read rows")
    assert_clean_failure(run_cli("refine", str(ext), "--import-rows", "x.npz", "-o", str(ext)), "input file")
    assert_clean_failure(run_cli("refine", str(ext), "-o", str(out)), "--corpus")
    for mix, msg in (("0.5", "1 weights for 2"), ("1,x", "one weight per"), ("0,0,0", ">= 0 and not all 0"),
                     ("1,-1,1", ">= 0"), ("1,1", "give it the last weight")):  # the self-text takes the last
        assert_clean_failure(run_cli("refine", str(ext), "--corpus", str(ext), "--corpus", str(ext), "--mix", mix,
                                     "-o", str(out)), msg)
    text = tmp_path / "vi.txt"
    text.write_text("có thể\nthông tin\n", encoding="utf-8")
    for twice in (["--corpus", str(text), "--corpus", str(text)], ["--corpus", str(text), "--eval-text", str(text)]):
        assert_clean_failure(run_cli("refine", str(ext), *twice, "-o", str(out)), "given twice")
    bad = tmp_path / "nan.npz"
    save_rows(bad, added, {"token_embd.weight": np.full_like(good["token_embd.weight"], np.nan)})
    assert_clean_failure(run_cli("refine", str(ext), "--import-rows", str(bad), "-o", str(out)), "NaN")
    short = tmp_path / "short.npz"
    np.savez(short, ids=added.ids[:-1], token_embd_weight=good["token_embd.weight"][:-1])
    assert_clean_failure(run_cli("refine", str(ext), "--import-rows", str(short), "-o", str(out)), "ids")
    wide = tmp_path / "wide.npz"
    np.savez(wide, ids=added.ids, token_embd_weight=np.zeros((len(added.ids), 3), np.float32))
    assert_clean_failure(run_cli("refine", str(ext), "--import-rows", str(wide), "-o", str(out)), "expected float")
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_missing_torch_is_one_line_exit_2(tmp_path):
    ext = extended_synth(tmp_path, Q.Q8_0, None)
    text = tmp_path / "vi.txt"
    text.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    out = tmp_path / "o.gguf"
    # the interpreter as it is where the extra is not installed: `import torch` fails
    hide = "sys_modules = __import__('sys').modules; sys_modules['torch'] = None; sys_modules['transformers'] = None; "
    r = run_cli("refine", str(ext), "--corpus", str(text), "-o", str(out), pre=hide)
    assert_clean_failure(r, 'pip install -e ".[train]"')
    assert not out.exists()


def test_self_text_is_what_the_model_wrote_before_extend(tmp_path):
    """The self-text refine trains on: the extended file's greedy continuations with its added
    tokens banned and the heads tokenized word by word are, token for token, the original file's
    greedy continuations (llama-cpp-python's one-at-a-time create_completion), though the heads
    hold compounds the extended file has tokens for."""
    ext = extended_synth(tmp_path, Q.F32, None)
    with open_single(ext) as g:
        start = int(added_rows(g).ids[0])
    heads = ["Học sinh Việt Nam có", "Tập tin dữ liệu được", "thông tin này", "The file was"]
    got = greedy_continuations(ext, start, heads, max_tokens=12, parallel=3)
    base = load_llama(tmp_path / "m.gguf", n_ctx=256)
    try:
        for h in heads:
            ids = head_tokens(base, h)
            assert ids == [t for j, w in enumerate(h.split())
                           for t in base.tokenize((" " + w if j else w).encode(), add_bos=False, special=False)]
        want = [base.create_completion(head_tokens(base, h), max_tokens=12, temperature=0.0, stop=["\n"])
                ["choices"][0]["text"] for h in heads]
    finally:
        base.close()
    assert got == want and any(got)
    ext_llm = load_llama(ext, vocab_only=True)
    assert any(t >= start for t in ext_llm.tokenize(heads[0].encode(), add_bos=False, special=False))
    assert all(t < start for h in heads for t in head_tokens(ext_llm, h))
    ext_llm.close()
