"""Commands that run a trimmed model: translate, eval-translate."""

from __future__ import annotations

import json

import click

from gguf_trim.cli.common import write_json
from gguf_trim.errors import TrimError
from gguf_trim.options import click_options, from_params
from gguf_trim.translate.options import EVAL_FLAGS, EVAL_OVERRIDES, N_CTX_FILE, N_CTX_TEXT, TranslatorOptions
from gguf_trim.translate.prompts import untrimmed_langs


def _lang_fields(text: str, dst: str, langs) -> dict:
    """`lang` (the detected language of an output) and `wrong_lang`, when a detector is installed."""
    from gguf_trim.runtime.langid import detector

    det = detector(required=False)
    if det is None:
        return {}
    lang, wrong = det.check(text, dst, langs)
    return {"lang": lang, "wrong_lang": wrong}


def _code(value: str, flag: str) -> str:
    """A language code as the table spells it ('zh_hans' -> 'zh-Hans'); one line for an unknown one."""
    from gguf_trim.langs import known_codes
    from gguf_trim.langs.languages import normalize_code

    code = normalize_code(value)
    if code is None:
        raise TrimError(f"{flag} {value!r}: unknown language; known codes are {', '.join(known_codes())}")
    return code


def _warn_wrong_lang(lang: dict, dst: str, reask: bool) -> None:
    """One line on stderr when the output is not in the target language: never silent."""
    if lang.get("wrong_lang"):
        from gguf_trim.translate.jobs import wrong_lang_note

        note = wrong_lang_note(1, dst, reask, what=f"the output ({lang['lang']}) is")
        click.echo(f"gguf-trim: warning: {note}" + (", even when asked again" if reask else ""), err=True)


@click.command()
@click.argument("model", type=click.Path())
@click.argument("text", required=False)
@click.option("--to", "dst", required=True, metavar="CODE",
              help="Target language: one of the languages the model was trimmed to (en, vi, ja...; any known code "
                   "for a file gguf-trim did not trim).")
@click.option("--from", "src", default="auto", show_default=True, metavar="auto|CODE",
              help="Source language; auto detects it among the model's languages.")
@click.option("-i", "--input", "in_path", type=click.Path(), help="File: .txt (a segment per line), .jsonl, .tsv.")
@click.option("-o", "--output", "out_path", type=click.Path(),
              help="Output file (same format, line-aligned), written segment by segment.")
@click.option("--field", default="text", show_default=True, help="JSONL field to translate.")
@click.option("--column", default=0, show_default=True, help="TSV column to translate (0-based).")
@click.option("--parallel", type=click.IntRange(min=1),
              help="File: segments decoded together (default: what --n-ctx holds, at most 16 on a CPU, 64 with "
                   "--n-gpu-layers).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted -o job (same input and settings) after its last finished segment.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option("--ray", "ray_address", metavar="ADDRESS",
              help="File: shard it over a Ray cluster (host:port of its head, 'auto', or 'local' for a new one on "
                   "this machine); every node needs gguf-trim and the model at the same path. Needs the ray extra.")
@click.option("--ray-shards", type=click.IntRange(min=1),
              help="With --ray: pieces of the input, each one worker's job and resumed on its own (default: the "
                   "workers the cluster runs at once, --threads CPUs each, or one GPU each with --n-gpu-layers).")
