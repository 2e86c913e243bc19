"""The tokenizer stored in a GGUF, decoded the way llama.cpp reads it.

Three tokenizer models are supported, the ones llama.cpp calls `gpt2` (byte-level BPE with
merges: Qwen2, Llama 3, SmolLM), `llama` (SentencePiece with scores and <0xNN> byte
tokens: Gemma 1-3, Phi-3, Llama 2) and `gemma4` (BPE with merges over SentencePiece-style
text: spaces escaped as U+2581, raw UTF-8 instead of GPT-2's byte map, <0xNN> byte tokens
for characters no token holds). `derivation` replays llama.cpp's own merge loop on one
token so that trimming can keep every token a kept token is built from.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from gguf.constants import GGUFValueType

from gguf_trim.errors import TrimError
from gguf_trim.format.gguffile import GGUFFile

# llama.cpp token types (include/llama.h)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
TYPE_NAMES = {0: "undefined", 1: "normal", 2: "unknown", 3: "control", 4: "user_defined", 5: "unused", 6: "byte"}
SPECIAL_TYPES = (UNKNOWN, CONTROL, USER_DEFINED)

# Every key holding a token id (llama-arch.cpp), all stored as UINT32.
SPECIAL_ID_KEYS = tuple(f"tokenizer.ggml.{k}_token_id" for k in (
    "bos", "eos", "eot", "eom", "unknown", "seperator", "padding", "mask", "cls",
    "fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep", "prefix", "suffix", "middle"))
SUPPRESS_KEY = "tokenizer.ggml.suppress_tokens"
# llama.cpp's default special ids per tokenizer model (llama-vocab.cpp, llama_vocab::impl::load), used
# when the key is missing or out of range; gemma4 has none
LLAMA_DEFAULT_IDS = {
    "llama": {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
              "tokenizer.ggml.unknown_token_id": 0},
    "gpt2": {"tokenizer.ggml.bos_token_id": 11, "tokenizer.ggml.eos_token_id": 11},
}
SUPPORTED_MODELS = {"gpt2": "byte-level BPE", "llama": "SentencePiece", "gemma4": "BPE on SentencePiece-style text"}
SPM_SPACE = "\u2581"
# Pre-tokenizers with which llama.cpp runs BPE on raw UTF-8 with spaces escaped as U+2581 and
# <0xNN> byte tokens (llm_tokenizer_bpe: byte_encode = false, escape_whitespaces = true); a
# `gemma4` model always gets "gemma4". Under the GEMMA4 pre-type a run of newlines that is itself
# a token is taken whole, without merges (llama-vocab.cpp, llm_tokenizer_bpe_session::tokenize).
SPM_STYLE_BPE_PRES = ("gemma4", "granite-embed-multi-311m", "sarvam-moe")
WHOLE_NEWLINE_PRES = ("gemma4", "granite-embed-multi-311m")

_T = GGUFValueType
# The one GGUF type llama.cpp reads each tokenizer key as (llama-vocab.cpp; its get_key throws "key ...
# has wrong type" on any other, and arrays of another element type are "invalid gguf type"). A file
# with another type does not load, so it is refused with that reason rather than trimmed: the rewrite
# would write special ids as UINT32 and so turn a file llama.cpp refuses into one it loads, or copy the
# key and fail later with a vaguer error.
KEY_TYPES: dict[str, GGUFValueType] = {
    **{k: _T.UINT32 for k in SPECIAL_ID_KEYS}, "tokenizer.ggml.model": _T.STRING, "tokenizer.ggml.pre": _T.STRING,
    "tokenizer.ggml.token_type_count": _T.UINT32,
    **{f"tokenizer.ggml.{k}": _T.BOOL for k in ("add_bos_token", "add_eos_token", "add_sep_token", "add_space_prefix",
                                                "remove_extra_whitespaces")},
}
ARRAY_TYPES: dict[str, tuple[GGUFValueType, ...]] = {
    "tokenizer.ggml.tokens": (_T.STRING,), "tokenizer.ggml.scores": (_T.FLOAT32, _T.INT32),
    "tokenizer.ggml.token_type": (_T.INT32,), SUPPRESS_KEY: (_T.INT32,),
}
_BYTE_TEXT = re.compile(rb"<0x[0-9A-Fa-f]{2}>")
# tensors llama.cpp creates with exactly one row per token (its n_vocab is the token count)
ROW_PER_TOKEN = ("token_embd.weight", "output.weight")


def check_llama_reads(g: GGUFFile, model: str, n: int) -> None:
    """Refuse what llama.cpp would refuse about the tokenizer keys' types and the vocab tensors' rows."""
    p = str(g.path)
    arrays = {**ARRAY_TYPES, **({"tokenizer.ggml.merges": (_T.STRING,)} if model in ("gpt2", "gemma4") else {})}
    for key, f in g.fields.items():
        want = KEY_TYPES.get(key)
        if want is not None and f.vtype != want:
            raise TrimError(f"{p}: {key} is {f.vtype.name}, but llama.cpp reads it only as {want.name} "
                            "(it refuses this file)")
        subs = arrays.get(key)
        if subs is not None and (f.vtype != _T.ARRAY or f.subtype not in subs):
            have = f.vtype.name if f.vtype != _T.ARRAY else f"an array of {f.subtype.name}"
            raise TrimError(f"{p}: {key} is {have}, but llama.cpp reads it only as an array of "
                            + " or ".join(t.name for t in subs) + " (it refuses this file)")
    types = g.get("tokenizer.ggml.token_type")
    if isinstance(types, np.ndarray):
        tokens = g.get("tokenizer.ggml.tokens")
        for i in np.flatnonzero(types[:n] == BYTE).tolist():
            # llama.cpp reads a BYTE token's value from its text[3:5] (SPM and BPE alike): a shorter text
            # makes it throw, a malformed one is silently read as another byte
            if not _BYTE_TEXT.fullmatch(tokens[i]):
                raise TrimError(f"{p}: token {i} {tokens[i].decode('utf-8', 'backslashreplace')!r} has type BYTE "
                                "but is not a <0xNN> byte token (llama.cpp refuses or mis-reads it)")
    for name in ROW_PER_TOKEN:
        t = g.tensor(name)
        if t is not None and t.shape[-1] != n:
            raise TrimError(f"{p}: {name} has {t.shape[-1]} rows but tokenizer.ggml.tokens has {n} tokens "
                            "(llama.cpp needs one row per token and refuses this file)")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte <-> printable character map, which byte-level BPE vocabularies are stored in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = _bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


@dataclass
class Vocab:
    model: str
    pre: str | None
    tokens: list[bytes]  # as stored (byte-level chars for BPE, ▁ for SPM)
    types: np.ndarray  # int32 per token
    scores: np.ndarray | None  # float32 per token
    merges: list[bytes] | None
    special_ids: dict[str, int] = field(default_factory=dict)
    # keys the file lacks (or holds out of range) for which llama.cpp falls back to a default id
    implicit_special_ids: dict[str, int] = field(default_factory=dict)
    source: str = ""
    add_space_prefix: bool = False  # SPM: llama.cpp puts a space before text (default on unless the key says no)

    @property
    def named_special_ids(self) -> set[int]:
        """Ids a special-token key names, explicitly or by llama.cpp's default (in range)."""
        return {i for i in [*self.special_ids.values(), *self.implicit_special_ids.values()] if 0 <= i < self.n}

    @classmethod
    def from_gguf(cls, g: GGUFFile) -> Vocab:
        p = str(g.path)
        model = g.get("tokenizer.ggml.model")
        if model is None:
            raise TrimError(f"{p}: no tokenizer in this GGUF (tokenizer.ggml.model is missing)")
        model = model.decode("utf-8", "replace") if isinstance(model, bytes) else str(model)
        if model not in SUPPORTED_MODELS:
            raise TrimError(f"{p}: unsupported tokenizer model {model!r}; gguf-trim supports "
                            + ", ".join(f"{k} ({v})" for k, v in SUPPORTED_MODELS.items()))
        tokens = g.get("tokenizer.ggml.tokens")
        if not isinstance(tokens, list) or not tokens:
            raise TrimError(f"{p}: tokenizer.ggml.tokens is missing or not a string array")
        n = len(tokens)
        if len(set(tokens)) != n:
            seen: set[bytes] = set()
            dup = next(t for t in tokens if t in seen or seen.add(t))
            raise TrimError(f"{p}: duplicate token text {dup.decode('utf-8', 'backslashreplace')!r} "
                            "(llama.cpp aborts on such a vocabulary)")
        check_llama_reads(g, model, n)
        types = g.get("tokenizer.ggml.token_type")
        if types is None:
            types = np.full(n, NORMAL, dtype=np.int32)
        elif not isinstance(types, np.ndarray) or len(types) < n:
            raise TrimError(f"{p}: tokenizer.ggml.token_type must be an integer array of length {n}")
        scores = g.get("tokenizer.ggml.scores")
        if scores is not None and (not isinstance(scores, np.ndarray) or len(scores) < n):
            raise TrimError(f"{p}: tokenizer.ggml.scores must be a number array of length {n}")
        merges = g.get("tokenizer.ggml.merges")
        if model in ("gpt2", "gemma4") and (not isinstance(merges, list) or not merges):
            raise TrimError(f"{p}: BPE tokenizer without tokenizer.ggml.merges")
        pre = g.get("tokenizer.ggml.pre")
        special = {}
        for k in SPECIAL_ID_KEYS:
            v = g.get(k)
            if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                special[k] = int(v)
        implicit = {}
        for k, d in LLAMA_DEFAULT_IDS.get(model, {}).items():
            if not 0 <= special.get(k, -1) < n and d < n:
                implicit[k] = d  # llama.cpp uses its default id for a missing or out-of-range key
        asp = g.get("tokenizer.ggml.add_space_prefix")
        return cls(model=model, pre=pre.decode("utf-8", "replace") if isinstance(pre, bytes) else pre,
                   tokens=tokens, types=np.asarray(types[:n], dtype=np.int32),
                   scores=None if scores is None else np.asarray(scores[:n], dtype=np.float32),
                   merges=merges if isinstance(merges, list) else None, special_ids=special,
                   implicit_special_ids=implicit, source=p,
                   # llama.cpp's BPE path never puts a space in front, whatever the key says
                   add_space_prefix=model == "llama" and (bool(asp) if asp is not None else True))

    @property
    def n(self) -> int:
        return len(self.tokens)

    @property
    def is_bpe(self) -> bool:
        """Tokenized by BPE merges (ranked by tokenizer.ggml.merges), not by SentencePiece scores."""
        return self.model in ("gpt2", "gemma4")

    @property
    def pre_type(self) -> str | None:
        """The pre-tokenizer llama.cpp uses: tokenizer.ggml.pre, except that `gemma4` forces its own."""
        return "gemma4" if self.model == "gemma4" else self.pre

    @property
    def byte_level(self) -> bool:
        """Stored in GPT-2's byte-to-character map with single-character byte tokens; otherwise
        text is raw UTF-8 with U+2581 for a space and <0xNN> byte tokens (SentencePiece, Gemma 4)."""
        return self.is_bpe and self.pre_type not in SPM_STYLE_BPE_PRES

    @property
    def whole_newline_runs(self) -> bool:
        """A run of newlines that is a token is taken whole, without merges (Gemma 4)."""
        return self.is_bpe and self.pre_type in WHOLE_NEWLINE_PRES

    @cached_property
    def sha256(self) -> str:
        """Identity of the tokenizer (model, pre, tokens, types, scores, merges), for plans."""
        h = hashlib.sha256()
        h.update(f"{self.model}\0{self.pre}\0{self.n}\0".encode())
        for t in self.tokens:
            h.update(len(t).to_bytes(4, "little"))
            h.update(t)
        h.update(self.types.astype("<i4").tobytes())
        if self.scores is not None:
            h.update(self.scores.astype("<f4").tobytes())
        for m in self.merges or ():
            h.update(len(m).to_bytes(4, "little"))
            h.update(m)
        return h.hexdigest()

    @cached_property
    def token_to_id(self) -> dict[bytes, int]:
        d: dict[bytes, int] = {}
        for i, t in enumerate(self.tokens):
            d.setdefault(t, i)
        return d

    @cached_property
    def pieces(self) -> list[bytes]:
        """The bytes each token stands for in text."""
        out = []
        types = self.types.tolist()
        if self.byte_level:
            dec = CHAR_TO_BYTE
            for t, ty in zip(self.tokens, types):
                if ty in (NORMAL, 0, UNUSED):
                    s = t.decode("utf-8", "replace")
                    try:
                        out.append(bytes(dec[c] for c in s))
                    except KeyError:  # not byte-encoded: llama.cpp shows it raw
                        out.append(t)
                else:
                    out.append(t)
        else:
            sp = SPM_SPACE.encode()
            for t, ty in zip(self.tokens, types):
                if ty == BYTE and len(t) == 6 and t.startswith(b"<0x") and t.endswith(b">"):
                    try:
                        out.append(bytes([int(t[3:5], 16)]))
                        continue
                    except ValueError:
                        pass
                out.append(t.replace(sp, b" ") if ty in (NORMAL, 0, UNUSED) else t)
        return out

    def byte_token_ids(self) -> list[int]:
        """The 256 tokens that spell any byte; llama.cpp drops text (BPE) or aborts (SPM) without them."""
        ids = []
        missing = []
        for b in range(256):
            text = BYTE_TO_CHAR[b].encode() if self.byte_level else f"<0x{b:02X}>".encode()
            i = self.token_to_id.get(text)
            if i is None:
                missing.append(b)
            else:
                ids.append(i)
        self.missing_bytes = missing
        return ids

    def display(self, i: int) -> str:
        """A token as readable text: its piece, with undecodable bytes escaped."""
        return self.pieces[i].decode("utf-8", "backslashreplace")

    def stored_text(self, i: int) -> str:
        return self.tokens[i].decode("utf-8", "backslashreplace")

    # -- llama.cpp's merge loops, replayed on a single token ---------------------------------
    @cached_property
    def merge_ranks(self) -> dict[tuple[str, str], int]:
        ranks: dict[tuple[str, str], int] = {}
        for r, m in enumerate(self.merges or ()):
            s = m.decode("utf-8", "replace")
            sp = s.find(" ", 1)  # llama-vocab.cpp splits at the first space at position >= 1
            pair = (s, "") if sp < 0 else (s[:sp], s[sp + 1:])
            ranks.setdefault(pair, r)
        return ranks

    def derivation(self, i: int) -> list[int] | None:
        """Ids of the tokens llama.cpp forms on the way to token i when tokenizing its own text
        (not counting i and the single characters), or None if that text does not end as i."""
        text = self.tokens[i].decode("utf-8", "replace")
        if self.whole_newline_runs and text and not text.strip("\n"):
            return []  # llama.cpp takes such a run whole
        syms = list(text)
        formed: list[str] = []
        if self.is_bpe:
            ranks = self.merge_ranks
            while len(syms) > 1:
                best, at = None, -1
                for k in range(len(syms) - 1):
                    r = ranks.get((syms[k], syms[k + 1]))
                    if r is not None and (best is None or r < best):
                        best, at = r, k
                if best is None:
                    break
                syms[at:at + 2] = [syms[at] + syms[at + 1]]
                formed.append(syms[at])
        else:
            t2i, scores = self.token_to_id, self.scores
            while len(syms) > 1:
                best, at = None, -1
                for k in range(len(syms) - 1):
                    j = t2i.get((syms[k] + syms[k + 1]).encode())
                    if j is not None:
                        sc = float(scores[j]) if scores is not None else 0.0
                        if best is None or sc > best:
                            best, at = sc, k
                if best is None:
                    break
                syms[at:at + 2] = [syms[at] + syms[at + 1]]
                formed.append(syms[at])
        if syms != [text]:
            return None
        t2i = self.token_to_id
        out = []
        for s in formed[:-1]:
            j = t2i.get(s.encode())
            if j is not None:
                out.append(j)
        return out
