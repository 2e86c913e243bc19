"""A model as llama.cpp sees it: one GGUF file, or a split set (`NAME-00001-of-00003.gguf`, ...).

llama.cpp (src/llama-model-loader.cpp) loads a split model from its first shard: the metadata
lives there, every shard carries `split.no` (UINT16), `split.count` (UINT16) and
`split.tensors.count` (INT32), and the other shards' names are made from the first one's by
`llama_split_path` ("%s-%05d-of-%05d.gguf"). `GGUFModel` opens such a set from any of its shards,
checks it the way llama.cpp does (every shard present and parseable, the right index and count
in each, no tensor twice, the tensor total as announced) and presents it with the same access as
a `GGUFFile`: metadata from the first shard, the tensors of all shards, tensor bytes read from
the shard that holds them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGUFValueType

from gguf_trim.errors import GGUFError, TrimError
from gguf_trim.format.gguffile import GGUFFile, TensorInfo, encode_field

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
SPLIT_KEYS = (SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS)
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def shard_path(prefix: str | Path, no: int, count: int) -> Path:
    """llama.cpp's `llama_split_path`: shard `no` (0-based) of `count`."""
    return Path(f"{prefix}-{no + 1:05d}-of-{count:05d}.gguf")


def split_name(path: str | Path) -> tuple[Path, int, int] | None:
    """(prefix, 0-based shard index, shard count) if the file name has llama.cpp's split form."""
    p = Path(path)
    m = SHARD_RE.match(p.name)
    if m is None:
        return None
    return p.with_name(m["prefix"]), int(m["no"]) - 1, int(m["count"])


def output_paths(output: str | Path, count: int) -> list[Path]:
    """Where a trimmed model of `count` shards goes for `-o output`: the output itself for one
    file; for several, output's split prefix (`out-00001-of-00003.gguf` -> `out`) or its name
    without `.gguf` (`out.gguf` -> `out`), with llama.cpp's shard names."""
    out = Path(output)
    if count == 1:
        parsed = split_name(out)
        if parsed is not None and parsed[2] > 1:
            raise TrimError(f"-o {out} names shard {parsed[1] + 1} of {parsed[2]}, but the output is one file; "
                            "give a plain .gguf name")
        return [out]
    parsed = split_name(out)
    if parsed is not None:
        prefix, no, n = parsed
        if no != 0 or n != count:
            raise TrimError(f"-o {out} names shard {no + 1} of {n}, but the output has {count} shards; "
                            f"give {shard_path(prefix, 0, count).name} or a plain .gguf name")
    else:
        prefix = out.with_name(out.name[:-5]) if out.name.endswith(".gguf") else out
    return [shard_path(prefix, i, count) for i in range(count)]


def _split_int(g: GGUFFile, key: str) -> int | None:
    f = g.fields.get(key)
    if f is None:
        return None
    if f.vtype not in (GGUFValueType.UINT16, GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64,
                       GGUFValueType.INT64, GGUFValueType.UINT8, GGUFValueType.INT16):
        raise GGUFError(f"{g.path}: {key} must be an integer, not {f.vtype.name}")
    return int(f.value)


def split_keys(no: int, count: int, n_tensors: int) -> list[bytes]:
    """The three keys every shard of a split model carries, typed as llama.cpp writes them."""
    return [encode_field(SPLIT_NO, GGUFValueType.UINT16, no),
            encode_field(SPLIT_COUNT, GGUFValueType.UINT16, count),
            encode_field(SPLIT_TENSORS, GGUFValueType.INT32, n_tensors)]


