"""The float model `refine` trains on, and its agreement with llama.cpp (the optional `train` extra).

The GGUF is read by transformers as a float model (every tensor dequantized by gguf-py), every weight
frozen; `RowModel` adds the rows of the added tokens as the only parameters, and `logits_agreement`
checks on a few lines that the float model predicts what llama.cpp predicts before any training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize
from torch import nn

from gguf_trim.errors import TrimError
from gguf_trim.extend.rows import AddedRows
from gguf_trim.format.quant import encode_rows
from gguf_trim.runtime.llama import load_llama

# -- the float model ------------------------------------------------------------------------------

def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TrimError("--device cuda: this PyTorch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise TrimError(f"unknown --device {device!r} (cpu, cuda, auto)")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bfloat16 where matmuls run natively in it (CUDA; CPUs with AMX), else float32."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.bfloat16 if _cpu_has_bf16() else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise TrimError(f"unknown --dtype {dtype!r} (float32, bfloat16, auto)") from None


def _cpu_has_bf16() -> bool:
    """Does this CPU multiply bfloat16 natively (AMX or AVX512-BF16)? Linux's cpuinfo flags say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def load_float_model(path: str | Path) -> nn.Module:
    """The GGUF as a float32 transformers model (dequantized by gguf-py), every weight frozen."""
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    path = Path(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (ValueError, KeyError, OSError, NotImplementedError, RuntimeError) as e:
        raise TrimError(f"{path}: transformers cannot build a float model from it: {str(e).splitlines()[0]}") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class RowModel(nn.Module):
    """The frozen model plus the added rows as the only parameters."""

    def __init__(self, model: nn.Module, added: AddedRows, rows: dict[str, np.ndarray]):
        super().__init__()
        self.model = model
        self.start = int(added.ids[0])
        emb = model.get_input_embeddings()
        head = model.get_output_embeddings()
        n = emb.weight.shape[0]
        if n != added.n_vocab or head is None or head.weight.shape[0] != n:
            raise TrimError(f"the float model has {n} embedding rows, the file {added.n_vocab} tokens")
        if getattr(head, "bias", None) is not None:
            raise TrimError("the float model's output layer has a bias; refine does not train it")
        self.tied = "output.weight" not in added.tensors
        if self.tied != (head.weight.data_ptr() == emb.weight.data_ptr()):
            raise TrimError("the float model's output tying does not match the file's")
        self.new_in = nn.Parameter(torch.from_numpy(rows["token_embd.weight"]).clone())
        self.new_out = self.new_in if self.tied else nn.Parameter(torch.from_numpy(rows["output.weight"]).clone())
        self.emb = emb
        self.head = head
        self.scale = getattr(emb, "embed_scale", None)  # Gemma scales embeddings by sqrt(n_embd)
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        self.out_old: torch.Tensor | None = None

    def lower_precision(self, dtype: torch.dtype) -> None:
        """Frozen matmul weights in `dtype` (bfloat16 runs on AMX/tensor cores), cast once here rather
        than by autocast on every call; norms, embeddings and the trained rows stay float32. The
        old rows of the output matrix get their own low-precision copy (the embedding lookup keeps
        the float32 matrix)."""
        head_w = self.head.weight
        for mod in self.model.modules():
            if isinstance(mod, nn.Linear) and mod.weight is not head_w:
                mod.to(dtype)
        self.out_old = head_w[: self.start].detach().to(dtype).contiguous()

    def trainable(self) -> list[nn.Parameter]:
        return [self.new_in] if self.tied else [self.new_in, self.new_out]

    def rows(self) -> dict[str, np.ndarray]:
        out = {"token_embd.weight": self.new_in.detach().float().cpu().numpy()}
        if not self.tied:
            out["output.weight"] = self.new_out.detach().float().cpu().numpy()
        return out

    def set_rows(self, rows: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            self.new_in.copy_(torch.from_numpy(rows["token_embd.weight"]))
            if not self.tied:
                self.new_out.copy_(torch.from_numpy(rows["output.weight"]))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings for token ids (B, T): the frozen rows, the trained ones for added ids."""
        old_w = self.emb.weight[: self.start]
        is_new = (ids >= self.start).unsqueeze(-1)
        x = F.embedding(ids.clamp(max=self.start - 1), old_w)
        if bool(is_new.any()):
            new = F.embedding((ids - self.start).clamp(min=0), self.new_in.to(old_w.dtype))
            x = torch.where(is_new, new, x)
        if self.scale is not None:
            x = x * self.scale.to(x.dtype)
        return x

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Final hidden states (after the output norm) for token ids (B, T)."""
        return self.model.model(inputs_embeds=self.embed(ids), use_cache=False).last_hidden_state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        old = self.out_old if self.out_old is not None else self.head.weight[: self.start]
        out = torch.cat([h @ old.T, h @ self.new_out.to(old.dtype).T], dim=-1)
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out


def roundtrip(rows: dict[str, np.ndarray], types: dict[str, int]) -> dict[str, np.ndarray]:
    """Rows as they will be in the file: quantized to each tensor's type and back."""
    out = {}
    for name, x in rows.items():
        qt = GGMLQuantizationType(types[name])
        raw = np.frombuffer(encode_rows(x, qt), dtype=np.uint8).reshape(len(x), -1)
        if qt == GGMLQuantizationType.F32:
            out[name] = raw.view(np.float32).copy()
        elif qt == GGMLQuantizationType.F16:
            out[name] = raw.view(np.float16).astype(np.float32)
        else:
            out[name] = dequantize(raw, qt).astype(np.float32).reshape(len(x), -1)
    return out


# -- agreement with llama.cpp ---------------------------------------------------------------------

@torch.no_grad()
def logits_agreement(path: str | Path, rm: RowModel, lines: list[str], n_ctx: int = 256) -> dict[str, Any]:
    """Run the same token ids through llama.cpp (quantized weights) and the float model:
    max |logit difference|, argmax agreement, and bits per byte by each on these lines."""
    llm = load_llama(path, n_ctx=n_ctx, logits_all=True)
    worst, agree, positions, new_positions = 0.0, 0, 0, 0
    nats = [0.0, 0.0]
    size = 0
    try:
        start = llm.token_bos() if llm.token_bos() >= 0 else llm.token_eos()
        for line in lines:
            ids = [start] + llm.tokenize(line.encode(), add_bos=False, special=False)
            ids = ids[:n_ctx]
            llm.reset()
            llm.eval(ids)
            a = torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))
            b = rm.logits(rm.hidden(torch.tensor([ids]))).float()[0]
            worst = max(worst, float((a - b).abs().max()))
            agree += int((a.argmax(-1) == b.argmax(-1)).sum())
            positions += len(ids)
            new_positions += sum(i >= rm.start for i in ids)
            tgt = torch.tensor(ids[1:])
            for k, x in enumerate((a, b)):
                nats[k] += float(F.cross_entropy(x[:-1].double(), tgt, reduction="sum"))
            size += len(line.encode())
    finally:
        llm.close()
    return {"lines": len(lines), "positions": positions, "positions_with_new_tokens": new_positions,
            "max_abs_diff": worst, "argmax_agreement": agree / max(positions, 1),
            "bpb_llama_cpp": nats[0] / math.log(2) / max(size, 1), "bpb_float": nats[1] / math.log(2) / max(size, 1)}
