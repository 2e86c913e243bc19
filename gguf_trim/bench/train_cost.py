"""What trimming saves in training, measured (`gguf-trim bench train-cost`, `make bench-train-cost`).

Why a benchmark: the claim "a smaller vocabulary trains cheaper" holds only for the LM head's part of a
step (the output matmul, the logits, their softmax and gradient); the rest of the model is the same.
So each step is run three ways: as training runs it (`chunked`: logits only at scored positions, in
blocks: tune/logits.py), with the logits of every position at once (`full`: a stock training loop), and
with a one-row head (`bound`: the step without a vocabulary). The bound gives the head's share of the
time and of the memory, and so the saving a trim should bring: share x (1 - trimmed n_vocab / original's).

For each model: the original, the lossless en,vi trim and the compact trim to half the vocabulary;
`finetune`'s LoRA step on the same pairs with the same number of answer tokens per step, and `refine`'s
step (the rows of 200 added compounds, `extend --top 200`) on the same text with the same tokens per step.
Every (file, stage, mode) runs in a fresh process: seconds per step (median after warm-up) and peak memory
(CPU: the process's peak RSS during the steps, from /proc, and over its life; CUDA: peak allocated). An
adapter trained on a trimmed file is also applied to the original (only attention/MLP matrices are adapted,
their shapes do not change with the vocabulary): greedy translations with it on both files are compared.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError

DEFAULT_MODELS = ("models/gemma-3-270m-q4_k_m.gguf", "models/qwen2.5-coder-0.5b-instruct.gguf")
VARIANTS = ("original", "lossless", "compact")
STAGES = ("finetune", "refine")
MAX_EXAMPLE = 384  # finetune's --seq-len default: longer pairs are left out there too


# -- files ----------------------------------------------------------------------------------------

def n_vocab_of(path: str | Path) -> int:
    from gguf_trim.format.shards import open_model

    with open_model(path) as g:
        return len(g.get("tokenizer.ggml.tokens"))


def prepare(model: str | Path, work: Path, corpus: list[str], words: str, top: int, stages: list[str],
            variants: list[str], log=print) -> dict[str, dict[str, Path]]:
    """{variant: {stage: file}}: the trims (lossless en,vi; compact to half the vocabulary on `corpus`) and,
    for refine, each extended with the `top` compounds of `words`. Files already in `work` are reused."""
    from gguf_trim.api import CompactOptions, trim
    from gguf_trim.extend.words import extend_file

    work.mkdir(parents=True, exist_ok=True)
    stem = Path(model).name.removesuffix(".gguf")
    files = {"original": Path(model), "lossless": work / f"{stem}.envi.gguf", "compact": work / f"{stem}.compact.gguf"}
    out: dict[str, dict[str, Path]] = {}
    for v in variants:
        path = files[v]
        if v == "lossless" and not path.exists():
            log(f"trim {stem}: lossless en,vi")
            trim(model, path)
        elif v == "compact" and not path.exists():
            log(f"trim {stem}: compact to {n_vocab_of(model) // 2:,} tokens")
            trim(model, path, profile="compact",
                 compact=CompactOptions(corpus=list(corpus), target_size=n_vocab_of(model) // 2))
        out[v] = {"finetune": path}
        if "refine" in stages:
            ext = work / f"{path.name.removesuffix('.gguf')}.ext{top}.gguf"
            if not ext.exists():
                log(f"extend {path.name}: {top} compounds")
                extend_file(path, words, ext, top=top)
            out[v]["refine"] = ext
    return out


# -- one measured run (in its own process) -------------------------------------------------------

def _rss_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Memory:
    """Memory before the steps and at their peak: CUDA's allocator, else the process's RSS (its high-water
    mark reset before the first step, /proc/self/clear_refs, so loading the model does not count; the heap
    loading freed is trimmed first)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize()
            self.before = torch.cuda.memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
        else:  # what loading freed goes back to the system first (glibc keeps it otherwise: RSS +-400 MB)
            import ctypes
            import gc

            gc.collect()
            with contextlib.suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            self.before = _rss_mib("VmRSS")
            self.reset = os.access("/proc/self/clear_refs", os.W_OK)
            if self.reset:
                Path("/proc/self/clear_refs").write_text("5")

    def peak(self) -> float:
        import torch

        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return _rss_mib("VmHWM") if self.reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batches(examples: list, tokens: int, steps: int) -> list[list]:
    """`steps` batches of exactly `tokens` answer tokens each, taken in order (the last example of a
    batch cut short), so every file trains on the same pairs and the same number of answer tokens."""
    from gguf_trim.tune.data import Example

    out, k = [], 0
    for _ in range(steps):
        batch, need = [], tokens
        while need > 0:
            e = examples[k % len(examples)]
            k += 1
            ans = len(e.ids) - e.n_prompt
            batch.append(e if ans <= need else Example(e.ids[: e.n_prompt + need], e.n_prompt, e.direction))
            need -= min(ans, need)
        out.append(batch)
    return out


