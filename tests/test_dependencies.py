"""pyproject's dependencies against the imports of gguf_trim/: nothing declared that no module uses,
and nothing a plain `pip install gguf-trim` lacks when a module is imported (extras are imported
where they are used, so a missing one is a clear error of that command, not of `import gguf_trim`)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gguf_trim"

# distribution name -> import name, where they differ beyond '-' -> '_'
IMPORT_NAMES = {"llama-cpp-python": "llama_cpp"}
# extras a module may import at module level: gguf_trim.extend.train (torch) is imported only by `refine`
MODULE_LEVEL_EXTRAS = {"torch"}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def import_name(requirement: str) -> str:
    dist = re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower()
    return IMPORT_NAMES.get(dist, dist.replace("-", "_").replace(".", "_"))


def imports() -> list[tuple[str, bool, str]]:
    """(top-level module, imported at module level, file) for every absolute import in gguf_trim/;
    module level = not inside a function (it runs when the module is imported)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                       for node in ast.walk(fn) if node is not fn}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.append((name.split(".")[0], id(node) not in in_function, str(path.relative_to(ROOT))))
    return found


def third_party(module: str) -> bool:
    return module not in sys.stdlib_module_names and module not in ("gguf_trim", "__future__")


def test_every_core_dependency_is_imported():
    used = {module for module, _, _ in imports()}
    unused = [req for req in project()["dependencies"] if import_name(req) not in used]
    assert not unused, f"declared in pyproject but imported by no module of gguf_trim/: {unused}"


def test_module_level_imports_are_core_dependencies():
    core = {import_name(req) for req in project()["dependencies"]} | MODULE_LEVEL_EXTRAS
    missing = sorted({(module, path) for module, top, path in imports() if top and third_party(module)
                      and module not in core})
    assert not missing, f"imported at module level but not a core dependency: {missing}"


def test_datasets_is_the_hf_extra_imported_only_for_hf_corpora():
    meta = project()
    assert "datasets" not in {import_name(req) for req in meta["dependencies"]}
    assert "datasets" in {import_name(req) for req in meta["optional-dependencies"]["hf"]}
    at_module_level = [path for module, top, path in imports() if module == "datasets" and top]
    assert not at_module_level, f"datasets imported at module level in {at_module_level}"
    assert any(module == "datasets" for module, _, _ in imports())
