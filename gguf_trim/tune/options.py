"""`FinetuneOptions`: how `finetune` trains its LoRA adapter; importable without PyTorch (the CLI's
`--help` and a library caller building options must not need the `train` extra)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from gguf_trim.options import flag
from gguf_trim.tune.checkpoint import DEFAULT_EVERY, EVERY_HELP, RESUME_HELP

# The projections llama.cpp applies LoRA to in every block (GGUF names, llama-adapter.cpp matches by name).
ATTENTION = ("attn_q", "attn_k", "attn_v", "attn_output")
MLP = ("ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True, kw_only=True)
class FinetuneOptions:
    """Training settings of `gguf-trim finetune` (each field is the flag of the same name)."""

    rank: int = flag(16, "--rank", show_default=True, type=click.IntRange(min=1), help="LoRA rank.")
    alpha: float = flag(32.0, "--alpha", show_default=True, type=click.FloatRange(min=0, min_open=True),
                        help="LoRA alpha (the update is scaled by alpha / rank).")
    targets: str = flag("attn,mlp", "--targets", show_default=True,
                        help="Projections to adapt: attn, mlp, or GGUF names (attn_q,attn_v,ffn_down...).")
    tokens: int = flag(200_000, "--tokens", show_default=True, type=click.IntRange(min=1),
                       help="Training tokens (target-side positions; prompts are not counted).")
    steps: int | None = flag(None, "--steps", type=click.IntRange(min=1),
                             help="Optimizer steps (instead of --tokens).")
    seq_len: int = flag(384, "--seq-len", show_default=True, type=click.IntRange(min=16),
                        help="Longest example (prompt + target) in tokens; longer pairs are left out.")
    batch: int = flag(8, "--batch", show_default=True, type=click.IntRange(min=1), help="Examples per step.")
    lr: float = flag(2e-4, "--lr", show_default=True, type=click.FloatRange(min=0, min_open=True),
                     help="AdamW learning rate (warm-up, then cosine to 10%).")
    rows_lr: float = flag(3e-4, "--rows-lr", show_default=True, type=click.FloatRange(min=0, min_open=True),
                          help="Learning rate of the added rows with --refine-to (refine's own default).")
    warmup: int = flag(10, "--warmup", show_default=True, type=click.IntRange(min=0), help="Warm-up steps.")
    seed: int = flag(0, "--seed", show_default=True)
    device: str = flag("auto", "--device", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
    heldout: int = flag(64, "--heldout", show_default=True, type=click.IntRange(min=1),
                        help="Pairs held out (never trained on, at most 10%); their loss is reported before and "
                             "after.")
    text_share: float = flag(0.0, "--text-share", show_default=True, type=click.FloatRange(0, 0.9),
                             help="Share of the examples drawn from --text (monolingual Vietnamese, next-token "
                                  "loss).")
    eval_every: int = flag(0, "--eval-every", show_default=True, type=click.IntRange(min=0),
                           help="Also score the held-out pairs every N steps (the curve).")
    check_lines: int = flag(3, "--check-lines", show_default=True, type=click.IntRange(min=0),
                            help="Held-out examples on which base + adapter logits through llama.cpp are "
                                 "compared with the float model's.")
    threads: int | None = flag(None, "--threads", type=click.IntRange(min=1),
                               help="PyTorch CPU threads (default: all cores).")
    pair: str | None = flag(None, "--pair", metavar="X,Y",
                            help="The pairs' two languages, in column order, for files whose first line does not "
                                 "name them (e.g. en<TAB>ko); default en,vi.")
    checkpoint_every: str = flag(DEFAULT_EVERY, "--checkpoint-every", show_default=True, metavar="N|TIME",
                                 help=EVERY_HELP)
    resume: bool = flag(False, "--resume", is_flag=True, help=RESUME_HELP)
    progress: bool = True


def target_names(targets: str) -> tuple[str, ...]:
    """GGUF projection names from --targets."""
    from gguf_trim.errors import TrimError

    out: list[str] = []
    for part in (p.strip() for p in targets.split(",") if p.strip()):
        if part == "attn":
            out += ATTENTION
        elif part == "mlp":
            out += MLP
        elif part in ATTENTION + MLP:
            out.append(part)
        else:
            raise TrimError(f"unknown --targets entry {part!r} (attn, mlp, or one of {', '.join(ATTENTION + MLP)})")
    if not out:
        raise TrimError("--targets names no projection")
    return tuple(dict.fromkeys(out))
