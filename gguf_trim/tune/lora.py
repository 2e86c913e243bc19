"""`finetune`: LoRA on the attention and MLP projections of the float model read from the GGUF (the
`train` extra: PyTorch, transformers, PEFT), trained on translation pairs in both directions rendered
exactly as `translate` prompts that model, the loss on the answer only; written as an adapter GGUF.

Why the float model: llama.cpp cannot train; transformers reads the GGUF (every tensor dequantized
by gguf-py), so the LoRA is trained against the very weights llama.cpp runs, quantization included,
and before the adapter is written the logits of base + adapter through llama.cpp are compared with
the float model's on held-out examples.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gguf_trim.errors import InternalError, TrimError
from gguf_trim.extend.rows import added_rows, open_single, read_rows, write_rows
from gguf_trim.files import check_output, file_sha256
from gguf_trim.format.keys import EXTENDED_FROM_N_VOCAB, REFINED_PREFIX
from gguf_trim.format.shards import open_model
from gguf_trim.tune import logits
from gguf_trim.tune.adapter import LoraSpec, write_adapter
from gguf_trim.tune.checkpoint import Checkpointer, examples_digest, fingerprint
from gguf_trim.tune.data import Example, clean_pairs, parse_pair, read_pair_files, render_pair, render_text
from gguf_trim.tune.options import FinetuneOptions, target_names


@dataclass
class FinetuneResult:
    output: Path
    report: dict[str, Any] = field(default_factory=dict)


def gguf_name_of(module: str, arch: str, n_layer: int) -> str | None:
    """The GGUF tensor (without .weight) a transformers Linear module holds, e.g. blk.3.attn_q."""
    import gguf

    try:
        tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], n_layer)
    except KeyError:
        raise TrimError(f"gguf-py knows no tensor names for architecture {arch!r}") from None
    for name in (module, module.replace("language_model.", "")):
        got = tmap.get_name(name + ".weight", try_suffixes=(".weight",))
        if got:
            return got.removesuffix(".weight")
    return None


def add_lora(model: torch.nn.Module, arch: str, n_layer: int, opts: FinetuneOptions) -> tuple[Any, dict[str, str]]:
    """PEFT LoRA on every Linear whose GGUF name is one of the targets; returns (peft model, {module: gguf})."""
    from peft import LoraConfig, get_peft_model

    wanted = set(target_names(opts.targets))
    names: dict[str, str] = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            g = gguf_name_of(mod_name, arch, n_layer)
            if g and g.split(".")[-1] in wanted:
                names[mod_name] = g
    if not names:
        raise TrimError(f"no projection of this {arch} model matches --targets {opts.targets}")
    cfg = LoraConfig(r=opts.rank, lora_alpha=opts.alpha, target_modules=sorted(names), lora_dropout=0.0,
                     bias="none", init_lora_weights=True)
    return get_peft_model(model, cfg), names


def adapter_weights(peft_model: Any, names: dict[str, str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(A, B) of every adapted module, keyed by its GGUF weight name (blk.N.attn_q.weight)."""
    out = {}
    for mod_name, mod in peft_model.named_modules():
        if hasattr(mod, "lora_A") and "default" in getattr(mod, "lora_A", {}):
            base = mod_name.removeprefix("base_model.model.")
            g = names.get(base)
            if g is None:
                continue
            out[g + ".weight"] = (mod.lora_A["default"].weight.detach().float().cpu().numpy(),
                                  mod.lora_B["default"].weight.detach().float().cpu().numpy())
    if len(out) != len(names):
        raise InternalError(f"found {len(out)} LoRA modules for {len(names)} targets")
    return out


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def prefix_groups(batch: list[Example], min_prefix: int = 16) -> list[tuple[int, list[Example]]]:
    """The batch split into groups that begin with the same prompt ids (the few-shot examples or the
    system prompt every example of a direction starts with), with the shared length; never past a
    member's first scored position. A group of one shares nothing (0)."""
    groups: list[list] = []
    for e in batch:
        for g in groups:
            k = _common_prefix(g[1][0].ids, e.ids, min(g[0], e.n_prompt - 1))
            if k >= min_prefix:
                g[0] = k
                g[1].append(e)
                break
        else:
            groups.append([e.n_prompt - 1, [e]])
    return [(p if len(g) > 1 else 0, g) for p, g in groups]


