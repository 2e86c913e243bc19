"""Soak test (`make soak`, issue 33): what a kill -9, a resume and a full disk do to real jobs.

Why: the claims "an interrupted translation loses nothing", "a trim never leaves a partial file or
touches its input" and "a full disk is one error line" are each tested once in tests/; a soak repeats
them at random moments, where a rare window (a kill between two writes, during the rename, during
the model load) would show. Minutes, not hours; not part of `make test` (tests/test_soak.py runs a
tiny version of the same code).

1. translate: a 2,000-segment `translate -i in.jsonl -o out.jsonl` (greedy, --parallel 1) is killed
   with SIGKILL at 20 random moments and continued with `--resume` each time; the result is compared
   record by record (the input's `id`) with an uninterrupted run beside it: lost, repeated, mismatched
   lines. --parallel 1 because batched outputs depend on which segments share a batch (llama.cpp's
   kernels round differently per batch size), and a resumed run batches other segments together; with
   one slot every segment's output is its own. --threads 1 for each of the two jobs: on a shared 2-core
   machine llama.cpp's threads spin against other work (measured 9x slower with 2 at load average 9).
2. trim: `trim` killed at random moments (10 times): no file at -o unless it is the complete one, the
   input's sha256 unchanged; temp files a kill leaves are counted, and the next trim of the same output
   must remove them all (files.temp_file: the writer's process id is in the name).
3. full disk: `trim` into a 100 MB tmpfs (or, where mount is refused, under RLIMIT_FSIZE): one error
   line, exit 2, nothing left there.
4. finetune (only where `finetune --help` lists --resume and torch imports): a tiny run killed 5 times
   and resumed each time; the adapter's bytes against an uninterrupted run's.

Prints one summary line (`soak: translate 20 kills, 0 lost, ...`) and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("GGUF_TRIM_SHARED", ROOT.parent / "shared"))
STATE_SUFFIX = ".gguf-trim-job.json"  # translate's job sidecar (gguf_trim.translate.jobs)
CKPT_SUFFIX = ".ckpt.pt"  # finetune's checkpoint (gguf_trim.tune.checkpoint)


def cli(*args: Any) -> list[str]:
    return [sys.executable, "-m", "gguf_trim.cli", *map(str, args)]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], delay: float, timeout: float = 3600) -> bool:
    """SIGKILL `proc` `delay` seconds after `ready()` first holds (polled every 20 ms); False if it
    exited on its own first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready():
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def reap_group(proc: subprocess.Popen) -> str:
    """Children the killed process left running (its process group: the trim's llama.cpp load check):
    waited for up to 10 s, then killed. Returns "none", "ended" (by itself) or "killed"."""
    def alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    if not alive():
        return "none"
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not alive():
        return "ended"
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return "ended"
    return "killed"


