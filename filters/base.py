"""The filter contract: a filter looks at a Batch and says, per document, keep (None) or a reason.

A filter never does IO and never knows about Ray. The engine (pipeline/) owns the loop, the
counters and the writing of `_rejected/`. Shared per-batch views (word split, lines) are computed
once per batch and cached on the Batch, so ten filters do not tokenize ten times.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from pipeline.errors import ErrorBudget, ModelError, describe  # noqa: F401 - the filters' API

# Words: runs of non-space characters. Cheap, language-agnostic and done once per batch.
WORD_RE = re.compile(r"\S+")


class Batch:
    """A list of texts plus lazily computed, cached views shared by all filters. `table`: the rows'
    other columns (`meta`, `source` ...), which a filter reads with `column(name)`."""

    def __init__(self, texts: list[str], table: Any = None):
        self.texts = texts
        self._table = table
        self._columns: dict[str, list] = {}
        # A sub-batch made by take() asks its root for the standard views, so the word split of a
        # document is computed once per batch however many filters (on however many subsets) use it.
        self._root: Batch | None = None
        self._idx: list[int] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: list[int]) -> "Batch":
        """Sub-batch of documents `idx`, sharing the views already computed (and later ones)."""
        sub = Batch([self.texts[i] for i in idx])
        root = self._root or self
        sub._root = root
        sub._idx = idx if self._idx is None else [self._idx[i] for i in idx]
        for name, value in self.__dict__.items():
            if name not in ("texts", "_root", "_idx", "_table", "_columns"):
                sub.__dict__[name] = value[idx] if isinstance(value, np.ndarray) else [value[i] for i in idx]
        return sub

    def _view(self, name: str, compute):
        if self._root is None:
            return compute(self.texts)
        full = getattr(self._root, name)
        return full[self._idx] if isinstance(full, np.ndarray) else [full[i] for i in self._idx]

    def column(self, name: str) -> list:
        """Column `name` of the batch's rows as a list (all None when the table lacks it)."""
        if name not in self._columns:
            if self._root is not None:
                full = self._root.column(name)
                self._columns[name] = [full[i] for i in self._idx]
            elif self._table is not None and name in self._table.column_names:
                self._columns[name] = self._table.column(name).to_pylist()
            else:
                self._columns[name] = [None] * len(self.texts)
        return self._columns[name]

    @cached_property
    def words(self) -> list[list[str]]:
        return self._view("words", lambda texts: [t.split() for t in texts])

    @cached_property
    def lines(self) -> list[list[str]]:
        return self._view("lines", lambda texts: [t.splitlines() for t in texts])

    @cached_property
    def n_chars(self) -> np.ndarray:
        return self._view("n_chars", lambda texts: np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)))

    @cached_property
    def n_words(self) -> np.ndarray:
        return np.fromiter((len(w) for w in self.words), dtype=np.int64, count=len(self.texts))


def check_number(name: str, value: Any, lo: float = 0.0) -> None:
    """A numeric filter parameter is a number >= lo, or null (the bound is off); ValueError naming it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo:
        raise ValueError(f"parameter '{name}' must be a number >= {lo} or null, got {value!r}")


@dataclass
class FilterResult:
    """reasons[i] is None to keep document i, else a precise reason like 'gopher:mean_word_length'.

    columns: optional new per-document columns (e.g. {'lang': [...], 'lang_score': [...]}) that
    the engine adds to kept and rejected rows alike.
    counters: optional counts over the batch (e.g. {'pii:email': 3}) that the engine sums per shard
    into the stage's `_stats.json` (`counters`).
    """

    reasons: list[str | None]
    columns: dict[str, list[Any]] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)


class Filter:
    """Base class. Subclasses set `name` and implement `apply(batch) -> FilterResult`.

    Configuration is passed as keyword arguments that override class-level defaults declared in
    `params` (a dict of name -> default). Unknown parameters raise ValueError naming the key.
    """

    name: ClassVar[str] = ""
    params: ClassVar[dict[str, Any]] = {}
    # Columns this filter adds, with their Arrow type names ("string", "float32", ...), so that a
    # batch in which no document reached the filter still writes a column of the right type.
    output_columns: ClassVar[dict[str, str]] = {}

    def __init__(self, **overrides: Any):
        unknown = set(overrides) - set(self.params)
        if unknown:
            raise ValueError(
                f"filter '{self.name}': unknown parameter(s) {sorted(unknown)}; "
                f"known: {sorted(self.params)}"
            )
        self.cfg = {**self.params, **overrides}

    def check(self) -> None:
        """Cheap check, loading nothing, that the files this filter reads (models) exist; raises
        ModelError. The filter stage runs it in the driver before any task. Default: no files."""

    def load(self) -> None:
        """Load this filter's models; raises ModelError (one line: filter, path, what to do). The
        filter stage calls it once per task through `filters.build(..., load=True)`, before any
        document, so a model that cannot load fails the task instead of every document."""

    def apply(self, batch: Batch) -> FilterResult:  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, batch: Batch) -> FilterResult:
        res = self.apply(batch)
        if len(res.reasons) != len(batch):
            raise RuntimeError(f"filter '{self.name}' returned {len(res.reasons)} results for {len(batch)} docs")
        return res


def first_failing(n: int, checks: list[tuple[str, np.ndarray]]) -> list[str | None]:
    """Combine boolean 'fails' masks in order; each document gets the first failing reason."""
    reasons: list[str | None] = [None] * n
    pending = np.ones(n, dtype=bool)
    for reason, fails in checks:
        hit = np.flatnonzero(pending & fails)
        for i in hit:
            reasons[i] = reason
        pending[hit] = False
    return reasons
