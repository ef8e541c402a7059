"""Scorers: score columns, Dolma-style ("score, then select": thresholds live in the score stage's
select pass, so re-thresholding never re-scores). The contract is in scorers/base.py.

Every module of this package is imported when the package is (so a new scorer is one file that
calls `register`); `specs()` gives them in column order.
"""
from __future__ import annotations

import importlib
import pkgutil

from scorers.base import Context, ScorerSpec

REGISTRY: dict[str, ScorerSpec] = {}


def register(spec: ScorerSpec) -> ScorerSpec:
    if spec.key in REGISTRY:
        raise ValueError(f"scorer {spec.key!r} registered twice")
    REGISTRY[spec.key] = spec
    return spec


def specs() -> list[ScorerSpec]:
    return sorted(REGISTRY.values(), key=lambda s: (s.position, s.key))


for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Context", "REGISTRY", "ScorerSpec", "register", "specs"]
