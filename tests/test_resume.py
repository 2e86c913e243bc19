"""Resumable training (the `train` extra; `make test-train`): `finetune` and `refine` killed with SIGKILL
at random points and resumed with --resume end with the same bytes as runs never interrupted; a
checkpoint from another run is refused in one line; Ctrl-C writes one and says how to resume.

Tiny models with Llama 2's 32k SentencePiece vocabulary (transformers parses a GGUF's whole vocabulary
when it builds the float model: with Qwen2's it takes most of a run), one PyTorch thread per process so
that two can run side by side on the 2-core machine.

`kill_and_resume` is the loop a soak can drive for longer: it runs the CLI, kills it at a random point
after each new checkpoint, and resumes until the run succeeds.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gguf.constants import GGMLQuantizationType as Q

from gguf_trim import GGUFFile
from gguf_trim.cli import main
from tests.conftest import SHARED, need, vocab_file
from tests.synth import build_model
from tests.test_refine import WORDS
from tests.test_refine_train import corpus

pytestmark = pytest.mark.train

PAIRS = SHARED / "corpus" / "train" / "prose.en-vi.tsv"
CLI = [sys.executable, "-m", "gguf_trim.cli"]
KILLS = int(os.environ.get("GGUF_TRIM_RESUME_KILLS", "2"))  # SIGKILLs per run in the bit-identity tests


def checkpoint_of(output: Path) -> Path:
    return Path(str(output) + ".ckpt.pt")


def kill_and_resume(args: list[str], output: Path, kills: int, rng: random.Random, max_delay: float = 0.1,
                    timeout: float = 300) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Run `gguf-trim ARGS` (its -o is `output`); up to `kills` times, SIGKILL it a random 0..max_delay s
    after it has written a new checkpoint, then start it again with --resume (while a checkpoint exists).
    Returns the last run (the one not killed) and the checkpoint step each kill left behind."""
    left: list[int] = []
    while True:
        r = start_and_kill(args, output, rng.uniform(0, max_delay) if len(left) < kills else None, timeout)
        if r.returncode != -signal.SIGKILL:
            return r, left
        if checkpoint_of(output).exists():  # else the kill came as the run ended: the next run starts over
            left.append(_step_of(checkpoint_of(output)))


