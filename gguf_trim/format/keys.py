"""The `gguf_trim.*` metadata keys gguf-trim writes into the files it makes, and reads back.

They are part of the file format: `verify`, a second trim of a trimmed file, `extend` and
`refine` rely on them, so their names never change.
"""

from __future__ import annotations

import json
from typing import Any

PROVENANCE_PREFIX = "gguf_trim."

# trim: where the file came from and how each new id maps back to the source
VERSION = PROVENANCE_PREFIX + "version"  # gguf-trim's version
SOURCE_FILE = PROVENANCE_PREFIX + "source_file"  # the source's file name (its first shard)
SOURCE_SIZE = PROVENANCE_PREFIX + "source_size"  # bytes, all shards
SOURCE_SHA256 = PROVENANCE_PREFIX + "source_sha256"  # only with --source-sha256; one per shard, comma-separated
SOURCE_N_VOCAB = PROVENANCE_PREFIX + "source_n_vocab"
SOURCE_VOCAB_SHA256 = PROVENANCE_PREFIX + "source_vocab_sha256"
LANGS = PROVENANCE_PREFIX + "langs"  # e.g. "en,vi"
PROFILE = PROVENANCE_PREFIX + "profile"  # lossless, compact, plan
KEPT_BY_REASON = PROVENANCE_PREFIX + "kept_by_reason"  # JSON: tokens kept per reason
KEPT_IDS = PROVENANCE_PREFIX + "kept_ids"  # kept_ids[new id] = source id
PADDING_ROWS = PROVENANCE_PREFIX + "padding_rows"  # source rows the appended padding tokens repeat
HEADER_PADDING = PROVENANCE_PREFIX + "header_padding"  # spaces filling the reserved header

# extend and refine
EXTENDED_FROM_N_VOCAB = PROVENANCE_PREFIX + "extended_from_n_vocab"  # tokens before extend appended its own
EXTENDED_INIT = PROVENANCE_PREFIX + "extended_init"  # how the new rows were initialised
REFINED_PREFIX = PROVENANCE_PREFIX + "refined_"  # refine's record of how the new rows were trained

# finetune: the adapter's record of its base, data and held-out losses
FINETUNE_PREFIX = PROVENANCE_PREFIX + "finetune."


def encode_record(prefix: str, record: dict[str, Any]) -> list[bytes]:
    """A record as encoded keys `prefix + name`: ints as UINT64, floats as FLOAT64, strings as they are,
    anything else (bools, lists, dicts) as JSON text."""
    from gguf.constants import GGUFValueType

    from gguf_trim.format.gguffile import encode_field

    out = []
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            value = json.dumps(value)
        vtype = {int: GGUFValueType.UINT64, float: GGUFValueType.FLOAT64}.get(type(value), GGUFValueType.STRING)
        out.append(encode_field(prefix + key, vtype, value))
    return out
