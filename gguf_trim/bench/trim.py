"""What the trim itself costs: wall time and peak RSS of `gguf-trim trim` against `cp` of the same
file(s), in fresh processes, interleaved; optionally on a generated Qwen2.5-7B-shaped model (~4.9 GB,
streamed, never held in memory), also written as a split model (`gguf-trim bench trim`)."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gguf_trim.format.gguffile import OutTensor, encode_field, pad_to, write_gguf
from gguf_trim.format.shards import open_model, output_paths, split_keys
from gguf_trim.tables import human_size, markdown_table

CACHE_MODES = ("evict", "drop", "warm")


def drop_caches() -> str | None:
    """Write back dirty pages and drop the whole page cache (needs root); returns why it could
    not (None when done)."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        return f"{type(e).__name__}: {e.strerror or e}"
    return None


def evict(paths: list[str]) -> None:
    """Write back dirty pages, then drop these files' pages from the page cache (posix_fadvise
    DONTNEED; no root needed): the next command reads the model from disk, as after a download or a
    reboot, while the tools' own code (Python, numpy, llama.cpp: loaded by trim, not by cp) stays
    cached as it is for anyone who has run gguf-trim before."""
    os.sync()
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def resident(path: str) -> int | None:
    """Bytes of the file in the page cache (util-linux `fincore`; None where it is missing)."""
    try:
        r = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path], capture_output=True,
                           text=True, check=True)
        return int(r.stdout.split()[0])
    except (OSError, subprocess.CalledProcessError, ValueError, IndexError):
        return None


def _timed(cmd: list[str], cache: str = "warm", files: list[str] = ()) -> tuple[float, int, float]:
    """Wall seconds and peak RSS (bytes) of one child process, and the seconds of the `sync` after
    it (writing back what it left dirty). Dirty pages are flushed first so that neither command
    pays for the other's write-back; `cache` "evict" also drops `files` from the page cache first,
    "drop" the whole page cache.

    The peak RSS is what /usr/bin/time reports: a child started from this process (vfork, then exec)
    is charged this process's own peak RSS (the kernel records the old memory's high-water mark at
    exec), so ru_maxrss of a direct child shows the bench's memory, not the command's. Where there is
    no /usr/bin/time it falls back to that, an upper bound."""
    if cache == "drop":
        drop_caches()
    elif cache == "evict":
        evict(list(files))
    else:
        os.sync()
    timer = shutil.which("time", path="/usr/bin:/bin")
    with tempfile.NamedTemporaryFile("r", prefix="gguf-trim-rss-") as rss_file:
        full = [timer, "-f", "%M", "-o", rss_file.name, *cmd] if timer else cmd
        t0 = time.perf_counter()
        p = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(p.pid, 0)
        secs = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{cmd[0]} failed: {p.stderr.read().decode()[-400:] if p.stderr else ''}")
        peak = usage.ru_maxrss * 1024
        if timer:
            peak = int(rss_file.read().split()[-1]) * 1024
    t1 = time.perf_counter()
    os.sync()
    return secs, peak, time.perf_counter() - t1


def bench_trim(model: str | Path, runs: int = 3, check: bool = True, flags: tuple[str, ...] = (),
               cache: str = "warm", keep: str | Path | None = None) -> dict[str, Any]:
    """`gguf-trim trim [flags]` against `cp` of the same file (of all its shards, for a split
    model), interleaved, in the model's folder. `cache` (CACHE_MODES): before every command, the
    model's pages are evicted from the page cache, or the whole cache is dropped (root), or (warm)
    a first cp warms it for both; `keep`: the last trimmed file is moved there (one file) instead
    of deleted."""
    if cache not in CACHE_MODES:
        raise ValueError(f"cache {cache!r}: one of {', '.join(CACHE_MODES)}")
    model = Path(model)
    with open_model(model) as m:
        files = [str(p) for p in m.paths]
        size = m.size
    with tempfile.TemporaryDirectory(dir=model.parent, prefix=".bench-") as d:
        cp_t, trim_t, trim_rss, cp_sync, trim_sync = [], [], [], [], []
        trim_cmd = [sys.executable, "-m", "gguf_trim.cli", "trim", str(model), "-o", f"{d}/t.gguf", *flags]
        if not check:
            trim_cmd.append("--no-check")
        if cache == "warm":
            os.mkdir(f"{d}/c")
            _timed(["cp", *files, f"{d}/c/"])  # warm the page cache for both
            shutil.rmtree(f"{d}/c")
        for run in range(runs):
            os.mkdir(f"{d}/c")
            s, _, w = _timed(["cp", *files, f"{d}/c/"], cache, files)
            cp_t.append(s)
            cp_sync.append(w)
            shutil.rmtree(f"{d}/c")
            s, rss, w = _timed(trim_cmd, cache, files)
            trim_t.append(s)
            trim_rss.append(rss)
            trim_sync.append(w)
            outs = [p for p in Path(d).iterdir() if p.name.startswith("t")]
            out_size = sum(p.stat().st_size for p in outs)
            if keep is not None and run == runs - 1 and len(outs) == 1:
                os.replace(outs[0], keep)
                continue
            for p in outs:  # like cp's copy: freeing the old files is not part of the next run
                p.unlink()
    cp_s, trim_s = statistics.median(cp_t), statistics.median(trim_t)
    return {"model": str(model), "size": size, "trimmed_size": out_size, "cp_s": cp_s,
            "trim_s": trim_s, "trim_vs_cp": trim_s / cp_s, "trim_peak_rss": max(trim_rss), "runs": runs,
            "load_check": check, "flags": list(flags), "cp_all_s": cp_t, "trim_all_s": trim_t,
            "shards": len(files), "outputs": len(outs), "cache": cache, "cp_sync_s": cp_sync,
            "trim_sync_s": trim_sync, "trim_peak_rss_all": trim_rss}


