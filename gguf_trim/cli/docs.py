"""docs/cli.md, generated from every command's --help: `python -m gguf_trim.cli.docs > docs/cli.md`
(`make docs-cli`); tests/test_cli.py fails when the file is stale. Hidden aliases (old names) are left
out; the page says which they are."""

from __future__ import annotations

from collections.abc import Iterator

import click

WIDTH = 100  # help text wrapped at a fixed width, so the page does not depend on the terminal
HEADER = """# Command line reference

Generated from each command's `--help` by `python -m gguf_trim.cli.docs > docs/cli.md` (`make docs-cli`);
do not edit by hand. Old names that still work: `gguf-trim bench MODEL...` (= `bench infer`),
`bench-trim` (= `bench trim`), `frontier` (= `bench frontier`), `vram` (= `bench vram`).
"""


def _walk(cmd: click.Command, ctx: click.Context) -> Iterator[tuple[str, str]]:
    yield ctx.command_path, cmd.get_help(ctx)
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx, terminal_width=WIDTH,
                                                max_content_width=WIDTH))


def render() -> str:
    """The whole page."""
    from gguf_trim.cli import main

    root = click.Context(main, info_name="gguf-trim", terminal_width=WIDTH, max_content_width=WIDTH,
                         **main.context_settings)
    parts = [HEADER]
    for path, text in _walk(main, root):
        parts.append(f"## `{path}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
