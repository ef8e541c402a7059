"""Stages in pipeline order. Each module exposes `STAGE` and `tasks(cfg, inp, out) -> (tasks, input_fingerprint)`."""
from stages import filter, ingest

REGISTRY = {m.STAGE: m for m in (ingest, filter)}
