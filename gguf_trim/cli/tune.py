"""The fine-tuning command: finetune (a LoRA adapter GGUF for translation; the `train` extra)."""

from __future__ import annotations

import sys

import click

from gguf_trim.cli.common import write_json
from gguf_trim.options import click_options, from_params
from gguf_trim.tune.options import FinetuneOptions


@click.command()
@click.argument("model", type=click.Path())
@click.option("--pairs", "pairs", multiple=True, required=True, type=click.Path(),
              help="Translation pairs: TSV (English<TAB>Vietnamese[<TAB>...], or X<TAB>Y under a first line naming "
                   "the two codes, e.g. en<TAB>ko) or JSONL with a field per language (en and vi); repeatable. "
                   "Both directions are trained.")
@click.option("--text", "texts", multiple=True, type=click.Path(),
              help="Monolingual Vietnamese text (one segment per line) mixed in by --text-share; repeatable.")
@click.option("-o", "--output", required=True, type=click.Path(), help="Adapter GGUF to write.")
@click.option("--refine-to", type=click.Path(),
              help="For a file `extend` wrote: also train its added rows in the same run (refine's stage) and "
                   "write them into this copy of MODEL; the adapter is then for the copy.")
@click_options(FinetuneOptions)
@click.option("--json", "json_out", type=click.Path(), help="Write the report (curve, data, logits check) as JSON.")
def finetune(model, pairs, texts, output, refine_to, json_out, **flags):
    """Fine-tune MODEL for translation (En<->Vi, or the pairs' languages) as a LoRA adapter GGUF (the base
    file is never changed).

    Apply it with `gguf-trim translate --lora ADAPTER`, `llama-server --lora ADAPTER`, llama-cpp-python's
    `lora_path=` or ollama's `ADAPTER`. Needs the train extra: pip install 'gguf-trim[train]'.

    A checkpoint (OUTPUT.ckpt.pt) is written every --checkpoint-every and on Ctrl-C; --resume continues
    from it. It is removed when the run succeeds and stays after a failure or a kill."""
    from gguf_trim.extend.rows import require_train_stack

    require_train_stack()
    try:
        import peft  # noqa: F401
    except ImportError:
        from gguf_trim.errors import TrimError

        raise TrimError("finetune needs PEFT: pip install 'gguf-trim[train]'") from None
    from gguf_trim.tune.checkpoint import resume_command
    from gguf_trim.tune.lora import finetune as do_finetune

    opts, _ = from_params(FinetuneOptions, flags, progress=sys.stderr.isatty())
    r = do_finetune(model, list(pairs), output, list(texts), opts, log=lambda m: click.echo(m, err=True),
                    refine_to=refine_to, resume_hint=resume_command("finetune"))
    rep = r.report
    if json_out:
        write_json(json_out, rep)
    drops = ", ".join(f"{k} {v:,}" for k, v in rep["dropped"].items()) or "none"
    click.echo(f"{r.output}: LoRA rank {opts.rank} on {rep['matrices']} matrices, {rep['steps']} steps, "
               f"{rep['tokens_trained']:,} answer tokens in {rep['seconds']:.0f} s; held-out loss "
               f"{rep['heldout_loss_before']:.4f} -> {rep['heldout_loss_after']:.4f}")
    click.echo(f"  pairs: {rep['read_pairs']:,} read, {rep['train_pairs']:,} trained, {rep['heldout_pairs']} held out; "
               f"dropped: {drops}")
    if rep["refined"]:
        click.echo(f"{rep['refined']['output']}: MODEL with its {rep['refined']['rows']:,} added rows trained "
                   "(apply the adapter to this file)")
    if rep["logits_check"]:
        b, a = rep["logits_check"]["base"], rep["logits_check"]["adapter"]
        click.echo(f"  llama.cpp vs float model: max |logit diff| {b['max_abs_diff']} without the adapter, "
                   f"{a['max_abs_diff']} with it; argmax agreement {b['argmax_agreement']:.1%} / "
                   f"{a['argmax_agreement']:.1%}")
