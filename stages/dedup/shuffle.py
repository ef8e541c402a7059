"""Shuffle by key through Parquet: a map task writes ONE file whose row groups are its rows for
destination partitions 0..P-1 (in order); a reduce task for partition p reads row groups p of
every map file. T map tasks therefore leave T files (not T x P), and a reducer's memory is its
partition only. Files are written atomically; what a reducer reads comes from the mappers'
completion markers (`parts`), never from listing a directory, so stale files are never read.

A reducer's sources are given as index files (`write_index`: one small Parquet per pass output,
(file, partition, row groups) sorted by partition; pipeline.io.write_part_index), not as lists: every task's arguments are O(1)
in the number of shards and partitions, and a reducer reads only its partition's index rows.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io

MAX_GROUP_ROWS = 1 << 20
SOURCES_SCHEMA = pa.schema([("part", pa.int64()), ("file", pa.string()), ("first", pa.int64()), ("end", pa.int64()),
                            ("src", pa.int64())])


def write(path: Path, table: pa.Table, part: np.ndarray, n_parts: int) -> dict:
    """Write `table` grouped by `part` (int array, values in [0, n_parts)). Returns the file's
    entry for the marker: {"name", "rows", "bytes", "sha256", "parts": {p: [first_rg, end_rg]}}.
    Within a partition the input row order is kept (stable), so outputs are deterministic."""
    path = Path(path)
    order = np.argsort(part, kind="stable")
    table = table.take(order)
    counts = np.bincount(part, minlength=n_parts) if len(part) else np.zeros(n_parts, dtype=np.int64)
    # rows per partition in the file's own metadata: readers check what they read against it
    meta = {f"curate.rows.{int(p)}".encode(): str(int(counts[p])).encode() for p in np.flatnonzero(counts)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    parts: dict[str, list[int]] = {}

    def _write(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, table.schema, **io.PARQUET_OPTS) as w:
            off, rg = 0, 0
            for p in np.flatnonzero(counts):
                n = int(counts[p])
                first = rg
                for s in range(off, off + n, MAX_GROUP_ROWS):
                    chunk = table.slice(s, min(MAX_GROUP_ROWS, off + n - s))
                    w.write_table(chunk, row_group_size=chunk.num_rows)
                    rg += 1
                parts[str(int(p))] = [first, rg]
                off += n
            if not table.num_rows:
                w.write_table(table)  # an empty file still carries the schema

    io.atomic_write(path, _write)
    return {"name": path.name, "rows": table.num_rows, "bytes": path.stat().st_size,
            "sha256": io.sha256_file(path), "parts": parts}


def index_rows(file: str, parts: dict, src: int = -1) -> pa.Table:
    """The index rows (part, file, first, end, src) of one shuffle file's `parts` ({p: [first, end]})."""
    n = len(parts)
    bounds = np.array(list(parts.values()), dtype=np.int64).reshape(n, 2)
    return pa.table({"part": np.fromiter((int(p) for p in parts), np.int64, n), "file": pa.array([str(file)] * n, pa.string()),
                     "first": bounds[:, 0], "end": bounds[:, 1], "src": np.full(n, src, np.int64)}, schema=SOURCES_SCHEMA)


def write_index(path: Path, srcs: list) -> str:
    """An index file of shuffle sources (io.write_part_index): `srcs` items (file, parts) or
    (src, file, parts), or tables of `index_rows` -> rows (part, file, first, end, src), by
    partition, then the given order."""
    tables = [s if isinstance(s, pa.Table) else index_rows(*s[1:], src=int(s[0])) if len(s) == 3 else index_rows(*s) for s in srcs]
    return io.write_part_index(pa.concat_tables(tables) if tables else SOURCES_SCHEMA.empty_table(), Path(path))


def sources(srcs: list, p: int) -> list[tuple]:
    """Partition p's sources: index files (str, see write_index) read for p's rows only, and
    (file, parts) / (src, file, parts) items as given, in order."""
    out: list[tuple] = []
    for s in srcs:
        if not isinstance(s, str):
            out.append(tuple(s))
            continue
        t = io.read_part_index(s, p).to_pydict()
        for f, a, b, src in zip(t["file"], t["first"], t["end"], t["src"]):
            out.append((f, {str(p): [a, b]}) if src < 0 else (src, f, {str(p): [a, b]}))
    return out


def read(srcs: list, p: int, columns: list[str] | None = None,
         schema: pa.Schema | None = None) -> pa.Table:
    """All rows of partition `p` from the given shuffle files (in the order given; index files are
    expanded, see sources). A partition whose row count differs from what its writer recorded
    (`curate.rows.<p>` in the file's schema metadata) raises: an intermediate file changed under a
    running stage is never read as if it were complete."""
    srcs = sources(srcs, p)
    tables = []
    for path, parts in srcs:
        rg = parts.get(str(p))
        if rg:
            pf = pq.ParquetFile(path)
            t = pf.read_row_groups(list(range(rg[0], rg[1])), columns=columns)
            want = (pf.schema_arrow.metadata or {}).get(f"curate.rows.{p}".encode())
            if want is not None and t.num_rows != int(want):
                raise RuntimeError(f"{path}: partition {p} holds {t.num_rows} rows but its writer wrote {int(want)}; "
                                   "an intermediate file changed: re-run the stage with --force")
            tables.append(t)
    if tables:
        return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if schema is not None:
        return schema.empty_table() if columns is None else pa.schema([schema.field(c) for c in columns]).empty_table()
    return pa.table({})