def read_segments(path: Path, n: int, max_chars: int) -> list[str]:
    """The first `n` non-empty lines of at most `max_chars` characters (a .tsv: its first column)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("\t")[0].strip() if path.suffix == ".tsv" else line.strip()
        if text and len(text) <= max_chars:
            out.append(text)
            if len(out) == n:
                break
    if len(out) < n:
        raise SystemExit(f"soak: {path} has only {len(out)} lines of at most {max_chars} characters ({n} wanted)")
    return out


def compare_jobs(out: Path, ref: Path, n: int) -> dict[str, Any]:
    """Lost, repeated, mismatched and unreadable lines of a resumed job's output against an
    uninterrupted run's, by the records' `id`; and whether the two files are byte for byte equal."""
    want = {json.loads(line)["id"]: json.loads(line)["translation"] for line in ref.read_text("utf-8").splitlines()}
    ids, got, corrupt = [], {}, 0
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            ids.append(rec["id"])
            got.setdefault(rec["id"], rec["translation"])
        except (ValueError, KeyError, TypeError):
            corrupt += 1
    return {"lines": len(ids) + corrupt, "lost": len(set(range(n)) - set(ids)), "repeated": len(ids) - len(set(ids)),
            "mismatched": sum(1 for i, t in got.items() if want.get(i) != t), "corrupt": corrupt,
            "in_order": ids == sorted(ids), "identical_bytes": out.read_bytes() == ref.read_bytes()}


def temp_files(folder: Path, name: str) -> list[Path]:
    """Hidden temp files gguf-trim makes beside an output called `name` (files.temp_file)."""
    return sorted(p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def soak_translate(model: Path, segments: list[str], kills: int, work: Path, rng: random.Random,
                   parallel: int = 1, n_ctx: int = 512, threads: int = 1, jitter: float = 1.0,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Part 1: an uninterrupted run and, beside it (one thread each), the same job killed `kills`
    times and resumed."""
    n = len(segments)
    inp = work / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": i, "text": s}, ensure_ascii=False) + "\n" for i, s in enumerate(segments)),
                   encoding="utf-8")
    base = ["translate", model, "--to", "vi", "-i", inp, "--n-ctx", n_ctx, "--parallel", parallel, "--no-shots",
            "--threads", threads]
    ref = work / "ref.jsonl"
    t_ref = time.perf_counter()
    with open(work / "ref.stderr", "w") as err:
        ref_proc = subprocess.Popen(cli(*base, "-o", ref), stdout=subprocess.DEVNULL, stderr=err)
    ref_end: list[float] = []

    def wait_ref() -> None:  # when the uninterrupted run ends, for its wall time
        ref_proc.wait()
        ref_end.append(time.perf_counter())
    threading.Thread(target=wait_ref, daemon=True).start()
    out = work / "out.jsonl"
    state = out.with_name(out.name + STATE_SUFFIX)
    # kill points: after the output reaches a random line count (a target already reached means a kill
    # within `jitter` s of the start: during imports or the model load), plus a random delay
    targets = sorted(rng.randrange(0, max(1, n - n // 10)) for _ in range(kills))
    events, fresh, t0 = [], 0, time.perf_counter()
    final = None
    try:
        for target in targets:
            resume = state.exists()
            fresh += not resume
            before = lines_in(out) if resume else 0
            proc = subprocess.Popen(cli(*base, "-o", out, *(["--resume"] if resume else [])), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            killed = kill_when(proc, lambda target=target: lines_in(out) >= target, rng.uniform(0, jitter))
            events.append({"resume": resume, "target": target, "lines_before": before, "lines_after": lines_in(out),
                           "killed": killed, "exit": proc.returncode})
            if not killed:  # the job ended (done, or failed): nothing left to kill
                log(f"translate: run {len(events)} ended before its kill (exit {proc.returncode})")
                break
        if state.exists() or not out.exists():
            resume = state.exists()
            r = subprocess.run(cli(*base, "-o", out, *(["--resume"] if resume else [])), capture_output=True, text=True)
            final = {"resume": resume, "exit": r.returncode, "stderr": r.stderr.strip().splitlines()[-2:]}
    except BaseException:
        ref_proc.kill()
        ref_proc.wait()
        raise
    killed_s = time.perf_counter() - t0
    if ref_proc.wait() != 0:
        raise SystemExit(f"soak: the uninterrupted translate failed: {(work / 'ref.stderr').read_text()[-500:]}")
    time.sleep(0.1)  # the waiting thread's timestamp
    ref_s = (ref_end[0] if ref_end else time.perf_counter()) - t_ref
    log(f"translate: {n} segments, uninterrupted and killed {len(events)} times, in {killed_s:.0f} s")
    res = {"segments": n, "kills": sum(e["killed"] for e in events), "fresh_starts": fresh, "events": events,
           "final": final, "reference_s": round(ref_s, 1), "killed_job_s": round(killed_s, 1),
           "parallel": parallel, "n_ctx": n_ctx, "threads": threads, "sidecar_left": state.exists(),
           "temp_files_left": [p.name for p in temp_files(work, out.name + STATE_SUFFIX)]}
    res.update(compare_jobs(out, ref, n))
    res["ok"] = (res["lost"] == res["repeated"] == res["mismatched"] == res["corrupt"] == 0 and res["in_order"]
                 and res["identical_bytes"] and not res["sidecar_left"] and (final is None or final["exit"] == 0))
    return res


def soak_trim(model: Path, kills: int, work: Path, rng: random.Random,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Part 2: a trim killed at `kills` random moments of its length; what is left after each."""
    sha_in = sha256(model)
    ref = work / "ref.gguf"
    t0 = time.perf_counter()
    r = subprocess.run(cli("trim", model, "-o", ref), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"soak: the uninterrupted trim failed: {r.stderr.strip()[-500:]}")
    ref_s = time.perf_counter() - t0
    sha_ref = sha256(ref)
    ref.unlink()
    folder = work / "trim"
    folder.mkdir()
    out = folder / "out.gguf"
    events, partial, complete = [], 0, 0
    while sum(e["killed"] for e in events) < kills and len(events) < 3 * kills:  # a run may end before its kill
        delay = rng.uniform(0, ref_s)
        proc = subprocess.Popen(cli("trim", model, "-o", out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        killed = kill_when(proc, lambda: True, delay)
        orphans = reap_group(proc)
        ev = {"delay_s": round(delay, 2), "killed": killed, "exit": proc.returncode, "orphans": orphans,
              "temp_files": len(temp_files(folder, out.name))}
        if out.exists():
            same = sha256(out) == sha_ref
            ev["output"] = "complete" if same else "partial"
            partial += not same
            complete += same
            out.unlink()
        events.append(ev)
    stray = temp_files(folder, out.name)
    stray_bytes = sum(p.stat().st_size for p in stray)
    r = subprocess.run(cli("trim", model, "-o", out), capture_output=True, text=True)
    after = [p for p in stray if p.exists()]
    res = {"kills": sum(e["killed"] for e in events), "reference_s": round(ref_s, 2), "events": events,
           "runs": len(events), "partial": partial, "complete_outputs": complete, "temp_files_left": len(stray),
           "temp_bytes_left": stray_bytes, "temp_files_removed_by_next_trim": len(stray) - len(after),
           "next_trim_exit": r.returncode, "next_trim_identical": r.returncode == 0 and sha256(out) == sha_ref,
           "orphans": sum(e["orphans"] != "none" for e in events),
           "orphans_killed": sum(e["orphans"] == "killed" for e in events), "input_unchanged": sha256(model) == sha_in}
    res["ok"] = partial == 0 and res["input_unchanged"] and res["next_trim_identical"] and not after
    return res


def soak_full_disk(model: Path, work: Path, size_mb: int = 100, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Part 3: trim into a `size_mb` MB tmpfs (RLIMIT_FSIZE where mount is refused)."""
    mnt = work / "fs"
    mnt.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mnt)], capture_output=True,
                       text=True)
    mounted = m.returncode == 0
    method = f"tmpfs of {size_mb} MB" if mounted else f"RLIMIT_FSIZE {size_mb} MB (mount refused: {m.stderr.strip()})"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size_mb << 20, size_mb << 20))

    try:
        r = subprocess.run(cli("trim", model, "-o", mnt / "out.gguf"), capture_output=True, text=True,
                           preexec_fn=None if mounted else limit)
        left = sorted(p.name for p in mnt.iterdir())
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)
    lines = r.stderr.strip().splitlines()
    res = {"method": method, "exit": r.returncode, "stderr_lines": len(lines), "stderr": lines[:3], "left": left}
    res["ok"] = (r.returncode == 2 and len(lines) == 1 and lines[0].startswith("gguf-trim: error:") and not left)
    return res


