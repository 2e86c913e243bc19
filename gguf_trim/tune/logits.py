"""The LM head in training (the `train` extra): logits only where the loss is taken, formed in blocks
of positions, each block's gradient taken at once so no (positions, n_vocab) tensor outlives its block.

Why: a float32 (positions, n_vocab) tensor is 2.1 GB for 2,048 positions of Gemma-3's 262k vocabulary,
more than the 270M model's own weights, and autograd keeps its softmax and makes its gradient too. Here
each block's cross-entropy and its gradients (for the hidden states and any trainable head rows) are
computed in the forward pass and the block's logits dropped; backward only scales what was kept. Peak
memory then grows with n_vocab x BLOCK, not with n_vocab x sequence, and nothing is recomputed.

`logits_mode` is the benchmark's switch (`gguf-trim bench train-cost`): `chunked` (the default),
`full` (the head on every position at once, as a stock training loop runs it: what the blocks save),
`bound` (a one-row head: what a step would cost with no vocabulary at all).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

BLOCK = 512  # positions per logits block: (512, 262144) float32 is 537 MB
MODES = ("chunked", "full", "bound")
_mode = "chunked"

Head = Callable[[torch.Tensor], torch.Tensor]


def mode() -> str:
    return _mode


@contextmanager
def logits_mode(m: str) -> Iterator[None]:
    """Run the enclosed training steps with the head formed as `m` says (one of MODES)."""
    global _mode
    if m not in MODES:
        raise ValueError(f"unknown logits mode {m!r} ({', '.join(MODES)})")
    old, _mode = _mode, m
    try:
        yield
    finally:
        _mode = old


def head_logits(inner: Any, h: torch.Tensor) -> torch.Tensor:
    """float32 logits of final hidden states, soft-capped where the model caps them (Gemma 2)."""
    out = inner.lm_head(h).float()
    cap = getattr(inner.config, "final_logit_softcapping", None)
    return torch.tanh(out / cap) * cap if cap else out


def bound_head(weight: torch.Tensor) -> Head:
    """The one-row head of `bound` mode (the first row of the output matrix; targets become 0)."""
    return lambda h: h @ weight[:1].to(h.dtype).T


class _BlockCE(torch.autograd.Function):
    """sum CE(head(h), tgt) whose gradients are computed block by block in forward (see module doc)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, tgt: torch.Tensor, head: Head, block: int, *params: torch.Tensor):
        want = [p for p in params if p.requires_grad]
        grad_h = torch.zeros_like(h)
        grad_p = [torch.zeros_like(p) for p in want]
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.enable_grad():
            for a in range(0, h.shape[0], block):
                hc = h[a:a + block].detach().requires_grad_(True)
                loss = F.cross_entropy(head(hc).float(), tgt[a:a + block], reduction="sum", ignore_index=-100)
                got = torch.autograd.grad(loss, [hc, *want], allow_unused=True)
                grad_h[a:a + block] = got[0]
                for acc, g in zip(grad_p, got[1:]):
                    if g is not None:
                        acc += g
                total += loss.detach()
        ctx.save_for_backward(grad_h, *grad_p)
        ctx.want = [p.requires_grad for p in params]
        return total

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_h, *grad_p = ctx.saved_tensors
        it = iter(grad_p)
        return (grad_out * grad_h, None, None, None,
                *[(grad_out * next(it)) if w else None for w in ctx.want])


def summed_ce(h: torch.Tensor, tgt: torch.Tensor, head: Head, params: list[torch.Tensor] = (),
              bound: Head | None = None, block: int | None = None) -> torch.Tensor:
    """Summed next-token cross-entropy of hidden states h (N, D) against tgt (N,; -100 ignored) through
    `head`; `params`: the trainable tensors `head` uses (their gradients are kept too). In `full` mode
    the logits are one tensor, in `bound` mode `bound` (a one-row head) stands in for `head`."""
    if _mode == "bound" and bound is not None:
        head, tgt, params = bound, torch.where(tgt == -100, tgt, torch.zeros_like(tgt)), ()
    block = block or BLOCK
    if _mode == "full" or not torch.is_grad_enabled() or not (h.requires_grad or any(p.requires_grad for p in params)):
        if _mode == "full" or h.shape[0] <= block:
            return F.cross_entropy(head(h).float(), tgt, reduction="sum", ignore_index=-100)
        return sum(F.cross_entropy(head(h[a:a + block]).float(), tgt[a:a + block], reduction="sum",
                                   ignore_index=-100) for a in range(0, h.shape[0], block))
    return _BlockCE.apply(h, tgt, head, block, *params)