def _float_model(path: str, cache: dict | None) -> Any:
    """The float model of `path`; from `cache` (a copy), where the caller runs several workers in one process."""
    import copy

    from gguf_trim.extend.float_model import load_float_model

    if cache is None:
        return load_float_model(path)
    if path not in cache:
        cache[path] = load_float_model(path)
    return copy.deepcopy(cache[path])


def _finetune_steps(spec: dict[str, Any], device: Any, cache: dict | None) -> tuple[Any, dict[str, Any]]:
    import torch

    from gguf_trim.format.shards import open_model
    from gguf_trim.translate.translator import Translator
    from gguf_trim.tune.data import read_pair_files, render_pair
    from gguf_trim.tune.lora import adapter_weights, add_lora, example_loss
    from gguf_trim.tune.options import FinetuneOptions

    opts = FinetuneOptions(lr=spec["lr"])
    langs, pairs = read_pair_files([spec["pairs"]])
    tr = Translator(spec["model"], n_ctx=1024, guard=False, langs=",".join(langs))
    try:
        dirs = (f"{langs[0]}-{langs[1]}", f"{langs[1]}-{langs[0]}")
        examples = [render_pair(tr, a, b, d, langs) for a, b in pairs[: spec["n_pairs"]] for d in dirs]
    finally:
        tr.close()
    examples = [e for e in examples if len(e.ids) <= MAX_EXAMPLE]
    with open_model(spec["model"]) as g:
        arch, n_layer = g.arch, int(g.get(f"{g.arch}.block_count") or 0)
    model, names = add_lora(_float_model(spec["model"], cache), arch, n_layer, opts)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=0.0)
    batches = _batches(examples, spec["tokens"], spec["steps"])
    model.train()

    def step(k: int) -> float:
        loss, _ = example_loss(model, batches[k], device)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        return float(loss.detach())

    def finish() -> None:
        if spec.get("adapter"):
            from gguf_trim.tune.adapter import write_adapter

            write_adapter(spec["adapter"], arch, float(opts.alpha), adapter_weights(model.to("cpu"), names),
                          {"base_file": Path(spec["model"]).name, "steps": spec["steps"]})

    info = {"prompt_tokens": [sum(e.n_prompt for e in b) for b in batches][0], "examples": len(batches[0])}
    return (model, step, finish), info


def _refine_steps(spec: dict[str, Any], device: Any, cache: dict | None) -> tuple[Any, dict[str, Any]]:
    import torch

    from gguf_trim.extend.float_model import RowModel, pick_dtype
    from gguf_trim.extend.packing import Choices, Packer
    from gguf_trim.extend.rows import added_rows, open_single, read_rows
    from gguf_trim.extend.train import batch_loss
    from gguf_trim.tune.data import read_pair_files

    with open_single(spec["model"]) as g:
        added = added_rows(g)
        rows0 = read_rows(g, added)
    rm = RowModel(_float_model(spec["model"], cache), added, rows0)
    rm.to(device)
    dtype = pick_dtype("auto", device)
    if dtype != torch.float32:
        rm.lower_precision(dtype)
    _, pairs = read_pair_files([spec["pairs"]])
    packer = Packer(spec["model"], spec["seq_len"])
    try:
        need = spec["batch"] * spec["steps"]
        seqs = [s for s in packer.sequences(iter([b for _, b in pairs] * 4)) if len(s) == spec["seq_len"] + 1]
        if len(seqs) < need:
            raise TrimError(f"the pairs' text makes {len(seqs)} sequences of {spec['seq_len']} tokens, {need} needed")
        choices = Choices.for_added(packer.llm, added).to(device)
    finally:
        packer.close()
    opt = torch.optim.Adam(rm.trainable(), lr=3e-4)

    def step(k: int) -> float:
        opt.zero_grad(set_to_none=True)
        b = batch_loss(rm, seqs[k * spec["batch"]:(k + 1) * spec["batch"]], device, dtype, train=True,
                       choices=choices, choice_weight=1.0)
        opt.step()
        return b.nats / b.n

    return (rm.model, step, lambda: None), {"dtype": str(dtype).replace("torch.", "")}


