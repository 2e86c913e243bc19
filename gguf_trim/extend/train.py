"""Training the rows that `extend` added, with PyTorch (the optional `train` extra).

The model is read from the GGUF itself as a float model by transformers (`from_pretrained(...,
gguf_file=...)`, which dequantizes every tensor with gguf-py), and its logits are compared with
llama.cpp's on a few lines before any training, so what is optimised is the model llama.cpp runs.
Every weight of it is frozen. The only parameters are the added rows of token_embd (and of output
when untied): the embedding is looked up from the frozen matrix for old ids and from the trainable
rows for new ids, and the logits are the frozen rows' and the new rows' side by side. The text is
tokenized by llama.cpp on the extended file, so the ids are exactly the ones llama.cpp will see.
The loss is next-token cross-entropy; a held-out split of the same text is scored (bits per byte
of its UTF-8 text, each corpus on its own too) before and after, the "after" with the rows as they
will be written (quantized). Each training sequence comes from one corpus, drawn by default in
proportion to how often its text uses the added tokens: on Gemma-3-270m, spending half the tokens on
English (which never uses them) made the Vietnamese rows learn about half as fast, and English bits
per byte stayed the same without it.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gguf_trim.errors import TrimError
from gguf_trim.extend.float_model import (
    RowModel,
    load_float_model,
    logits_agreement,
    pick_device,
    pick_dtype,
    roundtrip,
)
from gguf_trim.extend.options import RefineOptions
from gguf_trim.extend.packing import Choices, Packer, added_share, mix_weights
from gguf_trim.extend.rows import (
    SELF_TEXT,
    added_rows,
    open_single,
    read_rows,
    sample_lines,
    self_text,
    split_corpora,
)
from gguf_trim.runtime.llama import load_llama
from gguf_trim.tune.checkpoint import Checkpointer, LineStream
from gguf_trim.tune.logits import BLOCK as LOGIT_CHUNK
from gguf_trim.tune.logits import bound_head
from gguf_trim.tune.logits import mode as logits_mode


@dataclass
class RefineReport:
    n_added: int
    tensors: list[str]
    device: str
    dtype: str
    logits_check: dict[str, Any]
    train_lines: int
    heldout_lines: int
    heldout_tokens: int
    heldout_bytes: int
    steps: int = 0
    tokens_trained: int = 0
    seconds: float = 0.0
    before: dict[str, Any] = field(default_factory=dict)  # loss, bpb, by_corpus
    after: dict[str, Any] = field(default_factory=dict)  # loss, bpb, by_corpus
    after_written: dict[str, Any] = field(default_factory=dict)  # loss, bpb, by_corpus
    curve: list[dict[str, Any]] = field(default_factory=list)
    eval_texts: list[dict[str, Any]] = field(default_factory=list)  # path, lines
    corpora: list[dict[str, Any]] = field(default_factory=list)  # path, weight, added share, lines
    choice_groups: int = 0  # first pieces with compounds (Choices)
    choice_weight: float = 0.0


# -- loss -----------------------------------------------------------------------------------------

@dataclass
class BatchLoss:
    """A batch's summed next-token loss (nats) and token count, and the choice loss (Choices):
    its summed nats, the positions it covers and how many of them are chosen right."""

    nats: float = 0.0
    n: int = 0
    choice_nats: float = 0.0
    choice_n: int = 0
    choice_right: int = 0

    def add(self, o: BatchLoss) -> None:
        self.nats += o.nats
        self.n += o.n
        self.choice_nats += o.choice_nats
        self.choice_n += o.choice_n
        self.choice_right += o.choice_right


def batch_loss(rm: RowModel, seqs: list[list[int]], device: torch.device, dtype: torch.dtype,
               train: bool, choices: Choices | None = None, choice_weight: float = 0.0) -> BatchLoss:
    """The losses of a batch. When training, gradients of the mean loss (next-token loss plus
    choice_weight times the choice loss, both per predicted token) reach the added rows; the logits
    are formed in blocks of positions, so the (positions, n_vocab) matrix never exists whole: the
    hidden states' gradient is gathered block by block and sent back through the frozen model once."""
    width = max(len(s) for s in seqs)
    ids = torch.zeros((len(seqs), width), dtype=torch.long)
    tgt = torch.full((len(seqs), width - 1), -100, dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.tensor(s)
        tgt[k, : len(s) - 1] = torch.tensor(s[1:])
    ids, tgt = ids.to(device), tgt.reshape(-1).to(device)
    n = int((tgt != -100).sum())
    amp = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    grad_ctx = nullcontext() if train else torch.no_grad()
    out = BatchLoss(n=n)
    mode = logits_mode()  # bench train-cost's switch (tune/logits.py): blocks, all at once, or a one-row head
    head = bound_head(rm.head.weight) if mode == "bound" else rm.logits
    if mode == "bound":
        tgt, choices = torch.where(tgt == -100, tgt, torch.zeros_like(tgt)), None
    with grad_ctx:
        with amp:
            h = rm.hidden(ids)[:, :-1].reshape(-1, rm.new_in.shape[1])
        hd = h.detach().requires_grad_(train and h.requires_grad)
        block = hd.shape[0] if mode == "full" else LOGIT_CHUNK
        for a in range(0, hd.shape[0], block):
            with amp:
                logits = head(hd[a:a + block])
            t = tgt[a:a + block]
            loss = F.cross_entropy(logits.float(), t, reduction="sum", ignore_index=-100)
            out.nats += float(loss.detach())
            if choices is not None:
                c_nats, c_n, c_right = choices.loss(logits, t)
                out.choice_nats += float(c_nats.detach())
                out.choice_n += c_n
                out.choice_right += c_right
                if train and choice_weight and c_n:
                    loss = loss + choice_weight * c_nats
            if train and loss.requires_grad:  # (a one-row head on a batch without added tokens has none)
                (loss / n).backward()
        if train and hd.requires_grad and hd.grad is not None:
            h.backward(hd.grad)
    return out


@dataclass
class HeldOut:
    """One corpus' held-out lines, packed, and their UTF-8 size (with newlines)."""

    name: str
    seqs: list[list[int]]
    n_bytes: int

    @classmethod
    def pack(cls, name: str, lines: list[str], packer: Packer) -> HeldOut:
        return cls(name, list(packer.sequences(iter(lines))), sum(len(x.encode()) + 1 for x in lines))


@torch.no_grad()
def evaluate(rm: RowModel, held: list[HeldOut], device: torch.device, dtype: torch.dtype,
             batch: int, extra: Sequence[HeldOut] = (), choices: Choices | None = None) -> dict[str, Any]:
    """Loss per token and bits per byte of all held-out text, and of each corpus' own; `extra`
    texts (--eval-text) get their own figures but stay out of the pooled ones. With `choices`, also
    how often the model picks the right one of a compound and its first piece (`choice`)."""
    by_corpus = {}
    pooled = BatchLoss()
    for j, h in enumerate([*held, *extra]):
        tot = BatchLoss()
        for a in range(0, len(h.seqs), batch):
            tot.add(batch_loss(rm, h.seqs[a:a + batch], device, dtype, train=False, choices=choices))
        by_corpus[h.name] = {"loss": tot.nats / max(tot.n, 1), "bpb": tot.nats / math.log(2) / max(h.n_bytes, 1),
                             "tokens": tot.n, **_choice(tot, choices)}
        if j < len(held):
            pooled.add(tot)
    n_bytes = sum(h.n_bytes for h in held)
    return {"loss": pooled.nats / max(pooled.n, 1), "bpb": pooled.nats / math.log(2) / max(n_bytes, 1),
            **_choice(pooled, choices), "by_corpus": by_corpus}


def _choice(t: BatchLoss, choices: Choices | None) -> dict[str, Any]:
    if choices is None:
        return {}
    return {"choice": {"positions": t.choice_n, "right": t.choice_right / max(t.choice_n, 1),
                       "loss": t.choice_nats / max(t.choice_n, 1)}}


def _bpbs(r: dict[str, Any]) -> str:
    """Each corpus' bits per byte, and the compound-or-piece choices it gets right where it has any."""
    return ", ".join(f"{'/'.join(Path(name).parts[-2:])} {x['bpb']:.4f}"
                     + (f" (choice {x['choice']['right']:.1%})" if x.get("choice", {}).get("positions") else "")
                     for name, x in r["by_corpus"].items())


# -- the whole run --------------------------------------------------------------------------------

def refine_rows(model_path: str | Path, corpora: list[str], opts: RefineOptions, log=print,
                checkpoint: Checkpointer | None = None) -> tuple[dict[str, np.ndarray], RefineReport]:
    """Train the added rows of `model_path` on the corpora; returns the trained rows (float32,
    as they are before quantization) and a report. `checkpoint`: saves the run now and then, and
    holds the state it resumes from (what was measured before training is taken from it)."""
    from tqdm import tqdm

    ck = checkpoint or Checkpointer(None, "refine")
    old = ck.state or {}
    torch.manual_seed(opts.seed)
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = pick_device(opts.device)
    dtype = pick_dtype(opts.dtype, device)
    if opts.seq_len < 8 or opts.batch < 1 or opts.lr <= 0:
        raise TrimError("--seq-len must be >= 8, --batch >= 1 and --lr > 0")
    with open_single(model_path) as g:
        added = added_rows(g)
        rows0 = read_rows(g, added)
        types = {name: g.tensor(name).ggml_type for name in added.tensors}
    split = split_corpora(corpora, opts.heldout_lines, opts.seed)
    held_lines = [x for _, held in split for x in held]

    t0 = time.perf_counter()
    model = load_float_model(model_path)
    rm = RowModel(model, added, rows0)
    log(f"float model: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M weights "
        f"(loaded in {time.perf_counter() - t0:.1f} s); training {len(added.ids):,} rows of "
        f"{', '.join(added.tensors)}")
    if ck.state is None:
        check_lines = _check_sample(held_lines, opts.check_lines, rm, model_path)
        check = logits_agreement(model_path, rm, check_lines) if check_lines else {}
    else:  # passed when the run began, on the same base file
        check = old["report"]["logits_check"]
    if check and ck.state is None:
        log(f"float model vs llama.cpp on {check['lines']} held-out lines ({check['positions']} positions, "
            f"{check['positions_with_new_tokens']} added tokens): max |logit diff| {check['max_abs_diff']:.3g}, "
            f"argmax agreement {check['argmax_agreement']:.1%}, bits/byte {check['bpb_llama_cpp']:.4f} (llama.cpp) "
            f"vs {check['bpb_float']:.4f} (float)")
        # Quantized matmuls move logits by a few units and flip near-ties (Gemma-3-270m Q4_K_M: max 3-4,
        # argmax 91-94%, bits/byte within 1%); a float model built wrongly (rope, norms) is far off.
        off = abs(check["bpb_float"] / check["bpb_llama_cpp"] - 1)
        if off > 0.1 or check["argmax_agreement"] < 0.5:
            raise TrimError(f"the float model does not reproduce llama.cpp's predictions (bits/byte {off:.1%} apart, "
                            f"argmax agreement {check['argmax_agreement']:.1%}); refusing to train it")

    rm.to(device)
    if dtype != torch.float32:
        rm.lower_precision(dtype)
    packer = Packer(model_path, opts.seq_len)
    try:
        held = [HeldOut.pack(name, h, packer) for name, (_, h) in zip(corpora, split)]
        watched = [sample_lines(p, opts.heldout_lines, opts.seed) for p in opts.eval_texts]
        extra = [HeldOut.pack(name, h, packer) for name, h in zip(opts.eval_texts, watched)]
        shares = [added_share(packer, train, rm.start) for train, _ in split]
        names, mix = list(corpora), opts.mix
        if opts.self_text:
            t1 = time.perf_counter()
            gen = old["self_text"] if ck.state else self_text(
                model_path, rm.start, [x for (train, _), a in zip(split, shares) if a > 0 for x in train],
                opts.self_text, opts.self_text_tokens, opts.seed)
            log(f"self-text: {len(gen):,} greedy continuations of training line heads by the model without its "
                f"added tokens ({time.perf_counter() - t1:.0f} s" + (", from the checkpoint)" if ck.state else ")"))
            if len(gen) >= 2:  # trained on like a corpus; its held-out lines scored on their own
                k = max(1, min(opts.heldout_lines, len(gen) // 20))
                split.append((gen[k:], gen[:k]))
                names.append(SELF_TEXT)
                extra.append(HeldOut.pack(SELF_TEXT, gen[:k], packer))
                shares.append(added_share(packer, gen[k:], rm.start))
            elif isinstance(mix, list) and len(mix) > len(corpora):
                mix = mix[: len(corpora)]
        weights = mix_weights(mix, shares, [len(train) for train, _ in split], SELF_TEXT in names)
        report = RefineReport(len(added.ids), added.tensors, str(device), str(dtype).replace("torch.", ""), check,
                              sum(len(train) for train, _ in split), len(held_lines),
                              sum(len(s) - 1 for h in held for s in h.seqs), sum(h.n_bytes for h in held))
        report.corpora = [{"path": name, "weight": w, "added_share": a, "train_lines": len(train),
                           "heldout_lines": len(h)} for name, w, a, (train, h) in zip(names, weights, shares, split)]
        report.eval_texts = [{"path": name, "lines": len(h)} for name, h in zip(opts.eval_texts, watched)]
        log("training text: " + ", ".join(f"{Path(c['path']).name} {c['weight']:.0%} of sequences "
                                          f"({c['added_share']:.1%} added tokens)" for c in report.corpora))
        choices = Choices.for_added(packer.llm, added).to(device)
        report.choice_groups, report.choice_weight = choices.n_groups, opts.choice_weight
        log(f"choice loss (weight {opts.choice_weight:g}): {len(added.ids):,} compounds in {choices.n_groups:,} groups "
            "by first piece")
        if ck.state is not None:
            for k in ("before", "curve", "steps", "tokens_trained", "seconds"):
                setattr(report, k, old["report"][k])
        else:
            report.before = evaluate(rm, held, device, dtype, opts.batch, extra, choices)
            report.curve.append({"step": 0, "tokens": 0, **report.before})
        log(f"held-out ({len(held_lines):,} lines, {report.heldout_tokens:,} tokens): loss "
            f"{report.before['loss']:.4f}, {report.before['bpb']:.4f} bits/byte before ({_bpbs(report.before)})")
        steps = opts.steps or max(1, math.ceil(opts.tokens / (opts.batch * opts.seq_len)))
        opt = torch.optim.Adam(rm.trainable(), lr=opts.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps, opts.warmup))
        streams = [LineStream(packer, train, opts.seed + k) for k, (train, _) in enumerate(split)]
        draw = random.Random(opts.seed)
        params = dict(zip(added.tensors, rm.trainable()))
        if ck.state is not None:
            ck.restore(params, opt, sched)
            draw.setstate(old["draw"])
            for stream, st in zip(streams, old["streams"]):
                stream.set_state(st)

        def snapshot() -> dict[str, Any]:
            report.seconds = done_before + time.perf_counter() - t_train
            so_far = json.loads(json.dumps(asdict(report), default=float))  # plain types: torch.load(weights_only)
            return ck.snapshot(params, opt, sched, draw=draw.getstate(), streams=[s.state() for s in streams],
                               self_text=gen if opts.self_text else [], report=so_far)

        bar = tqdm(total=steps, initial=report.steps, disable=not opts.progress, unit="step", dynamic_ncols=True)
        ema, t_train, done_before, tokens_before = None, time.perf_counter(), report.seconds, report.tokens_trained
        with ck.guard():
            for step in range(report.steps + 1, steps + 1):
                seqs = [next(streams[draw.choices(range(len(streams)), weights)[0]]) for _ in range(opts.batch)]
                opt.zero_grad(set_to_none=True)
                b = batch_loss(rm, seqs, device, dtype, train=True, choices=choices, choice_weight=opts.choice_weight)
                nats, n = b.nats, b.n
                opt.step()
                sched.step()
                report.steps, report.tokens_trained = step, report.tokens_trained + n
                ema = nats / n if ema is None else 0.95 * ema + 0.05 * nats / n
                rate = (report.tokens_trained - tokens_before) / (time.perf_counter() - t_train)
                bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{rate:.0f}")
                bar.update()
                if not opts.progress and (step % 20 == 0 or step == steps):  # a log file gets a line now and then
                    log(f"step {step}/{steps}: {report.tokens_trained:,} tokens, loss {ema:.4f}, {rate:.0f} tokens/s")
                if opts.eval_every and step % opts.eval_every == 0 and step < steps:
                    r = evaluate(rm, held, device, dtype, opts.batch, extra, choices)
                    report.curve.append({"step": step, "tokens": report.tokens_trained, **r})
                    msg = (f"step {step}: {report.tokens_trained:,} tokens, held-out loss {r['loss']:.4f}, "
                           f"{r['bpb']:.4f} bits/byte ({_bpbs(r)})")
                    if opts.progress:  # above the bar; a log file gets it through `log` (stdout is buffered)
                        bar.write(msg, file=sys.stderr)
                    else:
                        log(msg)
                ck.step(step, steps, snapshot)
        bar.close()
        report.seconds = done_before + time.perf_counter() - t_train
        rows = rm.rows()
        report.after = evaluate(rm, held, device, dtype, opts.batch, extra, choices)
        rm.set_rows(roundtrip(rows, types))
        report.after_written = evaluate(rm, held, device, dtype, opts.batch, extra, choices)
        report.curve.append({"step": report.steps, "tokens": report.tokens_trained, **report.after_written})
        log(f"held-out: loss {report.before['loss']:.4f} -> {report.after['loss']:.4f} "
            f"({report.after_written['loss']:.4f} with the rows quantized as written), bits/byte "
            f"{report.before['bpb']:.4f} -> {report.after_written['bpb']:.4f} ({_bpbs(report.after_written)}); "
            f"{report.tokens_trained:,} tokens in "
            f"{report.seconds:.0f} s ({report.tokens_trained / max(report.seconds, 1e-9):.0f} tokens/s, {device}, "
            f"{report.dtype})")
    finally:
        packer.close()
    return rows, report


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine down to 10% at the last step."""
    return min(1.0, (step + 1) / max(1, warmup)) * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))


def _check_sample(lines: list[str], n: int, rm: RowModel, path: str | Path) -> list[str]:
    """Up to n held-out lines for the llama.cpp comparison, those with added tokens first."""
    if n <= 0:
        return []
    llm = load_llama(path, vocab_only=True)
    try:
        scored = [(not any(i >= rm.start for i in llm.tokenize(x.encode(), add_bos=False, special=False)), k)
                  for k, x in enumerate(lines[: 20 * n])]
    finally:
        llm.close()
    return [lines[k] for _, k in sorted(scored)[:n]]
