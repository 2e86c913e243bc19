"""`gguf-trim export`: the grammar, logit_bias map and Modelfile for runtimes that ignore the suppress key.

The constraints are checked where they are used: the grammar and the logit_bias map in stock llama-server
(marker `server`), the printed llama-cpp-python line in llama-cpp-python, each on a trimmed Qwen made
with --no-suppress (so the file's own key does not do the work) at temperature 1.2 on prompts that ask
for Chinese and Korean; the same requests without the constraint show foreign characters, so the
checks can fail.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_trim.cli import main
from gguf_trim.export import BAN_BIAS, grammar_gbnf, logit_bias, suppress_ids
from gguf_trim.files import file_sha256
from gguf_trim.langs import language_set

from .conftest import QWEN, need

# (prompt, seed): without a constraint the trimmed Qwen answers these with Chinese/Korean spelled in byte tokens
ADVERSARIAL = (("Repeat exactly: 我爱你 and 사랑해", 1), ("Repeat exactly: 我爱你 and 사랑해", 2),
               ("Translate to Korean: good morning", 3))
OLLAMA_INSTRUCTIONS = ("FROM", "PARAMETER", "TEMPLATE", "SYSTEM", "ADAPTER", "LICENSE", "MESSAGE")
OLLAMA_PARAMETERS = ("mirostat", "mirostat_eta", "mirostat_tau", "num_ctx", "repeat_last_n", "repeat_penalty",
                     "temperature", "seed", "stop", "num_predict", "top_k", "top_p", "min_p")

EN_VI = language_set("en,vi").chars
ALLOWED = EN_VI.allowed
char_allowed = EN_VI.char_allowed


def foreign(text: str) -> str:
    """The characters of `text` outside English/Vietnamese."""
    return "".join(sorted({c for c in text if not char_allowed(ord(c))}))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The trimmed Qwen with its suppress key and without (--no-suppress), in a folder of their own."""
    from gguf_trim import trim

    d = tmp_path_factory.mktemp("export-models")
    out = {"key": d / "qwen.envi.gguf", "nokey": d / "qwen.nokey.gguf"}
    trim(need(QWEN), out["key"])
    trim(QWEN, out["nokey"], suppress=False)
    return out


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory) -> tuple[str, Path]:
    """`gguf-trim export` of the file without a key, into a folder of its own: (its output, the folder)."""
    d = tmp_path_factory.mktemp("export-out")
    r = CliRunner().invoke(main, ["export", str(models["nokey"]), "-o", str(d)])
    assert r.exit_code == 0, r.output
    return r.output, d


def test_grammar_is_exactly_the_allowed_characters_but_nul():
    text = grammar_gbnf()
    rules = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(rules) == 1 and rules[0].startswith("root ::= [") and rules[0].endswith("]*")
    covered = np.zeros_like(ALLOWED)
    esc = r"\\(?:x([0-9A-F]{2})|u([0-9A-F]{4})|U([0-9A-F]{8}))"
    for m in re.finditer(f"{esc}(?:-{esc})?", rules[0]):
        lo = int(next(g for g in m.groups()[:3] if g), 16)
        hi = int(next((g for g in m.groups()[3:] if g), f"{lo:x}"), 16)
        covered[lo:hi + 1] = True
    expected = ALLOWED.copy()
    expected[0] = False
    assert np.array_equal(covered, expected)
    assert not covered[0xD800:0xE000].any()


def test_export_writes_the_three_files_beside_the_model_and_leaves_it_alone(models):
    model = models["key"]
    before = file_sha256(model)
    r = CliRunner().invoke(main, ["export", str(model)])
    assert r.exit_code == 0, r.output
    d = model.parent
    grammar, bias, modelfile = d / "qwen.envi.gbnf", d / "qwen.envi.logit_bias.json", d / "Modelfile"
    assert grammar.read_text(encoding="utf-8") == grammar_gbnf()
    ids, own = suppress_ids(model)
    assert own and len(ids) == 45
    assert json.loads(bias.read_text(encoding="utf-8")) == {str(i): BAN_BIAS for i in ids.tolist()}
    text = modelfile.read_text(encoding="utf-8")
    assert "FROM ./qwen.envi.gguf\n" in text
    assert 'PARAMETER stop "<|im_end|>"\n' in text and 'PARAMETER stop "<|endoftext|>"\n' in text
    assert "PARAMETER temperature 0\n" in text and "TEMPLATE" not in text.replace("# No TEMPLATE", "")
    for line in text.splitlines():
        if line and not line.startswith("#"):
            word, *rest = line.split(" ", 2)
            assert word in OLLAMA_INSTRUCTIONS, line
            if word == "PARAMETER":
                assert rest[0] in OLLAMA_PARAMETERS, line
    assert f"wrote {grammar}:" in r.output and "45 ids at -100 (the file's tokenizer.ggml.suppress_tokens)" in r.output
    assert f"ollama create qwen.envi -f {modelfile}" in r.output
    assert file_sha256(model) == before
    assert sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) == sorted(
        ["qwen.envi.gguf", "qwen.nokey.gguf", "qwen.envi.gbnf", "qwen.envi.logit_bias.json", "Modelfile"])


