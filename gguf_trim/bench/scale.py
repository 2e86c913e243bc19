"""Trims at the size users run (`gguf-trim bench scale`, `make bench-scale`): a synthetic GGUF with a
real vocabulary and the tensor names, types and shapes of a 70B-class Q4_K_M model (Qwen2.5-72B,
Llama 3.1 70B: token_embd and output at n_vocab x 8192), fewer layers to reach a target size, trimmed
against `cp` of the same file, peak RSS of the trim, and `verify` of the result.

Why synthetic: a real 40 GB model cannot be downloaded here, and what the trim's time and memory
depend on is the layout (the vocab tensors' shapes and types, how many bytes are copied unchanged),
not the weights' values. Why two sizes of the same shape: the vocab tensors, which the trim reads
through memory, are the same in both, so a trim that streams everything else must show the same
peak RSS at 2 GB and at 20 GB, and a time that grows like `cp`'s."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gguf_trim.bench.trim import (
    CACHE_MODES,
    Shape,
    bench_trim,
    drop_caches,
    evict,
    make_synthetic,
    resident,
    synthetic_size,
)
from gguf_trim.tables import human_size, markdown_table

# name -> (shape, vendored vocab-only file in models/); layer counts are the real models', the
# synthetic files keep fewer (layers_for)
SHAPES: dict[str, tuple[Shape, str]] = {
    "qwen2.5-72b": (Shape("qwen2", 8192, 29568, 64, 8, 80, True, "qwen2.5-72b"), "vocab-qwen2.gguf"),
    "llama-3.1-70b": (Shape("llama", 8192, 28672, 64, 8, 80, False, "llama-3.1-70b"), "vocab-llama-bpe.gguf"),
}
# Room left free on the disk beyond the source and one copy (other jobs share it).
DISK_MARGIN = 4 << 30
# A few lines for `verify` (tokenization fidelity only: --greedy 0, the weights are random).
VERIFY_LINES = ["The quick brown fox jumps over the lazy dog.",
                "Trimming keeps every token English and Vietnamese text can use.",
                "Xin chào, hôm nay trời đẹp quá.",
                "Mô hình chỉ viết những ngôn ngữ đã chọn."]


def n_vocab_of(vocab_gguf: str | Path) -> int:
    from gguf_trim.format.shards import open_model

    with open_model(vocab_gguf) as g:
        return len(g.get("tokenizer.ggml.tokens"))


def layers_for(shape: Shape, n_vocab: int, target: int) -> int:
    """The fewest layers (at least 1) that make the file at least `target` bytes."""
    base, one = synthetic_size(shape, n_vocab, 0), synthetic_size(shape, n_vocab, 1)
    return max(1, math.ceil((target - base) / (one - base)))


def fit_disk(shape: Shape, n_vocab: int, n_layer: int, free: int) -> tuple[int, str | None]:
    """The layers that fit the free space with the source, one copy of it (cp's or trim's: the bench
    deletes each before the next) and DISK_MARGIN; and why fewer than asked, if so."""
    base, one = synthetic_size(shape, n_vocab, 0), synthetic_size(shape, n_vocab, 1)
    if 2 * synthetic_size(shape, n_vocab, n_layer) + DISK_MARGIN <= free:
        return n_layer, None
    fit = int(((free - DISK_MARGIN) / 2 - base) // (one - base))
    if fit < 1:
        raise RuntimeError(f"{human_size(free)} free: not enough for even one layer of {shape.label}")
    return fit, (f"{human_size(free)} free holds the source, one copy and {human_size(DISK_MARGIN)} spare at "
                 f"{fit} layers ({human_size(synthetic_size(shape, n_vocab, fit))}), not {n_layer}")


def run_verify(original: Path, trimmed: Path, folder: Path) -> dict[str, Any]:
    """`gguf-trim verify ORIGINAL TRIMMED --text LINES --greedy 0` in a child process: its exit
    status, wall time and the per-file fidelity of its JSON report."""
    text, rep = folder / "verify.txt", folder / "verify.json"
    text.write_text("\n".join(VERIFY_LINES) + "\n", encoding="utf-8")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "gguf_trim.cli", "verify", str(original), str(trimmed),
                        "--text", str(text), "--greedy", "0", "--json", str(rep)], capture_output=True, text=True)
    out: dict[str, Any] = {"exit": r.returncode, "seconds": round(time.perf_counter() - t0, 2),
                           "stdout": r.stdout.strip().splitlines()[:3], "stderr": r.stderr.strip()[-300:]}
    if r.returncode == 0:
        j = json.loads(rep.read_text(encoding="utf-8"))
        f = j["files"][0]
        out.update(lines=f["lines"], identical_lines=f["identical_lines"], n_vocab=[j["n_vocab_original"],
                                                                                    j["n_vocab_trimmed"]])
    return out


def bench_scale(specs: list[str], sizes: list[int], folder: str | Path = "models", runs: int = 3,
                cache: str = "evict", models_dir: str | Path = "models",
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """For each shape and target size: generate the file in `folder` (a hidden temp folder there,
    removed at the end whatever happens), bench_trim it against cp (`runs`; `cache`: see
    bench_trim), verify the last trimmed file, delete both.

    Why "evict" by default: a cold model file is the case that matters (just downloaded, or too big
    for the page cache, as 20 GB on this 24 GB machine is), but dropping the whole cache also
    evicts Python, numpy and llama.cpp, which the trim loads and cp does not."""
    if cache not in CACHE_MODES:
        raise ValueError(f"cache {cache!r}: one of {', '.join(CACHE_MODES)}")
    folder = Path(folder)
    if cache == "drop" and (why := drop_caches()) is not None:
        log(f"cannot drop the page cache ({why}): evicting the model files instead")
        cache = "evict"
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "machine": platform.machine(),
        "mem_total": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "runs": runs, "cache": cache,
        "drop_caches_allowed": os.access("/proc/sys/vm/drop_caches", os.W_OK),
        "disk_free_start": shutil.disk_usage(folder).free, "load_start": os.getloadavg(), "rows": []}
    log({"evict": "page cache: the model file is evicted before every command (cold file, warm tools)",
         "drop": "page cache: dropped before every command (cold file and tools)",
         "warm": "page cache: warm (a first cp reads the file)"}[cache])
    for spec in specs:
        if spec not in SHAPES:
            raise ValueError(f"unknown shape {spec!r} (known: {', '.join(SHAPES)})")
        shape, vocab_name = SHAPES[spec]
        vocab = Path(models_dir) / vocab_name
        n_vocab = n_vocab_of(vocab)
        for target in sizes:
            with tempfile.TemporaryDirectory(dir=folder, prefix=".scale-") as d:
                want = layers_for(shape, n_vocab, target)
                n_layer, note = fit_disk(shape, n_vocab, want, shutil.disk_usage(folder).free)
                if note:
                    log(f"{spec} at {human_size(target)}: {note}")
                src = Path(d) / f"{spec}-like-{n_layer}l-q4_k_m.gguf"
                t0 = time.perf_counter()
                make_synthetic(src, vocab, shape, n_layer)
                gen_s = time.perf_counter() - t0
                log(f"generated {src.name}: {human_size(src.stat().st_size)} in {gen_s:.1f} s")
                evict([str(src)])
                left = resident(str(src))  # what an evicted file still has in the cache (fincore)
                load0 = os.getloadavg()
                row = bench_trim(src, runs, cache=cache, keep=Path(d) / "trimmed.gguf")
                row.update(spec=spec, target=target, n_layer=n_layer, n_layer_real=shape.n_layer, vocab=vocab_name,
                           n_vocab=n_vocab, generate_s=round(gen_s, 1), disk_note=note, load_before=load0,
                           load_after=os.getloadavg(), resident_after_evict=left,
                           cp_plus_sync_s=_with_sync(row, "cp"), trim_plus_sync_s=_with_sync(row, "trim"))
                row["trim_vs_cp_with_sync"] = row["trim_plus_sync_s"] / row["cp_plus_sync_s"]
                row["verify"] = run_verify(src, Path(d) / "trimmed.gguf", Path(d))
                row["model"] = src.name
                log(markdown({"rows": [row]}).splitlines()[-1])
                result["rows"].append(row)
    result["load_end"] = os.getloadavg()
    result["rss_flat"] = rss_flatness(result["rows"])
    return result


def _with_sync(row: dict[str, Any], cmd: str) -> float:
    """Median over the runs of the command's wall time plus the sync after it."""
    return statistics.median(a + b for a, b in zip(row[f"{cmd}_all_s"], row[f"{cmd}_sync_s"]))


