"""Hugging Face datasets as corpora: `hf:NAME[:split][:field]` (a hub name or a folder saved by
`save_to_disk`).

`datasets` is an optional extra (`pip install 'gguf-trim[hf]'`), imported only when an hf: input is
given, and offline unless the user says otherwise (HF_DATASETS_OFFLINE).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf_trim.errors import TrimError, one_line
from gguf_trim.selection.fields import DEFAULT_FIELD, column_segments, top_column

HF_BATCH_ROWS = 4096


@dataclass
class HFInput:
    """An `hf:NAME[:split][:field]` corpus input, loaded."""

    spec: str  # as given, for messages
    name: str
    split: str
    field: str
    dataset: Any  # datasets.Dataset


def import_datasets() -> Any:
    """The `datasets` module, imported only for hf: inputs; offline unless the user says otherwise."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError as e:
        raise TrimError(f"hf: corpora need the datasets package: pip install 'gguf-trim[hf]' ({one_line(e)})") from e
    return datasets


def is_saved_dataset(folder: Path) -> bool:
    """Whether a folder was written by Dataset.save_to_disk / DatasetDict.save_to_disk."""
    if (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file():
        return True
    return (folder / "dataset_info.json").is_file() and any(folder.glob("*.arrow"))


def open_hf(spec: str, field_option: str | None) -> HFInput:
    """Load `hf:NAME[:split][:field]` and check its field; the field part wins over the --field option."""
    parts = spec[3:].split(":")
    if len(parts) > 3 or not parts[0]:
        raise TrimError(f"{spec}: bad hf: input (expected hf:NAME[:split][:field])")
    name = parts[0]
    split = (parts[1] if len(parts) > 1 else "") or "train"
    field = (parts[2] if len(parts) > 2 else "") or field_option or DEFAULT_FIELD
    datasets = import_datasets()
    folder = Path(name)
    try:
        if folder.is_dir() and is_saved_dataset(folder):
            ds = datasets.load_from_disk(str(folder))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise TrimError(f"{spec}: no split '{split}' (available: {', '.join(ds)})")
                ds = ds[split]
            elif len(parts) > 1 and parts[1] and ds.split is not None and str(ds.split) != split:
                raise TrimError(f"{spec}: the saved dataset is the '{ds.split}' split, not '{split}'")
        else:
            ds = datasets.load_dataset(name, split=split)
    except TrimError:
        raise
    except Exception as e:  # datasets raises many types (ValueError, FileNotFoundError, ConnectionError, ...)
        raise TrimError(f"{spec}: cannot load dataset ({type(e).__name__}: {one_line(e)})") from e
    if not isinstance(ds, datasets.Dataset):
        raise TrimError(f"{spec}: expected a dataset split, got {type(ds).__name__}")
    top_column(field, ds.column_names, spec)
    return HFInput(spec, name, split, field, ds)


def hf_segments(item: HFInput) -> Iterator[str]:
    top = top_column(item.field, item.dataset.column_names, item.spec)

    def values() -> Iterator[Any]:
        try:
            for batch in item.dataset.select_columns([top]).iter(batch_size=HF_BATCH_ROWS):
                yield from batch[top]
        except Exception as e:  # arrow cache files gone, decoding errors, ...
            raise TrimError(f"{item.spec}: cannot read dataset ({type(e).__name__}: {one_line(e)})") from e

    yield from column_segments(values(), top, item.field, item.spec)
