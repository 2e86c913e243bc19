"""`gguf-trim bench languages` end to end on one set, at toy size (bench/languages.py).

Why: the full run takes an hour and is run by hand; this keeps its code path working: en,ko on
Qwen2.5-Coder-0.5B, one adversarial prompt x 2 seeds of 8 tokens per column (all but "no list", which
would only add a trim and a server), a 4-token decode. What it checks must hold at any size: a smaller
vocabulary, every Korean and English line tokenized as before, identical logits, and no foreign
character through the script guard or (where the list bans the lead byte) through the list.
"""

from __future__ import annotations

from typing import Any

import pytest

from gguf_trim.bench.languages import bench_set, markdown
from tests.conftest import MODELS, QWEN, need

pytestmark = pytest.mark.server
RUN = ("original", "list", "list + grammar", "guard")


@pytest.fixture(scope="module")
def row() -> dict[str, Any]:
    need(MODELS / "langs" / "ko.txt")
    return bench_set(need(QWEN), "ko", lines=60, logits=1, runs=1, n_gen=4, n_prompts=1, seeds=2, max_tokens=8,
                     parallel=2, threads=2, columns=RUN)


def test_trim_is_lossless_on_korean_and_english(row: dict[str, Any]) -> None:
    assert row["set"] == "en,ko"
    assert 0 < row["kept"] < row["n_vocab_original"]
    assert row["size_trimmed"] < row["size_original"]
    assert row["lines"] == {"x": 60, "en": 60}
    assert row["fidelity"] == {"x": 1.0, "en": 1.0}, row["worst"]
    assert row["logits_lines"] == 1 and row["logits_max_abs_diff"] == 0.0
    assert row["suppress"]["count"] > 0 and row["suppress"]["byte_tokens"] > 0
    assert not row["suppress_problems"]
    assert row["decode"]["tok_s_original"] > 0 and row["decode"]["ratio"] > 0


def test_adversarial_columns(row: dict[str, Any]) -> None:
    adv = row["adversarial"]
    assert list(adv) == list(RUN)
    assert all(adv[c]["outputs"] == 2 for c in RUN)
    assert adv["guard"]["with_foreign"] == 0, adv["guard"]["examples"]
    assert adv["list"]["unshared_lead"] == 0, adv["list"]["examples"]


def test_markdown_row(row: dict[str, Any]) -> None:
    table = markdown({"rows": [row], "settings": {"lines": 60, "logits": 1, "runs": 1, "n_gen": 4, "threads": 2,
                                                   "seeds": 2, "temperature": 1.2, "max_tokens": 8}})
    line = next(t for t in table.splitlines() if t.startswith("| en,ko"))
    assert "qwen2.5-coder-0.5b-instruct" in line and "100% / 100%" in line
    assert line.count(" / 2 (") == len(RUN)


def test_a_stopped_sweep_keeps_its_rows_and_measures_only_the_rest(row: dict[str, Any]) -> None:
    """The hour-long sweep hands every row to `on_row` as it is measured, and `done` rows are not measured again."""
    from gguf_trim.bench.languages import bench

    seen: list[int] = []
    result = bench([QWEN], ["ko"], done=[row], on_row=lambda r: seen.append(len(r["rows"])), texts_dir=MODELS / "langs")
    assert result["rows"] == [row] and seen == [1]
