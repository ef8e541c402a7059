"""SemDeDup-style semantic dedup: k-means buckets over L2-normalized embeddings (the buckets come
from `pipeline.models.kmeans.fit_sample` and `assign`), then pairs whose cosine similarity is at
least a threshold, within each bucket. Within a bucket the similarity matrix is computed in row
blocks, so memory is block x bucket, not bucket^2.
"""
from __future__ import annotations

import numpy as np


def similar_pairs(emb: np.ndarray, uid: np.ndarray, threshold: float, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b), a < b, of rows with cosine >= threshold (rows are L2-normalized)."""
    order = np.argsort(uid, kind="stable")
    emb, uid = np.ascontiguousarray(emb[order], dtype=np.float32), uid[order]
    pa, pb = [], []
    for s in range(0, len(emb), block):
        sims = emb[s:s + block] @ emb[s:].T
        i, j = np.nonzero(sims >= threshold)
        j = j + s
        keep = j > i + s  # upper triangle only
        pa.append(uid[i[keep] + s])
        pb.append(uid[j[keep]])
    if not pa:
        return uid[:0], uid[:0]
    return np.concatenate(pa), np.concatenate(pb)
