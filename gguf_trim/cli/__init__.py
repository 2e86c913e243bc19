"""`gguf-trim` command line: each command parses its options, calls one library function and prints.

Failures are handled once, here in the group: bad input (TrimError, OSError) ends with one line on
stderr and exit code 2, gguf-trim's own faults (InternalError, any other exception) with one line and
exit code 1 (GGUF_TRIM_DEBUG=1 shows the traceback), Ctrl-C with exit code 130. Command modules import
nothing heavy at import time (no llama_cpp, torch, ray, datasets), so `--help` is fast.
"""

from __future__ import annotations

import copy
import os
import sys

import click

from gguf_trim import __version__
from gguf_trim.cli import bench, bench_finetune, bench_runtimes, export, extend, languages, translate, trim, tune
from gguf_trim.cli.common import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED
from gguf_trim.errors import InternalError, TrimError

DEBUG = "GGUF_TRIM_DEBUG"


def _fail(message: str, code: int) -> None:
    click.echo(message, err=True)
    sys.exit(code)


class TrimGroup(click.Group):
    """The top-level group: runs the command and turns what it raises into one line and an exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: usage errors, --help, --version
        except TrimError as e:
            _fail(f"gguf-trim: error: {e}", EXIT_BAD_INPUT)
        except OSError as e:
            where = f" {e.filename}" if getattr(e, "filename", None) else ""
            _fail(f"gguf-trim: error:{where} {e.strerror or e}", EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            _fail("gguf-trim: interrupted", EXIT_INTERRUPTED)
        except InternalError as e:
            if os.environ.get(DEBUG):
                raise
            _fail(f"gguf-trim: internal error: {e} ({DEBUG}=1 shows more)", EXIT_INTERNAL)
        except Exception as e:  # noqa: BLE001 - last resort: one line, not a traceback
            if os.environ.get(DEBUG):
                raise
            _fail(f"gguf-trim: internal error: {type(e).__name__}: {e} ({DEBUG}=1 shows more)", EXIT_INTERNAL)


@click.group(cls=TrimGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gguf-trim")
def main() -> None:
    """Trim a GGUF model's vocabulary to the languages you choose, so that it can only write those
    (English + Vietnamese by default), and check the result."""


def hidden_alias(cmd: click.Command) -> click.Command:
    """The same command under an old name, left out of --help."""
    alias = copy.copy(cmd)
    alias.hidden = True
    return alias


for _cmd in (trim.trim, trim.plan, trim.verify, trim.inspect, trim.diff, translate.translate,
             translate.eval_translate, extend.extend, extend.refine, tune.finetune, bench.bench, bench.demo,
             export.export, languages.languages):
    main.add_command(_cmd)
bench.bench.add_command(bench_finetune.finetune_cmd)
bench.bench.add_command(bench_finetune.grammar_cmd)
bench.bench.add_command(bench_runtimes.runtimes_cmd)
# Old names of the bench subcommands (before `gguf-trim bench` was a group).
main.add_command(hidden_alias(bench.trim_cmd), "bench-trim")
main.add_command(hidden_alias(bench.frontier_cmd), "frontier")
main.add_command(hidden_alias(bench.vram_cmd), "vram")
