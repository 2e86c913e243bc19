"""Loading a file in llama.cpp in a child process, to learn whether it loads.

llama.cpp aborts the whole process on some invalid vocabularies (duplicate token texts, ...), so
every first load of a file happens in a child: the vocabulary only (`load_check`, also started
early and finished later: `spawn_load_check` / `finish_load_check`), or with its weights and one
evaluated probe line (`weights_load_check`).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from gguf_trim.errors import TrimError

VOCAB_CHECK = r"""
import ctypes, os, sys
import llama_cpp
from llama_cpp import Llama, llama_n_vocab
err = os.fdopen(os.dup(2), "w")  # llama-cpp-python sends fd 2 to /dev/null while loading
last = [0]
@llama_cpp.llama_log_callback
def log(level, text, user_data):
    if level != 5:  # 5 continues the previous message
        last[0] = level
    if last[0] == 4:  # errors only: the reason a load fails
        err.write(text.decode("utf-8", "replace"))
        err.flush()
llama_cpp.llama_log_set(log, ctypes.c_void_p(0))
llm = Llama(sys.argv[1], vocab_only=True, verbose=False)
n = llama_n_vocab(llm._model.vocab)
ids = llm.tokenize("Hello, thế giới! Tiếng Việt 123".encode(), add_bos=False, special=False)
print(n, len(ids))
"""

WEIGHTS_CHECK = r"""
import sys
import numpy as np
from llama_cpp import Llama
llm = Llama(sys.argv[1], n_ctx=128, logits_all=True, verbose=False)
ids = llm.tokenize(sys.argv[2].encode(), add_bos=True, special=False)
llm.eval(ids)
s = np.asarray(llm.scores[:len(ids)])
print(llm.n_vocab(), len(ids), int(np.isfinite(s).all()))
"""
PROBE = "Học sinh Việt Nam có thể sử dụng thông tin này. Hello, world!"


def spawn_load_check(path: str | Path) -> subprocess.Popen:
    """Start loading the vocabulary of `path` in a child process (see `finish_load_check`)."""
    return subprocess.Popen([sys.executable, "-c", VOCAB_CHECK, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def failure_reason(err: str, returncode: int) -> str:
    """One line on why the child failed: llama.cpp's own error if it logged one, else the signal or
    the child's last line (the Python exception)."""
    lines = [ln.strip() for ln in (err or "").splitlines() if ln.strip()]
    for ln in lines:
        if "error loading model:" in ln:
            return ln.split("error loading model:", 1)[1].strip()
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"llama.cpp crashed ({name})"
    return lines[-1] if lines else f"exit code {returncode}"


def finish_load_check(proc: subprocess.Popen, n_vocab: int | None, timeout: float = 300,
                      what: str = "the trimmed vocabulary") -> None:
    """Wait for a `spawn_load_check` child; a TrimError saying why if the load failed or if it
    loaded another number of tokens than `n_vocab`."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TrimError("the llama.cpp load check timed out") from None
    if proc.returncode != 0:
        raise TrimError(f"llama.cpp cannot load {what}: {failure_reason(err, proc.returncode)}")
    n = int(out.split()[0])
    if n_vocab is not None and n != n_vocab:
        raise TrimError(f"llama.cpp loaded {n} tokens, expected {n_vocab}")


def load_check(path: str | Path, n_vocab: int | None = None, timeout: float = 300,
               what: str = "the trimmed vocabulary") -> None:
    """Load the vocabulary with llama-cpp-python in a child process (llama.cpp aborts on some
    invalid vocabularies, which must not take this process down) and tokenize a probe text."""
    finish_load_check(spawn_load_check(path), n_vocab, timeout, what)


def weights_load_check(path: str | Path, n_vocab: int, timeout: float = 600) -> None:
    """Load the file with its weights in llama.cpp (a child process: llama.cpp can abort) and
    evaluate a probe line; its logits must be finite."""
    proc = subprocess.run([sys.executable, "-c", WEIGHTS_CHECK, str(path), PROBE], capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise TrimError(f"llama.cpp cannot load the refined file: {lines[-1] if lines else proc.returncode}")
    n, _, finite = (int(x) for x in proc.stdout.split()[-3:])
    if n != n_vocab or not finite:
        raise TrimError(f"llama.cpp loaded the refined file with {n} tokens (expected {n_vocab}) "
                        f"and {'finite' if finite else 'non-finite'} logits")
