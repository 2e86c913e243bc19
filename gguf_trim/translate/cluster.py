"""Translate a file over a Ray cluster: the input cut into shards, each decoded by the same batched
path (`Translator.translate_many`) on a worker, the outputs merged in input order.

Why this shape: only the driver reads the input and writes files, so workers need no shared
output directory, only gguf-trim and the model at the same path. Each shard is a Ray generator
task that streams its translations back one by one; the driver appends each to that shard's
part file as an `OutputJob` (flushed, with its own sidecar), so a killed driver, a lost worker or
Ctrl-C loses at most the segments in flight, and `--resume` continues every shard after its last
saved line. When all shards are complete the parts are concatenated into the output (temp file +
rename) and removed. Ray is an optional extra (`pip install -e ".[ray]"`); nothing here imports it
until a job asks for it.
"""

from __future__ import annotations

import logging
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from gguf_trim.errors import InternalError, TrimError
from gguf_trim.files import atomic_write, file_sha256
from gguf_trim.translate.jobs import (
    OutputJob,
    check_state,
    count_lines,
    job_settings,
    job_state,
    read_segments,
    read_state,
    state_path,
    write_state,
)
from gguf_trim.translate.options import N_CTX_FILE, TranslatorOptions

PARTS_SUFFIX = ".gguf-trim-parts"


def parts_dir(out_path: str | Path) -> Path:
    """Where an unfinished Ray job keeps its shards' outputs: OUTPUT.gguf-trim-parts/ next to it."""
    p = Path(out_path)
    return p.with_name(p.name + PARTS_SUFFIX)


def shard_ranges(n: int, shards: int) -> list[tuple[int, int]]:
    """`shards` contiguous [start, stop) ranges over n segments, sizes differing by at most one."""
    shards = max(1, min(shards, n)) if n else 1
    q, r = divmod(n, shards)
    out, start = [], 0
    for k in range(shards):
        stop = start + q + (k < r)
        out.append((start, stop))
        start = stop
    return out