def rss_flatness(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per shape: peak RSS of the trim at its largest file over that at its smallest (1.0 is flat)."""
    out = {}
    for spec in dict.fromkeys(r["spec"] for r in rows):
        rs = sorted((r for r in rows if r["spec"] == spec), key=lambda r: r["size"])
        if len(rs) > 1:
            out[spec] = rs[-1]["trim_peak_rss"] / rs[0]["trim_peak_rss"]
    return out


def markdown(result: dict[str, Any]) -> str:
    """The table `gguf-trim bench scale` prints (medians of the runs; "+ sync" adds the write-back
    of what the command left dirty)."""
    rows = []
    for r in result["rows"]:
        v = r.get("verify", {})
        ver = (f"{v['identical_lines']}/{v['lines']} lines" if "lines" in v
               else f"exit {v['exit']}" if v else "")
        rows.append([f"{r['spec']}-like, {r['n_layer']} of {r['n_layer_real']} layers", human_size(r["size"]),
                     human_size(r["trimmed_size"]), r.get("cache", ""), f"{r['cp_s']:.1f}",
                     f"{r['trim_s']:.1f}", f"{r['trim_vs_cp']:.2f}", f"{r['trim_vs_cp_with_sync']:.2f}",
                     human_size(r["trim_peak_rss"]), ver])
    return markdown_table(["file", "size", "trimmed", "cache", "cp s", "trim s", "trim / cp", "+ sync",
                           "trim peak RSS", "verify"], rows, "lrrlrrrrrl")
