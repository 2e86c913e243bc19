"""Side-by-side evaluation of translation models: chrF/BLEU (sacrebleu), characters outside the
model's languages, the detected language of every output, tokens per second; and the pair files it
reads (English<TAB>Vietnamese, or X<TAB>Y under a first line naming the two codes, e.g. en<TAB>ja).
llama.cpp is loaded only by `evaluate`."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError
from gguf_trim.tables import markdown_table
from gguf_trim.translate.options import N_CTX_FILE, TranslatorOptions
from gguf_trim.translate.prompts import header_codes, split_direction

EN_VI = ("en", "vi")


def read_pair_table(path: str | Path, n: int | None = None) -> tuple[tuple[str, str], list[tuple[str, str]]]:
    """The pairs' two languages and the pairs X<TAB>Y[<TAB>...]: the languages from a first line that
    names two known codes (en<TAB>ja), else en,vi; the first n pairs, spread over the file when n is smaller."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) >= 2]
    except OSError as e:
        raise TrimError(f"{path}: cannot read ({e.strerror})") from None
    codes = header_codes(rows[0]) if rows else None
    if codes:
        rows = rows[1:]
    if not rows:
        raise TrimError(f"{path}: no {'<TAB>'.join(codes) if codes else 'English<TAB>Vietnamese'} pairs")
    if n and n < len(rows):
        step = len(rows) / n
        rows = [rows[int(i * step)] for i in range(n)]
    return codes or EN_VI, [(r[0], r[1]) for r in rows]


def read_pairs(path: str | Path, n: int | None = None) -> list[tuple[str, str]]:
    """The pairs of read_pair_table alone (English<TAB>Vietnamese where the file names no languages)."""
    return read_pair_table(path, n)[1]


def pair_directions(directions: Iterable[str], langs: tuple[str, str] = EN_VI,
                    path: str | Path | None = None) -> list[tuple[str, str]]:
    """--direction values as (src, dst) codes; none given: both directions of the pairs' languages. A
    one-line TrimError for a direction that is not one of the pairs'."""
    out = [split_direction(d) for d in directions] or [langs, langs[::-1]]
    for src, dst in out:
        if {src, dst} != set(langs):
            where = f"{path} holds" if path else "the pairs are"
            raise TrimError(f"--direction {src}-{dst}: {where} {langs[0]}<TAB>{langs[1]} pairs (a first line naming "
                            "two codes, e.g. en<TAB>ja, sets their languages)")
    return out


