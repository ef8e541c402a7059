"""Corpus statistics of the score stage (driver side): bounded per-shard sketches of the score columns
(and per group, e.g. per language for CCNet's perplexity buckets), merged into quantiles and
mid-rank percentile tables. Memory stays bounded whatever the corpus size: one shard's columns at a
time, SKETCH points per shard and group.
"""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from pipeline.config import ConfigError, ScoreConfig

SKETCH = 2049  # points per shard and group: exact below this many values, rank error < 1/2048 above


def _sketch(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(values[~np.isnan(values)])
    if len(v) <= SKETCH:
        return v, np.ones(len(v))
    idx = np.linspace(0, len(v) - 1, SKETCH).round().astype(np.int64)
    return v[idx], np.full(SKETCH, len(v) / SKETCH)


class Dist:
    """Merged sketches of one column (and group): quantiles and mid-rank percentiles."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        pts = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0)
        w = np.concatenate([w for _, w in parts]) if parts else np.zeros(0)
        o = np.argsort(pts, kind="stable")
        self.pts, self.w = pts[o], w[o]
        if len(self.pts) > 4 * SKETCH:  # compress: weighted quantiles at evenly spaced levels
            lv = np.linspace(0, 1, 4 * SKETCH)
            total = self.w.sum()
            self.pts, self.w = self.quantile(lv), np.full(len(lv), total / len(lv))
        self.cw = np.concatenate([[0.0], np.cumsum(self.w)])
        self.n = float(self.w.sum())

    def quantile(self, q) -> np.ndarray:
        if not len(self.pts):
            return np.full(np.shape(q), np.nan)
        W = self.w.sum()
        ranks = np.cumsum(self.w) - (self.w + 1) / 2  # 0..W-1 for unit weights (= numpy's linear rule)
        return np.interp(np.asarray(q) * (W - 1), ranks, self.pts)

    def table(self) -> dict:
        return {"pts": self.pts.tolist(), "cw": self.cw.tolist()}


def percentile(table: dict, x: np.ndarray) -> np.ndarray:
    """Mid-rank percentile in [0, 1] of each value among the corpus values (NaN stays NaN)."""
    pts, cw = np.asarray(table["pts"]), np.asarray(table["cw"])
    if not len(pts):
        return np.full(len(x), np.nan)
    left = cw[np.searchsorted(pts, x, side="left")]
    right = cw[np.searchsorted(pts, x, side="right")]
    return np.where(np.isnan(x), np.nan, (left + right) / (2 * cw[-1]))


def _column_values(inp_path: str, scores_path: str, column: str) -> np.ndarray | list | None:
    for p in (scores_path, inp_path):
        names = pq.ParquetFile(p).schema_arrow.names
        if column in names:
            return pq.read_table(p, columns=[column]).column(column).to_pylist()
    return None


def corpus_stats(s: ScoreConfig, pairs: list[tuple[str, str]], models: dict) -> dict:
    """Quantile thresholds, bucket cut-offs and percentile tables over all shards (driver side:
    reads only the columns it needs, one shard at a time, and keeps bounded sketches)."""
    needs: dict[tuple[str, str | None], list] = {}  # (column, group-by column) -> per-shard sketches by group
    for r in s.select:
        if r.min_quantile is not None or r.max_quantile is not None:
            needs[(r.column, r.by)] = []
            needs[(r.column, None)] = []
    for q in s.quality:
        needs[(q.column, None)] = []
    if s.perplexity:
        needs[("perplexity", None)] = []
        if s.perplexity.group_by:
            needs[("perplexity", s.perplexity.group_by)] = []
    groups: dict[tuple, dict[str, list]] = {k: ({} if k[1] else {"": []}) for k in needs}
    derived = {"quality"} if s.quality else set()
    for inp_path, scores_path in pairs:
        names = set(pq.read_schema(scores_path).names) | set(pq.read_schema(inp_path).names) | derived
        for r in s.select:  # a rule on a column no shard has would reject nothing, silently
            if r.column not in names:
                raise ConfigError(f"score.select: column {r.column!r} is neither a score column nor in the input {inp_path}; "
                                  f"choose one of {sorted(names - {'id', 'text', 'score_error'})}")
        cache: dict[str, list | None] = {}
        for (col, by) in needs:
            for c in (col, by):
                if c is not None and c not in cache:
                    cache[c] = _column_values(inp_path, scores_path, c)
            vals = cache[col]
            if vals is None:
                raise ConfigError(f"score: column {col!r} (used by score.select / score.quality) is neither a score column nor in the input {inp_path}")
            v = np.array([np.nan if x is None else float(x) for x in vals], dtype=np.float64)
            if by is None:
                groups[(col, by)].setdefault("", []).append(_sketch(v))
                continue
            g = cache[by]
            keys = ["" if x is None else str(x) for x in g] if g is not None else [""] * len(v)
            ka = np.array(keys, dtype=object)
            for key in sorted(set(keys)):
                groups[(col, by)].setdefault(key, []).append(_sketch(v[ka == key]))
    return {k: {g: Dist(parts) for g, parts in gs.items()} for k, gs in groups.items()}
