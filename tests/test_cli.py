"""The command line as a whole: every command answers --help (old names too), --help imports no heavy
stack, the options dataclasses and the click flags agree, failures are one line with the right exit
code, and docs/cli.md is what the commands' --help says."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from gguf_trim.api import CompactOptions
from gguf_trim.cli import TrimGroup, main
from gguf_trim.cli.docs import render
from gguf_trim.cli.trim import COMPACT_FLAGS
from gguf_trim.errors import InternalError, TrimError
from gguf_trim.extend.options import RefineOptions
from gguf_trim.options import cli_fields
from gguf_trim.translate.options import EVAL_FLAGS, TranslatorOptions

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("llama_cpp", "torch", "ray", "datasets", "transformers")
OLD_NAMES = [["bench-trim"], ["frontier"], ["vram"], ["bench", "models/a.gguf", "models/b.gguf"]]


def all_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command path, hidden ones included."""
    out = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out.append([*prefix, name])
        if isinstance(cmd, click.Group):
            out += all_commands(cmd, (*prefix, name))
    return out


def test_command_tree():
    paths = {" ".join(p) for p in all_commands()}
    assert paths >= {"trim", "plan", "verify", "inspect", "diff", "translate", "eval-translate", "extend", "refine",
                     "demo", "bench", "bench infer", "bench trim", "bench translate", "bench refine",
                     "bench frontier", "bench vram", "bench-trim", "frontier", "vram"}


