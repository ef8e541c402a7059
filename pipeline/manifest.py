"""A stage's manifest and stats from its tasks' markers: per shard and total counters (the
accounting), files, inputs; reasons and per-source counts."""
from __future__ import annotations

from collections import Counter

from pipeline import io


COUNTERS = ("rows_in", "kept", "rejected", "quarantined", "tokens_in", "tokens_kept", "tokens_rejected", "bytes_in", "bytes_kept")


def build_manifest(header: dict, markers: dict[str, dict], complete: bool) -> dict:
    shards, totals = {}, Counter()
    for key in sorted(markers):
        m = markers[key]
        shards[key] = {c: m.get(c, 0) for c in COUNTERS} | {
            "files": [dict(f, dir=d) for d, fk in (("", "kept_files"), (io.REJECTED, "rejected_files"), (io.QUARANTINE, "quarantine_files")) for f in m.get(fk, [])],
            "inputs": m.get("inputs", []),
        } | ({"input_fp": m["input_fp"]} if "input_fp" in m else {})
        totals.update({c: m.get(c, 0) for c in COUNTERS})
    return {**header, "status": "complete" if complete else "incomplete", "totals": dict(totals), "shards": shards}


def build_stats(markers, seconds: float) -> dict:
    reasons, by_source, per_task, counters = Counter(), {}, 0.0, Counter()
    for m in markers:
        if not m:
            continue
        reasons.update(m.get("reasons", {}))
        counters.update(m.get("counters", {}))  # a stage's own counts (e.g. filter: pii:email)
        per_task += m.get("seconds", 0.0)
        for src, c in m.get("by_source", {}).items():
            s = by_source.setdefault(src, {"rows_in": 0, "kept": 0, "rejected": 0, "reasons": Counter()})
            for k in ("rows_in", "kept", "rejected"):
                s[k] += c.get(k, 0)
            s["reasons"].update(c.get("reasons", {}))
    return {"reasons": dict(reasons.most_common()), "by_source": by_source,
            **({"counters": dict(sorted(counters.items()))} if counters else {}),
            "timings": {"wall_seconds": round(seconds, 3), "task_seconds": round(per_task, 3)}}