def connect(address: str):
    """(ray, owned): the ray module connected to the cluster at `address` (host:port of its head,
    'auto', a ray:// client address, or 'local' to start one on this machine), and whether this
    call connected it (then the caller disconnects). An already initialised Ray (a library
    user's own ray.init) is used as it is."""
    try:
        import ray
    except ImportError:
        raise TrimError("--ray needs Ray, an optional extra: pip install -e \".[ray]\" (or make setup-ray)") from None
    if ray.is_initialized():
        return ray, False
    if address not in ("auto", "local") and not address.startswith("ray://"):
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise TrimError(f"--ray {address}: expected HOST:PORT of the cluster's head, 'auto' or 'local'")
        try:  # a clear error now rather than Ray's minute of retries
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as e:
            raise TrimError(f"--ray {address}: no Ray head answers there ({e.strerror or e})") from None
    try:
        ray.init(address=None if address == "local" else address, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=False, **({"include_dashboard": False} if address == "local" else {}))
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        raise TrimError(f"--ray {address}: cannot connect ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    return ray, True


def default_shards(ray, threads: int, gpu: bool) -> int:
    """Workers the cluster runs at once: its GPUs (one each) or its CPUs over `threads`."""
    res = ray.cluster_resources()
    if gpu:
        n = int(res.get("GPU", 0))
        if not n:
            raise TrimError("--n-gpu-layers with --ray: the cluster has no GPU")
        return n
    return max(1, int(res.get("CPU", 1)) // threads)


def translate_shard(model: str, model_size: int, options: dict[str, Any], segments: list[str], dst: str, src: str,
                    parallel: int | None):
    """A worker's part (run as a Ray generator task): yields each segment's translation in order."""
    from gguf_trim.translate.translator import Translator

    p = Path(model)
    if not p.is_file() or p.stat().st_size != model_size:
        raise TrimError(f"{model} is missing or different on worker {socket.gethostname()} (every node needs the "
                        "same model at the same path)")
    tr = Translator(model, **options)
    try:
        for t in tr.translate_many(segments, dst, src, parallel=parallel):
            yield t.text
    finally:
        tr.close()


def _worker_error(ray, e: Exception) -> TrimError | InternalError:
    """A worker's TrimError (e.g. the model missing on its node) is the user's to fix; anything else
    that killed it is an internal failure."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, TrimError):
        return TrimError(f"Ray worker: {cause}")
    text = str(cause or e).strip().splitlines()
    return InternalError(f"a Ray worker failed ({type(cause or e).__name__}: {text[-1] if text else ''}); the finished "
                     "segments are saved: continue with --resume")


def translate_file_ray(model: str, in_path: str, out_path: str, dst: str, src: str,
                       options: TranslatorOptions | dict[str, Any],
                       address: str = "auto", shards: int | None = None, field: str = "text", column: int = 0,
                       parallel: int | None = None, resume: bool = False, progress: bool | None = None) -> int:
    """Translate the file `in_path` into `out_path` over a Ray cluster; returns the segments done.

    `options`: a TranslatorOptions, or Translator's keyword arguments (n_ctx, threads, n_gpu_layers,
    temperature, seed, guard, prompt, style, reask); each worker task reserves `threads` CPUs (default 1)
    and one GPU when n_gpu_layers > 0. `shards` defaults to what the cluster runs at once, and a resumed job keeps
    the shard count it started with."""
    from gguf_trim.translate.translator import PromptStyle, check_direction, model_langs, resolve_prompt_guard

    segments, records = read_segments(in_path, field, column)
    out, state, parts = Path(out_path), state_path(out_path), parts_dir(out_path)
    if out.resolve() == Path(in_path).resolve():
        raise TrimError(f"{out_path}: the output would overwrite the input")
    if isinstance(options, TranslatorOptions):
        options = options.translator_kwargs(N_CTX_FILE)
    options = {"n_ctx": N_CTX_FILE, "threads": None, "n_gpu_layers": 0, "temperature": 0.0, "seed": None,
               "style": PromptStyle(), "reask": False, **options}
    options["prompt"], options["guard"] = resolve_prompt_guard(model, options.get("prompt", "auto"),
                                                               options.get("guard"))
    options["style"] = options["style"].resolved(options["prompt"])
    langs, trimmed = model_langs(model, options.get("langs"))
    src, dst = check_direction(langs, dst, src, model, trimmed)  # here: a wrong direction costs no cluster
    options["threads"] = options["threads"] or 1
    settings = job_settings(model, options, dst, src, field, column, in_path)
    sha = file_sha256(in_path)
    if resume:  # checked before connecting: a wrong --resume costs nothing
        shards = shards or _recorded_shards(state, out_path)
        check_state(state, job_state(in_path, {**settings, "ray_shards": shards}, len(segments), sha), out_path)
    elif state.exists():
        raise TrimError(f"{out_path} is an unfinished job: add --resume to continue it, or delete {state.name} and "
                        f"{parts.name} to start over")
    ray, owned = connect(address)
    try:
        gpu = options["n_gpu_layers"] > 0
        if not resume:
            shards = shards or default_shards(ray, options["threads"], gpu)
            shutil.rmtree(parts, ignore_errors=True)  # a stale one: its job's sidecar is gone
            write_state(state, job_state(in_path, {**settings, "ray_shards": shards}, len(segments), sha))
        ranges = shard_ranges(len(segments), shards)
        parts.mkdir(exist_ok=True)
        jobs = _open_parts(parts, in_path, settings, records, ranges, sha)
        _run(ray, (settings["model"], settings["model_size"]), options, segments, ranges, jobs, dst, src, parallel,
             gpu, progress)
        _merge(out, parts, ranges)
        state.unlink(missing_ok=True)
        shutil.rmtree(parts, ignore_errors=True)
    finally:
        if owned:
            ray.shutdown()
    _warn_wrong_lang(out, field, column, dst, bool(options.get("reask")), langs)
    return len(segments)


def _warn_wrong_lang(out: Path, field: str, column: int, dst: str, reask: bool, langs=None) -> None:
    """The merged output's count of segments not in the target language, on stderr (never silent)."""
    from gguf_trim.runtime.langid import detector
    from gguf_trim.translate.jobs import wrong_lang_note

    det = detector(required=False)
    if det is None:
        return
    texts, _ = read_segments(out, field, column)
    n = sum(1 for t in texts if t.strip() and det.check(t, dst, langs)[1])
    if n:
        print(f"gguf-trim: warning: {out}: {wrong_lang_note(n, dst, reask)}", file=sys.stderr)


def _recorded_shards(state: Path, out_path: str) -> int:
    """The shard count an interrupted job started with."""
    shards = read_state(state, out_path).get("ray_shards")
    if not isinstance(shards, int) or shards < 1:
        raise TrimError(f"--resume: {out_path} was not started with --ray (resume it without --ray)")
    return shards


def _part_name(k: int, n: int) -> str:
    return f"part-{k + 1:05d}-of-{n:05d}"


def _open_parts(parts: Path, in_path: str, settings: dict[str, Any], records: list[Any],
                ranges: list[tuple[int, int]], sha: str) -> list[OutputJob | None]:
    """Each shard's OutputJob (None: the shard is complete), resumed where its part file ends."""
    jobs: list[OutputJob | None] = []
    for k, (a, b) in enumerate(ranges):
        path = parts / _part_name(k, len(ranges))
        shard = {**settings, "shard": k, "shards": len(ranges), "start": a, "stop": b}
        if state_path(path).exists():
            job = OutputJob(path, in_path, shard, records[a:b], resume=True, input_sha256=sha)
        elif path.exists():
            have = count_lines(path)
            if have != b - a:
                raise TrimError(f"--resume: {path} has {have} lines for {b - a} segments and no job state")
            job = None
        else:
            job = OutputJob(path, in_path, shard, records[a:b], input_sha256=sha)
        if job is not None and job.done == b - a:
            job.close()
            job = None
        jobs.append(job)
    return jobs


def _run(ray, model: tuple[str, int], options: dict[str, Any], segments: list[str], ranges: list[tuple[int, int]],
         jobs: list[OutputJob | None], dst: str, src: str, parallel: int | None, gpu: bool,
         progress: bool | None) -> None:
    """Start a generator task per unfinished shard and append what each streams back. `model`: its
    resolved path and size (what every worker must find)."""
    from tqdm import tqdm

    task = ray.remote(translate_shard).options(num_cpus=options["threads"], num_gpus=1 if gpu else 0,
                                                max_retries=0)
    path, size = model
    gens: dict[Any, int] = {}
    for k, job in enumerate(jobs):
        if job is not None:
            a, b = ranges[k]
            gens[task.remote(path, size, options, segments[a + job.done:b], dst, src, parallel)] = k
    done = sum((b - a) if j is None else j.done for j, (a, b) in zip(jobs, ranges))
    bar = tqdm(total=len(segments), initial=done, unit="seg",
               disable=not (sys.stderr.isatty() if progress is None else progress))
    try:
        while gens:
            ready, _ = ray.wait(list(gens), num_returns=1)
            for gen in ready:
                k = gens[gen]
                job = jobs[k]
                try:
                    text = ray.get(next(gen))
                except StopIteration:
                    del gens[gen]
                    job.close()
                    a, b = ranges[k]
                    if job.done != b - a:
                        raise InternalError(f"shard {k + 1} ended after {job.done} of {b - a} segments; continue with "
                                        "--resume") from None
                    continue
                except ray.exceptions.RayError as e:
                    raise _worker_error(ray, e) from None
                try:
                    job.write(text)
                except OSError as e:
                    raise TrimError(f"{job.path}: cannot write ({e.strerror or e}); the finished segments are saved: "
                                    "make room and continue with --resume") from None
                bar.update(1)
    finally:
        bar.close()
        for gen in gens:
            try:
                ray.cancel(gen, force=True)
            except Exception:  # noqa: BLE001 - the job is ending anyway; Ray kills a gone driver's tasks
                pass
        for job in jobs:
            if job is not None:
                job.close()


def _merge(out: Path, parts: Path, ranges: list[tuple[int, int]]) -> None:
    """Concatenate the complete parts, in order, into `out` (temp file + rename)."""
    with atomic_write(out, fsync=True) as f:
        for k in range(len(ranges)):
            with open(parts / _part_name(k, len(ranges)), "rb") as part:
                shutil.copyfileobj(part, f, 1 << 20)