def start_and_kill(args: list[str], output: Path, delay: float | None, timeout: float = 300
                   ) -> subprocess.CompletedProcess:
    """One run (with --resume where a checkpoint exists), SIGKILLed `delay` s after it writes a new
    checkpoint (None: not killed)."""
    ckpt = checkpoint_of(output)
    seen = ckpt.stat().st_mtime_ns if ckpt.exists() else None
    p = subprocess.Popen([*CLI, *args, *(["--resume"] if ckpt.exists() else [])], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while delay is not None and p.poll() is None and time.monotonic() - t0 < timeout:
        if ckpt.exists() and ckpt.stat().st_mtime_ns != seen:
            time.sleep(delay)
            if ckpt.exists():  # not if the run has just finished and removed it
                p.kill()
            break
        time.sleep(0.01)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _step_of(ckpt: Path) -> int:
    import torch

    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"])


def tensors(path: Path) -> dict[str, bytes]:
    with GGUFFile(path) as g:
        return {t.name: bytes(g.tensor_bytes(t)) for t in g.tensors}


def same_report(a: Path, b: Path) -> None:
    """The JSON reports agree in everything but the time taken and the output's name."""
    ra, rb = (json.loads(p.read_text()) for p in (a, b))
    for r in (ra, rb):
        r.pop("seconds", None)
        r.pop("output", None)
    assert ra == rb


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from gguf_trim.extend.words import extend_file

    d = tmp_path_factory.mktemp("resume")
    base = build_model(d / "spm.gguf", vocab_file("llama-spm"), Q.F16, Q.Q8_0, arch="llama", n_embd=64, n_ff=128)
    pairs = d / "pairs.tsv"
    pairs.write_text("".join(need(PAIRS).read_text(encoding="utf-8").splitlines(True)[:40]), encoding="utf-8")
    other = d / "other.tsv"
    other.write_text("".join(need(PAIRS).read_text(encoding="utf-8").splitlines(True)[40:80]), encoding="utf-8")
    words = d / "words.txt"
    words.write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    src = build_model(d / "spm32.gguf", vocab_file("llama-spm"), Q.F32, None, arch="llama", n_embd=64, n_ff=128)
    ext = extend_file(src, words, d / "spm.ext.gguf", top=len(WORDS)).output
    return {"base": base, "pairs": pairs, "other": other, "ext": ext, "text": corpus(d / "vi.txt", 200, 0)}


def finetune_args(m: dict[str, Path], out: Path, steps: int = 12, every: str = "3", lr: str = "0.005") -> list[str]:
    return ["finetune", str(m["base"]), "--pairs", str(m["pairs"]), "-o", str(out), "--steps", str(steps),
            "--batch", "2", "--rank", "2", "--seq-len", "320", "--heldout", "2", "--check-lines", "0", "--lr", lr,
            "--device", "cpu", "--threads", "1", "--checkpoint-every", every, "--json", str(out) + ".json"]


def refine_args(m: dict[str, Path], out: Path) -> list[str]:
    return ["refine", str(m["ext"]), "--corpus", str(m["text"]), "-o", str(out), "--steps", "12", "--batch", "2",
            "--seq-len", "32", "--heldout", "5", "--check-lines", "0", "--self-text", "8", "--lr", "0.02",
            "--device", "cpu", "--dtype", "float32", "--threads", "1", "--no-check", "--checkpoint-every", "3",
            "--json", str(out) + ".json"]


def resumed_equals_uninterrupted(tmp_path: Path, args_for) -> None:
    """The uninterrupted run (alongside, on the other core) and the killed-and-resumed one write the
    same file: every tensor byte and every metadata key."""
    seed = random.randrange(1 << 30)
    ref, out = tmp_path / "ref.gguf", tmp_path / "resumed.gguf"
    plain = subprocess.Popen([*CLI, *args_for(ref)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last, left = kill_and_resume(args_for(out), out, kills=KILLS, rng=random.Random(seed))
    _, err = plain.communicate(timeout=300)
    assert plain.returncode == 0, err
    assert last.returncode == 0, last.stderr
    assert left and all(s > 0 for s in left), left  # killed at least once, after a checkpoint
    assert f"resuming from {checkpoint_of(out)} at step {left[-1]}" in last.stderr
    assert tensors(out) == tensors(ref), f"kill seed {seed}, checkpoints {left}"
    assert out.read_bytes() == ref.read_bytes()
    same_report(Path(str(out) + ".json"), Path(str(ref) + ".json"))
    assert not checkpoint_of(out).exists() and not checkpoint_of(ref).exists()  # removed on success
    assert not list(tmp_path.glob(".*.tmp"))  # nor a temp file a kill left behind


def test_finetune_killed_and_resumed_is_bit_identical(tmp_path, models):
    resumed_equals_uninterrupted(tmp_path, lambda out: finetune_args(models, out))


def test_refine_killed_and_resumed_is_bit_identical(tmp_path, models):
    resumed_equals_uninterrupted(tmp_path, lambda out: refine_args(models, out))


def test_resume_refuses_another_run(tmp_path, models):
    """A checkpoint from another --lr, other pairs or another base file is refused in one line naming
    the difference (exit 2), and nothing is written; so is --resume without a checkpoint."""
    out = tmp_path / "a.gguf"
    r = start_and_kill(finetune_args(models, out, steps=200, every="2"), out, delay=0)
    assert r.returncode == -signal.SIGKILL, r.stderr
    ckpt = checkpoint_of(out)
    other_base = tmp_path / "other-base.gguf"
    build_model(other_base, vocab_file("llama-spm"), Q.F16, Q.Q8_0, arch="llama", n_embd=64, n_ff=128, seed=1)
    kept, files = ckpt.read_bytes(), sorted(tmp_path.iterdir())
    args = finetune_args(models, out, steps=200, every="2")
    cases = [
        (finetune_args(models, out, steps=200, every="2", lr="0.01"), "--lr 0.01 here, 0.005 there"),
        ([a.replace(str(models["pairs"]), str(models["other"])) for a in args], "--pairs other.tsv here, pairs.tsv "
                                                                               "there"),
        ([a.replace(str(models["base"]), str(other_base)) for a in args], "the base file (other-base.gguf sha256"),
        ([*args, "--rank", "4"], "--rank 4 here, 2 there"),
    ]
    for argv, msg in cases:
        r = CliRunner().invoke(main, [*argv, "--resume"])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and msg in lines[0], r.output
        assert lines[0].startswith(f"gguf-trim: error: {ckpt} is from another run: "), lines[0]
        assert ckpt.read_bytes() == kept and sorted(tmp_path.iterdir()) == files and not out.exists()
    ckpt.unlink()
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 2 and r.output.strip() == f"gguf-trim: error: --resume: there is no checkpoint {ckpt} " \
        "(a run that succeeds removes its own)", r.output
    assert not out.exists()


def test_ctrl_c_writes_a_checkpoint_and_says_how_to_resume(tmp_path, models):
    out = tmp_path / "a.gguf"
    args = finetune_args(models, out, steps=40, every="2")
    ckpt = checkpoint_of(out)
    p = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while p.poll() is None and not ckpt.exists():
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[-1] == "gguf-trim: interrupted", err
    hint = [x for x in lines if "; resume with: " in x]
    assert len(hint) == 1, err
    step = _step_of(ckpt)
    assert hint[0].startswith(f"checkpoint at step {step}/40 in {ckpt}; resume with: ")
    command = hint[0].split("; resume with: ", 1)[1]
    assert shlex.split(command) == [*CLI, *args, "--resume"]
    r = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"resuming from {ckpt} at step {step}" in r.stderr, r.stderr
    assert out.exists() and not ckpt.exists()
    assert json.loads(Path(str(out) + ".json").read_text())["steps"] == 40
