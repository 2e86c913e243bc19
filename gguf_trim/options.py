"""Options dataclasses that are also click options: a field's flag, help and click settings sit in
its metadata, so the library's options object and the command's flags cannot drift apart.

    @dataclass(frozen=True, kw_only=True)
    class RunOptions:
        steps: int = flag(100, "--steps", help="Optimizer steps.", type=click.IntRange(min=1))

    @click.command()
    @click_options(RunOptions)
    def run(**params): opts, rest = from_params(RunOptions, params)

Only click is imported here (no heavy stacks), so option modules stay cheap to import for `--help`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

T = TypeVar("T")
CLI = "cli"  # the metadata key holding a field's click.option arguments


def flag(default: Any = dataclasses.MISSING, *decls: str, default_factory: Any = dataclasses.MISSING,
         cli_default: Any = dataclasses.MISSING, **click_kwargs: Any) -> Any:
    """A dataclass field that is also a click option: `decls` as click.option takes them ("--seq-len",
    "--heldout"), `click_kwargs` its other settings (help, type, show_default...). The click default is the
    field's default unless `cli_default` says otherwise (e.g. a flag whose library default differs)."""
    meta = {CLI: {"decls": decls, "cli_default": cli_default, **click_kwargs}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def cli_fields(cls: type, only: Iterable[str] | None = None) -> list[dataclasses.Field]:
    """The fields of `cls` that are click options (in declaration order; `only`: these names)."""
    fields = [f for f in dataclasses.fields(cls) if CLI in f.metadata]
    if only is not None:
        keep = list(only)
        by_name = {f.name: f for f in fields}
        fields = [by_name[n] for n in keep]
    return fields


def option_for(f: dataclasses.Field, **override: Any) -> Callable:
    """The click.option decorator of one field; `override` replaces its settings (default, help...)."""
    spec = {**f.metadata[CLI], **override}
    decls, cli_default = spec.pop("decls"), spec.pop("cli_default")
    if "default" not in spec:
        if cli_default is not dataclasses.MISSING:
            spec["default"] = cli_default
        elif f.default is not dataclasses.MISSING:
            spec["default"] = f.default
    return click.option(*decls, f.name, **spec)


def click_options(cls: type, only: Iterable[str] | None = None,
                  overrides: dict[str, dict[str, Any]] | None = None) -> Callable:
    """Decorator adding the click options of `cls`'s fields (or of `only`, in that order)."""
    overrides = overrides or {}

    def decorate(fn: Callable) -> Callable:
        for f in reversed(cli_fields(cls, only)):
            fn = option_for(f, **overrides.get(f.name, {}))(fn)
        return fn
    return decorate


def from_params(cls: type[T], params: dict[str, Any], **extra: Any) -> tuple[T, dict[str, Any]]:
    """(the options object, the other parameters) from a command's keyword arguments: each option field
    is taken out of `params` (a repeatable option's tuple becomes a list); `extra` sets fields that are not
    options (e.g. progress)."""
    rest = dict(params)
    values = {}
    for f in cli_fields(cls):
        if f.name in rest:
            v = rest.pop(f.name)
            values[f.name] = list(v) if isinstance(v, tuple) else v
    return cls(**values, **extra), rest
