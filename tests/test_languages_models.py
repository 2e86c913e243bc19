"""Language sets beyond En/Vi on real models (issue 32): en,vi trims byte for byte what they were, and each
set's trim of Qwen2.5-Coder-0.5B records its set, loads, tokenizes that language's text exactly as the
original, and under the script guard (llama-cpp-python) or the exported grammar (stock llama-server) writes
nothing outside the set even when asked, at temperature 1.2, for other scripts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gguf_trim.api import trim
from gguf_trim.format.shards import open_model
from gguf_trim.langs import file_langs, language_set
from gguf_trim.langs.phrases import ADVERSARIAL
from gguf_trim.rewrite.verify import verify
from gguf_trim.vocab.suppress import file_suppress
from tests.conftest import GEMMA, MODELS, QWEN, need

# sha256 of the lossless en,vi trims (every key/value but gguf_trim.version, then every tensor), made with
# gguf-trim at e561298, before languages became data: the table must not change a byte of them.
EN_VI_DIGESTS = {GEMMA.name: "27ef8c01bdaff6b997b98615d616e16aefd5dc4635e08a739410dfd304217a0b",
                 QWEN.name: "8cab54460101b14619b95df95f6fdda9149e98b2e88252e183505039228cc593"}
SETS = ("en,ja", "en,ko", "en,ru", "en,hi", "en,th", "en,ar", "en,zh-Hans")
TEXT_LINES = 200


def content_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open_model(path) as g:
        for name, f in g.fields.items():
            if name != "gguf_trim.version":
                h.update(name.encode())
                h.update(bytes(f.raw))
        for t in g.tensors:
            h.update(f"{t.name}{t.shape}{t.ggml_type}".encode())
            h.update(bytes(g.tensor_bytes(t)))
    return h.hexdigest()


@pytest.mark.parametrize("model", [GEMMA, QWEN], ids=["gemma", "qwen"])
def test_en_vi_trim_is_what_it_was(model: Path, tmp_path: Path) -> None:
    out = tmp_path / "envi.gguf"
    trim(need(model), out)
    assert content_digest(out) == EN_VI_DIGESTS[model.name]


@pytest.fixture(scope="module")
def trims(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("langs")
    out = {}
    for spec in SETS:
        out[spec] = folder / f"qwen.{spec.replace(',', '-')}.gguf"
        trim(need(QWEN), out[spec], langs=spec)
    return out


def language_text(code: str, tmp_path: Path) -> Path:
    """The language's gettext lines (make lang-texts) plus CLDR's UDHR sample, one segment per line."""
    lines = need(MODELS / "langs" / f"{code}.txt").read_text(encoding="utf-8").splitlines()[:TEXT_LINES]
    lines += language_set(code).language(code).sample_text().splitlines()
    path = tmp_path / f"{code}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("spec", SETS)
def test_set_trim_is_lossless_on_its_language(trims: dict[str, Path], spec: str, tmp_path: Path) -> None:
    path = trims[spec]
    code = spec.split(",")[1]
    lset = language_set(spec)
    with open_model(path) as g:
        assert file_langs(g) == lset
        listed = file_suppress(g)
        n = len(g.fields["tokenizer.ggml.tokens"].value)
    assert 1000 < n < 151_936 and len(listed) > 0
    rep = verify(QWEN, path, texts=[language_text(code, tmp_path)], logits=2, greedy=2)
    f = rep["files"][0]
    assert f["lines"] > TEXT_LINES // 2 and f["line_fidelity"] == 1.0, f["worst"][:1]
    assert rep["logits_max_abs_diff"] == 0.0
    assert rep["suppress_problems"] == [] and rep["greedy_suppressed_hits"] == []


def test_sets_differ_where_the_languages_do(trims: dict[str, Path]) -> None:
    """en,ja keeps kanji but not Chinese-only Han tokens; en,zh-Hans keeps both but no kana; en,ko neither."""
    def pieces(path: Path) -> set[bytes]:
        from gguf_trim.vocab.vocabulary import Vocab

        with open_model(path) as g:
            return set(Vocab.from_gguf(g).pieces)
    ja, zh, ko = pieces(trims["en,ja"]), pieces(trims["en,zh-Hans"]), pieces(trims["en,ko"])
    for word, in_ja, in_zh, in_ko in (("日本", True, True, False), ("这个", False, True, False),
                                      ("です", True, False, False), ("습니다", False, False, True)):
        assert (word.encode() in ja, word.encode() in zh, word.encode() in ko) == (in_ja, in_zh, in_ko), word


@pytest.mark.parametrize("spec", SETS)
def test_guard_writes_nothing_outside_the_set(trims: dict[str, Path], spec: str) -> None:
    from gguf_trim.runtime.guard import ScriptGuard
    from gguf_trim.runtime.llama import end_ids, load_llama

    code = spec.split(",")[1]
    chars = language_set(spec).chars
    llm = load_llama(trims[spec], n_ctx=512, n_threads=2)
    try:
        guard = ScriptGuard.for_model(trims[spec], end_ids(llm))
        assert guard.chars == chars
        outs = []
        for prompt in ADVERSARIAL[code][:2]:
            for seed in (0, 1):
                r = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=24, seed=seed,
                                               temperature=1.2, top_k=40, top_p=0.95, min_p=0.05,
                                               logits_processor=[guard.processor()])
                outs.append(r["choices"][0]["message"]["content"] or "")
    finally:
        llm.close()
    assert sum(map(len, outs)) > 0
    assert [chars.foreign(o) for o in outs] == [[]] * len(outs)


@pytest.mark.server
@pytest.mark.parametrize("spec", ["en,ja", "en,ko", "en,th"])
def test_grammar_in_stock_llama_server(trims: dict[str, Path], spec: str) -> None:
    """The set's trim loads in llama-server, which applies its list; with the exported grammar nothing
    outside the set comes back even from prompts that ask for other scripts."""
    from gguf_trim.export import grammar_gbnf
    from gguf_trim.runtime.server import LlamaServer

    code = spec.split(",")[1]
    chars = language_set(spec).chars
    grammar = grammar_gbnf(spec)
    with LlamaServer(trims[spec], n_ctx=1024, threads=2, parallel=1) as server:
        outs = [server.chat([{"role": "user", "content": p}], grammar=grammar, max_tokens=24, temperature=1.2,
                            seed=seed, top_k=40, top_p=0.95, min_p=0.05)
                for p in ADVERSARIAL[code][:2] for seed in (0, 1)]
    texts = [o["choices"][0]["message"]["content"] or "" for o in outs]
    assert sum(map(len, texts)) > 0
    assert [chars.foreign(t) for t in texts] == [[]] * len(texts)


def test_export_and_extend_follow_the_files_set(trims: dict[str, Path], tmp_path: Path) -> None:
    """export writes the en,ja grammar and list for the en,ja file; extend (Vietnamese compounds) refuses it."""
    from click.testing import CliRunner

    from gguf_trim.cli import main
    from gguf_trim.export import grammar_gbnf

    path = trims["en,ja"]
    r = CliRunner().invoke(main, ["export", str(path), "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "en,ja" in r.output
    assert (tmp_path / f"{path.stem}.gbnf").read_text(encoding="utf-8") == grammar_gbnf("en,ja")
    assert grammar_gbnf("en,ja") != grammar_gbnf("en,vi")
    words = tmp_path / "words.tsv"
    words.write_text("có thể\t1\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["extend", str(path), "--words", str(words), "-o", str(tmp_path / "x.gguf")])
    assert r.exit_code == 2 and "trimmed to en,ja (no vi)" in r.output
    assert not (tmp_path / "x.gguf").exists()
