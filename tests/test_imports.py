"""The import graph of gguf_trim, read with `ast` (nothing is imported): imports at module level and inside
functions alike. The library does not import the CLI, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "gguf_trim"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}


def imported(name: str) -> set[str]:
    """The gguf_trim modules `name` imports (`from pkg import mod` counts as mod, `from mod import x` as mod)."""
    path = MODULES[name]
    here = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = here.split(".")[: len(here.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


GRAPH = {name: imported(name) for name in MODULES}


def test_library_does_not_import_cli():
    wrong = {m: sorted(d for d in deps if d == "gguf_trim.cli" or d.startswith("gguf_trim.cli."))
             for m, deps in GRAPH.items() if not (m == "gguf_trim.cli" or m.startswith("gguf_trim.cli."))}
    assert not {m: d for m, d in wrong.items() if d}


def test_runtime_llama_and_tune_adapter():
    assert "gguf_trim.runtime.llama" not in GRAPH["gguf_trim.tune.adapter"]


def test_no_import_cycles():
    """Every circle in the graph, the package root aside (it sets __version__ before it imports the API,
    and rewrite.metadata reads that)."""
    graph = {m: {d for d in deps if d != "gguf_trim"} for m, deps in GRAPH.items() if m != "gguf_trim"}
    cycles, done = [], set()

    def walk(m: str, path: list[str]) -> None:
        for d in sorted(graph[m]):
            if d in path:
                cycles.append([*path[path.index(d):], d])
            elif d not in done:
                walk(d, [*path, d])
        done.add(m)

    for m in sorted(graph):
        if m not in done:
            walk(m, [m])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)
