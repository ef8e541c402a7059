"""Errors shared by filters, scorers and stages: a model that cannot load (ModelError), one-line
descriptions of exceptions, and the per-shard budget of documents that may fail before a task does."""
from __future__ import annotations


class ModelError(OSError):
    """A model or other file a filter or scorer needs is missing or cannot be loaded. The message
    is one line naming the filter/scorer, the path and what to do."""


def describe(e: BaseException) -> str:
    """An exception in one line: `ValueError: first line of its message`."""
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0]}" if msg else type(e).__name__


class ErrorBudget:
    """How many documents of one shard filters (or scorers) may raise on before the task fails.

    Documents a filter still raises on when retried one by one are quarantined, as bad input, up to
    `max_fraction` of the shard's `rows` (run.max_error_fraction, default 1 %). `add` raises
    RuntimeError (the task fails, the run exits 1) when the share goes above it, or at once when a
    filter raised on every document of a batch of two or more: that is a broken model, parameter or
    bug, not bad documents. Per shard: one instance per task.
    """

    def __init__(self, where: str, rows: int, max_fraction: float, kind: str = "filter"):
        self.where, self.rows, self.max_fraction, self.kind = where, int(rows), float(max_fraction), kind
        self.count = 0
        self.by_name: dict[str, list] = {}  # name -> [documents failed, first error]

    def add(self, name: str, tried: int, failed: list[BaseException], rows: str = "", new: int | None = None) -> None:
        """`failed`: what filter `name` raised on each document it failed on, of the `tried` it ran
        on (`rows`: where in the shard, for the message); `new`: how many of those documents no
        other filter failed on before (default: all), so a document counts once."""
        if not failed:
            return
        first = describe(failed[0])
        if tried >= 2 and len(failed) == tried:
            raise RuntimeError(
                f"{self.kind} '{name}' failed on all {tried} documents of a batch of {self.where}{rows}: {first}; "
                f"a broken {self.kind} (model, parameters or a bug), not bad documents: fix it or remove it from the config")
        self.count += len(failed) if new is None else new
        entry = self.by_name.setdefault(name, [0, first])
        entry[0] += len(failed)
        if self.count > self.max_fraction * self.rows:
            top = max(self.by_name, key=lambda k: self.by_name[k][0])
            n, err = self.by_name[top]
            others = ", ".join(f"'{k}' {v[0]}" for k, v in self.by_name.items() if k != top)
            raise RuntimeError(
                f"{self.kind} '{top}' failed on {n} of {self.rows} documents of {self.where}"
                + (f" (with {others}: {self.count} in all)" if others else "")
                + f", more than run.max_error_fraction={self.max_fraction:g}; first error: {err}; "
                f"fix the {self.kind} or its input, or raise run.max_error_fraction to quarantine them")
