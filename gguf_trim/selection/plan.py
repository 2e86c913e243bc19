"""Plans: the reviewable list of kept tokens, one JSON line each, that `trim --plan` applies.

The first line is a header naming the vocabulary by sha256, so a plan made for one
tokenizer can never be applied to another (ids would silently point at other tokens).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gguf_trim.errors import TrimError
from gguf_trim.files import atomic_write
from gguf_trim.langs import language_set
from gguf_trim.selection.selection import Selection, close, judge_vocab, required_ids
from gguf_trim.vocab.vocabulary import Vocab

PLAN_FORMAT = 1


def write_plan(path: str | Path, sel: Selection, source: str = "") -> None:
    vocab = sel.vocab
    header = {"gguf_trim_plan": PLAN_FORMAT, "vocab_sha256": vocab.sha256, "n_vocab": vocab.n,
              "tokenizer": vocab.model, "pre": vocab.pre, "source": source, "langs": ",".join(sel.langs),
              "profile": sel.profile, "n_kept": sel.n_kept, "closure_added": len(sel.closure_added),
              "kept_by_reason": sel.summary(), **({"selection": sel.info} if sel.info else {})}
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(header, ensure_ascii=False) + "\n")
        for new_id, i in enumerate(sel.kept_ids.tolist()):
            f.write(json.dumps({"new_id": new_id, "id": i, "text": vocab.display(i),
                                "token": vocab.stored_text(i), "why": sel.why.get(i, "plan"),
                                **sel.detail.get(i, {})},
                               ensure_ascii=False) + "\n")


def read_plan(path: str | Path, vocab: Vocab) -> Selection:
    """Apply a (possibly hand-edited) plan: its token lines are the kept set, ids as in the source.
    Removing a special/byte token or one a kept token is built from is refused."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").split("\n")  # not splitlines(): tokens may hold U+2028, U+0085...
    except (OSError, UnicodeDecodeError) as e:
        raise TrimError(f"{p}: cannot read plan ({e})") from None
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("gguf_trim_plan") != PLAN_FORMAT:
        raise TrimError(f"{p}: not a gguf-trim plan (first line must be its JSON header)")
    if header.get("vocab_sha256") != vocab.sha256:
        raise TrimError(f"{p}: plan was made for another vocabulary ({header.get('source') or 'unknown'}, "
                        f"{header.get('n_vocab')} tokens, sha256 {str(header.get('vocab_sha256'))[:12]}...) "
                        f"than {vocab.source} ({vocab.n} tokens, sha256 {vocab.sha256[:12]}...)")
    keep = np.zeros(vocab.n, dtype=bool)
    why: dict[int, str] = {}
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            i = obj["id"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise TrimError(f"{p}:{n}: each plan line needs an \"id\"") from None
        if not isinstance(i, int) or not 0 <= i < vocab.n:
            raise TrimError(f"{p}:{n}: id {i!r} is outside this vocabulary (0..{vocab.n - 1})")
        keep[i] = True
        why[i] = obj.get("why") if isinstance(obj.get("why"), str) else "plan"
    for i, reason in required_ids(vocab).items():
        if not keep[i]:
            raise TrimError(f"{p}: the plan removes token {i} {vocab.display(i)!r}, a {reason} token that "
                            "llama.cpp needs; put it back")
    langs = language_set(str(header.get("langs", "en,vi"))).codes
    allowed, _ = judge_vocab(vocab, language_set(langs).chars)
    sel = Selection(vocab, keep, why, allowed, {i: "plan" for i in np.flatnonzero(~keep).tolist()},
                    langs=langs, profile=str(header.get("profile", "plan")))
    close(sel, refuse=set(np.flatnonzero(~keep).tolist()), refuse_reason="the plan removes it")
    return sel
