"""LoRA adapter GGUFs as llama.cpp reads them (src/llama-adapter.cpp): written here, and checked
against a base model before llama.cpp sees them (no PyTorch, no llama_cpp here: loading one is
runtime/llama.py's `Adapters`).

Why a separate file instead of merged weights: merging into a quantized GGUF would requantize
every matrix; an adapter leaves the base byte-identical and is applied at load time by
llama-cpp-python (`lora_path`), `llama-server --lora`, `llama-cli --lora` and ollama's `ADAPTER`.
Layout: `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha` (FLOAT32), and per
adapted matrix W (GGML shape [n_in, n_out]) the tensors `W.lora_a` [n_in, r] and `W.lora_b` [r, n_out],
both F32; llama.cpp adds scale * alpha / r * B(A(x)) to W(x).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGMLQuantizationType, GGUFValueType

from gguf_trim.errors import GGUFError, TrimError
from gguf_trim.files import atomic_write
from gguf_trim.format.gguffile import GGUFFile, OutTensor, encode_field, write_gguf
from gguf_trim.format.keys import FINETUNE_PREFIX, encode_record
from gguf_trim.format.shards import open_model

F32 = int(GGMLQuantizationType.F32)


@dataclass
class LoraSpec:
    """An adapter to apply and its scale (`PATH` or `PATH:SCALE` on the command line)."""

    path: Path
    scale: float = 1.0

    @classmethod
    def parse(cls, text: str) -> LoraSpec:
        path, sep, scale = text.rpartition(":")
        if sep and path:
            try:
                return cls(Path(path), float(scale))
            except ValueError:
                pass
        return cls(Path(text), 1.0)


def write_adapter(path: str | Path, arch: str, alpha: float, weights: dict[str, tuple[np.ndarray, np.ndarray]],
                  meta: dict[str, Any] | None = None, check=None) -> Path:
    """Write an adapter: `weights[W] = (A (r, n_in), B (n_out, r))` in PyTorch's row-major shapes, which are
    the GGML shapes [n_in, r] and [r, n_out]. `meta`: the gguf_trim.finetune.* record. Atomic (`check` runs on the
    temp file before the rename)."""
    S = GGUFValueType.STRING
    kv = [encode_field("general.architecture", S, arch), encode_field("general.type", S, "adapter"),
          encode_field("adapter.type", S, "lora"), encode_field("adapter.lora.alpha", GGUFValueType.FLOAT32, alpha)]
    kv += encode_record(FINETUNE_PREFIX, meta or {})
    tensors = []
    for name in sorted(weights):
        a, b = (np.ascontiguousarray(x, dtype=np.float32) for x in weights[name])
        for suffix, x in (("lora_a", a), ("lora_b", b)):
            tensors.append(OutTensor(f"{name}.{suffix}", tuple(reversed(x.shape)), F32, x.nbytes,
                                     (lambda arr: lambda fh: fh.write(arr.tobytes()))(x)))
    with atomic_write(path, check=check) as fh:
        write_gguf(fh, kv, tensors, 32)
    return Path(path)


def check_adapter(adapter: str | Path, model: str | Path) -> dict[str, Any]:
    """Refuse, with one line, an adapter llama.cpp would refuse for this model (or apply to the wrong
    one): not a LoRA adapter, another architecture, a tensor the model lacks or of another shape."""
    try:
        with GGUFFile(adapter) as a:
            kind = a.fields["general.type"].text() if "general.type" in a.fields else None
            atype = a.fields["adapter.type"].text() if "adapter.type" in a.fields else None
            arch = a.arch
            alpha = a.get("adapter.lora.alpha")
            shapes = {t.name: t.shape for t in a.tensors}
            meta = {k: f.value for k, f in a.fields.items() if k.startswith(FINETUNE_PREFIX)}
    except GGUFError as e:
        raise TrimError(f"{adapter}: not a GGUF adapter ({e})") from None
    if kind != "adapter" or atype != "lora" or alpha is None:
        raise TrimError(f"{adapter}: not a LoRA adapter GGUF (general.type {kind!r}, adapter.type {atype!r})")
    with open_model(model) as g:
        if g.arch != arch:
            raise TrimError(f"{adapter}: an adapter for a {arch} model, {model} is {g.arch}")
        base = {t.name: t.shape for t in g.tensors}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, shape in shapes.items():
        stem, _, suffix = name.rpartition(".")
        if suffix not in ("lora_a", "lora_b"):
            raise TrimError(f"{adapter}: tensor {name} is neither .lora_a nor .lora_b")
        pairs.setdefault(stem, {})[suffix] = shape
    for stem, ab in pairs.items():
        if len(ab) != 2:
            raise TrimError(f"{adapter}: {stem} has only its {next(iter(ab))}")
        w = base.get(stem)
        if w is None:
            raise TrimError(f"{adapter}: adapts {stem}, which {Path(model).name} does not have (another model?)")
        a, b = ab["lora_a"], ab["lora_b"]
        if a[0] != w[0] or b[1] != w[1] or a[1] != b[0]:
            raise TrimError(f"{adapter}: {stem} is {list(w)} in {Path(model).name} but the adapter is for "
                            f"{[a[0], b[1]]} (another model?)")
    return {"tensors": len(pairs), "alpha": float(alpha), "rank": int(next(iter(pairs.values()))["lora_a"][1])
            if pairs else 0, "meta": meta}