@dataclass(frozen=True)
class Shape:
    """The tensor shapes of a model family (what a synthetic file copies): embedding and FFN widths,
    heads, layers, and whether q/k/v carry biases (Qwen2) or not (Llama)."""

    arch: str
    n_embd: int
    n_ff: int
    n_head: int
    n_kv: int
    n_layer: int
    bias: bool
    label: str


QWEN25_7B = Shape("qwen2", 3584, 18944, 28, 4, 28, True, "qwen2.5-7b")


def synthetic_tensors(shape: Shape, n_vocab: int, n_layer: int | None = None) -> list[tuple[str, int, int, int]]:
    """(name, rows, cols, ggml type) of every tensor of a Q4_K_M-like file of `shape` (Q4_K, with
    Q6_K for output, attn_v and ffn_down, as llama.cpp's fallback types where a row is not whole
    K-quant blocks; cols 1 means a 1-D F32 tensor of `rows` values)."""
    from gguf.constants import GGMLQuantizationType as Q

    e, kv_dim = shape.n_embd, shape.n_embd // shape.n_head * shape.n_kv
    out = [("token_embd.weight", n_vocab, e, Q.Q4_K), ("output_norm.weight", e, 1, Q.F32),
           ("output.weight", n_vocab, e, Q.Q6_K)]
    for b in range(shape.n_layer if n_layer is None else n_layer):
        p = f"blk.{b}."
        out.append((p + "attn_norm.weight", e, 1, Q.F32))
        for m, rows, qt in (("q", e, Q.Q4_K), ("k", kv_dim, Q.Q4_K), ("v", kv_dim, Q.Q6_K)):
            out.append((f"{p}attn_{m}.weight", rows, e, qt))
            if shape.bias:
                out.append((f"{p}attn_{m}.bias", rows, 1, Q.F32))
        out += [(p + "attn_output.weight", e, e, Q.Q4_K), (p + "ffn_norm.weight", e, 1, Q.F32),
                (p + "ffn_gate.weight", shape.n_ff, e, Q.Q4_K), (p + "ffn_up.weight", shape.n_ff, e, Q.Q4_K),
                (p + "ffn_down.weight", e, shape.n_ff, Q.Q6_K)]
    # rows of a K-quant hold whole 256-value blocks: llama.cpp's quantize falls back for other widths
    # (Qwen2.5-72B's ffn_down, 29,568 wide: Q6_K -> Q8_0, Q4_K -> Q5_0)
    fallback = {Q.Q4_K: Q.Q5_0, Q.Q6_K: Q.Q8_0}
    return [(name, rows, cols, int(fallback.get(qt, qt) if cols % 256 else qt)) for name, rows, cols, qt in out]


def synthetic_size(shape: Shape, n_vocab: int, n_layer: int, alignment: int = 32) -> int:
    """Bytes of tensor data of the synthetic file (the header adds the vocabulary, a few MB)."""
    from gguf_trim.format.gguffile import tensor_nbytes

    return sum(pad_to(tensor_nbytes((cols, rows) if cols > 1 else (rows,), qt), alignment)
               for _, rows, cols, qt in synthetic_tensors(shape, n_vocab, n_layer))


