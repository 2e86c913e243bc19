"""`make bench-refine`'s measures, through llama.cpp only: a trimmed model, the same model extended
with compound words, and the extension refined. Bits per byte on the same held-out lines (each line
scored whole after BOS, so every model is charged for exactly the line's bytes), tokens and exact
round trips over the held-out Vietnamese text, and greedy Vietnamese decode speed in characters/s
(the extended vocabulary writes more characters per token). Bits per byte are measured on two kinds
of held-out text: the dev text (another source than the training text) and, given the corpora and
split that refine trained on, the lines refine held out of them (the training text's own kind)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .extend import tokenization_report
from .refine import split_corpora
from .verify import _spread, bpb_summary, line_bits_per_file, load_llama, read_lines


def decode_speed(model: str | Path, prompts: list[str], max_tokens: int) -> dict[str, float]:
    """Greedy completions of the prompts: characters and tokens generated per second."""
    llm = load_llama(model, n_ctx=512)
    try:
        llm.create_completion(prompts[0], max_tokens=8, temperature=0.0)  # warm-up
        chars = toks = 0
        t0 = time.perf_counter()
        for p in prompts:
            out = llm.create_completion(p, max_tokens=max_tokens, temperature=0.0)
            chars += len(out["choices"][0]["text"])
            toks += out["usage"]["completion_tokens"]
        secs = time.perf_counter() - t0
    finally:
        llm.close()
    return {"chars_per_s": chars / secs, "tokens_per_s": toks / secs, "chars": chars, "tokens": toks}


def bench(base: str, extended: str, refined: str, dev_vi: str, dev_en: str, lines: int, prompts: int,
          max_tokens: int, corpora: list[str] = (), heldout: int = 300, seed: int = 0) -> dict:
    vi, en = read_lines(dev_vi), read_lines(dev_en)
    samples = [_spread(vi, lines), _spread(en, lines)]
    held = [h for _, h in split_corpora(list(corpora), heldout, seed)] if corpora else []
    models = {"trimmed": base, "extended": extended, "refined": refined}
    bits = {k: line_bits_per_file(m, samples + held) for k, m in models.items()}
    out: dict = {"models": models, "bpb_lines_per_language": lines, "bpb": {}, "bpb_training_heldout": {}}
    for k in ("extended", "refined"):
        out["bpb"][k] = {lang: bpb_summary(bits["trimmed"][i], bits[k][i]) for i, lang in enumerate(("vi", "en"))}
        out["bpb_training_heldout"][k] = {Path(c).name: bpb_summary(bits["trimmed"][2 + i], bits[k][2 + i])
                                          for i, c in enumerate(corpora)}
    tok = {k: tokenization_report(models[k], vi) for k in ("trimmed", "refined")}
    out["tokens_vi"] = {k: {x: v[x] for x in ("lines", "tokens", "tokens_per_syllable", "round_trip_failures",
                                               "tokenize_mb_s")} for k, v in tok.items()}
    out["tokens_vi_change"] = tok["refined"]["tokens"] / tok["trimmed"]["tokens"] - 1
    heads = [" ".join(x.split()[:6]) for x in _spread([x for x in vi if len(x.split()) >= 10], prompts)]
    out["decode"] = {k: decode_speed(models[k], heads, max_tokens) for k in ("trimmed", "refined")}
    return out


def table(r: dict) -> str:
    held = r.get("bpb_training_heldout", {}).get("extended", {})
    cols = [("dev vi", "bpb", "vi"), ("dev en", "bpb", "en")] + [(f"held-out {n}", "bpb_training_heldout", n)
                                                               for n in held]
    rows = ["| model | " + " | ".join(f"{c} bits/byte (vs trimmed)" for c, _, _ in cols) + " |",
            "|---" * (len(cols) + 1) + "|"]
    rows.append("| trimmed | " + " | ".join(f"{r[s]['extended'][x]['bpb_original']:.4f}" for _, s, x in cols) + " |")
    for k in ("extended", "refined"):
        rows.append(f"| {k} | " + " | ".join(f"{r[s][k][x]['bpb_trimmed']:.4f} ({r[s][k][x]['bpb_change']:+.2%})"
                                            for _, s, x in cols) + " |")
    t, d = r["tokens_vi"], r["decode"]
    rows.append("")
    rows.append(f"Held-out Vietnamese tokens: {t['trimmed']['tokens']:,} -> {t['refined']['tokens']:,} "
                f"({r['tokens_vi_change']:+.1%}), round-trip failures {t['refined']['round_trip_failures']}; "
                f"greedy Vietnamese decode {d['trimmed']['chars_per_s']:.0f} -> {d['refined']['chars_per_s']:.0f} "
                f"characters/s ({d['trimmed']['tokens_per_s']:.1f} -> {d['refined']['tokens_per_s']:.1f} tokens/s).")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("trimmed")
    ap.add_argument("extended")
    ap.add_argument("refined")
    ap.add_argument("--vi", required=True, help="held-out Vietnamese text, a line per segment")
    ap.add_argument("--en", required=True, help="held-out English text")
    ap.add_argument("--lines", type=int, default=200, help="lines per language scored for bits per byte")
    ap.add_argument("--corpus", action="append", default=[],
                    help="a corpus refine trained on, in refine's order: its held-out lines are scored too")
    ap.add_argument("--heldout", type=int, default=300, help="refine's --heldout")
    ap.add_argument("--seed", type=int, default=0, help="refine's --seed")
    ap.add_argument("--prompts", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    r = bench(a.trimmed, a.extended, a.refined, a.vi, a.en, a.lines, a.prompts, a.max_tokens, a.corpus, a.heldout,
              a.seed)
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1, ensure_ascii=False), encoding="utf-8")
    print(table(r))


if __name__ == "__main__":
    main()