@pytest.mark.parametrize("path", [*all_commands(), *OLD_NAMES], ids=lambda p: " ".join(p))
def test_help(path):
    r = CliRunner().invoke(main, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage: " in r.output
    short = CliRunner().invoke(main, [*path, "-h"])
    assert short.exit_code == 0 and short.output == r.output


def test_bench_model_routes_to_infer():
    r = CliRunner().invoke(main, ["bench", "a.gguf", "b.gguf", "--help"])
    assert r.exit_code == 0 and "bench infer [OPTIONS] MODELS..." in r.output
    r = CliRunner().invoke(main, ["bench", "a.gguf", "b.gguf", "c.gguf"])
    assert r.exit_code == 2 and "give pairs: ORIGINAL TRIMMED" in r.output
    r = CliRunner().invoke(main, ["bench", "--help"])
    assert r.exit_code == 0 and "infer" in r.output and "frontier" in r.output


def test_aliases_are_hidden_and_same():
    top = CliRunner().invoke(main, ["--help"]).output
    for old in ("bench-trim", "frontier", "vram"):
        assert f"  {old} " not in top
    for old, new in (("bench-trim", "trim"), ("frontier", "frontier"), ("vram", "vram")):
        a = CliRunner().invoke(main, [old, "--help"]).output
        b = CliRunner().invoke(main, ["bench", new, "--help"]).output
        assert a.split("\n", 1)[1] == b.split("\n", 1)[1]


@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"], ["translate", "--help"], ["refine", "--help"]])
def test_help_imports_no_heavy_stack(args):
    code = (f"import sys\nfrom gguf_trim.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
            f"print('MODULES', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "MODULES []"


def test_option_objects_import_without_heavy_stacks():
    code = ("import sys\nfrom gguf_trim.extend.options import RefineOptions\n"
            "from gguf_trim.translate.options import TranslatorOptions\nfrom gguf_trim.extend.refine import refine\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def command(path: list[str]) -> click.Command:
    cmd: click.Command = main
    for name in path:
        cmd = cmd.get_command(click.Context(cmd), name)
    return cmd


def params(path: list[str]) -> dict[str, click.Parameter]:
    return {p.name: p for p in command(path).params}


REQUIRED = {"refine": ["m.gguf", "-o", "o.gguf"], "translate": ["m.gguf", "--to", "vi"],
            "eval-translate": ["m.gguf", "--pairs", "p.tsv"]}


def check_fields(cls: type, path: list[str], names: list[str], defaults: dict | None = None) -> None:
    """Each field named is a flag of the command, and the command, given no flags, receives the field's
    default (or `defaults`' override)."""
    cmd = command(path)
    given = cmd.make_context(path[-1], list(REQUIRED[path[-1]])).params
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        assert name in given, f"{' '.join(path)}: no flag for {cls.__name__}.{name}"
        f = by_name[name]
        want = (defaults or {}).get(name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        got = given[name]
        assert (list(got) if isinstance(got, tuple) else got) == want, (name, got, want)


def test_refine_options_are_refine_flags():
    names = [f.name for f in cli_fields(RefineOptions)]
    check_fields(RefineOptions, ["refine"], names)
    not_flags = {f.name for f in dataclasses.fields(RefineOptions)} - set(names)
    assert not_flags == {"progress", "self_text_tokens"}
    assert params(["refine"])["heldout_lines"].opts == ["--heldout"]
    assert params(["refine"])["eval_texts"].opts == ["--eval-text"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        RefineOptions().tokens = 1


def test_translator_options_are_translate_flags():
    names = [f.name for f in dataclasses.fields(TranslatorOptions)]
    check_fields(TranslatorOptions, ["translate"], names)
    check_fields(TranslatorOptions, ["eval-translate"], [*EVAL_FLAGS[0], *EVAL_FLAGS[1]], {"n_ctx": 4096})
    assert not {"guard", "prompt", "n_gpu_layers"} & set(params(["eval-translate"]))
    kw = TranslatorOptions(shots=True, threads=2).translator_kwargs(4096)
    assert kw["n_ctx"] == 4096 and kw["threads"] == 2 and kw["style"].shots is True


def test_compact_options_are_trim_and_plan_flags():
    fields = {f.name for f in dataclasses.fields(CompactOptions)}
    assert set(COMPACT_FLAGS) == fields - {"progress"}
    for path in (["trim"], ["plan"]):
        ps = params(path)
        for name, (decls, _) in COMPACT_FLAGS.items():
            assert name in ps and decls[0].split("/")[0] in ps[name].opts


def test_docs_cli_is_current():
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert page == render(), "docs/cli.md is stale: run `make docs-cli`"


# -- failures, handled once in the group -------------------------------------------------------------

def failing_group(exc: BaseException) -> click.Group:
    @click.group(cls=TrimGroup)
    def g() -> None:
        pass

    @g.command()
    def boom() -> None:
        raise exc

    return g


@pytest.mark.parametrize(("exc", "code", "line"), [
    (TrimError("bad input"), 2, "gguf-trim: error: bad input"),
    (FileNotFoundError(2, "No such file or directory", "x.gguf"), 2,
     "gguf-trim: error: x.gguf No such file or directory"),
    (InternalError("check failed"), 1, "gguf-trim: internal error: check failed (GGUF_TRIM_DEBUG=1 shows more)"),
    (ValueError("oops"), 1, "gguf-trim: internal error: ValueError: oops (GGUF_TRIM_DEBUG=1 shows more)"),
    (KeyboardInterrupt(), 130, "gguf-trim: interrupted"),
])
def test_failures_are_one_line(exc, code, line, monkeypatch):
    monkeypatch.delenv("GGUF_TRIM_DEBUG", raising=False)
    r = CliRunner().invoke(failing_group(exc), ["boom"])
    assert r.exit_code == code
    assert r.output.strip().splitlines() == [line]


def test_debug_shows_the_internal_error(monkeypatch):
    monkeypatch.setenv("GGUF_TRIM_DEBUG", "1")
    for exc in (InternalError("check failed"), ValueError("oops")):
        r = CliRunner().invoke(failing_group(exc), ["boom"])
        assert r.exception is exc


def test_usage_errors_stay_clicks():
    r = CliRunner().invoke(main, ["trim"])
    assert r.exit_code == 2 and "Missing argument 'MODEL'" in r.output
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and "gguf-trim" in r.output


def test_vram_spec_json():
    r = CliRunner().invoke(main, ["bench", "vram", "--spec", "qwen2.5-7b", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["model"] == "qwen2.5-7b"


@pytest.mark.parametrize(("module", "usage"), [("gguf_trim.bench.translate", "gguf-trim bench translate"),
                                               ("gguf_trim.bench.refine", "gguf-trim bench refine"),
                                               ("gguf_trim.demo", "gguf-trim demo")])
def test_old_module_entry_points(module, usage):
    """`python -m` entry points of before the bench group still answer, as the commands they became."""
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"Usage: {usage} ")