def make_synthetic(path: str | Path, vocab_gguf: str | Path, shape: Shape = QWEN25_7B, n_layer: int | None = None,
                   seed: int = 0, split_max_size: int = 0) -> Path:
    """A GGUF with a real vocabulary and the tensor names, types and shapes of `shape` (Q4_K_M-like),
    with `n_layer` blocks (default: the model's own), of valid random blocks written by streaming a
    few quantized rows over and over: never held in memory, however large. With `split_max_size`,
    written as llama.cpp's gguf-split would split it (returns the first shard)."""
    from gguf.constants import GGMLQuantizationType as Q
    from gguf.constants import GGUFValueType as V

    from gguf_trim.format.quant import ggml_quantize

    n_layer = shape.n_layer if n_layer is None else n_layer
    rng = np.random.default_rng(seed)
    arch = shape.arch
    kv: list[bytes] = [encode_field("general.architecture", V.STRING, arch),
                       encode_field("general.name", V.STRING, f"synthetic {shape.label}-shaped")]
    with open_model(vocab_gguf) as g:
        for name, f in g.fields.items():
            if name.startswith("tokenizer."):
                kv.append(f.raw)
        n_vocab_rows = len(g.get("tokenizer.ggml.tokens"))
    for key, val in (("context_length", 32768), ("embedding_length", shape.n_embd), ("block_count", n_layer),
                     ("feed_forward_length", shape.n_ff), ("attention.head_count", shape.n_head),
                     ("attention.head_count_kv", shape.n_kv)):
        kv.append(encode_field(f"{arch}.{key}", V.UINT32, val))
    kv.append(encode_field(f"{arch}.attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-6 if arch == "qwen2" else 1e-5))
    patterns: dict[tuple[int, int], np.ndarray] = {}

    def qtensor(name: str, rows: int, cols: int, qt: int) -> OutTensor:
        key = (qt, cols)
        if key not in patterns:
            patterns[key] = ggml_quantize((rng.standard_normal((64, cols)) * 0.02).astype(np.float32), Q(qt))
        pat = patterns[key]

        def write(fh, pat=pat, rows=rows) -> None:
            block = np.tile(pat, (max(1, 4096 // len(pat)), 1)).tobytes()
            per = len(block) // pat.shape[1]
            done = 0
            while done < rows:
                n = min(per, rows - done)
                fh.write(block[: n * pat.shape[1]])
                done += n
        return OutTensor(name, (cols, rows), qt, rows * pat.shape[1], write)

    def f32(name: str, n: int) -> OutTensor:
        return OutTensor(name, (n,), int(Q.F32), 4 * n, lambda fh: fh.write(np.ones(n, np.float32).tobytes()))

    tensors = [f32(name, rows) if cols == 1 else qtensor(name, rows, cols, qt)
               for name, rows, cols, qt in synthetic_tensors(shape, n_vocab_rows, n_layer)]
    path = Path(path)
    if not split_max_size:
        with open(path, "wb") as fh:
            write_gguf(fh, kv, tensors, 32)
        return path
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:  # gguf-split's rule: a new shard when the next tensor's data would not fit
        n = pad_to(t.nbytes, 32)
        if shards[-1] and size + n > split_max_size:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += n
    paths = output_paths(path, len(shards))
    for i, (p, ts) in enumerate(zip(paths, shards)):
        with open(p, "wb") as fh:
            write_gguf(fh, (kv if i == 0 else []) + split_keys(i, len(shards), len(tensors)), ts, 32)
    return paths[0]


def make_7b_like(path: str | Path, vocab_gguf: str | Path, seed: int = 0, split_max_size: int = 0) -> Path:
    """A Qwen2.5-7B-shaped GGUF (qwen2 vocab, Q4_K_M-like types, ~4.9 GB): make_synthetic of QWEN25_7B."""
    return make_synthetic(path, vocab_gguf, QWEN25_7B, seed=seed, split_max_size=split_max_size)


def bench_trims(models: list[str | Path], runs: int = 3, synth_dir: str | Path | None = None,
                vocab: str | Path | None = None, synth_split: int | None = None,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """bench_trim of each model, then (with `synth_dir`) of a generated 7B-shaped model there: plain,
    with --source-sha256, and (with `synth_split`, bytes per shard) written split, plain and --merge."""
    results = [bench_trim(m, runs) for m in models]
    if synth_dir:
        vocab = vocab or "models/vocab-qwen2.gguf"
        with tempfile.TemporaryDirectory(dir=synth_dir, prefix=".synth7b-") as d:
            t0 = time.perf_counter()
            big = make_7b_like(f"{d}/qwen2.5-7b-like-q4_k_m.gguf", vocab)
            log(f"generated {big.name}: {human_size(big.stat().st_size)} in {time.perf_counter() - t0:.1f} s")
            results.append(bench_trim(big, runs))
            results.append(bench_trim(big, runs, flags=("--source-sha256",)))
            if synth_split:
                big.unlink()
                t0 = time.perf_counter()
                first = make_7b_like(f"{d}/qwen2.5-7b-like-q4_k_m.gguf", vocab, split_max_size=synth_split)
                log(f"generated {first.name} (split): {time.perf_counter() - t0:.1f} s")
                results.append(bench_trim(first, runs))
                results.append(bench_trim(first, runs, flags=("--merge",)))
    return results


def markdown(results: list[dict[str, Any]]) -> str:
    """The table `gguf-trim bench trim` prints."""
    rows = []
    for r in results:
        name = " ".join([os.path.basename(r["model"]), *r["flags"]])
        if r.get("shards", 1) > 1 or r.get("outputs", 1) > 1:
            name += f" ({r['shards']} -> {r['outputs']} files)"
        rows.append([name, human_size(r["size"]), human_size(r["trimmed_size"]), f"{r['cp_s']:.2f}",
                     f"{r['trim_s']:.2f}", f"{r['trim_vs_cp']:.2f}", human_size(r["trim_peak_rss"])])
    return markdown_table(["file", "size", "trimmed", "cp s", "trim s", "trim / cp", "trim peak RSS"], rows,
                          "lrrrrrr")
