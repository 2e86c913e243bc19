"""llama.cpp's own tools (llama-server, llama-perplexity) as a second runtime, for tests and benchmarks.

Why: most people run a GGUF in stock llama-server, llama-cli or ollama, where gguf-trim's script guard
does not run; what holds there (the suppress list, a grammar, throughput with its own batching) is
measured against the real binaries that `make llama-tools` builds from vendor/llama.cpp, the same
sources as the pinned llama-cpp-python. Only the standard library is used to talk to the server.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError

TOOLS_DIR = Path(__file__).resolve().parents[2] / "build" / "llama.cpp" / "bin"


def tool_path(name: str) -> Path | None:
    """Where a llama.cpp tool is: $GGUF_TRIM_LLAMA_BIN/NAME, build/llama.cpp/bin/NAME (make llama-tools), or PATH."""
    for folder in (os.environ.get("GGUF_TRIM_LLAMA_BIN"), TOOLS_DIR):
        if folder and (Path(folder) / name).is_file():
            return Path(folder) / name
    found = shutil.which(name)
    return Path(found) if found else None


def require_tool(name: str) -> Path:
    path = tool_path(name)
    if path is None:
        raise TrimError(f"{name} not found: build it with `make llama-tools` (or set GGUF_TRIM_LLAMA_BIN)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """A stock llama-server on 127.0.0.1 at a free port, for as long as the `with` block lasts.

    `args`: extra command-line flags (e.g. ["-np", "16"], ["--lora", path]). The server's log goes to a
    temp file, quoted in the error when it fails to come up."""

    def __init__(self, model: str | Path, n_ctx: int = 2048, threads: int | None = None, parallel: int = 1,
                 args: list[str] | None = None, timeout: float = 120.0):
        self.model, self.n_ctx, self.parallel = Path(model), n_ctx, parallel
        self.threads = threads or os.cpu_count() or 1
        self.args, self.timeout = list(args or []), timeout
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> LlamaServer:
        exe = require_tool("llama-server")
        self.port = free_port()
        self._log = tempfile.TemporaryFile()
        cmd = [str(exe), "-m", str(self.model), "--host", "127.0.0.1", "--port", str(self.port),
               "-c", str(self.n_ctx), "-t", str(self.threads), "-np", str(self.parallel), "--no-warmup",
               *self.args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"llama-server exited with code {self.proc.returncode}")
            try:
                if self.get("/health").get("status") == "ok":
                    return self
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        self._fail(f"llama-server did not come up within {self.timeout:.0f} s")
        return self

    def _fail(self, why: str) -> None:
        tail = self.log()[-600:].strip().splitlines()
        self.__exit__(None, None, None)
        raise TrimError(f"{why} on {self.model}: " + (tail[-1] if tail else "no output"))

    def log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict, timeout: float = 600.0) -> dict:
        """POST JSON, return the JSON answer; an HTTP error becomes a TrimError with the server's message."""
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise TrimError(f"llama-server {path}: HTTP {e.code}: {e.read().decode('utf-8', 'replace')[:300]}"
                            ) from None

    def tokenize(self, text: str) -> list[int]:
        return self.post("/tokenize", {"content": text, "add_special": False, "parse_special": False})["tokens"]

    def complete(self, prompt: str | list[int], **params: Any) -> dict:
        """/completion (llama.cpp's native endpoint): `params` as its JSON fields (n_predict, temperature,
        seed, grammar, logit_bias, ...)."""
        return self.post("/completion", {"prompt": prompt, **params})

    def chat(self, messages: list[dict], **params: Any) -> dict:
        """/v1/chat/completions with the GGUF's chat template."""
        return self.post("/v1/chat/completions", {"messages": messages, **params})


def perplexity(model: str | Path, text_file: str | Path, n_ctx: int = 128, chunks: int = 20,
               threads: int | None = None) -> float:
    """llama-perplexity's final estimate over the first `chunks` chunks of `n_ctx` tokens of a text file."""
    exe = require_tool("llama-perplexity")
    cmd = [str(exe), "-m", str(model), "-f", str(text_file), "-c", str(n_ctx), "--chunks", str(chunks),
           "-t", str(threads or os.cpu_count() or 1), "-b", str(n_ctx)]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    for line in reversed((r.stdout + r.stderr).splitlines()):
        if "Final estimate: PPL =" in line:
            return float(line.split("PPL =")[1].split()[0])
    tail = (r.stderr or r.stdout).strip().splitlines()
    raise TrimError(f"llama-perplexity failed on {model}: " + (tail[-1] if tail else f"exit {r.returncode}"))
