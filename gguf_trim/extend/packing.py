"""Training data for `refine` (the optional `train` extra): lines packed into token sequences by
llama.cpp's tokenizer, how often each corpus is drawn, and the compound-or-first-piece choices."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from gguf_trim.errors import TrimError
from gguf_trim.extend.rows import AddedRows
from gguf_trim.runtime.llama import load_llama

# -- data -----------------------------------------------------------------------------------------

def added_share(packer: Packer, lines: list[str], start: int, sample: int = 200) -> float:
    """Share of the tokens of (a sample of) these lines that are added tokens."""
    ids = [i for line in lines[:sample] for i in packer.tokens(line)]
    return sum(i >= start for i in ids) / max(len(ids), 1)


# --mix auto's share of sequences for the self-text: in the 1M-token bench run that drew it by its share of
# added tokens (54%), the human text got half of the steps and dev Vietnamese fell behind the run without it
# after 400k tokens; a quarter leaves the human text three quarters of the steps.
SELF_TEXT_SHARE = 0.25


def mix_weights(mix: str | list[float], shares: list[float], train_lines: list[int],
                self_text: bool = False) -> list[float]:
    """Each corpus' probability of being drawn for a training sequence (see refine.parse_mix);
    `self_text`: the last corpus is the self-text, which `auto` draws for SELF_TEXT_SHARE of them
    when it holds added tokens."""
    if mix == "auto":
        human = shares[:-1] if self_text else list(shares)
        w = list(human) if sum(human) > 0 else [1.0] * len(human)
        if self_text:  # (self-text without added tokens teaches nothing the others do not)
            own = SELF_TEXT_SHARE if shares[-1] > 0 else 0.0
            total = sum(w)
            w = [x / total * (1 - own) for x in w] + [own]
    elif mix == "lines":
        w = [float(n) for n in train_lines]
    else:
        w = list(mix)
    return [x / sum(w) for x in w]


class Packer:
    """Token sequences of seq_len+1 ids: BOS, then lines tokenized one by one by llama.cpp, each
    followed by the newline token(s); a line cut at a sequence end goes on after BOS in the next."""

    def __init__(self, path: str | Path, seq_len: int):
        self.llm = load_llama(path, vocab_only=True)
        self.bos = self.llm.token_bos() if self.llm.token_bos() >= 0 else self.llm.token_eos()
        self.nl = self.llm.tokenize(b"\n", add_bos=False, special=False)
        if not self.nl:
            raise TrimError(f"{path}: the vocabulary cannot encode a newline")
        self.seq_len = seq_len

    def close(self) -> None:
        self.llm.close()

    def tokens(self, line: str) -> list[int]:
        return self.llm.tokenize(line.encode(), add_bos=False, special=False) + self.nl

    def sequences(self, lines: Iterator[str]) -> Iterator[list[int]]:
        buf = [self.bos]
        for line in lines:
            buf.extend(self.tokens(line))
            while len(buf) >= self.seq_len + 1:
                yield buf[: self.seq_len + 1]
                buf = [self.bos] + buf[self.seq_len + 1:]
        if len(buf) > 1:
            yield buf


def cycle_lines(lines: list[str], seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    order = list(lines)
    while True:
        yield from order
        rng.shuffle(order)


# -- the compound-or-first-piece choice ------------------------------------------------------------

class Choices:
    """Each added compound and the old token it competes with when the model writes it: the first
    piece of its first word (" học" for " học sinh"), grouped by that piece.

    Why: every old row is frozen, so after the model writes " học" it still predicts " sinh" as the
    original model did. Next-token cross-entropy leaves part of the compound's probability on the
    first piece (it cannot take it away from a frozen row), and greedy decoding then often writes
    the compound piece by piece, in more tokens than the tokenizer would use. The choice loss is
    the cross-entropy of the next token among its group only ({" học", " học sinh", " học tập",
    ...}) at the positions whose target is in a group: the model's answer to "the text goes on
    with ' học'; as which token?", whose optimum puts a compound above its piece exactly when the
    compound is the likelier continuation."""

    def __init__(self, first: dict[int, int], n_vocab: int):
        groups: dict[int, list[int]] = {}
        for c, a in sorted(first.items()):
            groups.setdefault(a, [a]).append(c)
        width = max((len(m) for m in groups.values()), default=1)
        self.n_groups = len(groups)
        self.row = torch.full((n_vocab,), -1, dtype=torch.long)
        self.col = torch.zeros(n_vocab, dtype=torch.long)
        self.members = torch.zeros((max(1, len(groups)), width), dtype=torch.long)
        self.valid = torch.zeros((max(1, len(groups)), width), dtype=torch.bool)
        for g, m in enumerate(groups.values()):
            self.members[g, : len(m)] = torch.tensor(m)
            self.valid[g, : len(m)] = True
            self.row[m] = g
            self.col[m] = torch.arange(len(m))

    @classmethod
    def for_added(cls, llm, added: AddedRows) -> Choices:
        """Tokenize each compound's first word (with its leading space) on the extended file: a
        single word holds no compound, so its first token is the piece the model would write."""
        start = int(added.ids[0])
        first = {}
        for i, text in zip(added.ids, added.texts):
            words = text.split()
            if len(words) < 2:
                continue
            lead = text[: len(text) - len(text.lstrip())]
            ids = llm.tokenize((lead + words[0]).encode(), add_bos=False, special=False)
            if ids and ids[0] < start:
                first[int(i)] = ids[0]
        return cls(first, added.n_vocab)

    def to(self, device: torch.device) -> Choices:
        for name in ("row", "col", "members", "valid"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def loss(self, logits: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Summed choice loss over the positions whose target is in a group, their count, and how
        many of them the logits already choose right (argmax within the group)."""
        safe = tgt.clamp(min=0)
        g = torch.where(tgt >= 0, self.row[safe], torch.full_like(tgt, -1))
        pos = (g >= 0).nonzero(as_tuple=True)[0]
        if len(pos) == 0:
            return logits.new_zeros(()), 0, 0
        rows = g[pos]
        z = logits[pos.unsqueeze(1), self.members[rows]].float()
        z = z.masked_fill(~self.valid[rows], float("-inf"))
        cols = self.col[safe[pos]]
        nats = F.cross_entropy(z, cols, reduction="sum")
        return nats, len(pos), int((z.argmax(-1) == cols).sum())