def worker(spec: dict[str, Any], cache: dict | None = None) -> dict[str, Any]:
    """One file, one stage, one logits mode: `steps` training steps timed one by one (`cache`: float models
    kept between calls in one process, for tests; the bench runs each call in a fresh one)."""
    import torch

    from gguf_trim.extend.float_model import pick_device
    from gguf_trim.tune.logits import logits_mode

    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = pick_device(spec["device"])
    t0 = time.perf_counter()
    stage = _finetune_steps if spec["stage"] == "finetune" else _refine_steps
    (model, step, finish), info = stage(spec, device, cache)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    vocab_mib = (emb.numel() * emb.element_size() + (0 if head.data_ptr() == emb.data_ptr() else
                                                     head.numel() * head.element_size())) / 2**20
    setup_s = time.perf_counter() - t0
    mem = Memory(device)
    times, losses = [], []
    with logits_mode(spec["mode"]):
        for k in range(spec["steps"]):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            losses.append(step(k))
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    peak = mem.peak()
    finish()
    timed = times[spec["warmup"]:] or times
    return {**{k: spec[k] for k in ("model", "stage", "mode", "variant")}, "n_vocab": n_vocab_of(spec["model"]),
            "device": str(device), "setup_s": round(setup_s, 1), "step_s": [round(x, 4) for x in times],
            "median_s": statistics.median(timed), "losses": losses, "mem_before_mib": round(mem.before, 1),
            "peak_mib": round(peak, 1), "process_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                                                  / 1024, 1),
            "vocab_weights_mib": round(vocab_mib, 1), **info}


def run_worker(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """`worker` in a fresh Python (its own peak memory, nothing cached from another run)."""
    p = subprocess.run([sys.executable, "-m", "gguf_trim.bench.train_cost", json.dumps(spec)], capture_output=True,
                       text=True, timeout=timeout)
    if p.returncode != 0:
        raise TrimError(f"train-cost run {spec['stage']}/{spec['mode']} on {Path(spec['model']).name} failed: "
                        + (p.stderr.strip().splitlines() or ["(no output)"])[-1])
    return json.loads(p.stdout.strip().splitlines()[-1])


# -- the whole bench ------------------------------------------------------------------------------

def derive(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, stage, variant, mode), the head's share of time and memory (against the `bound` run
    of the same file) and, for a trim, the ratio to the original and the ratio the share predicts."""
    by = {(r["base"], r["stage"], r["variant"], r["mode"]): r for r in runs}

    def shares(r: dict[str, Any]) -> dict[str, float]:
        b = by.get((r["base"], r["stage"], r["variant"], "bound"))
        if not b:
            return {}
        return {"head_time_share": max(0.0, 1 - b["median_s"] / r["median_s"]),
                "vocab_mem_share": min(1.0, (r["vocab_weights_mib"] + max(0.0, r["peak_mib"] - b["peak_mib"]))
                                       / r["peak_mib"])}

    out = []
    for r in (r for r in runs if r["mode"] != "bound"):
        d = {**{k: r[k] for k in ("base", "stage", "variant", "mode", "n_vocab", "median_s", "peak_mib")}, **shares(r)}
        o = by.get((r["base"], r["stage"], "original", r["mode"]))
        if r["variant"] != "original" and o:
            so, keep = shares(o), r["n_vocab"] / o["n_vocab"]
            for what, share, got in (("time", "head_time_share", r["median_s"] / o["median_s"]),
                                     ("mem", "vocab_mem_share", r["peak_mib"] / o["peak_mib"])):
                d[f"{what}_ratio"] = got
                if share in so:  # the saving the head's share predicts, and whether the measured one is within 20%
                    pred = 1 - so[share] * (1 - keep)
                    d[f"{what}_pred"] = pred
                    d[f"{what}_matches"] = abs((1 - got) - (1 - pred)) <= 0.2 * max(1 - pred, 1e-9)
        out.append(d)
    return out


def adapter_transfer(files: dict[str, Path], adapters: dict[str, Path], texts: list[str]) -> list[dict[str, Any]]:
    """Each trimmed file's adapter on the original: accepted (same shapes), and its greedy en->vi
    translations there against those on the file it was trained on, and the original's without it."""
    from gguf_trim.translate.translator import Translator
    from gguf_trim.tune.adapter import LoraSpec, check_adapter

    def outputs(model: Path, adapter: Path | None) -> list[str]:
        tr = Translator(model, n_ctx=1024, guard=False, lora=(LoraSpec(adapter),) if adapter else ())
        try:
            return [tr.translate(t, "vi", "en").text for t in texts]
        finally:
            tr.close()

    orig = files["original"]
    plain = outputs(orig, None)
    own = outputs(orig, adapters["original"]) if "original" in adapters else None
    out = []
    for v, a in adapters.items():
        if v == "original":
            continue
        check_adapter(a, orig)  # raises where llama.cpp would refuse it
        on_orig, on_trim = outputs(orig, a), outputs(files[v], a)
        n = len(texts)
        out.append({"variant": v, "applies": True, "texts": n,
                    "same_as_on_trimmed": sum(x == y for x, y in zip(on_orig, on_trim)),
                    "same_as_original_adapter": sum(x == y for x, y in zip(on_orig, own)) if own else None,
                    "changed_from_base": sum(x != y for x, y in zip(on_orig, plain)),
                    "examples": [{"src": t, "original+A": x, "trimmed+A": y}
                                 for t, x, y in zip(texts[:2], on_orig, on_trim)]})
    return out


