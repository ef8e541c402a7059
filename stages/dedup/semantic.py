"""SemDeDup-style semantic dedup: k-means buckets over L2-normalized embeddings, then pairs whose
cosine similarity is at least a threshold, within each bucket.

k-means runs on a bounded sample (faiss-cpu when installed, else scikit-learn), with one thread
so that the centroids, and everything after them, are the same on every run. Within a bucket the
similarity matrix is computed in row blocks, so memory is block x bucket, not bucket^2.
"""
from __future__ import annotations

import numpy as np


def fit_kmeans(x: np.ndarray, k: int, seed: int, iters: int = 25) -> np.ndarray:
    """(k, d) float32 centroids, L2-normalized (spherical k-means: cosine is the distance)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    k = max(1, min(k, len(x)))
    try:
        import faiss
    except ImportError:
        faiss = None
    if faiss is not None:
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=seed, spherical=True, verbose=False,
                              max_points_per_centroid=max(256, len(x) // k + 1))
            km.train(x)
            c = np.array(km.centroids, dtype=np.float32)
        finally:
            faiss.omp_set_num_threads(threads)
    else:
        from sklearn.cluster import KMeans

        c = KMeans(n_clusters=k, n_init=1, max_iter=iters, random_state=seed).fit(x).cluster_centers_.astype(np.float32)
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    return c / np.where(norms > 0, norms, 1)


def assign(x: np.ndarray, centroids: np.ndarray, block: int = 8192) -> np.ndarray:
    """Index of the most similar centroid for every row (ties: the lowest index)."""
    out = np.empty(len(x), dtype=np.int64)
    for s in range(0, len(x), block):
        out[s:s + block] = np.argmax(x[s:s + block] @ centroids.T, axis=1)
    return out


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
