"""Fast, validating GGUF reading and streaming GGUF writing.

gguf-py's `GGUFReader` builds one numpy view per array element, which costs ~7-10 s on
Gemma-3's 262k-entry token arrays; trimming must take a few seconds. So this module
parses the header itself (string arrays in one loop, numeric arrays as single numpy
views), keeps the raw bytes of every key/value so unchanged entries are copied byte for
byte, and memory-maps tensor data so large tensors are streamed, never loaded. The
format constants (value types, quant block sizes) come from gguf-py.

Every bound is checked against the file size, so corrupt or truncated input raises
`GGUFError` with one line of explanation instead of an IndexError or a huge allocation.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from gguf_trim.errors import GGUFError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
GGML_MAX_NAME = 64  # ggml.h: tensor names are shorter than this

_SCALAR_FMT: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
_NP_DTYPE: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<u1", GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2", GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4", GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4", GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8", GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}


@dataclass
class Field:
    """One metadata entry. Arrays of numbers are numpy arrays, of strings lists of bytes."""

    name: str
    vtype: GGUFValueType
    value: Any
    subtype: GGUFValueType | None = None
    raw: bytes | None = None  # exact encoded bytes (key + value) as read, for verbatim copies

    def text(self) -> str:
        """The value as text (strings are stored as UTF-8 bytes)."""
        if isinstance(self.value, bytes):
            return self.value.decode("utf-8", "replace")
        return str(self.value)


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGML order: shape[0] is the row length, shape[-1] the row count
    ggml_type: int
    offset: int  # relative to the start of the data section
    nbytes: int

    @property
    def type_name(self) -> str:
        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type{self.ggml_type}"

    @property
    def n_rows(self) -> int:
        return self.shape[-1] if len(self.shape) > 1 else 1

    @property
    def row_bytes(self) -> int:
        return self.nbytes // self.n_rows


def tensor_nbytes(shape: Iterable[int], ggml_type: int) -> int:
    shape = tuple(shape)
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    n = 1
    for d in shape[1:]:
        n *= d
    return n * (shape[0] // block) * size


class _Cursor:
    """Bounds-checked little-endian reads over a buffer."""

    def __init__(self, buf: memoryview, path: str):
        self.buf, self.pos, self.path, self.end = buf, 0, path, len(buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise GGUFError(f"{self.path}: truncated or corrupt GGUF ({what} runs past the end of the file "
                            f"at byte {self.pos})")

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self, what: str) -> bytes:
        n = self.unpack("<Q", what + " length")
        self.need(n, what)
        s = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return s


def _value_type(code: int, path: str, key: str) -> GGUFValueType:
    try:
        return GGUFValueType(code)
    except ValueError:
        raise GGUFError(f"{path}: corrupt GGUF: key {key!r} has unknown value type {code}") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, key: str) -> tuple[Any, GGUFValueType | None]:
    if vtype == GGUFValueType.STRING:
        return cur.string(f"value of {key!r}"), None
    if vtype != GGUFValueType.ARRAY:
        return cur.unpack(_SCALAR_FMT[vtype], f"value of {key!r}"), None
    sub = _value_type(cur.unpack("<I", f"array type of {key!r}"), cur.path, key)
    count = cur.unpack("<Q", f"array length of {key!r}")
    if sub == GGUFValueType.STRING:
        # each element needs at least its 8-byte length: reject absurd counts before looping
        cur.need(count * 8, f"array {key!r} ({count} strings)")
        buf, pos, end = cur.buf, cur.pos, cur.end
        out = []
        unpack = struct.unpack_from
        append = out.append
        for _ in range(count):
            if pos + 8 > end:
                cur.pos = pos
                cur.need(8, f"array {key!r}")
            n = unpack("<Q", buf, pos)[0]
            pos += 8
            if pos + n > end:
                cur.pos = pos
                cur.need(n, f"string in array {key!r}")
            append(bytes(buf[pos:pos + n]))
            pos += n
        cur.pos = pos
        return out, sub
    if sub == GGUFValueType.ARRAY:
        raise GGUFError(f"{cur.path}: nested arrays (key {key!r}) are not supported")
    dt = np.dtype(_NP_DTYPE[sub])
    cur.need(count * dt.itemsize, f"array {key!r} ({count} elements)")
    arr = np.frombuffer(cur.buf, dtype=dt, count=count, offset=cur.pos).copy()
    cur.pos += count * dt.itemsize
    return arr, sub


class GGUFFile:
    """A GGUF file opened read-only: metadata parsed, tensor data memory-mapped."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        p = str(path)
        try:
            self._fh = open(p, "rb")
        except IsADirectoryError:
            raise GGUFError(f"{p}: is a directory, not a GGUF file") from None
        except OSError as e:
            raise GGUFError(f"{p}: cannot open: {e.strerror}") from None
        try:
            self.size = os.fstat(self._fh.fileno()).st_size
            if self.size < 24:
                raise GGUFError(f"{p}: not a GGUF file (only {self.size} bytes)")
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._parse(memoryview(self._mm), p)
        except GGUFError:
            self.close()
            raise
        except (struct.error, ValueError, OverflowError, MemoryError, IndexError, KeyError) as e:
            self.close()
            raise GGUFError(f"{p}: corrupt GGUF header ({type(e).__name__}: {e})") from None

    def _parse(self, buf: memoryview, p: str) -> None:
        cur = _Cursor(buf, p)
        magic = bytes(buf[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{p}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        cur.pos = 4
        self.version = cur.unpack("<I", "version")
        if self.version not in (2, 3):
            if self.version & 0xFFFF == 0 and self.version >> 16 in (2, 3):
                raise GGUFError(f"{p}: big-endian GGUF files are not supported")
            raise GGUFError(f"{p}: unsupported GGUF version {self.version} (supported: 2, 3)")
        n_tensors = cur.unpack("<Q", "tensor count")
        n_kv = cur.unpack("<Q", "key/value count")
        # every key/value takes >= 12 bytes and every tensor info >= 28: reject absurd counts
        if n_kv * 12 + n_tensors * 28 > self.size:
            raise GGUFError(f"{p}: corrupt GGUF (claims {n_kv} keys and {n_tensors} tensors in "
                            f"{self.size} bytes)")
        self.fields: dict[str, Field] = {}
        for _ in range(n_kv):
            start = cur.pos
            key = cur.string("key").decode("utf-8", "replace")
            if not key:
                raise GGUFError(f"{p}: corrupt GGUF: key/value {len(self.fields)} has an empty key")
            vtype = _value_type(cur.unpack("<I", f"type of {key!r}"), p, key)
            value, sub = _read_value(cur, vtype, key)
            if key in self.fields:
                raise GGUFError(f"{p}: corrupt GGUF: duplicate key {key!r}")
            self.fields[key] = Field(key, vtype, value, sub, bytes(buf[start:cur.pos]))
        align_field = self.fields.get("general.alignment")
        self.alignment = DEFAULT_ALIGNMENT
        if align_field is not None:
            a = align_field.value
            if align_field.vtype != GGUFValueType.UINT32 or a <= 0 or a & (a - 1):
                raise GGUFError(f"{p}: corrupt GGUF: general.alignment {a!r} is not a power of two")
            self.alignment = a
        self.tensors: list[TensorInfo] = []
        names = set()
        for _ in range(n_tensors):
            start = cur.pos
            name = cur.string("tensor name").decode("utf-8", "replace")
            if cur.pos - start - 8 >= GGML_MAX_NAME:
                raise GGUFError(f"{p}: corrupt GGUF: tensor name {name[:80]!r}... is {cur.pos - start - 8} bytes "
                                f"(llama.cpp allows {GGML_MAX_NAME - 1})")
            n_dims = cur.unpack("<I", f"dims of {name!r}")
            if not 1 <= n_dims <= 4:
                raise GGUFError(f"{p}: corrupt GGUF: tensor {name!r} has {n_dims} dimensions")
            shape = tuple(cur.unpack("<Q", f"shape of {name!r}") for _ in range(n_dims))
            ttype = cur.unpack("<I", f"type of {name!r}")
            offset = cur.unpack("<Q", f"offset of {name!r}")
            try:
                block, _ = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
            except (ValueError, KeyError):
                raise GGUFError(f"{p}: corrupt GGUF: tensor {name!r} has unknown type {ttype}") from None
            if any(d <= 0 for d in shape) or shape[0] % block:
                raise GGUFError(f"{p}: corrupt GGUF: tensor {name!r} has invalid shape {shape}")
            if name in names:
                raise GGUFError(f"{p}: corrupt GGUF: duplicate tensor {name!r}")
            names.add(name)
            self.tensors.append(TensorInfo(name, shape, ttype, offset, tensor_nbytes(shape, ttype)))
        self.data_offset = pad_to(cur.pos, self.alignment)
        data_size = self.size - self.data_offset
        expected = 0
        for t in self.tensors:
            # llama.cpp (gguf.cpp) requires the tensors back to back in header order, each padded to the
            # alignment; an offset anywhere else would have the trim copy other bytes than llama.cpp reads
            if t.offset != expected:
                raise GGUFError(f"{p}: corrupt GGUF: tensor {t.name!r} has data offset {t.offset}, expected "
                                f"{expected} (tensors must follow each other in header order)")
            expected = pad_to(t.offset + t.nbytes, self.alignment)
            if t.offset + t.nbytes > data_size:
                raise GGUFError(f"{p}: truncated or corrupt GGUF: tensor {t.name!r} "
                                f"(bytes {t.offset}..{t.offset + t.nbytes} of the data section) lies "
                                f"outside the file's {max(data_size, 0)} data bytes")
        self.header_end = cur.pos

    # -- access -----------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        f = self.fields.get(key)
        return default if f is None else f.value

    @property
    def arch(self) -> str:
        a = self.get("general.architecture")
        return a.decode("utf-8", "replace") if isinstance(a, bytes) else "unknown"

    def tensor(self, name: str) -> TensorInfo | None:
        return next((t for t in self.tensors if t.name == name), None)

    def tensor_bytes(self, t: TensorInfo) -> memoryview:
        start = self.data_offset + t.offset
        return memoryview(self._mm)[start:start + t.nbytes]

    def view(self, start: int, n: int) -> memoryview:
        """Bytes [start, start+n) of the file, from the map."""
        return memoryview(self._mm)[start:start + n]

    def tensor_rows_as(self, t: TensorInfo, n_rows: int) -> np.ndarray:
        """The tensor as (n_rows, bytes per row) uint8, e.g. a 1-D bias of n_vocab floats."""
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes,
                             offset=self.data_offset + t.offset).reshape(n_rows, t.nbytes // n_rows)

    def release(self, t: TensorInfo, start: int, end: int) -> None:
        """Drop mapped pages of bytes [start, end) of tensor t from the resident set (they stay in
        the page cache): reading a large tensor through the map must not grow RSS with it."""
        page = mmap.PAGESIZE
        lo = -(-(self.data_offset + t.offset + start) // page) * page
        hi = (self.data_offset + t.offset + end) // page * page
        if hi > lo and hasattr(mmap, "MADV_DONTNEED"):
            self._mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)

    def sha256(self, stop: Any = None) -> str:
        """sha256 of the whole file, read through the map (no copy into this process) and
        released as it goes; returns "" if `stop` (a threading.Event) is set meanwhile."""
        import hashlib

        h = hashlib.sha256()
        step = 64 << 20
        for a in range(0, self.size, step):
            if stop is not None and stop.is_set():
                return ""
            h.update(memoryview(self._mm)[a:a + step])
            lo, hi = a, min(a + step, self.size) // mmap.PAGESIZE * mmap.PAGESIZE
            if hi > lo and hasattr(mmap, "MADV_DONTNEED"):
                self._mm.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
        return h.hexdigest()

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # numpy views still alive; the map is released with them
        self._fh.close()

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pad_to(n: int, align: int) -> int:
    return (n + align - 1) // align * align


# -- writing ---------------------------------------------------------------------------------

def enc_string(s: bytes | str) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def encode_field(name: str, vtype: GGUFValueType, value: Any, subtype: GGUFValueType | None = None) -> bytes:
    """Encode one key/value pair. Empty arrays are written (gguf-py's writer drops them)."""
    out = [enc_string(name), struct.pack("<I", int(vtype))]
    if vtype == GGUFValueType.STRING:
        out.append(enc_string(value))
    elif vtype == GGUFValueType.ARRAY:
        assert subtype is not None
        out.append(struct.pack("<IQ", int(subtype), len(value)))
        if subtype == GGUFValueType.STRING:
            out.extend(enc_string(s) for s in value)
        else:
            out.append(np.asarray(value, dtype=_NP_DTYPE[subtype]).tobytes())
    else:
        out.append(struct.pack(_SCALAR_FMT[vtype], value))
    return b"".join(out)


@dataclass
class OutTensor:
    """A tensor to write: its info plus a function that streams its bytes to a file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    nbytes: int
    write: Any = field(repr=False)  # Callable[[BinaryIO], None], must write exactly nbytes


def write_gguf(fh: BinaryIO, kv: list[bytes], tensors: list[OutTensor], alignment: int,
               version: int = 3) -> None:
    """Write header, key/values (already encoded) and tensors, each tensor padded to alignment."""
    head = [GGUF_MAGIC, struct.pack("<IQQ", version, len(tensors), len(kv))]
    head.extend(kv)
    offset = 0
    for t in tensors:
        head.append(enc_string(t.name))
        head.append(struct.pack("<I", len(t.shape)))
        head.append(struct.pack(f"<{len(t.shape)}Q", *t.shape))
        head.append(struct.pack("<IQ", t.ggml_type, offset))
        offset = pad_to(offset + t.nbytes, alignment)
    header = b"".join(head)
    fh.write(header)
    fh.write(b"\0" * (pad_to(len(header), alignment) - len(header)))
    for t in tensors:
        start = fh.tell()
        t.write(fh)
        written = fh.tell() - start
        if written != t.nbytes:
            raise AssertionError(f"tensor {t.name}: wrote {written} bytes, expected {t.nbytes}")
        fh.write(b"\0" * (pad_to(t.nbytes, alignment) - t.nbytes))