def run(models: list[str], pairs: str, corpus: list[str], words: str, work: Path, *, stages: list[str],
        variants: list[str], modes: list[str], steps: int, warmup: int, tokens: int, batch: int, seq_len: int,
        lr: float, n_pairs: int, device: str, threads: int | None, top: int = 200, adapter_check: int = 4,
        timeout: float = 3600, save=None, log=print) -> dict[str, Any]:
    """The bench; `save(report)` is called after every run, so a run cut short leaves what it measured."""
    from gguf_trim.tune.data import read_pair_files

    rep: dict[str, Any] = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "device": device,
                           "load": os.getloadavg()[0], "steps": steps, "warmup": warmup, "answer_tokens": tokens,
                           "refine_tokens": batch * seq_len, "pairs": pairs, "runs": [], "adapters": {}}
    texts = [a for a, _ in read_pair_files([pairs])[1][n_pairs:n_pairs + adapter_check]]
    for model in models:
        files = prepare(model, work, corpus, words, top, stages, variants, log)
        adapters: dict[str, Path] = {}
        for stage in stages:
            for mode in modes:
                for v in variants:
                    spec = {"model": str(files[v][stage]), "variant": v, "stage": stage, "mode": mode,
                            "steps": steps, "warmup": warmup, "tokens": tokens, "batch": batch, "seq_len": seq_len,
                            "lr": lr, "n_pairs": n_pairs, "pairs": pairs, "device": device, "threads": threads}
                    if stage == "finetune" and mode == "chunked" and adapter_check:
                        adapters[v] = work / f"{files[v][stage].name.removesuffix('.gguf')}.lora.gguf"
                        spec["adapter"] = str(adapters[v])
                    r = {**run_worker(spec, timeout), "base": Path(model).name}
                    log(f"{r['base']} {stage} {v} ({r['n_vocab']:,} tokens) {mode}: {r['median_s']:.3f} s/step, "
                        f"peak {r['peak_mib']:,.0f} MiB")
                    rep["runs"].append(r)
                    rep["derived"] = derive(rep["runs"])
                    if save:
                        save(rep)
        if adapters and texts and "original" in adapters:
            rep["adapters"][Path(model).name] = adapter_transfer({v: files[v]["finetune"] for v in variants},
                                                                 adapters, texts)
            if save:
                save(rep)
    return rep


def _x(v: float | None, fmt: str = "{:.3f}") -> str:
    return "" if v is None else fmt.format(v)


def table(rep: dict[str, Any]) -> str:
    from gguf_trim.tables import markdown_table

    runs = {(r["base"], r["stage"], r["variant"], r["mode"]): r for r in rep["runs"]}
    rows = []
    for d in rep.get("derived", []):
        ok = {True: "yes", False: "no"}
        rows.append([d["base"], d["stage"], d["variant"], f"{d['n_vocab']:,}", d["mode"], f"{d['median_s']:.3f}",
                     _x(runs.get((d["base"], d["stage"], d["variant"], "bound"), {}).get("median_s")),
                     _x(d.get("head_time_share"), "{:.0%}"),
                     _x(d.get("time_ratio")) + (f" ({_x(d['time_pred'])}, {ok[d['time_matches']]})"
                                                if "time_pred" in d else ""),
                     f"{d['peak_mib']:,.0f}", _x(d.get("vocab_mem_share"), "{:.0%}"),
                     _x(d.get("mem_ratio")) + (f" ({_x(d['mem_pred'])}, {ok[d['mem_matches']]})"
                                               if "mem_pred" in d else "")])
    text = markdown_table(["model", "stage", "file", "n_vocab", "logits", "s/step", "s/step, no vocab", "head share",
                           "x original (predicted, within 20%)", "peak MiB", "vocab share",
                           "x original (predicted, within 20%)"], rows, "llllrrrrrrrr")
    text += (f"\n\n{rep['machine']}, {rep['device']}, load {rep['load']:.1f}; {rep['steps']} steps "
             f"({rep['warmup']} warm-up), finetune {rep['answer_tokens']} answer tokens/step, refine "
             f"{rep['refine_tokens']} tokens/step\n")
    for base, checks in rep.get("adapters", {}).items():
        for c in checks:
            text += (f"\n{base}: the adapter trained on the {c['variant']} trim applies to the original; greedy en->vi "
                     f"on {c['texts']} held-out pairs: {c['same_as_on_trimmed']} the same as on the trim, "
                     f"{c['changed_from_base']} changed by it")
    return text + "\n"


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
