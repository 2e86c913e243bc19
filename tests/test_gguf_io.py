"""The fast GGUF parser agrees with gguf-py's reader, and the writer reproduces files exactly."""

from __future__ import annotations

import numpy as np
from gguf import GGUFReader

from gguf_trim.format.gguffile import GGUFFile, OutTensor, write_gguf

from .conftest import SMOLLM, need, vocab_file


def _assert_same_as_gguf_py(path):
    ref = GGUFReader(str(path))
    with GGUFFile(path) as g:
        assert [k for k in ref.fields if not k.startswith("GGUF.")] == list(g.fields)
        for name, f in g.fields.items():
            rf = ref.fields[name]
            assert int(rf.types[0]) == int(f.vtype), name
            if isinstance(f.value, list):
                assert f.value == [bytes(rf.parts[i]) for i in rf.data], name
            elif isinstance(f.value, np.ndarray):
                assert np.array_equal(f.value, np.array([rf.parts[i][0] for i in rf.data])), name
            elif isinstance(f.value, bytes):
                assert f.value == bytes(rf.parts[rf.data[0]]), name
            else:
                assert f.value == rf.parts[rf.data[0]][0], name
        assert [t.name for t in g.tensors] == [t.name for t in ref.tensors]
        for t, rt in zip(g.tensors, ref.tensors):
            assert list(t.shape) == [int(x) for x in rt.shape]
            assert t.ggml_type == int(rt.tensor_type)
            assert t.nbytes == int(rt.n_bytes)
            assert g.data_offset + t.offset == rt.data_offset


def test_parser_matches_gguf_py_on_a_vocab_file():
    _assert_same_as_gguf_py(vocab_file("llama-spm"))


def test_parser_matches_gguf_py_on_a_model():
    _assert_same_as_gguf_py(need(SMOLLM))


def test_writer_reproduces_a_file_byte_for_byte(tmp_path):
    src = need(SMOLLM)
    out = tmp_path / "copy.gguf"
    with GGUFFile(src) as g, open(out, "wb") as fh:
        def copier(t):
            return lambda f: f.write(g.tensor_bytes(t))

        tensors = [OutTensor(t.name, t.shape, t.ggml_type, t.nbytes, copier(t)) for t in g.tensors]
        write_gguf(fh, [f.raw for f in g.fields.values()], tensors, g.alignment, g.version)
    assert out.read_bytes() == src.read_bytes()