class GGUFModel:
    """One GGUF file or a whole split set, opened read-only from any of its files."""

    def __init__(self, path: str | Path, paths: list[str | Path] | None = None):
        """`paths`: the shards in order, when they do not carry llama.cpp's names (temp files)."""
        self.shards: list[GGUFFile] = []
        try:
            first = GGUFFile(paths[0] if paths else path)
            self.shards.append(first)
            count = _split_int(first, SPLIT_COUNT)
            if paths is None and (count is None or count <= 1):
                count = None
            if count is not None or (paths is not None and len(paths) > 1):
                self._open_split(first, count, paths)
        except BaseException:
            self.close()
            raise
        main = self.shards[0]
        self.path = main.path
        self.fields = main.fields
        self.version = main.version
        self.alignment = main.alignment
        self.tensors: list[TensorInfo] = []
        self._file_of: dict[str, GGUFFile] = {}
        for g in self.shards:
            for t in g.tensors:
                self.tensors.append(t)
                self._file_of[t.name] = g
        self.size = sum(g.size for g in self.shards)

    def _open_split(self, given: GGUFFile, count: int | None, paths: list[str | Path] | None) -> None:
        no = _split_int(given, SPLIT_NO)
        if paths is None:
            if no is None:
                raise GGUFError(f"{given.path}: split.count is {count} but split.no is missing")
            if not 0 <= no < count:
                raise GGUFError(f"{given.path}: split.no {no} is outside 0..{count - 1} (split.count {count})")
            parsed = split_name(given.path)
            if parsed is None or parsed[1] != no or parsed[2] != count:
                raise GGUFError(f"{given.path}: shard {no + 1} of a {count}-file split model, but its name is not "
                                f"llama.cpp's '{shard_path('NAME', no, count).name}' form, so the other shards "
                                "cannot be found; rename it")
            paths = [shard_path(parsed[0], i, count) for i in range(count)]
            if no != 0:  # opened from a later shard: start again from the first
                given.close()
                self.shards.clear()
                if not paths[0].is_file():
                    raise GGUFError(f"{paths[0]}: missing shard 1 of {count} (given {given.path.name})")
                self.shards.append(GGUFFile(paths[0]))
        else:
            count = len(paths)
        for i in range(1, len(paths)):
            if not Path(paths[i]).is_file():
                raise GGUFError(f"{paths[i]}: missing shard {i + 1} of {count}")
            self.shards.append(GGUFFile(paths[i]))
        announced = None
        seen: dict[str, Path] = {}
        for i, g in enumerate(self.shards):
            c, n, tc = _split_int(g, SPLIT_COUNT), _split_int(g, SPLIT_NO), _split_int(g, SPLIT_TENSORS)
            if c != count or n != i:
                raise GGUFError(f"{g.path}: split.no {n} / split.count {c} (expected {i} / {count}): "
                                "a shard of another split, or a mismatched set")
            if tc is None:
                raise GGUFError(f"{g.path}: split.tensors.count is missing")
            if announced is None:
                announced = tc
            elif tc != announced:
                raise GGUFError(f"{g.path}: split.tensors.count {tc}, but shard 1 says {announced}: "
                                "a shard of another model")
            for t in g.tensors:
                if t.name in seen:
                    raise GGUFError(f"{g.path}: tensor {t.name!r} is also in {seen[t.name].name}: "
                                    "a shard of another model, or a mismatched set")
                seen[t.name] = g.path
        if len(seen) != announced:
            raise GGUFError(f"{self.shards[0].path}: the {count} shards hold {len(seen)} tensors, but "
                            f"split.tensors.count says {announced}: a shard is missing, truncated or from "
                            "another model")
        blocks = self.shards[0].fields.get(f"{self.shards[0].arch}.block_count")
        if blocks is not None and isinstance(blocks.value, (int, np.integer)):
            for name, where in seen.items():
                m = re.match(r"blk\.(\d+)\.", name)
                if m and int(m[1]) >= int(blocks.value):
                    raise GGUFError(f"{where}: tensor {name!r} is past the model's {int(blocks.value)} blocks: "
                                    "a shard of another model")

    # -- the GGUFFile interface, over all shards ---------------------------------------------
    @property
    def is_split(self) -> bool:
        return len(self.shards) > 1 or SPLIT_COUNT in self.shards[0].fields

    @property
    def paths(self) -> list[Path]:
        return [g.path for g in self.shards]

    def get(self, key: str, default: Any = None) -> Any:
        return self.shards[0].get(key, default)

    @property
    def arch(self) -> str:
        return self.shards[0].arch

    def tensor(self, name: str) -> TensorInfo | None:
        g = self._file_of.get(name)
        return None if g is None else g.tensor(name)

    def file_of(self, t: TensorInfo) -> GGUFFile:
        """The shard holding tensor t."""
        return self._file_of[t.name]

    def tensor_bytes(self, t: TensorInfo) -> memoryview:
        return self.file_of(t).tensor_bytes(t)

    def tensor_rows_as(self, t: TensorInfo, n_rows: int) -> np.ndarray:
        return self.file_of(t).tensor_rows_as(t, n_rows)

    def release(self, t: TensorInfo, start: int, end: int) -> None:
        self.file_of(t).release(t, start, end)

    def sha256(self, stop: Any = None) -> str:
        """sha256 of each file, comma-separated for a split set (what model hubs list per file);
        "" if `stop` (a threading.Event) is set meanwhile."""
        out = []
        for g in self.shards:
            h = g.sha256(stop)
            if not h:
                return ""
            out.append(h)
        return ",".join(out)

    def close(self) -> None:
        for g in self.shards:
            g.close()

    def __enter__(self) -> GGUFModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_model(path: str | Path) -> GGUFModel:
    """Open a model file, or the split set it belongs to."""
    return GGUFModel(path)


def model_size(path: str | Path) -> int:
    """Bytes of the model's files, every shard counted."""
    with GGUFModel(path) as m:
        return m.size


def first_shard(path: str | Path) -> Path:
    """The file llama.cpp must be given to load the model `path` belongs to (checked)."""
    with GGUFModel(path) as m:
        return m.path
