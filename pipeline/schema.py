"""Column names and Arrow schemas of the dataset contract (see README, "Dataset contract")."""
from __future__ import annotations

import re

import pyarrow as pa

ID, TEXT, SOURCE, META, N_TOKENS = "id", "text", "source", "meta", "n_tokens"
REASON, STAGE = "reason", "stage"

# Columns every kept shard starts with (stages append their own after these).
BASE_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(TEXT, pa.large_string(), nullable=False),
        pa.field(SOURCE, pa.string(), nullable=False),
        pa.field(META, pa.string()),  # JSON object, keys sorted
        pa.field(N_TOKENS, pa.int64()),
    ]
)

# Rows that could not be read or processed: the raw bytes and why.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),
        pa.field("pos", pa.int64()),  # line (1-based) / row / record number; 0 = whole file
        pa.field(ID, pa.string()),  # when known (later stages), else null
        pa.field("raw", pa.large_binary()),
        pa.field("error", pa.string()),
        pa.field(STAGE, pa.string()),
        pa.field("rows", pa.int64()),  # input rows the entry stands for: 1, or N for a lost row group
        pa.field("byte_offset", pa.int64()),  # unread byte range of the input file, when the loss is
        pa.field("byte_length", pa.int64()),  # bytes (a compressed stream's tail); else null
    ]
)

_SAFE = re.compile(r"[^A-Za-z0-9._/-]+")


def make_id(source: str, relpath: str, pos: int) -> str:
    """Stable id from where a record came from: never random, never dependent on worker count."""
    return f"{_SAFE.sub('_', source)}/{_SAFE.sub('_', relpath)}:{pos}"


def arrow_type(name: str) -> pa.DataType:
    """Arrow type from a short name used in filter/stage declarations ('string', 'float32', ...)."""
    special = {"string": pa.string(), "large_string": pa.large_string(), "bool": pa.bool_()}
    return special.get(name) or pa.type_for_alias(name)
