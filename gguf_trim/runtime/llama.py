"""Constructing llama_cpp.Llama: every load of a model in this process goes through `load_llama`.

A file is first loaded in a child process (`check_loads`, once per file version): llama.cpp
aborts the whole process on some invalid vocabularies, and this one must end with a clear error
instead. llama.cpp's info/warning chatter is silenced, its errors let through.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.format.shards import open_model
from gguf_trim.runtime.loadcheck import finish_load_check, spawn_load_check

_LOG_CALLBACK = None


def quiet_llama() -> None:
    """Let through only llama.cpp's errors (its info/warning chatter ignores verbose=False)."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return
    import ctypes

    import llama_cpp

    last = [0]

    @llama_cpp.llama_log_callback
    def _cb(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (continues the previous line)
        if level != 5:
            last[0] = level
        if last[0] == 4:
            sys.stderr.write(text.decode("utf-8", "replace"))

    _LOG_CALLBACK = _cb  # keep a reference: ctypes callbacks must outlive their use
    llama_cpp.llama_log_set(_cb, ctypes.c_void_p(0))


_LOADS: set[tuple[str, int, int]] = set()  # files (path, size, mtime) a child process has loaded


def check_loads(*paths: str | Path) -> None:
    """Load each file's vocabulary in a child process first (in parallel, once per file version):
    llama.cpp aborts the whole process on some invalid vocabularies (duplicate token texts, ...),
    and this one must end with a clear error instead. Missing files are left to the caller."""
    todo = {}
    for path in paths:
        if not Path(path).is_file():
            continue
        with open_model(path) as m:  # our validating parser first (every shard): clean errors for corrupt files
            path = m.path  # llama.cpp loads a split model from its first shard
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in _LOADS and key not in todo:
            todo[key] = path
    procs = [(key, path, spawn_load_check(path)) for key, path in todo.items()]
    try:
        for key, path, proc in procs:
            finish_load_check(proc, None, what=str(path))
            _LOADS.add(key)
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def load_llama(path: str | Path, vocab_only: bool = False, n_ctx: int = 512, logits_all: bool = False,
               n_threads: int | None = None, n_gpu_layers: int = 0, flash_attn: bool = False):
    """A llama_cpp.Llama, with llama.cpp's load errors turned into one-line TrimErrors (and its
    aborts kept in a child process: `check_loads`)."""
    from llama_cpp import Llama

    quiet_llama()
    if not Path(path).is_file():
        raise TrimError(f"{path}: no such file")
    with open_model(path) as m:
        path = m.path  # llama.cpp loads a split model from its first shard
    check_loads(path)  # parses every shard, then llama.cpp in a child: its aborts stay there
    try:
        return Llama(str(path), vocab_only=vocab_only, n_ctx=n_ctx, logits_all=logits_all,
                     n_threads=n_threads or os.cpu_count(), n_gpu_layers=n_gpu_layers, flash_attn=flash_attn,
                     verbose=False)
    except (ValueError, RuntimeError) as e:
        raise TrimError(f"{path}: llama.cpp cannot load it: {e}") from None


def tokenize(llm, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text` (special-token texts are plain text), BOS only when asked for."""
    return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)


def last_logits(llm) -> np.ndarray:
    """The logits of the last evaluated position, read from llama.cpp's context (a view, valid until
    the next eval). Not `llm.scores`: since llama-cpp-python 0.3.x, `eval` fills that only with
    `logits_all=True`; otherwise it is an uninitialised array (zeros, or leftover memory)."""
    import llama_cpp

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1), shape=(llm.n_vocab(),))


def end_ids(llm) -> list[int]:
    """The end-of-generation ids of a loaded model (llama.cpp's own list: eos, eot, eom...)."""
    import llama_cpp

    vocab = llm._model.vocab
    return [i for i in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, i)]


class Adapters:
    """LoRA adapters (tune/adapter.py) loaded onto a Llama's model and set, with their scales, on each
    context that decodes with it (the Llama's own, a batch engine's). llama.cpp frees them with the model."""

    def __init__(self, llm, model: str | Path, specs: list) -> None:
        import ctypes

        import llama_cpp

        from gguf_trim.tune.adapter import check_adapter

        self.specs = list(specs)
        ptrs = []
        for s in self.specs:
            if not Path(s.path).is_file():
                raise TrimError(f"{s.path}: no such adapter file")
            check_adapter(s.path, model)
            ptr = llama_cpp.llama_adapter_lora_init(llm._model.model, str(s.path).encode())
            if not ptr:
                raise TrimError(f"{s.path}: llama.cpp cannot load this adapter onto {model}")
            ptrs.append(ptr)
        self._ptrs = (llama_cpp.llama_adapter_lora_p_ctypes * len(ptrs))(*ptrs)
        self._scales = (ctypes.c_float * len(ptrs))(*[float(s.scale) for s in self.specs])

    def apply(self, ctx) -> None:
        import llama_cpp

        if self.specs and llama_cpp.llama_set_adapters_lora(ctx, self._ptrs, len(self.specs), self._scales):
            raise TrimError("llama.cpp could not set the LoRA adapters on a context")

