"""Fuzzed input (issue 11, item 4): hundreds of mutated GGUFs through trim, plan, inspect and verify.

Each mutation is aimed, not blind: an offset map parsed here, independently of the product's
parser, records where every key, string length, array count and tensor info sits, so a
"string length" mutation really rewrites a string length. Mutations are deterministic (one
seeded generator per class and base file).

The rule checked on every run: exit 0 (trim: the output parses and maps back to the input), or
exit 2 with exactly one stderr line starting `gguf-trim: error:`; never a traceback, an
`internal error`, exit 1 or a signal; no output or temp file left after an error; the input's
sha256 unchanged. Runs go through click's CliRunner in-process (one python start for all of
them; llama.cpp only ever runs in child processes or after a child has loaded the same file),
plus a sample as real `python -m gguf_trim.cli` processes (per class, the first file trim refused
and the first it trimmed) to prove the same end to end: return codes, no signal. trim keeps its
default llama.cpp load check on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim.cli import main
from gguf_trim.format.gguffile import GGUFFile
from tests.synth import build_model

from .conftest import ROOT, vocab_file

TEXT = ["Hello, world! The quick brown fox jumps over the lazy dog.",
        "Xin chào thế giới! Tôi là học sinh ở Việt Nam, năm 2024.",
        "Naïve café résumé — “quotes”, 3.14 ≤ π, ₫100 → €5",
        "Giá 120.000₫ / 5 kg; email: an.nguyen@example.vn (thứ Hai)."]

# GGUF value types (gguf.h)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
           U64: "<Q", I64: "<q", F64: "<d"}


# -- the offset map ---------------------------------------------------------------------------

@dataclass
class KVSpot:
    """Where one key/value sits: [start, end) in the file, the value's type and its fields."""

    key: str
    start: int
    end: int
    vtype: int
    value_at: int  # scalar value, string length, or (arrays) the element type
    subtype: int | None = None
    count_at: int | None = None  # array element count
    count: int = 0
    elem_len_at: list[int] = field(default_factory=list)  # length field of each string element


@dataclass
class TensorSpot:
    """Where one tensor info sits; `offset` is relative to the data section."""

    name: str
    start: int
    n_dims_at: int
    dims_at: list[int]
    type_at: int
    offset_at: int
    offset: int


@dataclass
class OffsetMap:
    """Every located field of a valid GGUF (the base files only; they are parsed before mutation)."""

    size: int
    kvs: dict[str, KVSpot]
    tensors: list[TensorSpot]
    tensor_infos_start: int
    header_end: int
    alignment: int
    data_offset: int
    string_lens: list[tuple[str, int]]  # (what, offset of its 8-byte length) for every string


