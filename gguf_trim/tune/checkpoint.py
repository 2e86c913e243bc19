"""Resumable training for `refine` and `finetune`: a checkpoint written beside the output
(OUTPUT.ckpt.pt, all or nothing) every `--checkpoint-every` and on Ctrl-C, continued by `--resume`,
removed when the run succeeds.

What it holds and why: the trained parameters, the optimizer's and LR scheduler's state, every RNG
state and the data position, so that a resumed run draws the same batches and, on CPU, ends with
the same bytes as a run never interrupted; the held-out curve so far, so the report is whole; and a
fingerprint of what the run depends on (the base file's and the data files' sha256, the options
that change the arithmetic), because a checkpoint continued on other data or options would train a
silent mixture: `--resume` refuses any difference in one line that names it.

torch is imported inside the functions that need it: the options modules import this one, and
`--help` must not need the `train` extra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError, one_line
from gguf_trim.files import atomic_write, file_sha256

SUFFIX = ".ckpt.pt"
VERSION = 1
# By wall time: a checkpoint costs a second or two (the LoRA or the added rows, twice that in Adam's
# moments), so ten minutes loses little of a long run and adds nothing to a short one.
DEFAULT_EVERY = "10m"
EVERY_HELP = ("Write a checkpoint (OUTPUT.ckpt.pt) every N steps, or TIME (30s, 10m, 2h), or both "
              "(200,10m: whichever comes first); 0: never. Ctrl-C also writes one. It is removed when the run "
              "succeeds; after a failure or a kill it stays, for --resume.")
RESUME_HELP = ("Continue the run OUTPUT.ckpt.pt was written by. It must be from the same base file, data and "
               "training options (one line names what differs).")
# Options that leave the training arithmetic as it is: not fingerprinted, free to change on --resume.
FREE_OPTIONS = {"progress", "threads", "eval_every", "check_lines", "checkpoint_every", "resume", "device"}


def checkpoint_path(output: str | Path) -> Path:
    return Path(str(output) + SUFFIX)


def parse_every(text: str) -> tuple[int | None, float | None]:
    """--checkpoint-every: (steps, seconds), each None where not given; (None, None) is off."""
    steps = secs = None
    for part in str(text).replace(" ", "").lower().split(","):
        m = re.fullmatch(r"(\d+(?:\.\d*)?)([smh]?)", part)
        if not m or (not m[2] and "." in m[1]):
            raise TrimError(f"--checkpoint-every {text!r}: give N steps, a time such as 10m, or both (200,10m)")
        if m[2]:
            secs = float(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]] or None
        else:
            steps = int(m[1]) or None
    return steps, secs


# -- the fingerprint ------------------------------------------------------------------------------

def data_digest(path: str) -> str:
    """sha256 of a data file; of a folder, over its files' names and sha256; `hf:NAME` as the name."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p)}\0{file_sha256(f)}\n".encode())
        return "folder " + h.hexdigest()
    return "name " + path


