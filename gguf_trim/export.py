"""What a runtime that does not read `tokenizer.ggml.suppress_tokens` needs to keep a trimmed model's output
in its language set: a GBNF grammar, an OpenAI-style logit_bias map, an ollama Modelfile.

Why: stock llama-server and llama-cli apply the file's suppress list by themselves (vocab/suppress.py).
Older llama.cpp builds, LM Studio, llama-cpp-python (its own sampler chain) and OpenAI-compatible servers
of other engines ignore the key, so the same constraint has to travel by other means:

* the grammar is the stronger one: llama.cpp's grammar sampler decodes UTF-8 across tokens, so it also
  stops a foreign character spelled through a lead byte that allowed characters share (en,vi: 0xE1
  Myanmar, 0xE2 CJK radicals, 0xEF fullwidth forms, 0xF0 CJK Extension B; en,ja: 0xE4-0xE9 Chinese-only
  Han), which no static list can;
* the logit_bias map is the suppress list itself, for any client that can send `logit_bias`;
* the Modelfile points ollama at the file with translation defaults and the model's stop texts.

Nothing here writes to the model: it is only read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.files import atomic_write, check_output
from gguf_trim.format.shards import open_model, split_name
from gguf_trim.langs import LanguageSet, file_langs, language_set
from gguf_trim.vocab.charset import CharacterSet
from gguf_trim.vocab.suppress import file_suppress, suppressible
from gguf_trim.vocab.vocabulary import Vocab

# OpenAI's API takes -100..100, and -100 is its documented "ban". llama-server also takes `false` (-inf),
# but OpenAI, vLLM and others reject or clamp anything outside the range, so the portable -100 it is: it
# scales a token's probability by e^-100 (4e-44), far below what a sampler's random draw resolves.
BAN_BIAS = -100
END_ID_KEYS = tuple(f"tokenizer.ggml.{k}_token_id" for k in ("eos", "eot", "eom"))
# Token texts llama.cpp makes end-of-generation by their text (llama-vocab.cpp, special_eog_ids).
EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
             "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
             "<|end_of_text|>", "<end_of_utterance>", "<turn|>", "<｜end▁of▁sentence｜>")
# ollama defaults that suit translation: greedy (one answer, reproducible), no repeat penalty (a source that
# repeats a name or number needs it repeated), room for a paragraph and its translation.
MODELFILE_PARAMS = (("temperature", "0"), ("repeat_penalty", "1"), ("num_ctx", "4096"))


def model_langs(model: str | Path, langs: str | LanguageSet | None = None) -> LanguageSet:
    """The language set to export for: `langs` when given, else the one the file was trimmed to, else the
    default (en,vi)."""
    if langs is not None:
        return language_set(langs)
    with open_model(model) as g:
        return file_langs(g) or language_set(None)


def allowed_ranges(chars: CharacterSet) -> list[tuple[int, int]]:
    """The allowed code points (surrogates already out) as inclusive runs, from U+0001.

    U+0000 is left out: llama.cpp's grammar parser takes \\x00, but its sampler handles token text as C
    strings (code point 0 marks the end of a token, and a token whose text starts with a NUL byte is
    rejected outright), so NUL can never be matched and listing it would only suggest otherwise."""
    return [(max(lo, 1), hi) for lo, hi in chars.ranges if hi >= 1]


def _gbnf_char(cp: int) -> str:
    """A code point as a GBNF escape (\\xNN, \\uNNNN, \\UNNNNNNNN: what llama-grammar.cpp's parse_char takes),
    so no character of the class needs quoting rules (], -, \\, ^) or an editor that shows it."""
    if cp <= 0xFF:
        return f"\\x{cp:02X}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04X}"
    return f"\\U{cp:08X}"


def grammar_gbnf(langs: str | LanguageSet | None = None) -> str:
    """A llama.cpp GBNF grammar accepting any string of the language set's characters (default en,vi).

    Why: llama.cpp's grammar sampler follows UTF-8 across tokens, so it forbids foreign characters
    whatever tokens spell them, including the byte sequences a static suppress list cannot see. It is
    about output characters only: the trim's "at most one Greek letter per token" is a vocabulary rule."""
    lset = language_set(langs)
    cls = "".join(_gbnf_char(lo) + ("" if hi == lo else "-" + _gbnf_char(hi)) for lo, hi in allowed_ranges(lset.chars))
    return (f"# gguf-trim: any text in the characters of {lset.key} (gguf_trim.langs).\n"
            "# U+0000 is left out: llama.cpp's grammar sampler can never match a NUL.\n"
            f"root ::= [{cls}]*\n")


def suppress_ids(model: str | Path, langs: str | LanguageSet | None = None) -> tuple[np.ndarray, bool]:
    """(ids to ban, whether they are the file's own tokenizer.ggml.suppress_tokens).

    A file without the key (trimmed with --no-suppress, or by an older gguf-trim, or not trimmed) gets
    the ids the script guard of its language set (`model_langs`) forbids in every UTF-8 state over its
    vocabulary (vocab/suppress.py's rule, special tokens never listed): what `trim` would have written, so
    the export is the same either way. Ids out of the vocabulary's range are dropped, as llama.cpp drops them."""
    lset = model_langs(model, langs)
    with open_model(model) as g:
        ids = file_suppress(g)
        vocab = Vocab.from_gguf(g)
    if len(ids):
        return np.unique(ids[(ids >= 0) & (ids < vocab.n)]), True
    return suppressible(vocab.pieces, vocab.types, lset.chars, vocab.named_special_ids).astype(np.int64), False


