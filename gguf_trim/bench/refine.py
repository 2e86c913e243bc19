"""`make bench-refine`'s measures, through llama.cpp only: a trimmed model, the same model extended
with compound words, and the extension refined. Bits per byte on the same held-out lines (each line
scored whole after BOS, so every model is charged for exactly the line's bytes), tokens and exact
round trips over the held-out Vietnamese text, and greedy Vietnamese generation speed in characters/s
(the extended vocabulary can write more characters per token), the models timed in turns. Bits per
byte are measured on two kinds of held-out text: the dev text (another source than the training
text) and, given the corpora and split that refine trained on, the lines refine held out of them
(the training text's own kind)."""

from __future__ import annotations

import time
from pathlib import Path

from gguf_trim.errors import TrimError
from gguf_trim.extend.rows import added_rows, open_single, split_corpora
from gguf_trim.extend.words import tokenization_report
from gguf_trim.rewrite.verify import bpb_summary, line_bits_per_file, read_lines, spread_lines
from gguf_trim.tables import markdown_table
from gguf_trim.translate.evaluate import read_pairs


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def _added_start(model: str | Path, n_vocab: int) -> int:
    """The first added (compound) id of an extended file; n_vocab for any other."""
    try:
        with open_single(model) as g:
            return int(added_rows(g).ids[0])
    except TrimError:
        return n_vocab


def decode_speeds(models: dict[str, str | Path], prompts: list[str], max_tokens: int, runs: int = 3,
                  pairs: list[str] = ()) -> dict[str, dict[str, float]]:
    """Greedy Vietnamese generation with each model, all loaded at once and timed in turns
    (A B C A B C ...), `runs` times, medians: completions of the prompts (`max_tokens` each) and
    En->Vi translations of `pairs` (the few-shot or chat prompt `translate` uses). Per task:
    characters and tokens generated per second, characters a token, how many tokens the file's
    own tokenizer spells the outputs in (fewer than were generated when the model writes
    compounds piece by piece) and how many of those are added tokens, and how many outputs equal
    the first model's. One timed pass each would mislead: the same file's decode speed moves by
    several percent from one pass to the next."""
    from gguf_trim.translate.translator import Translator

    trs = {k: Translator(m, n_ctx=1024, threads=None) for k, m in models.items()}
    starts = {k: _added_start(m, trs[k]._llm.n_vocab()) for k, m in models.items()}
    try:
        def complete(tr: Translator, p: str) -> tuple[str, int]:
            out = tr._llm.create_completion(p, max_tokens=max_tokens, temperature=0.0)
            return out["choices"][0]["text"], out["usage"]["completion_tokens"]

        def translate(tr: Translator, p: str) -> tuple[str, int]:
            t = tr.translate(p, "vi", "en")
            return t.text, t.tokens

        tasks = [("complete", complete, prompts)] + ([("translate", translate, list(pairs))] if pairs else [])
        out: dict[str, dict[str, float]] = {k: {} for k in models}
        for name, fn, items in tasks:
            texts: dict[str, list[str]] = {}
            toks: dict[str, int] = {}
            secs: dict[str, list[float]] = {k: [] for k in models}
            for tr in trs.values():
                fn(tr, items[0])  # warm-up: page the weights in
            for _ in range(runs):
                for k, tr in trs.items():
                    t0 = time.perf_counter()
                    got = [fn(tr, p) for p in items]
                    secs[k].append(time.perf_counter() - t0)
                    texts[k], toks[k] = [g[0] for g in got], sum(g[1] for g in got)
            first = next(iter(models))
            for k, tr in trs.items():
                chars, s = sum(len(t) for t in texts[k]), _median(secs[k])
                ids = [i for t in texts[k] for i in tr._llm.tokenize(t.encode(), add_bos=False, special=False)]
                spelled, compounds = len(ids), sum(i >= starts[k] for i in ids)
                out[k][name] = {"chars_per_s": chars / s, "tokens_per_s": toks[k] / s, "chars": chars,
                                "tokens": toks[k], "chars_per_token": chars / max(toks[k], 1),
                                "tokens_as_tokenized": spelled, "added_as_tokenized": compounds,
                                "outputs": len(items),
                                "same_as_" + first: sum(a == b for a, b in zip(texts[k], texts[first])),
                                "seconds": [round(x, 3) for x in secs[k]]}
        return out
    finally:
        for tr in trs.values():
            tr.close()


def bench(base: str, extended: str, refined: str, dev_vi: str, dev_en: str, lines: int, prompts: int,
          max_tokens: int, corpora: list[str] = (), heldout: int = 300, seed: int = 0, runs: int = 3,
          pairs: str | None = None, n_pairs: int = 20) -> dict:
    vi, en = read_lines(dev_vi), read_lines(dev_en)
    samples = [spread_lines(vi, lines), spread_lines(en, lines)]
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
    heads = [" ".join(x.split()[:6]) for x in spread_lines([x for x in vi if len(x.split()) >= 10], prompts)]
    sources = [en for en, _ in read_pairs(pairs, n_pairs)] if pairs else []
    out["decode"] = decode_speeds(models, heads, max_tokens, runs, sources)
    out["decode_runs"] = runs
    return out


def table(r: dict) -> str:
    held = r.get("bpb_training_heldout", {}).get("extended", {})
    cols = [("dev vi", "bpb", "vi"), ("dev en", "bpb", "en")] + [(f"held-out {n}", "bpb_training_heldout", n)
                                                               for n in held]
    bpb = [["trimmed"] + [f"{r[s]['extended'][x]['bpb_original']:.4f}" for _, s, x in cols]]
    bpb += [[k] + [f"{r[s][k][x]['bpb_trimmed']:.4f} ({r[s][k][x]['bpb_change']:+.2%})" for _, s, x in cols]
            for k in ("extended", "refined")]
    rows = [markdown_table(["model"] + [f"{c} bits/byte (vs trimmed)" for c, _, _ in cols], bpb)]
    t = r["tokens_vi"]
    rows.append("")
    rows.append(f"Held-out Vietnamese tokens: {t['trimmed']['tokens']:,} -> {t['refined']['tokens']:,} "
                f"({r['tokens_vi_change']:+.1%}), round-trip failures {t['refined']['round_trip_failures']}.")
    rows.append("")
    rows.append(f"Greedy Vietnamese generation (medians of {r.get('decode_runs', 1)} timed passes, models in turns):")
    rows.append("")
    rows.append(markdown_table(
        ["task", "model", "characters/s", "tokens/s", "characters a token",
         "outputs as the file tokenizes them (added tokens among them)", "outputs equal to the trimmed model's"],
        [[name, k, f"{d['chars_per_s']:.0f}", f"{d['tokens_per_s']:.1f}", f"{d['chars_per_token']:.2f}",
          f"{d['tokens']:,} -> {d['tokens_as_tokenized']:,} ({d.get('added_as_tokenized', '?')})",
          f"{d['same_as_trimmed']}/{d['outputs']}"] for k, tasks in r["decode"].items() for name, d in tasks.items()],
        "llrrrrr"))
    return "\n".join(rows)


if __name__ == "__main__":  # the old entry point: `gguf-trim bench refine`
    # The CLI replaces this process, named in a string: the library does not import the CLI.
    import os
    import sys

    os.execv(sys.executable, [sys.executable, "-c", "from gguf_trim.cli import main; main(prog_name='gguf-trim')",
                              "bench", "refine", *sys.argv[1:]])