@functools.cache
def _cache_arg(model_class: type) -> str:
    """The name a model's forward takes its KV cache by: transformers 5 says `cache`, 4.x `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _inputs(rows: Any, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The model's inputs for ids: the ids themselves, or embeddings with the trained added rows."""
    return {"input_ids": ids} if rows is None else {"inputs_embeds": rows.embed(ids)}


def _head(inner: Any, rows: Any, h: torch.Tensor) -> torch.Tensor:
    return logits.head_logits(inner, h) if rows is None else rows.logits(h).float()


def _group_hidden(inner: Any, prefix: int, group: list[Example], device: torch.device, rows: Any = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states and targets at the scored positions of one group (at every position, -100
    where none is scored, in logits mode `full`). Why the shared prefix is run once: a few-shot prompt
    is ~120 of ~160 tokens, the same in every example of a direction; its keys and values are computed
    once (with gradients, the LoRA acts on them too) and repeated over the group, which is the same
    arithmetic as running every example whole, at about half the cost."""
    key = _cache_arg(type(inner.model))
    cache = None
    if prefix:
        pre = torch.tensor([group[0].ids[:prefix]], dtype=torch.long, device=device)
        cache = getattr(inner.model(**_inputs(rows, pre), use_cache=True), key)
        cache.batch_repeat_interleave(len(group))
    T = max(len(e.ids) for e in group) - prefix
    ids = torch.zeros((len(group), T), dtype=torch.long)
    mask = torch.zeros((len(group), prefix + T), dtype=torch.long)
    score = torch.zeros((len(group), T), dtype=torch.bool)
    for i, e in enumerate(group):
        ids[i, : len(e.ids) - prefix] = torch.tensor(e.ids[prefix:])
        mask[i, : len(e.ids)] = 1
        score[i, max(e.n_prompt - 1, 0) - prefix: len(e.ids) - 1 - prefix] = True  # t predicts t + 1
    ids, mask, score = ids.to(device), mask.to(device), score.to(device)
    h = inner.model(**_inputs(rows, ids), attention_mask=mask, use_cache=cache is not None,
                    **{key: cache}).last_hidden_state
    tgt = torch.roll(ids, -1, dims=1)
    if logits.mode() == "full":
        return h.reshape(-1, h.shape[-1]), torch.where(score, tgt, -100).reshape(-1)
    return h[score], tgt[score]


def example_loss(model: Any, batch: list[Example], device: torch.device, share_prefix: bool = True,
                 rows: Any = None) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the target positions of a batch (logits only where they are scored, in
    blocks: tune/logits.py). `rows`: a RowModel whose added rows are trained too (`--refine-to`)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    groups = prefix_groups(batch) if share_prefix else [(0, batch)]
    head = functools.partial(_head, inner, rows)
    params = rows.trainable() if rows is not None else []
    bound = logits.bound_head((rows.head if rows is not None else inner.lm_head).weight)
    total, n = None, 0
    for prefix, group in groups:
        h, tgt = _group_hidden(inner, prefix, group, device, rows)
        part = logits.summed_ce(h, tgt, head, params, bound)
        total = part if total is None else total + part
        n += int((tgt != -100).sum())
    return total / max(n, 1), n


@torch.no_grad()
def heldout_loss(model: Any, examples: list[Example], device: torch.device, batch: int, rows: Any = None) -> float:
    total, n = 0.0, 0
    for i in range(0, len(examples), batch):
        loss, k = example_loss(model, examples[i:i + batch], device, rows=rows)
        total += float(loss) * k
        n += k
    return total / max(n, 1)


@torch.no_grad()
def logits_check(model_path: str | Path, adapter: str | Path, peft_model: Any, examples: list[Example],
                 n_ctx: int, rows: Any = None) -> dict[str, Any]:
    """Base + adapter through llama.cpp against the float model + LoRA on the same ids: max |logit
    difference| and argmax agreement at the target positions, with and without the adapter (the
    difference without it is what quantized vs dequantized arithmetic alone gives)."""
    from gguf_trim.runtime.llama import Adapters, load_llama

    out: dict[str, Any] = {}
    inner = peft_model.get_base_model()
    for label, use in (("base", False), ("adapter", True)):
        llm = load_llama(model_path, n_ctx=n_ctx, logits_all=True)
        try:
            if use:
                Adapters(llm, model_path, [LoraSpec(Path(adapter))]).apply(llm._ctx.ctx)
            worst, agree, pos = 0.0, 0, 0
            for e in examples:
                llm.reset()
                llm.eval(e.ids)
                a = torch.from_numpy(np.array(llm.scores[: len(e.ids)], dtype=np.float32))[e.n_prompt - 1: -1]
                ids = torch.tensor([e.ids])
                ctx = peft_model.disable_adapter() if not use else contextlib.nullcontext()
                with ctx:
                    h = inner.model(**_inputs(rows, ids), use_cache=False).last_hidden_state
                    b = _head(inner, rows, h[0, e.n_prompt - 1: -1])
                worst = max(worst, float((a - b).abs().max()))
                agree += int((a.argmax(-1) == b.argmax(-1)).sum())
                pos += len(a)
        finally:
            llm.close()
        out[label] = {"max_abs_diff": round(worst, 4), "argmax_agreement": agree / max(pos, 1), "positions": pos}
    return out


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def finetune(model: str | Path, pairs: list[str | Path], output: str | Path, texts: list[str | Path] = (),
             opts: FinetuneOptions = FinetuneOptions(), log=print, refine_to: str | Path | None = None,
             resume_hint: str | None = None) -> FinetuneResult:
    """Train a LoRA adapter for translation on `pairs` (TSV/JSONL files) and write it to `output`.
    `refine_to`: also train the rows `extend` added (refine's stage, in the same run) and write
    them into that copy of `model`; the adapter is then for the copy. Checkpoints (OUTPUT.ckpt.pt,
    tune.checkpoint) by `opts.checkpoint_every`, continued with `opts.resume`; `resume_hint`: the
    command line that resumes, said on Ctrl-C."""
    from gguf_trim.extend.float_model import RowModel, load_float_model, pick_device, roundtrip
    from gguf_trim.translate.translator import Translator

    out, _ = check_output(output, model)
    if not Path(model).is_file():
        raise TrimError(f"{model}: no such file")
    added = None
    if refine_to is not None:
        refine_to, _ = check_output(refine_to, model)
        if refine_to.resolve() == out.resolve():
            raise TrimError(f"--refine-to {refine_to} is the adapter's own -o")
        with open_single(model) as g:
            added = added_rows(g)  # one line where the model was not extended
            rows0 = read_rows(g, added)
            row_types = {name: g.tensor(name).ggml_type for name in added.tensors}
    base_sha = file_sha256(model)
    fp = fingerprint(model, {"--pairs": list(pairs), "--text": list(texts)}, opts, base_sha,
                     **{"--refine-to": refine_to is not None})
    ck = Checkpointer(out, "finetune", fp, opts.checkpoint_every, opts.resume, resume_hint, log)
    langs, all_pairs = read_pair_files(list(pairs), parse_pair(opts.pair))
    data = clean_pairs(all_pairs, opts.heldout, opts.seed, langs)
    lines: list[str] = []
    for path in texts:
        try:
            lines += [" ".join(x.split()) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise TrimError(f"{path}: cannot read text ({e})") from None
    if opts.text_share and not lines:
        raise TrimError("--text-share needs --text files")
    with open_model(model) as g:
        arch, n_layer = g.arch, int(g.get(f"{g.arch}.block_count") or 0)
        untrained = g.get(EXTENDED_FROM_N_VOCAB) is not None and not any(k.startswith(REFINED_PREFIX) for k in g.fields)
    if untrained and refine_to is None:
        log(f"note: {Path(model).name} has rows `extend` added that were never trained; --refine-to trains them in "
            "this run (docs/finetune.md)")
    tr = Translator(model, n_ctx=max(512, opts.seq_len + 64), guard=False, langs=",".join(langs))
    try:
        tr.check_direction(langs[1], langs[0])  # a file trimmed to other languages could not write the answers
        both = (f"{langs[0]}-{langs[1]}", f"{langs[1]}-{langs[0]}")
        train = [render_pair(tr, a, b, d, langs) for a, b in data.train for d in both]
        held = [render_pair(tr, a, b, d, langs) for a, b in data.heldout for d in both]
        mono = [e for e in (render_text(tr, x, opts.seq_len) for x in lines) if e is not None]
        prompt_kind = tr.prompt
    finally:
        tr.close()
    too_long = sum(len(e.ids) > opts.seq_len for e in train)
    train = [e for e in train if len(e.ids) <= opts.seq_len]
    held = [e for e in held if len(e.ids) <= opts.seq_len]
    if not train or not held:
        raise TrimError(f"no example fits --seq-len {opts.seq_len} (prompt + answer)")
    ck.verify("examples", examples_digest([train, held, mono]), "the same files give other training examples (another "
              "tokenizer, template or cleaning?)")
    device = pick_device(opts.device)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    base = load_float_model(model)
    peft_model, names = add_lora(base, arch, n_layer, opts)
    rows = RowModel(peft_model.get_base_model(), added, rows0) if added is not None else None
    peft_model.to(device)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    groups = [{"params": params, "lr": opts.lr, "base_lr": opts.lr}]
    if rows is not None:
        rows.to(device)
        groups.append({"params": rows.trainable(), "lr": opts.rows_lr, "base_lr": opts.rows_lr})
    optim = torch.optim.AdamW(groups, weight_decay=0.0)
    per_example = sum(len(e.ids) - e.n_prompt for e in train) / len(train)
    steps = opts.steps or max(1, math.ceil(opts.tokens / (opts.batch * per_example)))
    rng = np.random.default_rng(opts.seed)
    t0 = time.perf_counter()
    trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
    trainable.update({f"rows.{k}": p for k, p in enumerate(rows.trainable())} if rows is not None else {})
    trained, losses, start = 0, [], 0
    if ck.state is not None:
        st = ck.restore(trainable, optim)
        rng.bit_generator.state = st["data"]["rng"]
        before, curve, trained, losses, start = st["before"], st["curve"], st["trained"], st["losses"], st["step"]
        t0 -= st["seconds"]
    else:
        before = heldout_loss(peft_model, held, device, opts.batch, rows)
        curve = [{"step": 0, "tokens": 0, "heldout_loss": round(before, 4)}]

    def snapshot() -> dict[str, Any]:
        return ck.snapshot(trainable, optim, data={"rng": rng.bit_generator.state}, before=before, curve=curve,
                           trained=trained, losses=losses, seconds=time.perf_counter() - t0)

    log(f"finetune: {len(train):,} examples ({prompt_kind} prompts, both directions), {len(held)} held out, "
        f"{len(names)} matrices, rank {opts.rank}" + (f", {len(added.ids):,} added rows" if added else "")
        + f"; {steps} steps; held-out loss {before:.4f}")
    with ck.guard():
        for step in range(start, steps):
            for grp in optim.param_groups:
                grp["lr"] = grp["base_lr"] * _lr_factor(step, steps, opts.warmup)
            n_text = int(rng.binomial(opts.batch, opts.text_share)) if mono else 0
            batch = [train[i] for i in rng.integers(0, len(train), opts.batch - n_text)]
            batch += [mono[i] for i in rng.integers(0, len(mono), n_text)] if n_text else []
            peft_model.train()
            loss, n = example_loss(peft_model, batch, device, rows=rows)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            for grp in groups:  # each on its own: the rows' gradients must not crowd out the LoRA's
                torch.nn.utils.clip_grad_norm_(grp["params"], 1.0)
            optim.step()
            trained += n
            losses.append(float(loss.detach()))
            if opts.eval_every and (step + 1) % opts.eval_every == 0 and step + 1 < steps:
                peft_model.eval()
                h = heldout_loss(peft_model, held, device, opts.batch, rows)
                curve.append({"step": step + 1, "tokens": trained, "heldout_loss": round(h, 4)})
                log(f"  step {step + 1}/{steps}: train loss {np.mean(losses[-opts.eval_every:]):.4f}, held-out "
                    f"{h:.4f}, {trained:,} tokens, {time.perf_counter() - t0:.0f} s")
            ck.step(step + 1, steps, snapshot)
    peft_model.eval()
    new_rows = None
    if rows is not None:  # from here on the float model holds the rows as the file will (quantized)
        new_rows = rows.rows()
        rows.set_rows(roundtrip(new_rows, row_types))
    after = heldout_loss(peft_model, held, device, opts.batch, rows)
    curve.append({"step": steps, "tokens": trained, "heldout_loss": round(after, 4)})
    secs = time.perf_counter() - t0
    weights = adapter_weights(peft_model.to("cpu"), names)
    if rows is not None:
        rows.to("cpu")
    target, target_sha, refined, existed = model, base_sha, {}, True
    if new_rows is not None:
        existed = refine_to.exists()
        target = write_rows(model, refine_to, new_rows, {
            "from": "finetune", "corpus": ",".join(Path(x).name for x in pairs), "tokens": trained, "steps": steps,
            "batch": opts.batch, "lr": float(opts.rows_lr), "seed": opts.seed})
        target_sha = file_sha256(target)
        refined = {"output": str(target), "rows": len(added.ids), "tensors": added.tensors,
                   "rows_lr": opts.rows_lr, "sha256": target_sha}
    meta = {"base_file": Path(target).name, "base_sha256": target_sha, "pairs": len(data.train),
            "heldout_pairs": len(data.heldout), "steps": steps, "tokens": trained, "rank": opts.rank,
            "targets": opts.targets, "heldout_loss_before": round(before, 4), "heldout_loss_after": round(after, 4)}
    check: dict[str, Any] = {}

    def verify(tmp: str) -> None:
        if not opts.check_lines:
            return
        check.update(logits_check(target, tmp, peft_model, held[: opts.check_lines], max(512, opts.seq_len + 8),
                                  rows))
        b, a = check["base"], check["adapter"]
        # The tolerance: what quantized vs dequantized arithmetic alone gives without the adapter, doubled,
        # plus 0.5; and argmax agreement at most 10 points below it.
        if a["max_abs_diff"] > 2 * b["max_abs_diff"] + 0.5 or a["argmax_agreement"] < b["argmax_agreement"] - 0.1:
            raise InternalError(f"llama.cpp with the adapter disagrees with the float model + LoRA (max |logit "
                                f"diff| {a['max_abs_diff']} vs {b['max_abs_diff']} without it)")

    try:
        write_adapter(out, arch, float(opts.alpha), weights, meta, check=verify)
    except BaseException:
        if not existed:  # the pair is one result: no refined copy without its adapter
            Path(target).unlink(missing_ok=True)
        raise
    if file_sha256(model) != base_sha:
        raise InternalError(f"{model} changed while fine-tuning")
    ck.remove()
    report = {"output": str(out), "prompt": prompt_kind, "train_pairs": len(data.train),
              "heldout_pairs": len(data.heldout), "read_pairs": data.read, "dropped": dict(data.dropped),
              "too_long_examples": too_long, "examples": len(train), "text_lines": len(mono), "steps": steps,
              "tokens_trained": trained, "seconds": round(secs, 1), "heldout_loss_before": round(before, 4),
              "heldout_loss_after": round(after, 4), "train_loss_first": round(float(np.mean(losses[:5])), 4),
              "train_loss_last": round(float(np.mean(losses[-5:])), 4), "curve": curve, "matrices": len(names),
              "logits_check": check, "base_sha256": base_sha, "device": str(device), "refined": refined}
    return FinetuneResult(out, report)
