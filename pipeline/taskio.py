"""What a task writes: kept shards, `_rejected/`, `_quarantine/`, and the counters of its marker.

Stages build tables and hand them here; this class owns file names, counting by reason and by
source, and the marker payload. `rows_in` is set by the stage from what it read, independently of
what it wrote, so the runner's accounting check (in = kept + rejected + quarantined) means something.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import io
from pipeline.schema import N_TOKENS, QUARANTINE_SCHEMA, REASON, SOURCE, STAGE


class TaskOutput:
    def __init__(self, out: Path, prefix: str, stage: str, target_rows: int, target_bytes: int, single: bool = False,
                 row_group_size: int | None = None):
        out = Path(out)
        self.stage = stage
        self.kept = io.ShardWriter(out, prefix, target_rows, target_bytes, single=single, row_group_size=row_group_size)
        self.rejected = io.ShardWriter(out / io.REJECTED, prefix, single=True)
        self.quarantine = io.ShardWriter(out / io.QUARANTINE, prefix, single=True)
        self.rows_in = 0
        self.tokens_in = 0
        self.bytes_in = 0
        self.c = Counter()
        self.reasons: Counter = Counter()
        self.by_source: dict[str, dict] = {}

    def _source(self, src: str) -> dict:
        return self.by_source.setdefault(src, {"rows_in": 0, "kept": 0, "rejected": 0, "reasons": Counter()})

    def add_kept(self, table: pa.Table) -> None:
        self.kept.add(table)
        self.c["kept"] += table.num_rows
        self.c["tokens_kept"] += _tokens(table)
        self.c["bytes_kept"] += _text_bytes(table)
        for src, n in _value_counts(table, SOURCE).items():
            s = self._source(src)
            s["rows_in"] += n
            s["kept"] += n

    def add_rejected(self, table: pa.Table) -> None:
        """`table` holds all columns plus `reason`; the stage column is added here."""
        if table.num_rows == 0:
            return
        table = table.append_column(STAGE, pa.array([self.stage] * table.num_rows, pa.string()))
        self.rejected.add(table)
        self.c["rejected"] += table.num_rows
        self.c["tokens_rejected"] += _tokens(table)
        reasons = table.column(REASON).to_pylist()
        self.reasons.update(reasons)
        if SOURCE in table.column_names:
            for src, reason in zip(table.column(SOURCE).to_pylist(), reasons):
                s = self._source(src)
                s["rows_in"] += 1
                s["rejected"] += 1
                s["reasons"][reason] += 1

    def add_quarantined(self, rows: list[dict]) -> None:
        """rows: dicts with file, pos, raw (bytes), error, optional id; optional `rows` (input rows
        the entry stands for, default 1: N for a lost row group) and `byte_offset`/`byte_length`
        (an unread byte range). Counters count input rows, not entries."""
        if not rows:
            return
        self.quarantine.add(quarantine_table(rows, self.stage))
        for r in rows:
            n = _rows(r)
            self.c["quarantined"] += n
            self.reasons[f"quarantine:{_kind(r['error'])}"] += n

    def finish(self, **extra) -> dict:
        return {
            "rows_in": self.rows_in, "kept": self.c["kept"], "rejected": self.c["rejected"],
            "quarantined": self.c["quarantined"], "tokens_in": self.tokens_in,
            "tokens_kept": self.c["tokens_kept"], "tokens_rejected": self.c["tokens_rejected"],
            "bytes_in": self.bytes_in, "bytes_kept": self.c["bytes_kept"],
            "kept_files": self.kept.close(), "rejected_files": self.rejected.close(),
            "quarantine_files": self.quarantine.close(),
            "reasons": dict(sorted(self.reasons.items())),
            "by_source": {k: {**v, "reasons": dict(sorted(v["reasons"].items()))} for k, v in sorted(self.by_source.items())},
            **extra,
        }


def quarantine_table(rows: list[dict], stage: str) -> pa.Table:
    cols = {f.name: [r.get(f.name) for r in rows] for f in QUARANTINE_SCHEMA if f.name != STAGE}
    cols[STAGE] = [stage] * len(rows)
    cols["rows"] = [_rows(r) for r in rows]
    return pa.table(cols, schema=QUARANTINE_SCHEMA)


def _rows(r: dict) -> int:
    """Input rows a quarantine entry stands for (1 unless the entry says otherwise)."""
    n = r.get("rows")
    return 1 if n is None else int(n)


def _tokens(table: pa.Table) -> int:
    return int(pc.sum(table.column(N_TOKENS)).as_py() or 0) if N_TOKENS in table.column_names else 0


def _text_bytes(table: pa.Table) -> int:
    return int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0) if "text" in table.column_names else 0


def _value_counts(table: pa.Table, col: str) -> dict[str, int]:
    if col not in table.column_names or table.num_rows == 0:
        return {}
    vc = pc.value_counts(table.column(col)).to_pylist()
    return {d["values"]: d["counts"] for d in vc}


def _kind(error: str) -> str:
    """Short class of a quarantine error for counters: 'invalid JSON', 'not valid UTF-8' ..."""
    msg = error.split(": ", 2)[-1] if ": " in error else error
    return msg.split("(")[0].split(";")[0].split(":")[0].strip()[:60] or "error"
