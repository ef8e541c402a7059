"""Stages in pipeline order. Each module exposes `STAGE` and either `tasks(cfg, inp, out) -> (tasks,
input_fingerprint)` (one pass of per-shard tasks) or `run(cfg, inp, out, phase)` (multi-pass)."""
from stages import cluster, dedup, evaluate, filter, ingest, mix, remix, score

REGISTRY = {m.STAGE: m for m in (ingest, filter, dedup, score, cluster, mix, remix, evaluate)}
