"""LSH buckets -> candidate pairs, for one partition of band rows.

A band row is (band, key, ekey, uid): document `uid` has band value hash `key` in band `band`
(band -1: its exact-text hash, key = low 64 bits, ekey = high 64 bits; other bands: ekey = low 64
bits of the exact hash, used to skip pairs between identical texts, already joined by exact edges).
Documents sharing a (band, key) bucket are candidates. Without verification a star (every member
to the smallest uid) connects a bucket with n - 1 edges; with verification every pair of a bucket
is checked (up to `max_pairs_bucket` members; larger buckets, e.g. boilerplate pages, use a star
around the member with the smallest exact hash, so the pair count stays linear and the pairs
checked depend on the texts, not on the uids, i.e. not on how the input is sharded).
"""
from __future__ import annotations

import numpy as np

EXACT_BAND = -1


def candidate_probability(s: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - s ** rows) ** bands


def _runs(*cols: np.ndarray) -> np.ndarray:
    """Start indices of runs of equal rows in columns already sorted together."""
    n = len(cols[0])
    first = np.zeros(n, dtype=bool)
    if n:
        first[0] = True
        for c in cols:
            first[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(first)


def _stars(group_starts: np.ndarray, uid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges (min uid of group, other member) for groups (given by sorted starts) of size >= 2."""
    if not len(uid):
        return uid, uid
    sizes = np.diff(np.append(group_starts, len(uid)))
    gid = np.repeat(np.arange(len(group_starts)), sizes)
    center = np.minimum.reduceat(uid, group_starts)[gid]
    sel = (sizes[gid] > 1) & (uid != center)
    return center[sel], uid[sel]


def _all_pairs(starts: np.ndarray, sizes: np.ndarray, uid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (uid[s + i], uid[s + j]), i < j < n, of each bucket (s, n): one vectorized step
    per distinct bucket size (at most max_pairs_bucket of them), not a Python loop per pair."""
    pa_, pb_ = [uid[:0]], [uid[:0]]
    for n in np.unique(sizes).tolist():
        i, j = np.triu_indices(n, 1)
        s = starts[sizes == n][:, None]
        pa_.append(uid[(s + i).ravel()])
        pb_.append(uid[(s + j).ravel()])
    return np.concatenate(pa_), np.concatenate(pb_)


def bucket_pairs(band: np.ndarray, key: np.ndarray, ekey: np.ndarray, uid: np.ndarray, *, collapse_exact: bool,
                 all_pairs: bool, max_pairs_bucket: int = 64) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """-> {"exact": (a, b), "fuzzy": (a, b)}: pairs with a < b, distinct, sorted."""
    from stages.dedup.cc import unique_pairs

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ex = band == EXACT_BAND
    # Exact: identical (key, ekey) -> star around the smallest uid.
    o = np.lexsort((uid[ex], ekey[ex], key[ex]))
    k, e, u = key[ex][o], ekey[ex][o], uid[ex][o]
    a, b = _stars(_runs(k, e), u)
    out["exact"] = unique_pairs(np.minimum(a, b), np.maximum(a, b))
    # Fuzzy: buckets (band, key); one representative per exact text when exact edges exist.
    fz = ~ex
    bd, k, e, u = band[fz], key[fz], ekey[fz], uid[fz]
    o = np.lexsort((u, e, k, bd))
    bd, k, e, u = bd[o], k[o], e[o], u[o]
    if collapse_exact:
        reps = _runs(bd, k, e)
        bd, k, e, u = bd[reps], k[reps], e[reps], u[reps]
    starts = _runs(bd, k)
    sizes = np.diff(np.append(starts, len(u)))
    multi = sizes > 1
    if not all_pairs:
        a, b = _stars(starts, u)
    else:
        small = multi & (sizes <= max_pairs_bucket)
        big = multi & (sizes > max_pairs_bucket)
        pa_, pb_ = _all_pairs(starts[small], sizes[small], u)
        # Big buckets: a star around the member of the smallest exact hash `ekey` (a uid with the
        # top bit, an --against document, only if there is no other), NOT the smallest uid.
        # Verified star edges are not transitive, so the center decides which members join; a
        # uid follows the input's sharding (shard << 32 | row), the exact hash only the text.
        gid = np.repeat(np.arange(len(starts)), sizes)
        center = u[np.lexsort((u, e, u >> np.uint64(63), gid))[starts]][gid]
        leaf = big[gid] & (u != center)
        a, b = np.concatenate([pa_, center[leaf]]), np.concatenate([pb_, u[leaf]])
    out["fuzzy"] = unique_pairs(np.minimum(a, b), np.maximum(a, b))
    return out
