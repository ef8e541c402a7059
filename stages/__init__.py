"""Stages in pipeline order. Each module exposes `STAGE` and `tasks(cfg, inp, out) -> (tasks, input_fingerprint)`."""
from stages import cluster, dedup, filter, ingest, score

REGISTRY = {m.STAGE: m for m in (ingest, filter, dedup, score, cluster)}