def finetune_skip_reason() -> str | None:
    """Why part 4 cannot run here (None: it can)."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (make setup-train)"
    r = subprocess.run(cli("finetune", "--help"), capture_output=True, text=True)
    if "--resume" not in r.stdout:
        return "finetune has no --resume"
    return None


def soak_finetune(pairs: Path, kills: int, work: Path, rng: random.Random, steps: int = 40,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Part 4: a tiny finetune (a random 1-layer model with Qwen2's vocabulary, trimmed) killed
    `kills` times after a checkpoint, resumed each time; adapter bytes against an uninterrupted run."""
    sys.path.insert(0, str(ROOT))
    from gguf.constants import GGMLQuantizationType as Q

    from gguf_trim import trim
    from tests.synth import build_model

    src = build_model(work / "ft.gguf", ROOT / "models" / "vocab-qwen2.gguf", Q.F16, Q.Q8_0, arch="qwen2",
                      n_embd=128, n_ff=256)
    base = trim(src, work / "ft.envi.gguf")[0].output
    few = work / "pairs.tsv"
    few.write_text("".join(pairs.read_text(encoding="utf-8").splitlines(True)[:80]), encoding="utf-8")
    args = ["finetune", base, "--pairs", few, "--steps", steps, "--batch", "4", "--lr", "0.005", "--rank", "4",
            "--seq-len", "320", "--heldout", "4", "--check-lines", "0", "--device", "cpu", "--checkpoint-every", "1"]
    ref = work / "ref.lora.gguf"
    t0 = time.perf_counter()
    r = subprocess.run(cli(*args, "-o", ref), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"soak: the uninterrupted finetune failed: {r.stderr.strip()[-500:]}")
    ref_s = time.perf_counter() - t0
    out = work / "a.lora.gguf"
    ckpt = Path(str(out) + CKPT_SUFFIX)
    events = []
    for _ in range(kills):
        resume = ckpt.exists()
        seen = ckpt.stat().st_mtime_ns if resume else 0

        def newer(seen: int = seen) -> bool:  # a checkpoint written by this run
            try:
                return ckpt.stat().st_mtime_ns != seen
            except OSError:
                return False
        proc = subprocess.Popen(cli(*args, "-o", out, *(["--resume"] if resume else [])), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        killed = kill_when(proc, newer, rng.uniform(0, 2.0))
        events.append({"resume": resume, "killed": killed, "exit": proc.returncode})
        if not killed:
            break
    final = None
    if not out.exists():
        r = subprocess.run(cli(*args, "-o", out, *(["--resume"] if ckpt.exists() else [])), capture_output=True,
                           text=True)
        final = {"exit": r.returncode, "stderr": r.stderr.strip().splitlines()[-2:]}
    same = out.exists() and out.read_bytes() == ref.read_bytes()
    res = {"kills": sum(e["killed"] for e in events), "events": events, "final": final, "reference_s": round(ref_s, 1),
           "steps": steps, "identical_bytes": same, "checkpoint_left": ckpt.exists()}
    if out.exists() and not same:
        res.update(gguf_differences(ref, out))
    res["ok"] = same and not ckpt.exists()
    return res


def gguf_differences(a: Path, b: Path) -> dict[str, Any]:
    """Which keys and tensors of two GGUFs differ, and by how much (the largest absolute difference
    of float tensors): what a byte mismatch is made of."""
    import numpy as np

    from gguf_trim.format.gguffile import GGUFFile

    with GGUFFile(a) as ga, GGUFFile(b) as gb:
        keys = sorted(k for k in set(ga.fields) | set(gb.fields)
                      if (ga.fields.get(k) and ga.fields[k].raw) != (gb.fields.get(k) and gb.fields[k].raw))
        tensors = {}
        for t in ga.tensors:
            u = gb.tensor(t.name)
            if u is None or bytes(ga.tensor_bytes(t)) != bytes(gb.tensor_bytes(u)):
                diff = None
                if u is not None and t.ggml_type == u.ggml_type and t.ggml_type in (0, 1):  # F32, F16
                    dt = np.float32 if t.ggml_type == 0 else np.float16
                    x = np.frombuffer(ga.tensor_bytes(t), dt).astype(np.float64)
                    y = np.frombuffer(gb.tensor_bytes(u), dt).astype(np.float64)
                    diff = float(np.abs(x - y).max())
                tensors[t.name] = diff
    return {"keys_differ": keys, "tensors_differ": len(tensors), "tensors": len(ga.tensors),
            "max_abs_diff": max((d for d in tensors.values() if d is not None), default=None),
            "tensor_examples": dict(list(tensors.items())[:4])}


def summary(res: dict[str, Any]) -> str:
    """The one-line result."""
    parts = []
    if t := res.get("translate"):
        parts.append(f"translate {t['kills']} kills, {t['lost']} lost, {t['repeated']} repeated, {t['mismatched']} "
                     f"mismatched" + (f", {t['corrupt']} corrupt" if t["corrupt"] else "")
                     + ("" if t["identical_bytes"] else ", output differs"))
    if t := res.get("trim"):
        temps = (f", {t['temp_files_left']} temp files left ({t['temp_bytes_left'] / 2**20:.0f} MiB; "
                 f"{t['temp_files_removed_by_next_trim']} removed by the next trim)" if t["temp_files_left"] else "")
        parts.append(f"trim {t['kills']} kills, {t['partial']} partial{temps}, "
                     f"input {'unchanged' if t['input_unchanged'] else 'CHANGED'}")
    if t := res.get("full_disk"):
        parts.append(f"full disk: {t['stderr_lines']} line{'s' if t['stderr_lines'] != 1 else ''}, exit {t['exit']}, "
                     f"{len(t['left'])} partial")
    if t := res.get("finetune"):
        parts.append(f"finetune skipped ({t['skipped']})" if "skipped" in t else
                     f"finetune {t['kills']} kills, adapter {'identical' if t['identical_bytes'] else 'DIFFERS'}")
    return "soak: " + "; ".join(parts) + ("" if all(v.get("ok", True) for v in res.values() if isinstance(v, dict))
                                          else "  FAILED")


def run(parts: list[str], work: Path, args: argparse.Namespace, log: Callable[[str], None] = print) -> dict[str, Any]:
    rng = random.Random(args.seed)
    res: dict[str, Any] = {}
    if "translate" in parts:
        d = work / "translate"
        d.mkdir()
        segs = read_segments(Path(args.text), args.segments, args.max_chars)
        res["translate"] = soak_translate(Path(args.translate_model), segs, args.translate_kills, d, rng,
                                          args.parallel, args.n_ctx, args.threads, args.jitter, log=log)
        log(summary({"translate": res["translate"]}))
    if "trim" in parts:
        d = work / "trim"
        d.mkdir()
        res["trim"] = soak_trim(Path(args.trim_model), args.trim_kills, d, rng, log=log)
        log(summary({"trim": res["trim"]}))
    if "disk" in parts:
        d = work / "disk"
        d.mkdir()
        res["full_disk"] = soak_full_disk(Path(args.trim_model), d, args.disk_mb, log=log)
    if "finetune" in parts:
        why = finetune_skip_reason()
        if why:
            res["finetune"] = {"skipped": why, "ok": True}
        else:
            d = work / "finetune"
            d.mkdir()
            res["finetune"] = soak_finetune(Path(args.pairs), args.finetune_kills, d, rng, args.finetune_steps, log=log)
    return res


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default="translate,trim,disk,finetune", help="comma-separated parts to run")
    ap.add_argument("--translate-model", default=str(ROOT / "models" / "smollm2-135m-instruct-q4_1.gguf"))
    ap.add_argument("--text", default=str(SHARED / "corpus" / "dev" / "en.txt"),
                    help="segments (one per line; a .tsv: the first column)")
    ap.add_argument("--segments", type=int, default=2000)
    ap.add_argument("--max-chars", type=int, default=60, help="segments of at most this many characters")
    ap.add_argument("--translate-kills", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=1, help="translate --parallel (1: outputs comparable line by line)")
    ap.add_argument("--n-ctx", type=int, default=512, help="translate --n-ctx (512: 16 output tokens a segment)")
    ap.add_argument("--threads", type=int, default=1,
                    help="translate --threads of each of the two jobs, which run side by side")
    ap.add_argument("--jitter", type=float, default=1.0,
                    help="translate: each kill comes up to this many seconds after its line count is reached")
    ap.add_argument("--trim-model", default=str(ROOT / "models" / "qwen2.5-coder-0.5b-instruct.gguf"))
    ap.add_argument("--trim-kills", type=int, default=10)
    ap.add_argument("--disk-mb", type=int, default=100, help="size of the full disk (the output must not fit)")
    ap.add_argument("--pairs", default=str(SHARED / "corpus" / "train" / "prose.en-vi.tsv"))
    ap.add_argument("--finetune-kills", type=int, default=5)
    ap.add_argument("--finetune-steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", help="folder for the jobs (default: a temp folder, removed at the end)")
    ap.add_argument("--json", help="write every count here")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (to look at what a part left)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    def log(m: str) -> None:
        print(m, file=sys.stderr, flush=True)

    if args.keep:
        d = tempfile.mkdtemp(prefix="gguf-trim-soak-", dir=args.work)
        log(f"soak: work folder (kept): {d}")
        res = run(parts, Path(d), args, log=log)
    else:
        with tempfile.TemporaryDirectory(prefix="gguf-trim-soak-", dir=args.work) as d:
            res = run(parts, Path(d), args, log=log)
    line = summary(res)
    res.update(summary=line, seconds=round(time.perf_counter() - t0), load_start=load0, load_end=os.getloadavg(),
               date=time.strftime("%Y-%m-%d %H:%M"), args=vars(args))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(line)
    return 0 if all(v.get("ok", True) for v in res.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
