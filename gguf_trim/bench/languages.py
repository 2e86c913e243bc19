"""Every language set measured the same way (`make bench-languages`, docs/languages.md).

Why: `--langs` takes any set, and what en,vi showed (a lossless trim, a smaller and faster file, no foreign
output in stock llama-server with the suppress list) has to be shown set by set, not assumed. For each set
en+X and each model:

a. the lossless trim (plus a `--no-suppress` one for the adversarial part): kept tokens, file size, the
   suppress list's size and which byte tokens (lead bytes) it holds;
b. tokenization fidelity (rewrite/verify.py) on the first lines of models/langs/X.txt and the English
   column of en-X.tsv, and the logits at the kept ids on a few of them;
c. decode tok/s, original against trimmed (bench/infer.py's fresh-process runs, interleaved);
d. chat models only (a base model has no chat template to ask it with): langs/phrases.py's ADVERSARIAL[X]
   prompts, each seed once, at one high temperature, in stock llama-server (runtime/server.py): the original,
   the trim without the list, with it, with it plus the set's grammar; and gguf-trim's own path (script
   guard, bench/runtimes.py's PythonChat). Outputs with a character outside the set are counted, and for the
   list alone the foreign characters are split by UTF-8 lead byte: one no allowed character starts with
   ("unshared": the list bans that byte token, so the goal is 0) or one they share, which only a stateful
   constraint (grammar, guard) can stop: kana after 0xE3 for en,ko, Chinese-only Han after 0xE4-0xE9 for
   en,ja (counted on their own for sets with Japanese).

    gguf-trim bench languages MODEL... [--sets vi,ko,ja] --json languages.json --md languages.md
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from gguf_trim.bench.runtimes import SAMPLING, PythonChat, foreign_outputs, grammar_text, trimmed_name
from gguf_trim.errors import TrimError
from gguf_trim.langs import LanguageSet, language_set
from gguf_trim.langs.phrases import ADVERSARIAL
from gguf_trim.langs.report import lead_bytes
from gguf_trim.tables import markdown_table

DEFAULT_SETS = ("vi", "ko", "ja", "ru", "th", "hi", "ar", "zh-Hans", "fr", "de", "es", "uk", "fa", "bn")
TEXTS_DIR = Path(__file__).resolve().parents[2] / "models" / "langs"
COLUMNS = ("original", "no list", "list", "list + grammar", "guard")
SERVER_COLUMNS = COLUMNS[:4]
LINES, LOGITS, RUNS, N_GEN, N_PROMPT = 300, 4, 3, 64, 16
SEEDS, TEMPERATURE, MAX_TOKENS, PARALLEL = 8, 1.2, 32, 8
Log = Callable[[str], None]


def set_texts(code: str, folder: str | Path = TEXTS_DIR, lines: int = LINES) -> tuple[list[str], list[str]]:
    """(the first `lines` lines of X.txt, the English column of the first `lines` lines of en-X.tsv)."""
    folder = Path(folder)
    try:
        own = [t for t in (folder / f"{code}.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
        pairs = (folder / f"en-{code}.tsv").read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise TrimError(f"no text for {code} in {folder} ({e.strerror}): run `make lang-texts`") from None
    en = [p.split("\t")[0] for p in pairs if p.split("\t")[0].strip()]
    return own[:lines], en[:lines]


@cache
def chinese_only(ch: str) -> bool:
    """A Han character Chinese writes (GB 2312) and Japanese does not (JIS X 0208/0213)."""
    if not 0x3400 <= ord(ch) <= 0x9FFF:
        return False
    try:
        ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    try:
        ch.encode("euc_jis_2004")
    except UnicodeEncodeError:
        return True
    return False


def split_foreign(texts: Iterable[str], lset: LanguageSet) -> dict[str, int]:
    """Foreign characters of the outputs by lead byte: unshared with every allowed character, or shared;
    and the Chinese-only Han among them."""
    leads = lead_bytes(lset.chars)
    out = {"unshared_lead": 0, "shared_lead": 0, "chinese_only_han": 0}
    for text in texts:
        for ch in lset.chars.foreign(text):
            out["shared_lead" if leads[ch.encode("utf-8")[0]] else "unshared_lead"] += 1
            out["chinese_only_han"] += chinese_only(ch)
    return out


def has_chat_template(model: str | Path) -> bool:
    from gguf_trim.format.shards import open_model

    with open_model(model) as g:
        return "tokenizer.chat_template" in g.fields


def trim_and_verify(model: str | Path, lset: LanguageSet, folder: Path, texts: tuple[list[str], list[str]],
                    logits: int = LOGITS) -> tuple[Path, dict[str, Any]]:
    """(a) and (b): the lossless trim with the list, its suppress list described, its fidelity on the X and
    English lines and the logits at the kept ids on `logits` of them."""
    from gguf_trim.api import trim
    from gguf_trim.format.shards import open_model
    from gguf_trim.rewrite.verify import verify
    from gguf_trim.vocab.suppress import describe, file_suppress
    from gguf_trim.vocab.vocabulary import Vocab

    listed = folder / trimmed_name(model, lset)
    t0 = time.perf_counter()
    trim(model, listed, langs=lset.key, suppress=True)
    trim_s = time.perf_counter() - t0
    files = []
    for name, lines in zip(("x", "en"), texts):
        files.append(folder / f"{name}.txt")
        files[-1].write_text("\n".join(lines) + "\n", encoding="utf-8")
    rep = verify(model, listed, texts=files, logits=logits, greedy=0, langs=lset)
    with open_model(listed) as g:
        v = Vocab.from_gguf(g)
        sup = describe(v.pieces, v.types, file_suppress(g))
    fx, fe = rep["files"]
    return listed, {
        "n_vocab_original": rep["n_vocab_original"], "kept": rep["n_vocab_trimmed"],
        "size_original": rep["size_original"], "size_trimmed": rep["size_trimmed"], "trim_s": round(trim_s, 1),
        "suppress": {k: sup[k] for k in ("count", "byte_tokens", "bytes", "multi_byte_tokens", "examples")},
        "suppress_problems": rep["suppress_problems"],
        "fidelity": {"x": fx["line_fidelity"], "en": fe["line_fidelity"]},
        "lines": {"x": fx["lines"], "en": fe["lines"]},
        "tokens": {"x": [fx["tokens_original"], fx["tokens_trimmed"]], "en": [fe["tokens_original"],
                                                                            fe["tokens_trimmed"]]},
        "worst": fx["worst"][:2] + fe["worst"][:2], "logits_lines": rep.get("logits_lines", 0),
        "logits_max_abs_diff": rep["logits_max_abs_diff"]}


def decode_speed(model: str | Path, trimmed: Path, runs: int = RUNS, n_gen: int = N_GEN,
                 threads: int | None = 2) -> dict[str, Any] | None:
    """(c) medians of `runs` fresh-process greedy decodes of each file, interleaved; None when runs is 0."""
    from gguf_trim.bench.infer import bench_models, compare

    if runs <= 0:
        return None
    rows = bench_models([str(model), str(trimmed)], runs, N_PROMPT, n_gen, threads)
    return {"runs": runs, "n_gen": n_gen, "tok_s_original": rows[0]["tg_tok_s"],
            "tok_s_trimmed": rows[1]["tg_tok_s"], "ratio": compare(rows)[0]["tg_speedup"]}


def adversarial(model: str | Path, bare: Path, listed: Path, lset: LanguageSet, prompts: list[str],
                seeds: list[int], temperature: float = TEMPERATURE, max_tokens: int = MAX_TOKENS,
                parallel: int = PARALLEL, threads: int | None = 2, columns: Iterable[str] = COLUMNS,
                log: Log | None = None) -> dict[str, Any]:
    """(d) foreign_outputs per column (see the module docstring), each with split_foreign of its outputs."""
    from gguf_trim.runtime.server import LlamaServer

    columns = [c for c in COLUMNS if c in set(columns)]
    args = (prompts, seeds, [temperature], max_tokens, lset)
    out: dict[str, Any] = {}

    def record(col: str, res: dict[str, Any]) -> None:
        res.update(split_foreign(res.pop("texts"), lset))
        del res["by_prompt"]
        out[col] = res
        if log:
            log(f"  {col}: {res['with_foreign']} / {res['outputs']} with foreign ({res['foreign_chars']} chars)"
                f", {res['seconds']} s")

    servers = {"original": model, "no list": bare, "list": listed}
    for col, path in servers.items():
        wanted = [c for c in columns if c == col or (col == "list" and c == "list + grammar")]
        if not wanted:
            continue
        with LlamaServer(path, n_ctx=512 * parallel, threads=threads, parallel=parallel) as s:
            for c in wanted:  # one server for the list and the list + grammar: the grammar travels per request
                extra = {"grammar": grammar_text(lset)} if c.endswith("grammar") else {}
                record(c, foreign_outputs(s, *args, keep_texts=True, **SAMPLING, **extra))
    if "guard" in columns:
        chat = PythonChat(listed, n_ctx=1024, threads=threads, langs=lset, guard=True)
        try:
            record("guard", foreign_outputs(chat, *args, keep_texts=True, **SAMPLING))
        finally:
            chat.close()
    return out


def bench_set(model: str | Path, code: str, texts_dir: str | Path = TEXTS_DIR, lines: int = LINES,
              logits: int = LOGITS, runs: int = RUNS, n_gen: int = N_GEN, n_prompts: int | None = None,
              seeds: int = SEEDS, temperature: float = TEMPERATURE, max_tokens: int = MAX_TOKENS,
              parallel: int = PARALLEL, threads: int | None = 2, columns: Iterable[str] = COLUMNS,
              log: Log | None = None) -> dict[str, Any]:
    """One row: `model` trimmed to en+`code` in a temp folder, measured (a)-(d)."""
    from gguf_trim.api import trim

    lset = language_set(("en", code))
    say = log or (lambda _: None)
    t0 = time.perf_counter()
    row: dict[str, Any] = {"set": lset.key, "x": code, "model": Path(model).name, "step_s": {}}

    def lap(step: str) -> None:  # seconds per step, for planning a full run
        row["step_s"][step] = round(time.perf_counter() - t0 - sum(row["step_s"].values()), 1)

    with tempfile.TemporaryDirectory(prefix="gguf-trim-languages-") as tmp:
        folder = Path(tmp)
        say(f"{lset.key} {Path(model).name}: trim, verify")
        listed, facts = trim_and_verify(model, lset, folder, set_texts(code, texts_dir, lines), logits)
        row.update(facts)
        lap("trim_verify")
        say(f"  kept {row['kept']:,} of {row['n_vocab_original']:,}, list {row['suppress']['count']} "
            f"({row['suppress']['bytes']}), fidelity {row['fidelity']['x']:.4f} / {row['fidelity']['en']:.4f}, "
            f"logits {row['logits_max_abs_diff']}")
        if runs > 0:
            say(f"  decode: {runs} runs x 2 files, {n_gen} tokens")
        row["decode"] = decode_speed(model, listed, runs, n_gen, threads)
        lap("decode")
        row["chat"] = has_chat_template(model)
        row["adversarial"] = None
        columns = list(columns)
        if row["chat"] and columns:
            prompts = list(ADVERSARIAL.get(code, ()))[:n_prompts]
            if not prompts:
                raise TrimError(f"no adversarial prompts for {code} (langs/phrases.py ADVERSARIAL)")
            bare = folder / trimmed_name(model, lset, listed=False)
            if "no list" in columns:
                trim(model, bare, langs=lset.key, suppress=False)
            say(f"  adversarial: {len(prompts)} prompts x {seeds} seeds at T={temperature}")
            row["prompts"] = prompts
            row["adversarial"] = adversarial(model, bare, listed, lset, prompts, list(range(seeds)), temperature,
                                             max_tokens, parallel, threads, columns, log)
            lap("adversarial")
    row["seconds"] = round(time.perf_counter() - t0, 1)
    say(f"  {lset.key} {Path(model).name}: {row['seconds']} s ({row['step_s']})")
    return row


def bench(models: Iterable[str | Path], sets: Iterable[str] = DEFAULT_SETS, done: Iterable[dict[str, Any]] = (),
          on_row: Callable[[dict[str, Any]], None] | None = None, **kw: Any) -> dict[str, Any]:
    """Rows for every set and model (sets outer), plus the settings they were measured with. Rows in `done`
    (an earlier, interrupted run's) are kept rather than measured again; `on_row` sees the result so far after
    every row, so an hour's sweep that stops keeps what it measured."""
    models, sets = list(models), list(sets)
    for m in models:
        if not Path(m).is_file():
            raise TrimError(f"{m}: no such file")
    for code in sets:
        set_texts(code, kw.get("texts_dir", TEXTS_DIR), 1)  # fail before hours of work, not after
    t0 = time.perf_counter()
    earlier = {(r["x"], r["model"]): r for r in done}
    rows: list[dict[str, Any]] = []
    for code in sets:
        for m in models:
            rows.append(earlier.get((code, Path(m).name)) or bench_set(m, code, **kw))
            if on_row:
                on_row(_result(rows, kw, t0))
    return _result(rows, kw, t0)


def _result(rows: list[dict[str, Any]], kw: dict[str, Any], t0: float) -> dict[str, Any]:
    settings = {k: kw.get(k, v) for k, v in (("lines", LINES), ("logits", LOGITS), ("runs", RUNS), ("n_gen", N_GEN),
                                             ("seeds", SEEDS), ("temperature", TEMPERATURE),
                                             ("max_tokens", MAX_TOKENS), ("parallel", PARALLEL), ("threads", 2))}
    settings.update(columns=list(kw.get("columns", COLUMNS)), n_prompts=kw.get("n_prompts"), n_prompt=N_PROMPT,
                    sampling=SAMPLING)
    return {"rows": rows, "settings": settings,
            "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(), "machine": platform.machine()}


def _pct(x: float) -> str:
    return "100%" if x == 1 else f"{100 * x:.2f}%"


def _cell(res: dict[str, Any] | None) -> str:
    return "-" if res is None else f"{res['with_foreign']} / {res['outputs']} ({res['foreign_chars']})"


def markdown(result: dict[str, Any]) -> str:
    """One row per set and model; the adversarial columns for chat models; Chinese-only Han for sets with ja."""
    mib = 1 << 20
    rows, han = [], []
    for r in result["rows"]:
        d, adv = r["decode"], r["adversarial"]
        cells = [r["set"], r["model"].removesuffix(".gguf"), f"{r['kept']:,} / {r['n_vocab_original']:,}",
                 f"{r['size_original'] / mib:.1f} -> {r['size_trimmed'] / mib:.1f}", r["suppress"]["count"],
                 r["suppress"]["bytes"] or "-", f"{_pct(r['fidelity']['x'])} / {_pct(r['fidelity']['en'])}",
                 "-" if r["logits_max_abs_diff"] is None else f"{r['logits_max_abs_diff']:.3g}",
                 "-" if d is None else f"{d['tok_s_original']:.1f} -> {d['tok_s_trimmed']:.1f} ({d['ratio']:.2f}x)"]
        if adv is None:
            why = "not run: base model, no chat template" if not r["chat"] else "not run"
            cells += [why] + ["-"] * 5
        else:
            lst = adv.get("list")
            cells += [_cell(adv.get(c)) for c in COLUMNS]
            cells.append("-" if lst is None else f"{lst['unshared_lead']} ({lst['shared_lead']} shared)")
        rows.append(cells)
        if adv is not None and "ja" in r["set"].split(","):
            han.append([r["set"], r["model"].removesuffix(".gguf")] +
                       ["-" if adv.get(c) is None else adv[c]["chinese_only_han"] for c in COLUMNS])
    table = markdown_table(
        ["set", "model", "kept", "size MiB", "suppress ids", "lead bytes listed", "fidelity X / en",
         "logits max diff", "decode tok/s", *COLUMNS, "unshared-lead chars, list alone"], rows, "lllrrllll")
    s = result["settings"]
    note = (f"Fidelity: the first {s['lines']} lines of models/langs/X.txt and the English column of en-X.tsv; "
            f"logits on {s['logits']} of them. Decode: medians of {s['runs']} fresh-process runs per file, "
            f"{s['n_gen']} greedy tokens, {s['threads']} threads. Adversarial (chat models): ADVERSARIAL[X] "
            f"prompts x {s['seeds']} seeds at temperature {s['temperature']}, at most {s['max_tokens']} tokens, "
            f"top-k {SAMPLING['top_k']}, top-p {SAMPLING['top_p']}, min-p {SAMPLING['min_p']}; cells: outputs "
            "with a character outside the set / outputs (foreign characters). original, no list, list, "
            "list + grammar: stock llama-server; guard: gguf-trim's script guard (llama-cpp-python) on the "
            "trimmed file. Unshared-lead: foreign characters whose UTF-8 lead byte no character of the set "
            "starts with (the list bans it); shared: the rest.")
    out = table + "\n\n" + note
    if han:
        out += "\n\nChinese-only Han characters (GB 2312, not JIS X 0208/0213) in the outputs:\n\n"
        out += markdown_table(["set", "model", *COLUMNS], han, "llrrrrr")
    return out
