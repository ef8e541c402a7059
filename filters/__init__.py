"""Document filters: keep or reject, over a batch, no IO. One module per family; each class registers
under its `name`.

Usage from config: `{type: gopher_quality, params: {...}, sources: [...]}` -> REGISTRY[type](**params).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import Batch, ErrorBudget, Filter, FilterResult, ModelError, first_failing

REGISTRY: dict[str, type[Filter]] = {}


def register(cls: type[Filter]) -> type[Filter]:
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"filter name missing or registered twice: {cls.name!r}")
    REGISTRY[cls.name] = cls
    return cls


def build(type_: str, params: dict | None = None, load: bool = False) -> Filter:
    """The filter `type_` with `params` (checked: ValueError naming the bad one). With `load`, its
    models are loaded now (ModelError if one cannot be): the filter stage's task set-up does that;
    config validation does not (it only checks parameters, cheaply, in the driver)."""
    if type_ not in REGISTRY:
        raise ValueError(f"unknown filter type '{type_}'; known: {sorted(REGISTRY)}")
    f = REGISTRY[type_](**(params or {}))
    if load:
        f.load()
    return f


# Every module of this package registers its filters when imported: a new filter is one new file.
for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Batch", "ErrorBudget", "Filter", "FilterResult", "ModelError", "REGISTRY", "build", "first_failing", "register"]
