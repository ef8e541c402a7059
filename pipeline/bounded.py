"""The rows with the smallest keys whose tokens reach a cap, selected from a stream of chunks.

`Smallest(cap)` takes chunks of rows (a key per row, a token count per row, any other columns) and
keeps what a sort of all rows by key followed by a cut at the cap would keep: the fewest rows,
smallest keys first, whose tokens sum to at least `cap` (all rows when they never reach it; none
when cap <= 0). Memory is bounded by the cap, not by the stream: the rows held are cut down to
that selection whenever they outgrow twice what the last cut kept (at least `floor` rows), so at
most max(2 x kept, floor) rows plus one chunk are held. A cut never drops a row the final selection
keeps (the selection of a subset reaches the cap at a key no smaller than the whole's), so the
result does not depend on how the rows are cut into chunks or in which order the chunks come.

Ties of equal keys are broken by arrival order (a stable sort); give unique keys (e.g. a seeded
hash of a row index) where the row set must not depend on the input order.

Used by the remix plan (a domain's partial-pass window, stages/remix/plan.py) and the proxy token
streams (per-domain hash thresholds, pipeline/models/tokenstreams.py).
"""
from __future__ import annotations

import numpy as np

FLOOR = 4096  # rows held before the first cut


class Smallest:
    """Rows of smallest `key` until their `tokens` column sums to `cap` (see the module doc)."""

    def __init__(self, cap: float, tokens: str = "tokens", floor: int = FLOOR):
        self.cap, self.tokens, self.floor = cap, tokens, floor
        self.keys: list[np.ndarray] = []
        self.cols: dict[str, list[np.ndarray]] = {}
        self.kept = self.held = 0  # rows the last cut kept; rows held now

    def add(self, keys: np.ndarray, **cols: np.ndarray) -> None:
        """One chunk: a key per row and the same rows' columns (one of them named `tokens`)."""
        if self.tokens not in cols:
            raise ValueError(f"Smallest.add: no {self.tokens!r} column (the token counts) among {sorted(cols)}")
        n = len(keys)
        if any(len(v) != n for v in cols.values()):
            raise ValueError(f"Smallest.add: columns of {sorted((c, len(v)) for c, v in cols.items())} rows, keys of {n}")
        if self.keys and set(cols) != set(self.cols):
            raise ValueError(f"Smallest.add: columns {sorted(cols)}, earlier chunks had {sorted(self.cols)}")
        self.keys.append(np.asarray(keys))
        for c, v in cols.items():
            self.cols.setdefault(c, []).append(np.asarray(v))
        self.held += n
        if self.held > max(2 * self.kept, self.floor):
            self._cut()

    def _cut(self) -> None:
        k = np.concatenate(self.keys)
        c = {name: np.concatenate(v) for name, v in self.cols.items()}
        at = np.argsort(k, kind="stable")
        n = 0 if self.cap <= 0 else int(np.searchsorted(np.cumsum(c[self.tokens][at]), self.cap, side="left")) + 1
        at = at[:n]
        self.keys, self.cols = [k[at]], {name: [v[at]] for name, v in c.items()}
        self.kept = self.held = len(at)

    def final(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(keys, columns) of the selection, in key order; ({}-columns and no keys when nothing came)."""
        if not self.keys:
            return np.zeros(0, np.uint64), {}
        self._cut()
        return self.keys[0], {name: v[0] for name, v in self.cols.items()}
