"""`RefineOptions`: how `refine` trains the added rows; importable without PyTorch (the CLI's
`--help` and a library caller building options must not need the `train` extra)."""

from __future__ import annotations

from dataclasses import dataclass

import click

from gguf_trim.options import flag
from gguf_trim.tune.checkpoint import DEFAULT_EVERY, EVERY_HELP, RESUME_HELP


@dataclass(frozen=True, kw_only=True)
class RefineOptions:
    """Training settings of `gguf-trim refine` (each field is the flag of the same name)."""

    tokens: int = flag(200_000, "--tokens", show_default=True, type=click.IntRange(min=1),
                       help="Training tokens (predicted positions).")  # `steps` wins when set
    steps: int | None = flag(None, "--steps", type=click.IntRange(min=1),
                             help="Optimizer steps (instead of --tokens).")
    seq_len: int = flag(256, "--seq-len", show_default=True, type=click.IntRange(min=8))
    batch: int = flag(8, "--batch", show_default=True, type=click.IntRange(min=1), help="Sequences per step.")
    lr: float = flag(3e-4, "--lr", show_default=True, type=click.FloatRange(min=0, min_open=True),
                     help="Adam learning rate (warm-up, then cosine to 10%).")
    warmup: int = flag(20, "--warmup", show_default=True, type=click.IntRange(min=0), help="Warm-up steps.")
    seed: int = flag(0, "--seed", show_default=True)
    device: str = flag("auto", "--device", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
    dtype: str = flag("auto", "--dtype", show_default=True, type=click.Choice(["auto", "float32", "bfloat16"]),
                      help="Frozen weights' precision; auto: bfloat16 on CUDA and on CPUs with AMX/AVX512-BF16.")
    heldout_lines: int = flag(300, "--heldout", show_default=True, type=click.IntRange(min=1),
                              help="Held-out lines per corpus (at most 5% of it), scored before and after.")
    eval_every: int = flag(0, "--eval-every", show_default=True, type=click.IntRange(min=0),
                           help="Also score the held-out lines every N steps (the curve).")
    eval_texts: list[str] = flag(
        None, "--eval-text", default_factory=list, multiple=True,
        help="Text never trained on (e.g. your dev set), scored with the held-out lines: --heldout lines "
             "of it, reported on their own; repeatable.")
    # how often each corpus is drawn: "auto", "lines" or one weight per corpus (rows.parse_mix)
    mix: str | list[float] = flag(
        "auto", "--mix", show_default=True,
        help="How often each --corpus is drawn: auto (by its share of added tokens; the self-text a "
             "quarter of the sequences), lines (all lines pooled), or one weight per --corpus (e.g. 0.9,0.1), "
             "and one more, last, for the self-text.")
    check_lines: int = flag(4, "--check-lines", show_default=True, type=click.IntRange(min=0),
                            help="Held-out lines on which the float model's logits are compared with llama.cpp's "
                                 "first.")
    choice_weight: float = flag(
        1.0, "--choice-weight", show_default=True, type=click.FloatRange(min=0),
        help="Weight of the loss that teaches a compound to win over its first piece where it is the "
             "likelier continuation (so greedy decoding writes it as one token); 0: next-token loss only.")
    self_text: int = flag(
        4000, "--self-text", show_default=True, type=click.IntRange(min=0),
        help="Also train on this many greedy continuations written by the model itself (before its added "
             "tokens: they are banned), of heads of training lines, so the compounds learn to win where the "
             "model writes them; 0: none.")
    threads: int | None = flag(None, "--threads", type=click.IntRange(min=1),
                               help="PyTorch CPU threads (default: all cores).")
    checkpoint_every: str = flag(DEFAULT_EVERY, "--checkpoint-every", show_default=True, metavar="N|TIME",
                                 help=EVERY_HELP)
    resume: bool = flag(False, "--resume", is_flag=True, help=RESUME_HELP)
    progress: bool = True  # a progress bar (else a log line now and then)
    self_text_tokens: int = 48  # tokens of each self-text continuation