def evaluate(spec: str, pairs: list[tuple[str, str]], directions: Iterable[str] = (),
             temperature: float = 0.0, seed: int | None = None, threads: int | None = None,
             progress: bool = False, sequential: bool = False, parallel: int | None = None,
             n_ctx: int = 4096, langs: tuple[str, str] = EN_VI, **translator_options: Any) -> dict[str, Any]:
    """One model (`path`, `path:guard` or `path:noguard`) over the pairs (`langs`: their two languages,
    in column order), each direction (default: both ways): chrF, BLEU, foreign characters, the detected
    language of every output and the share in the wrong one. Batched decoding unless `sequential` (the
    one-at-a-time path, for comparison)."""
    import sacrebleu

    from gguf_trim.runtime.langid import detector
    from gguf_trim.translate.translator import Translation, Translator

    directions = [f"{s}-{d}" for s, d in pair_directions(directions, langs)]
    det = detector()
    path, _, mode = spec.partition(":")
    guard = {"": None, "guard": True, "noguard": False}.get(mode)
    if mode and guard is None:
        raise TrimError(f"{spec}: suffix must be :guard or :noguard")
    tr = Translator(path, temperature=temperature, seed=seed, guard=guard, threads=threads, n_ctx=n_ctx,
                    langs=",".join(langs), **translator_options)  # langs: for a file gguf-trim did not trim
    try:
        for d in directions:
            src, dst = split_direction(d)
            tr.check_direction(dst, src)  # a trimmed file's own set: one line before any decoding
    except TrimError:
        tr.close()
        raise
    opts = {k: asdict(v) if is_dataclass(v) else v for k, v in {**translator_options, "style": tr.style}.items()}
    if opts.get("lora"):
        opts["lora"] = [{"path": str(x.path), "scale": x.scale} for x in opts["lora"]]
    result: dict[str, Any] = {"model": spec, "guard": tr._guard is not None, "prompt": tr.prompt,
                              "temperature": temperature, "seed": seed, "decoding": "sequential" if sequential
                              else "batched", "options": opts, "directions": {}}
    try:
        for direction in directions:
            src, dst = split_direction(direction)
            sources = [a if src == langs[0] else b for a, b in pairs]
            refs = [b if dst == langs[1] else a for a, b in pairs]
            if sequential:
                outs: Iterable[Translation] = (tr.translate(text, dst, src) for text in sources)
            else:
                outs = tr.translate_many(sources, dst, src, parallel=parallel)
            if progress:
                from tqdm import tqdm

                outs = tqdm(outs, total=len(sources), desc=f"{Path(path).name} {direction}", unit="seg",
                            leave=False)
            done = list(outs)
            hyps = [t.text for t in done]
            tokens, secs = sum(t.tokens for t in done), sum(t.seconds for t in done)
            confused = [{"source": t.source, "output": t.text} for t in done if tr.foreign_chars(t.text)]
            foreign = sum(len(tr.foreign_chars(h)) for h in hyps)
            checked = [det.check(h, dst, tr.langs) for h in hyps]
            out_langs = [g for g, _ in checked]
            wrong = [{"source": t.source, "output": t.text, "lang": g}
                     for t, (g, bad) in zip(done, checked) if bad]
            chars = sum(len(h) for h in hyps)
            result["directions"][direction] = {
                "segments": len(hyps), "chrf": sacrebleu.corpus_chrf(hyps, [refs]).score,
                "bleu": sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score,
                "foreign_chars": foreign, "foreign_char_rate": foreign / chars if chars else 0.0,
                "outputs_with_foreign": len(confused), "examples_with_foreign": confused[:5],
                "wrong_lang": len(wrong), "wrong_lang_share": len(wrong) / len(hyps) if hyps else 0.0,
                "lang_counts": dict(Counter(out_langs).most_common()), "examples_wrong_lang": wrong[:5],
                "reasked": sum(1 for t in done if t.reasked),
                "tokens": tokens, "tok_per_s": tokens / secs if secs else 0.0,
                "outputs": hyps, "langs": out_langs}
    finally:
        tr.close()
    return result


def evaluate_models(models: list[str], pairs_path: str | Path, n_pairs: int | None,
                    directions: Iterable[str], opts: TranslatorOptions, sequential: bool = False,
                    parallel: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
    """`gguf-trim eval-translate`: `evaluate` of each model on the same pairs (`n_pairs` of the file,
    spread over it) with the same options (guard and prompt: each model's own, or its :guard suffix)."""
    langs, data = read_pair_table(pairs_path, n_pairs)
    directions = [f"{s}-{d}" for s, d in pair_directions(directions, langs, pairs_path)]  # before any model loads
    return [evaluate(m, data, directions, opts.temperature, opts.seed, opts.threads, progress=progress,
                     sequential=sequential, parallel=parallel, n_ctx=opts.n_ctx or N_CTX_FILE, langs=langs,
                     style=opts.style,
                     reask=opts.reask, flash_attn=opts.flash_attn, lora=opts.translator_kwargs()["lora"])
            for m in models]


def table(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        o = r.get("options", {})
        flags = [k for k in ("shots", "lang_prefix") if o.get("style", {}).get(k)]
        flags += ["reask"] if o.get("reask") else []
        flags += [f"lora {Path(str(x['path'])).name}:{x['scale']:g}" for x in o.get("lora") or ()]
        name = Path(r["model"].split(":")[0]).name + (f" ({', '.join(flags)})" if flags else "")
        for d, x in r["directions"].items():
            rows.append([name, "on" if r["guard"] else "off", d, f"{x['chrf']:.2f}", f"{x['bleu']:.2f}",
                         f"{x['outputs_with_foreign']}/{x['segments']}", f"{x['foreign_char_rate']:.5f}",
                         f"{x['wrong_lang']}/{x['segments']}", f"{x['tok_per_s']:.1f}"])
    return markdown_table(["model", "guard", "direction", "chrF", "BLEU", "outputs with foreign chars",
                           "foreign char rate", "wrong language", "tok/s"], rows, "lllrrrrrr")
