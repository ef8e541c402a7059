"""The scorer contract. A scorer adds score columns to documents; unlike a filter it may load a model.

Each scorer module registers a `ScorerSpec` under its config key (`score.<key>`):
- `prepare(section, ctx) -> entry` runs once in the driver: it finds, trains or builds the model the
  section names, cached under the score stage's `_models/` by a content hash (`ctx.cache_key`), and
  returns a JSON entry (path, sha256, what it was trained on) recorded in `_score.json`;
- `build(section, entry) -> scorer` runs once per task, before any document: the scorer loads its
  model there, raising ModelError (one line: scorer, path, what to do) when it cannot.

A scorer is an object with `name`, `output_columns` ({column: arrow type name}), optionally
`input_columns` (columns of the shard it reads, e.g. `lang`), and `__call__(texts, **columns) ->
{column: values}`. The engine (stages/score.py) owns the loop, batching, retries and error budget.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline import io


@dataclass(frozen=True)
class ScorerSpec:
    key: str
    prepare: Callable[[Any, "Context"], dict]
    build: Callable[[Any, dict], Any]
    # Order of the scorers' columns in the attribute files (lower first); new scorers go after the
    # built-in ones, so adding one never reorders the columns of the others.
    position: int = 100


@dataclass
class Context:
    """What `prepare` may use: the stage's input dir, the model cache dir and the run's seed."""

    inp: Path | None
    models_dir: Path
    seed: int
    version: int  # the score stage's CODE_VERSION: part of every cache key

    def input_fingerprint(self) -> str | None:
        return io.dataset_fingerprint(self.inp) if self.inp is not None else None

    def data_fingerprint(self, path: Path | None) -> str | None:
        """Fingerprint of training data: a dataset dir, a file, a dir of files; None = the input."""
        from pipeline.models import train

        if path is None:
            return self.input_fingerprint()
        p = Path(path)
        if train.is_dataset_dir(p):
            return io.dataset_fingerprint(p)
        return io.fingerprint(sorted(map(str, p.rglob("*"))) if p.is_dir() else [p])

    def cache_key(self, obj) -> str:
        return io.content_hash(obj)


def cached_meta(meta_path: Path, model_path: Path) -> dict | None:
    """Metadata of a cached model whose file is complete (its sha256 matches)."""
    if not (meta_path.exists() and model_path.exists()):
        return None
    try:
        meta = io.read_json(meta_path)
    except (OSError, ValueError):
        return None
    want = meta.get("sha256") or meta.get("files", {}).get(model_path.name)
    return meta if want == io.sha256_file(model_path) else None


def brief(meta: dict) -> dict:
    """What a trained model's entry records of its meta: validation, parameters, data."""
    return {k: meta.get(k) for k in ("validation", "params", "data") if k in meta}


def model_id(path: str) -> str:
    """Fingerprint of an embedding model dir (what its cache keys depend on)."""
    from pipeline.models.embedder import model_fingerprint

    return model_fingerprint(path)