def offset_map(data: bytes) -> OffsetMap:
    """Parse a valid GGUF's header with plain struct reads, recording each field's offset."""
    pos = 24
    assert data[:4] == b"GGUF"
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    strings: list[tuple[str, int]] = []

    def string(what: str) -> bytes:
        nonlocal pos
        n = struct.unpack_from("<Q", data, pos)[0]
        strings.append((what, pos))
        s = data[pos + 8:pos + 8 + n]
        pos += 8 + n
        return s

    kvs: dict[str, KVSpot] = {}
    for _ in range(n_kv):
        start = pos
        key = string("key").decode()
        vtype = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        spot = KVSpot(key, start, 0, vtype, pos)
        if vtype == STR:
            string(f"value of {key}")
        elif vtype == ARR:
            spot.subtype, spot.count = struct.unpack_from("<IQ", data, pos)
            spot.count_at = pos + 4
            pos += 12
            if spot.subtype == STR:
                for i in range(spot.count):
                    spot.elem_len_at.append(pos)
                    string(f"{key}[{i}]")
            else:
                pos += spot.count * struct.calcsize(_SCALAR[spot.subtype])
        else:
            pos += struct.calcsize(_SCALAR[vtype])
        spot.end = pos
        kvs[key] = spot
    alignment = 32
    if "general.alignment" in kvs:
        alignment = struct.unpack_from("<I", data, kvs["general.alignment"].value_at)[0]
    tensors = []
    ti_start = pos
    for _ in range(n_tensors):
        start = pos
        name = string("tensor name").decode()
        n_dims = struct.unpack_from("<I", data, pos)[0]
        dims_at = [pos + 4 + 8 * d for d in range(n_dims)]
        pos += 4 + 8 * n_dims
        type_at, offset_at = pos, pos + 4
        offset = struct.unpack_from("<Q", data, offset_at)[0]
        pos += 12
        tensors.append(TensorSpot(name, start, start + 8 + len(name), dims_at, type_at, offset_at, offset))
    data_offset = -(-pos // alignment) * alignment
    return OffsetMap(len(data), kvs, tensors, ti_start, pos, alignment, data_offset, strings)


def kv_bytes(key: str, vtype: int, value: object, subtype: int | None = None) -> bytes:
    """One key/value pair, encoded by hand (not by the product's encoder, which is under test)."""
    k = key.encode()
    out = struct.pack("<Q", len(k)) + k + struct.pack("<I", vtype)
    if vtype == STR:
        v = value.encode() if isinstance(value, str) else bytes(value)
        return out + struct.pack("<Q", len(v)) + v
    if vtype == ARR:
        items = list(value)
        out += struct.pack("<IQ", subtype, len(items))
        if subtype == STR:
            return out + b"".join(struct.pack("<Q", len(s)) + s for s in items)
        return out + b"".join(struct.pack(_SCALAR[subtype], x) for x in items)
    return out + struct.pack(_SCALAR[vtype], value)


def rebuild(data: bytes, om: OffsetMap, kvs: list[bytes]) -> bytes:
    """The same file with other key/values: tensor infos and the data section are carried over
    as they are (tensor offsets are relative to the data section, which stays aligned)."""
    head = data[:16] + struct.pack("<Q", len(kvs)) + b"".join(kvs) + data[om.tensor_infos_start:om.header_end]
    head += b"\0" * (-len(head) % om.alignment)
    return head + data[om.data_offset:]


def raw_kvs(data: bytes, om: OffsetMap) -> list[tuple[str, bytes]]:
    return [(k, data[s.start:s.end]) for k, s in om.kvs.items()]


def replace_kv(data: bytes, om: OffsetMap, key: str, new: bytes | None) -> bytes:
    """The file with one key/value replaced (or removed when `new` is None)."""
    return rebuild(data, om, [(new if k == key else b) for k, b in raw_kvs(data, om) if k != key or new is not None])


def strings_of(data: bytes, spot: KVSpot) -> list[bytes]:
    out = []
    for at in spot.elem_len_at:
        n = struct.unpack_from("<Q", data, at)[0]
        out.append(data[at + 8:at + 8 + n])
    return out


def numbers_of(data: bytes, spot: KVSpot) -> list:
    fmt = _SCALAR[spot.subtype]
    size = struct.calcsize(fmt)
    return [struct.unpack_from(fmt, data, spot.count_at + 8 + i * size)[0] for i in range(spot.count)]


# -- cases ------------------------------------------------------------------------------------

@dataclass
class Case:
    """One mutated input. `files` holds every file of the input (one, or a shard set), the first
    being the one named on the command line. `expect`: "ok", "error" (with `match` in the error
    line) or "any" (random damage: either is fine as long as the rule holds)."""

    cls: str
    base: str
    what: str
    files: dict[str, bytes]
    expect: str = "any"
    match: str = ""


@dataclass
class Base:
    name: str
    data: bytes
    om: OffsetMap
    has_tensors: bool
    reference: Path  # a good trim of this base: the TRIMMED side of `verify MUTATED REF` when trim fails


def _rng(cls: str, base: str) -> random.Random:
    return random.Random(zlib.crc32(f"{cls}/{base}".encode()))


def _set_u64(data: bytes, at: int, v: int) -> bytes:
    return data[:at] + struct.pack("<Q", v % (1 << 64)) + data[at + 8:]


def _set_u32(data: bytes, at: int, v: int) -> bytes:
    return data[:at] + struct.pack("<I", v % (1 << 32)) + data[at + 4:]


def truncated(b: Base, n: int) -> list[Case]:
    """Cut anywhere: half the cuts inside the header, half anywhere in the file."""
    rng = _rng("truncate", b.name)
    out = []
    for i in range(n):
        at = rng.randrange(b.om.header_end if i % 2 == 0 else b.om.size)
        out.append(Case("truncate", b.name, f"cut at {at}", {"in.gguf": b.data[:at]}))
    return out


def header_flips(b: Base, n: int) -> list[Case]:
    """1-4 flipped bits in the header; every fourth file also hits the 24-byte preamble."""
    rng = _rng("header-flip", b.name)
    out = []
    for i in range(n):
        d = bytearray(b.data)
        spots = [rng.randrange(24)] if i % 4 == 0 else []
        spots += [rng.randrange(b.om.header_end) for _ in range(rng.randint(1, 4))]
        for at in spots:
            d[at] ^= 1 << rng.randrange(8)
        out.append(Case("header-flip", b.name, f"bits flipped at {spots}", {"in.gguf": bytes(d)}))
    return out


def _nasty(rng: random.Random, v: int) -> int:
    return rng.choice([v + 1, v - 1, 0, v * 2 + 1, v + (1 << 32), 1 << 63, (1 << 64) - 1, v ^ (1 << rng.randrange(40))])


def string_lengths(b: Base, n: int) -> list[Case]:
    """A string length (key, string value, token/merge string, tensor name) set to a nasty value."""
    rng = _rng("string-length", b.name)
    out = []
    lens = b.om.string_lens
    # keys and tensor names are few, token strings many: pick the kind first so all are hit
    kinds = defaultdict(list)
    for what, at in lens:
        kinds["element" if "[" in what else what.split(" of ")[0]].append((what, at))
    order = sorted(kinds)
    for i in range(n):
        what, at = rng.choice(kinds[order[i % len(order)]])
        old = struct.unpack_from("<Q", b.data, at)[0]
        new = _nasty(rng, old)
        out.append(Case("string-length", b.name, f"{what} length {old} -> {new}",
                        {"in.gguf": _set_u64(b.data, at, new)}))
    return out


def array_counts(b: Base, n: int) -> list[Case]:
    """An array's element count set to a nasty value (tokens, scores, token_type, merges...)."""
    rng = _rng("array-count", b.name)
    arrays = [s for s in b.om.kvs.values() if s.count_at is not None]
    out = []
    for i in range(n):
        s = arrays[i % len(arrays)]
        new = _nasty(rng, s.count)
        out.append(Case("array-count", b.name, f"{s.key} count {s.count} -> {new}",
                        {"in.gguf": _set_u64(b.data, s.count_at, new)}))
    return out


def tensor_offsets(b: Base, n: int) -> list[Case]:
    """A tensor's data offset moved: by one alignment step, misaligned, swapped, zero, huge. llama.cpp
    requires the offsets in order and back to back, so every one of these must be refused."""
    out = []
    ts = b.om.tensors
    for i in range(n):
        t = ts[(i * 7) % len(ts)]
        other = ts[(i * 7 + 1) % len(ts)]
        new = [t.offset + b.om.alignment, t.offset - b.om.alignment, t.offset + 1, other.offset,
               0 if t.offset else b.om.alignment, 1 << 62, b.om.size][i % 7]
        if new == t.offset:
            new += b.om.alignment
        new %= 1 << 64
        out.append(Case("tensor-offset", b.name, f"{t.name} offset {t.offset} -> {new}",
                        {"in.gguf": _set_u64(b.data, t.offset_at, new)}, expect="error"))
    return out


def tensor_shapes(b: Base, n: int) -> list[Case]:
    """A tensor's shape, dimension count or type changed."""
    rng = _rng("tensor-shape", b.name)
    out = []
    ts = b.om.tensors
    for i in range(n):
        t = ts[rng.randrange(len(ts))] if i % 3 else ts[0]  # ts[0] is token_embd: the sliced tensor
        kind = i % 5
        if kind in (0, 1, 2):
            d = rng.randrange(len(t.dims_at))
            old = struct.unpack_from("<Q", b.data, t.dims_at[d])[0]
            new = [old - 1, old * 2, _nasty(rng, old)][kind]
            data, what = _set_u64(b.data, t.dims_at[d], new), f"{t.name} dim {d} {old} -> {new}"
        elif kind == 3:
            new = rng.choice([0, 3, 5, 1 << 31])
            data, what = _set_u32(b.data, t.n_dims_at, new), f"{t.name} n_dims -> {new}"
        else:
            new = rng.choice([0, 1, 2, 8, 12, 14, 30, 39, 1000])
            data, what = _set_u32(b.data, t.type_at, new), f"{t.name} type -> {new}"
        out.append(Case("tensor-shape", b.name, what, {"in.gguf": data}))
    return out


def special_types(b: Base) -> list[Case]:
    """Special-token id keys of the wrong type. llama.cpp reads them only as UINT32 and refuses the
    file otherwise ("key ... has wrong type"), so gguf-trim refuses it with the same reason. A UINT32
    id out of range is what llama.cpp tolerates (warns, uses its default): trimmed as before."""
    n = b.om.kvs["tokenizer.ggml.tokens"].count
    cases = []
    keys = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.padding_token_id"]
    variants: list[tuple[str, int, object, int | None, str]] = [
        ("INT32", I32, 2, None, "error"), ("INT32 -1", I32, -1, None, "error"), ("STRING", STR, "2", None, "error"),
        ("FLOAT32", F32, 2.0, None, "error"), ("BOOL", BOOL, True, None, "error"), ("UINT64", U64, 2, None, "error"),
        ("UINT8", U8, 2, None, "error"), ("array of UINT32", ARR, [2, 3], U32, "error"),
        ("array of STRING", ARR, [b"</s>"], STR, "error"),
        ("UINT32 out of range", U32, n + 5, None, "ok"), ("UINT32 0xFFFFFFFF", U32, 0xFFFFFFFF, None, "ok"),
    ]
    for i, (label, vt, value, sub, expect) in enumerate(variants):
        key = keys[i % len(keys)]
        new = kv_bytes(key, vt, value, sub)
        if key in b.om.kvs:
            data = replace_kv(b.data, b.om, key, new)
        else:
            data = rebuild(b.data, b.om, [x for _, x in raw_kvs(b.data, b.om)] + [new])
        cases.append(Case("special-type", b.name, f"{key} as {label}", {"in.gguf": data}, expect=expect,
                          match=key if expect == "error" else ""))
    return cases


def duplicate_keys(b: Base) -> list[Case]:
    """A key twice: same value, another value, at the start, the end, next to itself."""
    kvs = raw_kvs(b.data, b.om)
    keys = [k for k, _ in kvs]
    out = []
    plans = [("general.architecture", "end", None), ("tokenizer.ggml.tokens", "start", None),
             ("tokenizer.ggml.model", "next", None),
             ("tokenizer.ggml.eos_token_id", "end", kv_bytes("tokenizer.ggml.eos_token_id", U32, 7)),
             ("general.alignment", "start", kv_bytes("general.alignment", U32, 64))]
    for key, where, value in plans:
        if key not in b.om.kvs and value is None:
            continue
        dup = value if value is not None else dict(kvs)[key]
        body = [x for _, x in kvs]
        at = {"start": 0, "end": len(body), "next": keys.index(key) + 1 if key in keys else len(body)}[where]
        body.insert(at, dup)
        if key not in keys:  # the key was absent: add it twice
            body.insert(0, dup)
        out.append(Case("duplicate-key", b.name, f"{key} twice ({where})", {"in.gguf": rebuild(b.data, b.om, body)},
                        expect="error", match="duplicate key"))
    return out


def short_vocab(b: Base) -> list[Case]:
    """Token arrays that disagree: tokens shorter (or longer) than token_embd's rows; token_type and
    scores shorter than tokens (llama.cpp refuses both); longer token_type/scores (llama.cpp reads
    the first n_tokens: fine). Without tensors a shorter token list is just a smaller vocabulary."""
    spot = b.om.kvs["tokenizer.ggml.tokens"]
    toks = strings_of(b.data, spot)
    out = []

    def with_tokens(t: list[bytes]) -> bytes:
        """tokens replaced; token_type and scores extended to match when t is longer (only the
        token count then disagrees with token_embd)."""
        kvs = []
        for k, raw in raw_kvs(b.data, b.om):
            s = b.om.kvs[k]
            if k == spot.key:
                raw = kv_bytes(k, ARR, t, STR)
            elif k in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores") and len(t) > s.count:
                vals = numbers_of(b.data, s)
                raw = kv_bytes(k, ARR, vals + [vals[-1]] * (len(t) - s.count), s.subtype)
            kvs.append(raw)
        return rebuild(b.data, b.om, kvs)

    rows_err = "error" if b.has_tensors else "ok"
    for k in (1, 7, len(toks) // 2):
        out.append(Case("short-vocab", b.name, f"tokens {len(toks)} -> {len(toks) - k}",
                        {"in.gguf": with_tokens(toks[:-k])}, expect=rows_err,
                        match="token_embd" if b.has_tensors else ""))
    out.append(Case("short-vocab", b.name, f"tokens {len(toks)} -> {len(toks) + 3}",
                    {"in.gguf": with_tokens(toks + [b"<fuzz_extra_%d>" % i for i in range(3)])},
                    expect=rows_err, match="token_embd" if b.has_tensors else ""))
    for key in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
        s = b.om.kvs.get(key)
        if s is None:
            continue
        vals = numbers_of(b.data, s)
        for label, new, expect in (("-1", vals[:-1], "error"), ("half", vals[: len(vals) // 2], "error"),
                                   ("0", [], "error"), ("+2", vals + vals[:2], "ok")):
            out.append(Case("short-vocab", b.name, f"{key} {len(vals)} -> {label}",
                            {"in.gguf": replace_kv(b.data, b.om, key, kv_bytes(key, ARR, new, s.subtype))},
                            expect=expect, match=key if expect == "error" else ""))
    return out


def token_texts(b: Base) -> list[Case]:
    """Token texts llama.cpp chokes on: a duplicate (llama.cpp aborts the process while loading), and
    a BYTE token whose text is no <0xNN> (llama.cpp reads the byte from text[3:5]: it throws on a
    short text and silently reads a malformed one as another byte). All refused, by every command."""
    spot = b.om.kvs["tokenizer.ggml.tokens"]
    toks = strings_of(b.data, spot)
    out = []
    for i, j in ((1000, 1001), (len(toks) - 1, 500), (300, 301)):
        t = list(toks)
        t[i] = t[j]
        out.append(Case("token-text", b.name, f"token {i} = token {j} {t[j]!r}",
                        {"in.gguf": replace_kv(b.data, b.om, spot.key, kv_bytes(spot.key, ARR, t, STR))},
                        expect="error", match="duplicate token text"))
    types = b.om.kvs.get("tokenizer.ggml.token_type")
    if types is not None and b"<0x0A>" in toks:
        t = list(toks)
        i = toks.index(b"<0x0A>")
        t[i] = b"<0xZZ>"
        out.append(Case("token-text", b.name, "byte token <0x0A> renamed <0xZZ>",
                        {"in.gguf": replace_kv(b.data, b.om, spot.key, kv_bytes(spot.key, ARR, t, STR))},
                        expect="error", match="has type BYTE"))
        vals = numbers_of(b.data, types)
        k = toks.index(b"a") if b"a" in toks else 1000
        vals[k] = 6  # BYTE
        data = replace_kv(b.data, b.om, types.key, kv_bytes(types.key, ARR, vals, types.subtype))
        out.append(Case("token-text", b.name, f"token {k} {toks[k]!r} typed BYTE", {"in.gguf": data},
                        expect="error", match="has type BYTE"))
    return out


def missing_merges(b: Base) -> list[Case]:
    """BPE merges naming tokens that do not exist. llama.cpp takes such merges as they are (a merge
    only ranks a pair; a merged piece that is no token falls back to smaller tokens), so they are
    valid input: the trim must keep them as they are and tokenize En/Vi text exactly as before."""
    spot = b.om.kvs.get("tokenizer.ggml.merges")
    if spot is None:
        return []
    merges = strings_of(b.data, spot)
    rng = _rng("merges-missing", b.name)
    out = []
    # pieces that are no token texts (the vocabulary stores bytes as GPT-2 characters, so raw UTF-8 such
    # as "ở" is none), a merge without a space, CJK, invalid UTF-8, a leading space (llama.cpp splits at
    # the first space at position >= 1)
    fakes = [b"\xc4\xa0zqx \xc4\xa0vyq", b"qqq zzz", "ẞẞ ẞ".encode(), "ở ữ".encode(), b"abc",
             b"\xc4\xa0 \xc4\xa0\xc4\xa0", "中 文".encode(), b"x \xff", b" a b"]
    for i in range(10):
        m = list(merges)
        if i < len(fakes):
            at = rng.randrange(len(m)) if i % 2 else 0
            m.insert(at, fakes[i])
            what = f"merge {fakes[i]!r} inserted at rank {at}"
        else:  # many: a whole block of merges whose result is no token
            for j in range(50):
                m.insert(rng.randrange(len(m)), b"zz%d q%d" % (j, j))
            what = "50 merges of missing tokens at random ranks"
        out.append(Case("merges-missing", b.name, what,
                        {"in.gguf": replace_kv(b.data, b.om, spot.key, kv_bytes(spot.key, ARR, m, STR))}, expect="ok"))
    return out


# -- split GGUFs -------------------------------------------------------------------------------
def split_cases(bases: dict[str, Base]) -> list[Case]:
    """Shard sets (written by gguf-py's GGUFWriter with 4 tensors a shard) with one shard left out,
    or one shard cut short: the set named by its first shard is one error naming what is wrong."""
    import tempfile

    from tests.synth import write_split

    out = []
    for b in bases.values():
        if not b.has_tensors:
            continue
        with tempfile.TemporaryDirectory() as d:
            src = Path(d) / "src.gguf"
            src.write_bytes(b.data)
            shards = [p.read_bytes() for p in write_split(src, Path(d) / "in.gguf", split_max_tensors=4)]
        n = len(shards)
        names = [f"in-{i + 1:05d}-of-{n:05d}.gguf" for i in range(n)]
        for gone in (1, n - 1):
            files = {nm: data for i, (nm, data) in enumerate(zip(names, shards)) if i != gone}
            out.append(Case("split", b.name, f"shard {gone + 1} of {n} missing", files, expect="error",
                            match=f"missing shard {gone + 1} of {n}"))
        rng = _rng("split", b.name)
        cut = rng.randrange(8, len(shards[-1]) - 1)
        files = dict(zip(names, shards[:-1] + [shards[-1][:cut]]))
        out.append(Case("split", b.name, f"last shard cut at {cut}", files, expect="error"))
    return out


# -- base files ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Base]:
    """Small real files: a BPE model (gpt-2 vocabulary, tied Q8_0 embeddings), an SPM model (llama
    vocabulary, Q4_0 embeddings, F16 output and an output bias: three sliced tensors), and a
    vocab-only SPM file. Each is trimmed once to give verify a good TRIMMED file."""
    d = tmp_path_factory.mktemp("fuzz-bases")
    files = {
        "bpe-model": build_model(d / "bpe.gguf", vocab_file("gpt-2"), Q.Q8_0, None, n_embd=32, n_ff=64),
        "spm-model": build_model(d / "spm.gguf", vocab_file("llama-spm"), Q.Q4_0, Q.F16, arch="qwen2",
                                 n_embd=32, n_ff=64, output_bias=True),
        "spm-vocab": Path(shutil.copy(vocab_file("llama-spm"), d / "spm-vocab.gguf")),
    }
    out = {}
    runner = CliRunner()
    for name, path in files.items():
        data = path.read_bytes()
        om = offset_map(data)
        with GGUFFile(path) as g:  # the map agrees with the product's parser on the valid file
            assert list(om.kvs) == list(g.fields)
            assert [(t.name, t.offset) for t in om.tensors] == [(t.name, t.offset) for t in g.tensors]
            assert (om.header_end, om.data_offset) == (g.header_end, g.data_offset)
        for what, at in om.string_lens:  # every recorded length is a real length field
            n = struct.unpack_from("<Q", data, at)[0]
            assert at + 8 + n <= om.header_end, what
        ref = d / f"{name}.ref.gguf"
        r = runner.invoke(main, ["trim", str(path), "-o", str(ref)])
        assert r.exit_code == 0, r.output
        out[name] = Base(name, data, om, bool(om.tensors), ref)
    return out


def all_cases(bases: dict[str, Base]) -> list[Case]:
    cases: list[Case] = []
    for b in bases.values():
        cases += truncated(b, 12) + header_flips(b, 10) + string_lengths(b, 10) + array_counts(b, 8)
        if b.has_tensors:
            cases += tensor_offsets(b, 8) + tensor_shapes(b, 10)
        cases += special_types(b) + duplicate_keys(b) + short_vocab(b) + token_texts(b) + missing_merges(b)
    cases += split_cases(bases)
    for c in cases:  # each mutation really changed the file
        assert c.files.get("in.gguf") != bases[c.base].data, (c.cls, c.what)
    return cases


# -- running ------------------------------------------------------------------------------------

def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@dataclass
class Run:
    """One command's outcome, from CliRunner or a real process."""

    cmd: str
    code: int
    stderr: str
    stdout: str


def check_run(r: Run, case: Case, out_dir: Path, expect_files: set[str]) -> None:
    """The rule: exit 0, or exit 2 with one `gguf-trim: error:` line; nothing left after an error."""
    where = f"{case.cls}/{case.base}: {case.what}: {r.cmd}"
    assert r.code in (0, 2), f"{where}: exit {r.code}\n{r.stderr}"
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, f"{where}\n{r.stderr}"
    left = {p.name for p in out_dir.iterdir()}
    assert not [x for x in left if x.endswith(".tmp")], f"{where}: temp files left: {left}"
    if r.code == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gguf-trim: error:"), f"{where}\n{r.stderr}"
        assert not (left & expect_files), f"{where}: output left after an error: {left}"
    else:
        assert expect_files <= left, f"{where}: no output written: {left}"


COMMANDS = ("trim", "plan", "inspect", "verify")


def command(name: str, inp: Path, out_dir: Path, ref: Path, text: Path, trimmed_ok: bool) -> tuple[list[str], set[str]]:
    """Arguments of one command and the files it writes there; verify compares the input with its
    trimmed output when trim succeeded, else with the base file's good trim."""
    trimmed = out_dir / "out.gguf"
    return {"trim": (["trim", str(inp), "-o", str(trimmed)], {"out.gguf"}),
            "plan": (["plan", str(inp), "-o", str(out_dir / "plan.jsonl")], {"plan.jsonl"}),
            "inspect": (["inspect", str(inp), "--json"], set()),
            "verify": (["verify", str(inp), str(trimmed if trimmed_ok else ref), "--text", str(text),
                        "--json", str(out_dir / "report.json")], {"report.json"})}[name]


def run_in_process(runner: CliRunner, args: list[str]) -> Run:
    r = runner.invoke(main, args)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception  # an exception click did not turn into an exit code: show it
    return Run(args[0], r.exit_code, r.stderr, r.stdout)


def run_process(args: list[str]) -> Run:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GGUF_TRIM_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "gguf_trim.cli", *args], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode >= 0, f"{args}: killed by signal {-p.returncode}\n{p.stderr}"
    return Run(args[0], p.returncode, p.stderr, p.stdout)


def check_trimmed(out: Path, inp: Path) -> None:
    """A trim that succeeded wrote a GGUF our parser reads, with one row per token in every sliced
    tensor and ids that map back into the input's vocabulary."""
    with GGUFFile(out) as g, GGUFFile(inp) as src:
        n = len(g.get("tokenizer.ggml.tokens"))
        kept = g.get("gguf_trim.kept_ids")
        assert kept is not None and len(kept) <= n and int(kept.max()) < len(src.get("tokenizer.ggml.tokens"))
        emb = g.tensor("token_embd.weight")
        assert emb is None or emb.shape[-1] == n


def run_case(runner: CliRunner, case: Case, work: Path, ref: Path, text: Path, stats: Counter) -> dict[str, int]:
    """Write the case into `work`, run the four commands in-process, check the rule after each.
    Returns the exit code of each command."""
    in_dir, out_dir = work / "in", work / "out"
    in_dir.mkdir(parents=True)
    out_dir.mkdir()
    for name, data in case.files.items():
        (in_dir / name).write_bytes(data)
    inp = in_dir / next(iter(case.files))
    before = {p.name: sha(p) for p in in_dir.iterdir()}
    codes = {}
    trimmed_ok = False
    for name in COMMANDS:
        args, writes = command(name, inp, out_dir, ref, text, trimmed_ok)
        r = run_in_process(runner, args)
        check_run(r, case, out_dir, writes)
        codes[name] = r.code
        stats[(case.cls, case.base, name, r.code)] += 1
        if name == "trim":
            trimmed_ok = r.code == 0
            if trimmed_ok:
                check_trimmed(out_dir / "out.gguf", inp)
        if name == "inspect" and r.code == 0:
            json.loads(r.stdout)
        if case.expect == "error":
            assert r.code == 2 and case.match in r.stderr, f"{case.cls}/{case.base}: {case.what}: {name}: {r}"
        elif case.expect == "ok" and name != "verify":
            assert r.code == 0, f"{case.cls}/{case.base}: {case.what}: {name}: {r}"
        if name == "verify" and r.code == 0 and trimmed_ok:
            # the product's promise holds on whatever input it accepted: En/Vi text tokenizes the same
            rep = json.loads((out_dir / "report.json").read_text())
            assert all(f["identical_lines"] == f["lines"] for f in rep["files"]), (case.what, rep["files"])
    assert {p.name: sha(p) for p in in_dir.iterdir()} == before, f"{case.cls}: {case.what}: input changed"
    return codes


def test_fuzzed_inputs(bases, tmp_path):
    """Every mutated file, every command: the rule holds (see the module docstring)."""
    cases = all_cases(bases)
    assert len(cases) >= 200
    text = tmp_path / "text.txt"
    text.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    runner = CliRunner()
    stats: Counter = Counter()
    jobs: list = []
    sampled: set[tuple[str, int]] = set()
    for i, case in enumerate(cases):
        work = tmp_path / f"c{i}"
        codes = run_case(runner, case, work, bases[case.base].reference, text, stats)
        # also as real processes: per class, the first file trim refused and the first it trimmed
        if (case.cls, codes["trim"]) in sampled:
            shutil.rmtree(work)
            continue
        sampled.add((case.cls, codes["trim"]))
        (work / "proc-out").mkdir()
        in_dir = work / "in"
        jobs.append((case, in_dir, in_dir / next(iter(case.files)), work / "proc-out", codes,
                     {p.name: sha(p) for p in in_dir.iterdir()}))

    def in_processes(job) -> list[tuple[str, int, int]]:
        case, in_dir, inp, out_dir, codes, before = job
        got = []
        trimmed_ok = False
        for name in COMMANDS:
            args, writes = command(name, inp, out_dir, bases[case.base].reference, text, trimmed_ok)
            r = run_process(args)
            check_run(r, case, out_dir, writes)
            trimmed_ok = r.code == 0 if name == "trim" else trimmed_ok
            got.append((name, codes[name], r.code))
        assert {p.name: sha(p) for p in in_dir.iterdir()} == before
        shutil.rmtree(in_dir.parent)
        return got

    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(in_processes, jobs))
    for job, got in zip(jobs, results):
        for name, in_proc, real in got:  # the real process ends exactly as the in-process run did
            assert in_proc == real, (job[0].cls, job[0].what, name, in_proc, real)

    # the summary the README quotes (pytest -s shows it)
    print(f"\nfuzz: {len(cases)} files, {sum(stats.values())} in-process runs, "
          f"{sum(len(g) for g in results)} process runs ({len(jobs)} files)")
    totals: Counter = Counter()
    for cls in dict.fromkeys(c.cls for c in cases):
        row = {cmd: [sum(n for (c, _, m, code), n in stats.items() if c == cls and m == cmd and code == k)
                     for k in (0, 2)] for cmd in COMMANDS}
        print(f"  {cls:15} {sum(c.cls == cls for c in cases):3} files   exit 0/2: "
              + "  ".join(f"{cmd} {a}/{b}" for cmd, (a, b) in row.items()))
    for (_, _, _, code), n in stats.items():
        totals[code] += n
    print(f"  all runs: exit 0 {totals[0]}, exit 2 {totals[2]}")
    assert set(totals) <= {0, 2}


def test_offset_map_hits_its_targets(bases):
    """The map is exact: each class's mutation lands on the field it names (checked on one base)."""
    b = bases["bpe-model"]
    spot = b.om.kvs["tokenizer.ggml.tokens"]
    assert spot.count == len(spot.elem_len_at) == 50257
    toks = strings_of(b.data, spot)
    with GGUFFile(vocab_file("gpt-2")) as g:
        assert toks == g.get("tokenizer.ggml.tokens")
    emb = next(t for t in b.om.tensors if t.name == "token_embd.weight")
    assert struct.unpack_from("<Q", b.data, emb.dims_at[-1])[0] == 50257
    for c in array_counts(b, 4):
        key = c.what.split(" count ")[0]
        at = b.om.kvs[key].count_at
        assert c.files["in.gguf"][:at] == b.data[:at] and c.files["in.gguf"][at + 8:] == b.data[at + 8:]
    with GGUFFile(vocab_file("gpt-2")) as g:
        types = g.get("tokenizer.ggml.token_type")
    assert np.array_equal(numbers_of(b.data, b.om.kvs["tokenizer.ggml.token_type"]), types)



def test_llama_cpp_aborts_stay_in_a_child(tmp_path):
    """llama.cpp aborts the process on a vocabulary with a duplicate token text. Every in-process
    load (verify, translate, bench...) goes through load_llama, which loads the file in a child
    first: the abort becomes one error line, here and through the CLI's translate."""
    from gguf_trim.errors import TrimError
    from gguf_trim.runtime.llama import load_llama

    src = vocab_file("llama-spm").read_bytes()
    om = offset_map(src)
    spot = om.kvs["tokenizer.ggml.tokens"]
    toks = strings_of(src, spot)
    toks[1000] = toks[1001]
    bad = tmp_path / "dup.gguf"
    bad.write_bytes(replace_kv(src, om, spot.key, kv_bytes(spot.key, ARR, toks, STR)))
    with pytest.raises(TrimError, match="crashed"):
        load_llama(bad, vocab_only=True)
    r = run_process(["translate", str(bad), "--to", "vi", "Hello"])
    assert r.code == 2 and r.stderr.startswith("gguf-trim: error:") and len(r.stderr.splitlines()) == 1, r


def test_quantized_1d_vocab_tensor_is_refused(tmp_path):
    """A 1-D tensor with one value per token in a block-quantized type (Q8_0 packs 32 tokens' values
    per block) cannot be sliced by token: a clear error, not an internal reshape error. (A flipped
    type byte makes such a tensor too, but the parser then already sees the offsets disagree.)"""
    from gguf import GGUFWriter
    from gguf.quants import quantize

    from tests.synth import copy_tokenizer

    path = tmp_path / "bias-q8.gguf"
    w = GGUFWriter(str(path), "llama")
    n = copy_tokenizer(w, vocab_file("llama-spm"))
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((n, 32)).astype(np.float32))
    w.add_tensor("output.bias", quantize(rng.standard_normal(n).astype(np.float32), Q.Q8_0), raw_dtype=Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = tmp_path / "o"
    out.mkdir()
    r = run_in_process(CliRunner(), ["trim", str(path), "-o", str(out / "x.gguf")])
    assert r.code == 2 and "cannot slice it by token" in r.stderr, r
    assert list(out.iterdir()) == []
