"""translate --ray (the `ray` extra; `make test-ray`): a file sharded over a 2-worker Ray instance
started on this machine, through real llama-cpp-python on Gemma-3-270m (few-shot).

With --parallel 1 the batched path is the one-at-a-time path exactly (tests/test_batch_translate),
so the merged Ray output must equal a local run byte for byte."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from gguf_trim.translate.cluster import parts_dir, translate_file_ray
from gguf_trim.translate.jobs import state_path
from tests.conftest import GEMMA, need
from tests.test_bad_input import assert_clean_failure
from tests.test_translate import dev_pairs

# Skipped with a reason where ray is missing (tests/conftest.py); gguf_trim.translate.cluster imports it lazily.
pytestmark = pytest.mark.ray

N = 20
ARGS = ["--to", "vi", "--field", "en", "--parallel", "1", "--threads", "1", "--n-ctx", "2048"]


def _env() -> dict:
    """Ray settings of this test only: no usage stats, and no token authentication (a new local
    Ray would otherwise write ~/.ray/auth_token, which a later `ray start` then demands)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    return env


def _cli(*args, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gguf_trim.cli", "translate", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def _ids(path: Path) -> list[int]:
    return [json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head with 2 CPUs (2 workers at 1 thread each), as a real cluster's head is started."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="rgt", dir="/tmp")  # Ray's socket paths must stay short
    ray_cli = str(Path(sys.executable).with_name("ray"))
    r = subprocess.run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                        "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
                        "--disable-usage-stats", "--temp-dir", tmp], capture_output=True, text=True, timeout=180,
                       env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120, env=_env())
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """N dev sentences as JSONL, and the local (one machine) translation of them."""
    d = tmp_path_factory.mktemp("rayjob")
    inp = d / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "en": en}, ensure_ascii=False) + "\n"
                           for i, (en, _) in enumerate(dev_pairs(N))), encoding="utf-8")
    ref = d / "local.jsonl"
    r = _cli(need(GEMMA), "-i", inp, "-o", ref, *ARGS)
    assert r.returncode == 0, r.stderr
    assert _ids(ref) == list(range(N))
    return d, inp, ref.read_bytes()


def test_sharded_output_equals_the_local_run(ray_head, job):
    d, inp, ref = job
    out = d / "ray.jsonl"
    r = _cli(need(GEMMA), "-i", inp, "-o", out, "--ray", ray_head, "--ray-shards", "3", *ARGS)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ref  # every segment once, in input order, the same words
    assert not state_path(out).exists() and not parts_dir(out).exists()


def test_killed_ray_job_resumes_per_shard(ray_head, job):
    d, inp, ref = job
    out = d / "killed.jsonl"
    args = [need(GEMMA), "-i", inp, "-o", out, "--ray", ray_head, *ARGS]  # default shards: 2 (2 CPUs, 1 thread)
    proc = subprocess.Popen([sys.executable, "-m", "gguf_trim.cli", "translate", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    parts = parts_dir(out)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            names = sorted(p for p in parts.glob("part-*-of-*") if not p.name.endswith(".json")) \
                if parts.exists() else []
            if len(names) == 2 and all(p.read_bytes().count(b"\n") >= 2 for p in names):
                break  # both workers have finished segments of their shard
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists() and state_path(out).exists()
    names = sorted(p for p in parts.glob("part-*-of-00002"))
    saved = {p.name: p.read_bytes() for p in names}
    assert [p.name for p in names] == ["part-00001-of-00002", "part-00002-of-00002"]
    assert all(2 <= b.count(b"\n") < N // 2 for b in saved.values())

    r = _cli(*args)  # an unfinished job is refused, not overwritten
    assert_clean_failure(r, "--resume")
    r = _cli(*args, "--resume", "--ray-shards", "3")  # a different sharding is refused
    assert_clean_failure(r, "ray_shards: 2 then, 3 now")
    r = _cli(*[a for a in args if a not in ("--ray", ray_head)], "--resume")  # so is resuming without Ray
    assert_clean_failure(r, "started with --ray")
    for name, data in saved.items():
        assert (parts / name).read_bytes() == data  # the refusals touched nothing

    r = _cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == ref
    assert _ids(out) == list(range(N))  # every segment exactly once, in order
    assert not state_path(out).exists() and not parts.exists()
    assert_clean_failure(_cli(*args, "--resume"), "no unfinished job")


def test_library_uses_an_initialised_ray(job, monkeypatch):
    """A library caller's own ray.init() (2 workers on this machine) is used, and left running."""
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")

    from gguf_trim.translate.translator import PromptStyle

    d, inp, ref = job
    out = d / "lib.jsonl"
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        n = translate_file_ray(str(need(GEMMA)), str(inp), str(out), "vi", "auto",
                               {"n_ctx": 2048, "threads": 1, "style": PromptStyle()}, field="en", parallel=1)
        assert n == N and ray.is_initialized()
        assert out.read_bytes() == ref
    finally:
        ray.shutdown()