def test_a_file_without_the_key_gets_the_ids_trim_would_have_listed(models, exported):
    output, d = exported
    assert logit_bias(models["nokey"]) == logit_bias(models["key"])
    assert "45 ids at -100 (no list in the file: the ids the script guard never allows)" in output
    # written elsewhere than the model: FROM points back at it, relative to the Modelfile as ollama resolves it
    line = next(x for x in (d / "Modelfile").read_text().splitlines() if x.startswith("FROM "))
    assert (d / line[5:]).resolve() == models["nokey"].resolve()


@pytest.mark.parametrize("case", ["missing", "not-gguf", "no-out-dir"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, case):
    model = tmp_path / "m.gguf"
    args = ["export", str(model)]
    if case == "not-gguf":
        model.write_text("not a model")
    elif case == "no-out-dir":
        model.write_text("not a model")
        args = ["export", str(need(QWEN)), "-o", str(tmp_path / "nope")]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gguf-trim: error:"), r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if case == "missing" else ["m.gguf"])


# -- the constraints at work -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(models):
    from gguf_trim.runtime.server import LlamaServer

    with LlamaServer(models["nokey"], n_ctx=1024, threads=2, parallel=1) as s:
        yield s


def _chats(server, **extra) -> list[str]:
    return [server.chat([{"role": "user", "content": p}], temperature=1.2, seed=seed, max_tokens=16,
                        **extra)["choices"][0]["message"]["content"] for p, seed in ADVERSARIAL]


@pytest.fixture(scope="module")
def unconstrained(server) -> list[str]:
    """The control: the adversarial chats with nothing but the file (which has no key) in force."""
    out = _chats(server)
    assert any(foreign(c) for c in out), out  # else the checks below could not fail
    return out


@pytest.mark.server
def test_llama_server_parses_the_grammar_and_refuses_a_broken_one(server):
    from gguf_trim.errors import TrimError

    r = server.chat([{"role": "user", "content": "Say hello."}], grammar=grammar_gbnf(), max_tokens=8, temperature=0)
    assert r["choices"][0]["message"]["content"]
    with pytest.raises(TrimError, match="parse grammar"):
        server.chat([{"role": "user", "content": "Say hello."}], grammar="root ::= [", max_tokens=8)


@pytest.mark.server
def test_grammar_keeps_llama_server_output_english_vietnamese(server, unconstrained, exported):
    _, d = exported
    grammar = (d / "qwen.nokey.gbnf").read_text(encoding="utf-8")
    out = _chats(server, grammar=grammar)
    assert [foreign(c) for c in out] == [""] * len(out), out


@pytest.mark.server
def test_logit_bias_json_keeps_llama_server_output_english_vietnamese(server, unconstrained, exported):
    _, d = exported
    bias = json.loads((d / "qwen.nokey.logit_bias.json").read_text(encoding="utf-8"))
    out = _chats(server, logit_bias=bias)
    assert [foreign(c) for c in out] == [""] * len(out), out


def test_printed_llama_cpp_python_line_bans_the_ids(models, exported):
    """The exact line `export` prints, run as printed on llama-cpp-python (which ignores the key)."""
    from gguf_trim.runtime.llama import load_llama

    output, _ = exported
    line = next(x for x in output.splitlines() if x.startswith("llama-cpp-python: ")).split(": ", 1)[1]
    banned = set(suppress_ids(models["nokey"])[0].tolist())
    llm = load_llama(models["nokey"], n_ctx=512, n_threads=min(2, os.cpu_count() or 1))

    class Sampled:
        """`llm` for the printed line, with this test's sampling settings added."""

        def __init__(self, seed: int):
            self.seed = seed

        def create_chat_completion(self, messages, **kw):
            return llm.create_chat_completion(messages, temperature=1.2, seed=self.seed, max_tokens=16, **kw)

    def run(prompt: str, seed: int, with_line: bool) -> tuple[str, set[int]]:
        messages = [{"role": "user", "content": prompt}]
        if with_line:
            r = eval(line, {"llm": Sampled(seed), "messages": messages, "json": json})  # the line as printed
        else:
            r = Sampled(seed).create_chat_completion(messages)
        start = r["usage"]["prompt_tokens"]
        return r["choices"][0]["message"]["content"], set(llm.input_ids[start:llm.n_tokens].tolist())

    text, ids = run(*ADVERSARIAL[0], with_line=False)
    assert foreign(text) and ids & banned, text  # the control: without the line the ids come out
    for p, s in ADVERSARIAL[:2]:
        text, ids = run(p, s, True)
        assert not foreign(text) and not ids & banned, (text, sorted(ids & banned))
