"""The tables dedup passes exchange, and the helpers every pass uses.

Documents are named by `uid = shard << 32 | row` (shard: index of the input shard, row: position
in it); the *home* of a uid is the task of the per-document passes that owns its shard: shards
h * per_home ... (h + 1) * per_home - 1 (stage.py chooses per_home so a home holds about
dedup.docs_per_partition documents). `--against` documents get `OLD_BIT | i` within a task.
Rows travel between passes through `shuffle` files (`write_parts`); a pass's marker lists its
files (`counters`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.dedup import shuffle

OLD_BIT = np.uint64(1 << 63)
LOW32 = np.uint64(0xFFFFFFFF)
EXACT, FUZZY, SEMANTIC = 1, 2, 4
REASONS = {EXACT: "dup:exact", FUZZY: "dup:fuzzy", SEMANTIC: "dup:semantic"}

U64, I64 = pa.uint64(), pa.int64()
# one schema per kind of shuffle file (the pass outputs listed in `stages.dedup.passes`)
BAND_SCHEMA = pa.schema([("band", pa.int16()), ("key", U64), ("ekey", U64), ("uid", U64)])
EDGE_SCHEMA = pa.schema([("key", U64), ("nbr", U64), ("kind", pa.uint8())])
STAR_SCHEMA = pa.schema([("key", U64), ("nbr", U64)])
PAIR_SCHEMA = pa.schema([("a", U64), ("b", U64)])
CARRY_SCHEMA = pa.schema([("a", U64), ("b", U64), ("hashes", pa.list_(pa.uint32()))])
KIND_SCHEMA = pa.schema([("uid", U64), ("kinds", pa.uint8())])
OLD_SCHEMA = pa.schema([("uid", U64), ("old_id", pa.string()), ("old_ehi", U64), ("old_elo", U64)])
OLDCAND_SCHEMA = pa.schema([*OLD_SCHEMA, ("src", pa.int32()), ("file", pa.string()), ("row", I64)])
INDEX_SCHEMA = pa.schema([("band", pa.int16()), ("key", U64), ("ekey", U64), ("id", pa.string()), ("file", pa.string()),
                          ("row", I64), ("ehi", U64), ("elo", U64)])
MEMBER_SCHEMA = pa.schema([("root", U64), ("uid", U64), ("id", pa.string()), ("score", pa.float64()), ("length", I64),
                           ("ehi", U64), ("elo", U64), ("kinds", pa.uint8()), *list(OLD_SCHEMA)[1:]])
DECISION_SCHEMA = pa.schema([("uid", U64), ("dup_of", pa.string()), ("dup_group", I64), ("reason", pa.string())])


def shard_of(uid: np.ndarray) -> np.ndarray:
    """Input shard of each uid."""
    return (uid >> np.uint64(32)).astype(np.int64)


def home(uid: np.ndarray, per_home: int) -> np.ndarray:
    """Home of each uid: its input shard // per_home."""
    return shard_of(uid) // per_home


def home_shards(h: int, per_home: int, n_shards: int) -> range:
    """The input shards of home h."""
    return range(h * per_home, min(n_shards, (h + 1) * per_home))


def row_of(uid: np.ndarray) -> np.ndarray:
    """Row of each uid in its input shard."""
    return (uid & LOW32).astype(np.int64)


def counters(rows_in: int, files: list[dict], **extra) -> dict:
    """Marker payload of an intermediate pass: every input row is accounted as processed; its files
    hold derived rows, each file checked by the runner against the rows recorded for it (`pass_output`)."""
    return {"rows_in": rows_in, "kept": rows_in, "rejected": 0, "quarantined": 0, "tokens_in": 0, "tokens_kept": 0,
            "tokens_rejected": 0, "bytes_in": 0, "bytes_kept": 0, "kept_files": files, "rejected_files": [],
            "quarantine_files": [], "reasons": {}, "by_source": {}, "pass_output": True, **extra}


def np_column(table: pa.Table, col: str) -> np.ndarray:
    """Column `col` as a numpy array (of the column's type also when the table is empty)."""
    return table.column(col).to_numpy() if table.num_rows else np.zeros(0, dtype=table.schema.field(col).type.to_pandas_dtype())


def write_parts(out: str, name: str, table: pa.Table, part: np.ndarray, n_parts: int, files: list[dict]) -> None:
    """Shuffle-write `table` (row i to partition part[i]) as out/name and add its marker entry to
    `files`; an empty table writes nothing."""
    if table.num_rows:
        files.append(shuffle.write(Path(out) / name, table, part, n_parts))


def read_rows(paths: dict, uids: np.ndarray, columns: list[str]) -> pa.Table:
    """`columns` of the rows `uids` (ascending) from per-shard files (paths[shard]: an input shard or
    its signature file, one row per document), in uid order."""
    if not len(uids):
        return pq.read_table(next(iter(paths.values())), columns=columns).slice(0, 0) if paths else pa.table({})
    shard = shard_of(uids)
    bounds = np.flatnonzero(np.r_[True, shard[1:] != shard[:-1], True])
    return pa.concat_tables([pq.read_table(paths[int(shard[a])], columns=columns).take(pa.array(row_of(uids[a:b])))
                             for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist())])


def edge_table(a: np.ndarray, b: np.ndarray, per_home: int, kind: int | None = None) -> tuple[pa.Table, np.ndarray]:
    """Both directions of every edge (large-star input), routed to the home of `key`."""
    key, nbr = np.concatenate([a, b]), np.concatenate([b, a])
    cols = {"key": key, "nbr": nbr}
    if kind is not None:
        cols["kind"] = np.full(len(key), kind, dtype=np.uint8)
    return pa.table(cols, schema=EDGE_SCHEMA if kind is not None else STAR_SCHEMA), home(key, per_home)