@click_options(TranslatorOptions)
def translate(model, text, dst, src, in_path, out_path, field, column, parallel, resume, as_json, ray_address,
              ray_shards, **flags):
    """Translate TEXT (or a file) between two of the model's languages (English and Vietnamese by default)."""
    opts, _ = from_params(TranslatorOptions, flags)
    dst = _code(dst, "--to")
    src = src if src == "auto" else _code(src, "--from")
    if (text is None) == (in_path is None):
        raise TrimError("give either TEXT or -i FILE")
    if in_path and not out_path and not as_json:
        raise TrimError("-i needs -o (or --json)")
    if resume and not out_path:
        raise TrimError("--resume needs -i and -o")
    if ray_address or ray_shards:
        if not (ray_address and in_path and out_path) or as_json:
            raise TrimError("--ray needs -i and -o (and takes no --json); --ray-shards needs --ray")
        from gguf_trim.translate.cluster import translate_file_ray

        kwargs = {**opts.translator_kwargs(N_CTX_FILE), "langs": untrimmed_langs(dst, src)}
        translate_file_ray(model, in_path, out_path, dst, src, kwargs, address=ray_address, shards=ray_shards,
                           field=field, column=column, parallel=parallel, resume=resume)
        return
    from gguf_trim.translate.translator import Translator, check_model_direction

    src, dst = check_model_direction(model, dst, src, untrimmed_langs(dst, src))  # before the model loads
    tr = Translator(model, **opts.translator_kwargs(N_CTX_FILE if in_path else N_CTX_TEXT),
                    langs=untrimmed_langs(dst, src))
    try:
        if text is None:
            from gguf_trim.translate.jobs import translate_file

            res = translate_file(tr, in_path, out_path, dst, src, field, column, parallel, resume, keep=as_json,
                                 log=lambda m: click.echo(m, err=True))
            if as_json:  # a list of segments; the totals are the job's last line on stderr
                click.echo(json.dumps([{"source": t.source, "translation": t.text, "tokens": t.tokens,
                                        **_lang_fields(t.text, dst, tr.langs)} for t in res.translations],
                                      ensure_ascii=False))
        elif as_json or opts.reask:
            # --reask needs the whole output before anything is printed: it may be asked again
            t = tr.translate(text, dst, src)
            lang = _lang_fields(t.text, dst, tr.langs)
            if as_json:
                click.echo(json.dumps({"source": t.source, "translation": t.text, "from": t.src, "to": t.dst,
                                       "tokens": t.tokens, "seconds": round(t.seconds, 3), "guard": t.guarded,
                                       "reasked": t.reasked, **lang}, ensure_ascii=False))
            else:
                click.echo(t.text)
            _warn_wrong_lang(lang, dst, opts.reask)
        else:
            pieces = []
            for piece in tr.translate(text, dst, src, stream=True):
                pieces.append(piece)
                click.echo(piece, nl=False)
            click.echo()
            _warn_wrong_lang(_lang_fields("".join(pieces).strip(), dst, tr.langs), dst, False)
    finally:
        tr.close()


@click.command("eval-translate")
@click.argument("models", nargs=-1, required=True)
@click.option("--pairs", required=True, type=click.Path(),
              help="Pairs (.tsv): English<TAB>Vietnamese, or X<TAB>Y under a first line naming the two codes "
                   "(e.g. en<TAB>ja).")
@click.option("--n", "n_pairs", type=int, help="Use N pairs spread over the file.")
@click.option("--direction", "directions", multiple=True, metavar="SRC-DST",
              help="Direction (repeatable), e.g. en-vi, ja-en; default: both directions of the pairs' languages.")
@click_options(TranslatorOptions, only=EVAL_FLAGS[0], overrides=EVAL_OVERRIDES)
@click.option("--parallel", type=click.IntRange(min=1), help="Segments decoded together (default: what --n-ctx holds).")
@click.option("--sequential", is_flag=True, help="Decode one segment at a time (the reference path).")
@click_options(TranslatorOptions, only=EVAL_FLAGS[1], overrides=EVAL_OVERRIDES)
@click.option("--json", "json_out", type=click.Path(), help="Write results (with all outputs) as JSON.")
def eval_translate(models, pairs, n_pairs, directions, parallel, sequential, json_out, **flags):
    """chrF, BLEU, foreign characters, wrong-language outputs and tok/s, side by side. MODEL may end
    in :guard or :noguard."""
    from gguf_trim.translate.evaluate import evaluate_models, table

    opts, _ = from_params(TranslatorOptions, flags)
    results = evaluate_models(list(models), pairs, n_pairs, directions, opts, sequential=sequential,
                              parallel=parallel, progress=True)
    click.echo(table(results))
    if json_out:
        write_json(json_out, results, ensure_ascii=False, default=str)