def logit_bias(model: str | Path, langs: str | LanguageSet | None = None) -> dict[str, int]:
    """The model's suppress ids as an OpenAI-style `logit_bias` map {"id": -100}, for clients that can
    send a bias but whose server ignores the key. String keys: JSON objects have no others, and OpenAI,
    llama-server and llama-cpp-python (which int()s them) all take them."""
    ids, _ = suppress_ids(model, langs)
    return {str(i): BAN_BIAS for i in ids.tolist()}


def end_texts(vocab: Vocab) -> list[str]:
    """Texts of the tokens that end a turn: the eos/eot/eom ids the file names, plus the tokens llama.cpp
    treats as end-of-generation by their text (<|im_end|>, <end_of_turn>, ...), in id order."""
    ids = {vocab.special_ids.get(k, vocab.implicit_special_ids.get(k)) for k in END_ID_KEYS}
    ids |= {vocab.token_to_id[t.encode()] for t in EOG_TEXTS if t.encode() in vocab.token_to_id}
    texts = [vocab.stored_text(i) for i in sorted(i for i in ids if i is not None and 0 <= i < vocab.n)]
    if "<|return|>" in texts and "<|call|>" in texts and "<|end|>" in texts:
        texts.remove("<|end|>")  # llama.cpp's rule for gpt-oss: there <|end|> ends a message, not the turn
    return [t for t in texts if t and '"' not in t and "\n" not in t and "\\" not in t]


def _file_name(model: str | Path) -> tuple[str, str | None]:
    """(the file name ollama should import, the first shard's name when the model is split)."""
    with open_model(model) as g:
        first, is_split = Path(g.path), g.is_split
    parsed = split_name(first) if is_split else None
    return (parsed[0].name + ".gguf", first.name) if parsed else (first.name, None)


def modelfile(model: str | Path, out_dir: str | Path | None = None) -> str:
    """An ollama Modelfile for the trimmed file: FROM it, relative to the Modelfile's folder `out_dir`
    (default: the model's, so `FROM ./NAME.gguf`), as ollama resolves it; translation defaults; a stop
    for each end-of-turn text.

    TEMPLATE is left out on purpose: ollama derives the chat template from the GGUF's
    tokenizer.chat_template, which the trim keeps as it was."""
    with open_model(model) as g:
        vocab = Vocab.from_gguf(g)
    name, first_shard = _file_name(model)
    where = Path(model).parent / name
    rel = os.path.relpath(where, out_dir) if out_dir is not None else name
    rel = rel if rel.startswith(("./", "../", "/")) else "./" + rel
    lines = ["# ollama Modelfile written by `gguf-trim export`; use: ollama create NAME -f Modelfile",
             "# No TEMPLATE on purpose: ollama takes the chat template from the GGUF (tokenizer.chat_template,",
             "# kept by the trim); check it with `ollama show NAME --template`.",
             "# A Modelfile carries no logit_bias or grammar: whether ollama applies the file's",
             "# tokenizer.ggml.suppress_tokens depends on its engine (untested); send the exported grammar",
             "# (the request's format/grammar where the engine takes one) for the guarantee.",
             "# Defaults for translation: greedy, no repeat penalty, a 4096-token context."]
    if first_shard:
        lines.append(f"# Split model: ollama imports one file; merge first: "
                     f"llama-gguf-split --merge {first_shard} {name}")
    lines += [f"FROM {rel}", ""]
    lines += [f"PARAMETER {k} {v}" for k, v in MODELFILE_PARAMS]
    lines += [f'PARAMETER stop "{t}"' for t in end_texts(vocab)]
    return "\n".join(lines) + "\n"


def stem_of(model: str | Path) -> str:
    """The model's name without .gguf (a split model's without its shard suffix)."""
    name, _ = _file_name(model)
    return name.removesuffix(".gguf")


def export(model: str | Path, out_dir: str | Path, langs: str | LanguageSet | None = None) -> dict[str, Path]:
    """Write `<stem>.gbnf`, `<stem>.logit_bias.json` and `Modelfile` into `out_dir`, each all or nothing.

    A model without a suppress list is exported too (the grammar and Modelfile do not depend on it, and
    the bias lists the ids the guard would have put on it, see `suppress_ids`): refusing would leave
    exactly the files the list is missing from without a remedy. `langs`: the language set (default: the
    one the file was trimmed to, else en,vi). Returns {"grammar", "logit_bias",
    "modelfile"} -> path. The model is only read."""
    out = Path(out_dir)
    if not out.is_dir():
        raise TrimError(f"output folder {out} does not exist")
    with open_model(model) as g:
        sources = [Path(p) for p in g.paths]
    stem = stem_of(model)
    lset = model_langs(model, langs)
    texts = {"grammar": (out / f"{stem}.gbnf", grammar_gbnf(lset)),
             "logit_bias": (out / f"{stem}.logit_bias.json", json.dumps(logit_bias(model, lset), indent=0) + "\n"),
             "modelfile": (out / "Modelfile", modelfile(model, out))}
    for path, _ in texts.values():
        check_output(path, sources)
    for path, text in texts.values():
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)
    return {k: path for k, (path, _) in texts.items()}
