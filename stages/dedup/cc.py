"""Connected components by alternating large-star / small-star (Kiveris et al., "Connected
Components in MapReduce and Beyond", SoCC 2014), one partition of nodes at a time.

Nodes are uint64 ids; a component's label is its smallest id. Each step groups edge rows by
`key` (so a task needs only the rows of its own nodes: memory grows with the partition, not the
corpus) and emits new rows routed to the partition of their new key:

- large-star: rows (u, v) for both directions of every edge. For each u, m = min(u, N(u)); emit
  {v, m} for every neighbour v > u. Output rows (v, m), keyed by the larger end v.
- small-star: rows (u, v) with v < u. For each u, m = min N(u); emit {v, m} for v in N(u) + {u},
  v != m. Output: both directions of every edge, ready for the next large-star.

Stop after a round in which neither step changed anything; then every edge is (node, root).
Rounds are O(log^2 n) in theory and 1-3 for duplicate clusters in practice.
"""
from __future__ import annotations

import numpy as np


def _group(key: np.ndarray, nbr: np.ndarray):
    order = np.lexsort((nbr, key))
    key, nbr = key[order], nbr[order]
    first = np.ones(len(key), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    starts = np.flatnonzero(first)
    gid = np.cumsum(first) - 1
    return key, nbr, starts, gid


def unique_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (a, b) rows, sorted by (a, b)."""
    if not len(a):
        return a, b
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    keep = np.ones(len(a), dtype=bool)
    keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[keep], b[keep]


def large_star(key: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """-> (v, m, changes): edges {v, m} with v > m, and how many nodes changed their star."""
    if not len(key):
        return key, nbr, 0
    key, nbr, starts, gid = _group(key, nbr)
    uniq = key[starts]
    m = np.minimum(uniq, np.minimum.reduceat(nbr, starts))
    has_larger = np.maximum.reduceat(nbr, starts) > uniq
    changes = int(np.count_nonzero(has_larger & (m < uniq)))
    sel = nbr > key
    v, mm = unique_pairs(nbr[sel], m[gid][sel])
    return v, mm, changes


def small_star(key: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """key > nbr for every row. -> (x, m, changes): edges {x, m} with x > m."""
    if not len(key):
        return key, nbr, 0
    key, nbr, starts, gid = _group(key, nbr)
    m = nbr[starts]  # sorted by nbr within a group: the first is the smallest
    sizes = np.diff(np.append(starts, len(key)))
    changes = int(np.count_nonzero(sizes > 1))
    mrow = m[gid]
    sel = nbr != mrow
    x = np.concatenate([key[starts], nbr[sel]])
    r = np.concatenate([m, mrow[sel]])
    x, r = unique_pairs(x, r)
    return x, r, changes


def labels(key: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From converged large-star input rows (both directions of node-root edges): (node, root)
    for every node whose key is here, roots included (labelled with themselves)."""
    root = np.where(key > nbr, nbr, key)
    return unique_pairs(key, root)


def reference_components(a: np.ndarray, b: np.ndarray) -> dict[int, int]:
    """Plain union-find (for tests): node -> smallest node of its component."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist()):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return {x: find(x) for x in list(parent)}
