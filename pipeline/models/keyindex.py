"""64-bit keys of integer-id sequences and `KeyIndex`, an open-addressing table to find them.

`hash_cols` mixes k id columns into one uint64 per row (the n-gram keys of `pipeline.models.ngram`,
stored in its .npz files: changing it means bumping `ngram.HASH_VERSION`). `KeyIndex` looks
uint64 keys up with whole-array numpy operations; the n-gram scorer and the fastText vocabulary
(`pipeline.models.fasttext`) use it.
"""
from __future__ import annotations

import numpy as np

_U = np.uint64
_SEED, _M1, _M2, _M3 = _U(0x243F6A8885A308D3), _U(0x9E3779B97F4A7C15), _U(0xBF58476D1CE4E5B9), _U(0x94D049BB133111EB)


def hash_cols(cols: list[np.ndarray]) -> np.ndarray:
    """64-bit key of each row of the id columns `cols` (all the same length)."""
    with np.errstate(over="ignore"):
        h = np.full(len(cols[0]), _SEED + _U(len(cols)), dtype=np.uint64)
        for c in cols:
            h ^= c.astype(np.uint64, copy=False)
            h *= _M1
            h ^= h >> _U(29)
        h ^= h >> _U(30)
        h *= _M2
        h ^= h >> _U(27)
        h *= _M3
        h ^= h >> _U(31)
    return h


def window_keys(ids: np.ndarray, k: int) -> np.ndarray:
    """Key of the k-gram starting at each position (len(ids) - k + 1 of them)."""
    m = len(ids) - k + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64)
    return hash_cols([ids[j:j + m] for j in range(k)])


class KeyIndex:
    """Open-addressing hash table (linear probing, load <= 0.5) over an array of distinct uint64
    keys, built and probed with whole-array numpy operations. ~1.5 probes per lookup instead of
    binary search's ~20 dependent cache misses: scoring is ~4x faster than `searchsorted`.
    The table stores the keys themselves, so a probe is two independent gathers."""

    def __init__(self, keys: np.ndarray, slots_per_key: int = 2):
        self.keys = keys
        n = len(keys)
        size = 1 << max(4, int(np.ceil(np.log2(slots_per_key * n + 1))))
        self.mask = np.uint64(size - 1)
        slot = np.full(size, -1, dtype=np.int32 if n < 2**31 else np.int64)
        pos = (keys & self.mask).astype(np.int64)
        pending = np.arange(n)
        while len(pending):
            p = pos[pending]
            free = slot[p] < 0
            cand, pc = pending[free], p[free]
            slot[pc] = cand  # several keys may race for one slot: one of them wins it
            won = np.zeros(n, dtype=bool)
            won[cand[slot[pc] == cand]] = True
            pending = pending[~won[pending]]
            pos[pending] = (pos[pending] + 1) & int(self.mask)
        self.slot = slot
        self.tkeys = np.where(slot >= 0, keys[np.maximum(slot, 0)] if n else 0, 0).astype(np.uint64)

    def find(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, index into keys) of the queries `q`."""
        if len(self.keys) == 0 or len(q) == 0:
            return np.zeros(len(q), dtype=bool), np.zeros(len(q), dtype=np.int64)
        pos = (q & self.mask).astype(np.intp)
        s = self.slot[pos]
        occupied = s >= 0
        hit = (self.tkeys[pos] == q) & occupied
        idx = np.where(hit, s, -1).astype(np.int64)
        active = np.flatnonzero(occupied != hit)  # occupied by another key: probe on
        while len(active):
            p = (pos[active] + 1) & int(self.mask)
            pos[active] = p
            s = self.slot[p]
            occupied = s >= 0
            hit = occupied & (self.tkeys[p] == q[active])
            idx[active[hit]] = s[hit]
            active = active[occupied & ~hit]
        return idx >= 0, np.maximum(idx, 0)
