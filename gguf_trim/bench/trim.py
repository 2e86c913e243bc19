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
from pathlib import Path
from typing import Any

import numpy as np

from gguf_trim.format.gguffile import OutTensor, encode_field, pad_to, write_gguf
from gguf_trim.format.shards import open_model, output_paths, split_keys
from gguf_trim.tables import human_size, markdown_table


def _timed(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process. Dirty pages are flushed first so
    that neither command pays for the other's write-back."""
    os.sync()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.read().decode()[-400:] if p.stderr else ''}")
    return secs, usage.ru_maxrss * 1024


def bench_trim(model: str | Path, runs: int = 3, check: bool = True, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """`gguf-trim trim [flags]` against `cp` of the same file (of all its shards, for a split
    model), interleaved, in the model's folder."""
    model = Path(model)
    with open_model(model) as m:
        files = [str(p) for p in m.paths]
        size = m.size
    with tempfile.TemporaryDirectory(dir=model.parent, prefix=".bench-") as d:
        cp_t, trim_t, trim_rss = [], [], []
        trim_cmd = [sys.executable, "-m", "gguf_trim.cli", "trim", str(model), "-o", f"{d}/t.gguf", *flags]
        if not check:
            trim_cmd.append("--no-check")
        os.mkdir(f"{d}/c")
        _timed(["cp", *files, f"{d}/c/"])  # warm the page cache for both
        shutil.rmtree(f"{d}/c")
        for _ in range(runs):
            os.mkdir(f"{d}/c")
            s, _ = _timed(["cp", *files, f"{d}/c/"])
            cp_t.append(s)
            shutil.rmtree(f"{d}/c")
            s, rss = _timed(trim_cmd)
            trim_t.append(s)
            trim_rss.append(rss)
            outs = [p for p in Path(d).iterdir() if p.name.startswith("t")]
            out_size = sum(p.stat().st_size for p in outs)
            for p in outs:  # like cp's copy: freeing the old files is not part of the next run
                p.unlink()
    cp_s, trim_s = statistics.median(cp_t), statistics.median(trim_t)
    return {"model": str(model), "size": size, "trimmed_size": out_size, "cp_s": cp_s,
            "trim_s": trim_s, "trim_vs_cp": trim_s / cp_s, "trim_peak_rss": max(trim_rss), "runs": runs,
            "load_check": check, "flags": list(flags), "cp_all_s": cp_t, "trim_all_s": trim_t,
            "shards": len(files), "outputs": len(outs)}


def make_7b_like(path: str | Path, vocab_gguf: str | Path, seed: int = 0, split_max_size: int = 0) -> Path:
    """A Qwen2.5-7B-shaped GGUF (qwen2 vocab, Q4_K_M-like types, ~4.9 GB) of valid random blocks,
    written by streaming a few quantized rows over and over: never held in memory. With
    `split_max_size`, written as llama.cpp's gguf-split would split it (returns the first shard)."""
    from gguf.constants import GGMLQuantizationType as Q
    from gguf.constants import GGUFValueType as V

    from gguf_trim.format.quant import ggml_quantize

    n_embd, n_ff, n_layer, n_head, n_kv, n_vocab_rows = 3584, 18944, 28, 28, 4, None
    rng = np.random.default_rng(seed)
    kv: list[bytes] = [encode_field("general.architecture", V.STRING, "qwen2"),
                       encode_field("general.name", V.STRING, "synthetic qwen2.5-7b-shaped")]
    with open_model(vocab_gguf) as g:
        for name, f in g.fields.items():
            if name.startswith("tokenizer."):
                kv.append(f.raw)
        n_vocab_rows = len(g.get("tokenizer.ggml.tokens"))
    for key, val in (("context_length", 32768), ("embedding_length", n_embd), ("block_count", n_layer),
                     ("feed_forward_length", n_ff), ("attention.head_count", n_head),
                     ("attention.head_count_kv", n_kv)):
        kv.append(encode_field(f"qwen2.{key}", V.UINT32, val))
    kv.append(encode_field("qwen2.attention.layer_norm_rms_epsilon", V.FLOAT32, 1e-6))
    patterns: dict[tuple[int, int], np.ndarray] = {}

    def qtensor(name: str, rows: int, cols: int, qt: Q) -> OutTensor:
        key = (int(qt), cols)
        if key not in patterns:
            patterns[key] = ggml_quantize((rng.standard_normal((64, cols)) * 0.02).astype(np.float32), qt)
        pat = patterns[key]

        def write(fh, pat=pat, rows=rows) -> None:
            block = np.tile(pat, (max(1, 4096 // len(pat)), 1)).tobytes()
            per = len(block) // pat.shape[1]
            done = 0
            while done < rows:
                n = min(per, rows - done)
                fh.write(block[: n * pat.shape[1]])
                done += n
        return OutTensor(name, (cols, rows), int(qt), rows * pat.shape[1], write)

    def f32(name: str, n: int) -> OutTensor:
        return OutTensor(name, (n,), int(Q.F32), 4 * n, lambda fh: fh.write(np.ones(n, np.float32).tobytes()))

    tensors = [qtensor("token_embd.weight", n_vocab_rows, n_embd, Q.Q4_K), f32("output_norm.weight", n_embd),
               qtensor("output.weight", n_vocab_rows, n_embd, Q.Q6_K)]
    kv_dim = n_embd // n_head * n_kv
    for b in range(n_layer):
        tensors += [f32(f"blk.{b}.attn_norm.weight", n_embd),
                    qtensor(f"blk.{b}.attn_q.weight", n_embd, n_embd, Q.Q4_K), f32(f"blk.{b}.attn_q.bias", n_embd),
                    qtensor(f"blk.{b}.attn_k.weight", kv_dim, n_embd, Q.Q4_K), f32(f"blk.{b}.attn_k.bias", kv_dim),
                    qtensor(f"blk.{b}.attn_v.weight", kv_dim, n_embd, Q.Q6_K), f32(f"blk.{b}.attn_v.bias", kv_dim),
                    qtensor(f"blk.{b}.attn_output.weight", n_embd, n_embd, Q.Q4_K),
                    f32(f"blk.{b}.ffn_norm.weight", n_embd),
                    qtensor(f"blk.{b}.ffn_gate.weight", n_ff, n_embd, Q.Q4_K),
                    qtensor(f"blk.{b}.ffn_up.weight", n_ff, n_embd, Q.Q4_K),
                    qtensor(f"blk.{b}.ffn_down.weight", n_embd, n_ff, Q.Q6_K)]
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