def fingerprint(base: str | Path, data: dict[str, list[str]], opts: Any, base_sha: str | None = None,
                **extra: Any) -> dict[str, Any]:
    """What a run depends on: the base file's sha256 (all of it: a few seconds at most, once per run),
    each data file's by flag, and the options outside FREE_OPTIONS under their flags (`extra` too)."""
    options = {}
    for f in dataclasses.fields(opts):
        decls = f.metadata.get("cli", {}).get("decls")
        key = decls[0] if decls else f.name
        if f.name not in FREE_OPTIONS and key not in data:  # (a data flag is fingerprinted by its contents)
            value = getattr(opts, f.name)
            options[key] = list(value) if isinstance(value, (list, tuple)) else value
    options.update(extra)
    return {"base": [Path(base).name, base_sha or file_sha256(base)],
            "data": {flag: [[Path(p).name, data_digest(str(p))] for p in paths] for flag, paths in data.items()},
            "options": options}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's fingerprint and this run's, each in a few words."""
    out = []
    if old["base"][1] != new["base"][1]:
        out.append(f"the base file ({new['base'][0]} sha256 {new['base'][1][:12]} here, {old['base'][0]} "
                   f"{old['base'][1][:12]} there)")
    for flag in sorted(set(old["data"]) | set(new["data"])):
        a, b = old["data"].get(flag, []), new["data"].get(flag, [])
        if [n for n, _ in a] != [n for n, _ in b]:
            out.append(f"{flag} {' '.join(n for n, _ in b) or '(none)'} here, {' '.join(n for n, _ in a) or '(none)'} "
                       "there")
        elif a != b:
            out += [f"{flag} {n}: other contents (sha256 {y[:12]} here, {x[:12]} there)"
                    for (n, x), (_, y) in zip(a, b) if x != y]
    for k in sorted(set(old["options"]) | set(new["options"])):
        a, b = old["options"].get(k), new["options"].get(k)
        if a != b:
            out.append(f"{k} {b} here, {a} there")
    return out


def examples_digest(sets: list[list[Any]]) -> str:
    """sha256 of finetune's rendered examples (ids, prompt lengths): the same files must give the same
    examples on --resume, which a changed tokenizer, chat template or language check would not."""
    h = hashlib.sha256()
    for examples in sets:
        for e in examples:
            h.update(",".join(map(str, e.ids)).encode() + f";{e.n_prompt}|".encode())
        h.update(b"/")
    return h.hexdigest()


# -- RNG states -----------------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Python's, numpy's global, torch's CPU and (where initialised) CUDA generators."""
    import numpy as np
    import torch

    npg = np.random.get_state(legacy=False)
    out = {"python": random.getstate(), "torch": torch.get_rng_state(),
           "numpy": {**npg, "state": {"key": npg["state"]["key"].tolist(), "pos": npg["state"]["pos"]}}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(st: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(st["python"])
    npg = st["numpy"]
    np.random.set_state({**npg, "state": {"key": np.array(npg["state"]["key"], dtype=np.uint32),
                                          "pos": npg["state"]["pos"]}})
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


# -- the checkpointer -----------------------------------------------------------------------------

def resume_command(command: str, argv: list[str] | None = None) -> str | None:
    """The command line that continues this run: the same, with --resume (None outside the CLI)."""
    argv = list(sys.argv if argv is None else argv)
    if command not in argv[1:]:
        return None
    head = [sys.executable, "-m", "gguf_trim.cli"] if Path(argv[0]).name == "__main__.py" else [argv[0]]
    return shlex.join(head + argv[1:] + ([] if "--resume" in argv else ["--resume"]))


class Checkpointer:
    """Where and when one run saves its state, and (with --resume) the state it continues from,
    checked against this run's fingerprint. `output` None: checkpoints off."""

    def __init__(self, output: str | Path | None, kind: str, fp: dict[str, Any] | None = None,
                 every: str = DEFAULT_EVERY, resume: bool = False, hint: str | None = None,
                 log: Callable[[str], None] = print):
        self.kind, self.fp, self.hint, self.log = kind, fp or {}, hint, log
        self.steps, self.secs = parse_every(every) if output is not None else (None, None)
        self.path = checkpoint_path(output) if output is not None else None
        self.late: dict[str, str] = {}
        self.stop = False
        self.last = time.monotonic()
        self.state: dict[str, Any] | None = None
        if resume:
            if self.path is None:
                raise TrimError("--resume needs an output to find its checkpoint by")
            self.state = self._load()
        elif self.path is not None and self.path.exists():
            log(f"note: {self.path} is from an earlier run; this one starts over (--resume continues it)")

    @property
    def enabled(self) -> bool:
        return self.steps is not None or self.secs is not None

    def _load(self) -> dict[str, Any]:
        import torch

        if not self.path.is_file():
            raise TrimError(f"--resume: there is no checkpoint {self.path} (a run that succeeds removes its own)")
        try:
            st = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same one line
            raise TrimError(f"{self.path}: not a readable checkpoint ({one_line(e)})") from None
        if not isinstance(st, dict) or st.get("version") != VERSION or st.get("kind") != self.kind:
            raise TrimError(f"{self.path}: not a {self.kind} checkpoint of this gguf-trim version")
        diff = differences(st["fingerprint"], self.fp)
        if diff:
            raise TrimError(f"{self.path} is from another run: " + "; ".join(diff))
        return st

    def verify(self, key: str, value: str, what: str) -> None:
        """A fingerprint part known only later (the rendered examples' digest): recorded, and on
        --resume compared with the checkpoint's."""
        self.late[key] = value
        if self.state is not None and self.state.get("late", {}).get(key) != value:
            raise TrimError(f"{self.path} is from another run: {what}")

    def save(self, step: int, state: dict[str, Any]) -> None:
        import torch

        full = {"version": VERSION, "kind": self.kind, "fingerprint": self.fp, "late": self.late, "step": step,
                "rng": rng_state(), **state}
        with atomic_write(self.path, fsync=True) as f:
            torch.save(full, f)
        self.last = time.monotonic()

    def step(self, done: int, total: int, state: Callable[[], dict[str, Any]]) -> None:
        """After optimizer step `done` of `total`: save when one is due; after Ctrl-C, save, say how to
        resume and raise KeyboardInterrupt (the CLI's exit 130)."""
        if not self.enabled:
            return
        if self.stop:
            self.save(done, state())
            how = self.hint or "the same command with --resume"
            self.log(f"checkpoint at step {done}/{total} in {self.path}; resume with: {how}")
            raise KeyboardInterrupt
        due = (self.steps and done % self.steps == 0) or (self.secs and time.monotonic() - self.last >= self.secs)
        if due and done < total:
            self.save(done, state())

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Ctrl-C while training finishes the step, then saves (Ctrl-C again stops at once): a
        checkpoint taken in the middle of an optimizer step would hold half-updated weights."""
        if not self.enabled or threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self.stop:
                raise KeyboardInterrupt
            self.stop = True
            print("gguf-trim: finishing the step, then writing a checkpoint (Ctrl-C again stops now)",
                  file=sys.stderr)

        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)

    def snapshot(self, params: dict[str, Any], optimizer: Any, scheduler: Any = None, **extra: Any
                 ) -> dict[str, Any]:
        """The state to save: parameters (by name), optimizer and scheduler state, and `extra`."""
        return {"params": {k: p.detach().cpu() for k, p in params.items()}, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None, **extra}

    def restore(self, params: dict[str, Any], optimizer: Any, scheduler: Any = None) -> dict[str, Any]:
        """Put the checkpoint's parameters, optimizer, scheduler and RNG states back; returns it."""
        import torch

        st = self.state
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(st["params"][k])
        optimizer.load_state_dict(st["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(st["scheduler"])
        set_rng_state(st["rng"])
        self.log(f"resuming from {self.path} at step {st['step']}")
        return st

    def remove(self) -> None:
        """After success: the checkpoint, and temp files a kill left while one was written."""
        if self.path is None:
            return
        self.path.unlink(missing_ok=True)
        for tmp in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)


class LineStream:
    """Training sequences of one corpus for `refine`, as packing.Packer.sequences(cycle_lines(lines,
    seed)) gives them (the lines in order, then reshuffled each pass; BOS, lines each with its newline,
    a line cut at a sequence end carried into the next), but with a position that can be saved: the
    pass, the line, the shuffle's RNG and order, and the ids carried over."""

    def __init__(self, packer: Any, lines: list[str], seed: int):
        self.packer, self.lines = packer, lines
        self.rng = random.Random(seed)
        self.order = list(range(len(lines)))
        self.epoch, self.pos, self.buf = 0, 0, [packer.bos]

    def __iter__(self) -> LineStream:
        return self

    def __next__(self) -> list[int]:
        n = self.packer.seq_len + 1
        while len(self.buf) < n:
            if self.pos == len(self.order):
                self.rng.shuffle(self.order)  # the same swaps as shuffling the lines themselves
                self.epoch, self.pos = self.epoch + 1, 0
            self.buf.extend(self.packer.tokens(self.lines[self.order[self.pos]]))
            self.pos += 1
        out, self.buf = self.buf[:n], [self.packer.bos] + self.buf[n:]
        return out

    def state(self) -> dict[str, Any]:
        return {"rng": self.rng.getstate(), "order": self.order, "epoch": self.epoch, "pos": self.pos,
                "buf": self.buf}

    def set_state(self, st: dict[str, Any]) -> None:
        if len(st["order"]) != len(self.lines):
            raise TrimError("the checkpoint's data position does not fit this text")
        self.rng.setstate(st["rng"])
        self.order, self.epoch, self.pos, self.buf = list(st["order"]), st["epoch"], st["pos"], list(st["buf"])
