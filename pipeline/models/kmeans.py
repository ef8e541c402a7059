"""Spherical k-means for embeddings: fit on a sample, then assign any number of rows in chunks.

Backends: `faiss` (CPU, or GPU when the installed faiss sees one), `torch` (the same Lloyd loop as
plain matmuls, for a CUDA machine whose faiss has no GPU support), `sklearn` (fallback when faiss
is missing; Euclidean k-means on unit vectors with centroids re-normalized). `auto` picks faiss-GPU,
then torch-CUDA, then faiss-CPU, then sklearn; a stage resolves it once in its driver
(`resolve_backend`), fits there, and records the backend in its config hash and manifest. Tasks
only `assign`, with the same numpy arithmetic whatever backend fitted and whatever rows they hold.

Every backend starts from the same k-means++ seeds drawn with numpy's seeded generator, so a fit is
deterministic given (data, k, seed, backend) and the backends agree up to float rounding. Spherical
(default): rows and centroids are unit vectors and a row goes to the centroid of highest cosine.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

BACKENDS = ("auto", "faiss", "torch", "sklearn")


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32; unit rows when spherical
    objective: float  # mean cosine to the assigned centroid (spherical) or mean squared distance
    iterations: int
    backend: str
    seconds: float


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def resolve_backend(backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"k-means backend must be one of {BACKENDS}, got {backend!r}")
    faiss = _faiss()
    if backend == "faiss" and faiss is None:
        raise RuntimeError("k-means backend 'faiss' needs the faiss-cpu (or faiss-gpu) package")
    if backend != "auto":
        return backend
    if faiss is not None and getattr(faiss, "get_num_gpus", lambda: 0)() > 0:
        return "faiss"
    if _cuda():
        return "torch"
    return "faiss" if faiss is not None else "sklearn"


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


def kmeans_pp(x: np.ndarray, k: int, seed: int, max_points: int | None = None) -> np.ndarray:
    """Greedy k-means++ seeds (Arthur & Vassilvitskii; greedy variant as in scikit-learn): each step
    draws 2 + ln(k) candidates with probability proportional to their squared distance from the
    nearest seed so far and keeps the one that lowers the total most, so two seeds rarely land in
    one blob. Drawn from at most `max_points` rows (default 64 per centroid)."""
    rng = np.random.default_rng(seed)
    n = len(x)
    if n < k:
        raise ValueError(f"k-means needs at least as many rows as clusters: {n} rows, k={k}")
    max_points = max_points or 64 * k
    pool = x if n <= max_points else x[np.sort(rng.choice(n, max_points, replace=False))]
    pool = np.ascontiguousarray(pool, dtype=np.float32)
    sq = np.einsum("ij,ij->i", pool, pool)
    trials = 2 + int(np.log(k))

    def dist2(rows: np.ndarray) -> np.ndarray:  # (len(rows), len(pool)) squared distances
        return np.maximum(sq[rows, None] - 2 * pool[rows] @ pool.T + sq[None, :], 0)

    first = int(rng.integers(len(pool)))
    chosen = [first]
    d2 = dist2(np.array([first]))[0]
    for _ in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than k: any row will do
            cand = rng.integers(len(pool), size=1)
        else:
            cand = np.searchsorted(np.cumsum(d2, dtype=np.float64), rng.random(trials) * total, side="right")
            cand = np.minimum(cand, len(pool) - 1)
        new = np.minimum(d2[None, :], dist2(cand))
        best = int(np.argmin(new.sum(1)))
        chosen.append(int(cand[best]))
        d2 = new[best]
    return pool[chosen].copy()


def fit(x: np.ndarray, k: int, *, niter: int = 25, seed: int = 0, spherical: bool = True,
        backend: str = "auto") -> KMeansResult:
    """Cluster the rows of `x` (a sample, held in memory) into k centroids."""
    t0 = time.perf_counter()
    x = normalize(x) if spherical else np.ascontiguousarray(x, dtype=np.float32)
    backend = resolve_backend(backend)
    init = kmeans_pp(x, k, seed)
    if backend == "faiss":
        centroids = _fit_faiss(x, init, niter, seed, spherical)
    elif backend == "torch":
        centroids = _fit_torch(x, init, niter, spherical)
    else:
        centroids = _fit_sklearn(x, init, niter, seed, spherical)
    centroids = normalize(centroids) if spherical else centroids.astype(np.float32)
    _, score = assign(x, centroids, spherical=spherical)
    objective = float(score.mean())
    return KMeansResult(centroids, objective, niter, backend, time.perf_counter() - t0)


def _fit_faiss(x, init, niter, seed, spherical):
    faiss = _faiss()
    gpu = getattr(faiss, "get_num_gpus", lambda: 0)() > 0
    km = faiss.Kmeans(x.shape[1], len(init), niter=niter, seed=seed, spherical=spherical, gpu=gpu,
                      max_points_per_centroid=1 << 30, min_points_per_centroid=1, verbose=False)
    km.train(x, init_centroids=init)  # faiss's own subsampling is off: `x` already is the sample
    return np.asarray(km.centroids, dtype=np.float32)


def _fit_torch(x, init, niter, spherical, chunk: int = 1 << 16):
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    X = torch.from_numpy(x).to(dev)
    C = torch.from_numpy(init).to(dev)
    k = len(init)
    for _ in range(niter):
        labels = torch.empty(len(X), dtype=torch.long, device=dev)
        best = torch.empty(len(X), dtype=X.dtype, device=dev)
        for s in range(0, len(X), chunk):
            xb = X[s:s + chunk]
            score = xb @ C.T if spherical else -(torch.cdist(xb, C) ** 2)
            best[s:s + chunk], labels[s:s + chunk] = score.max(dim=1)
        sums = torch.zeros_like(C).index_add_(0, labels, X)
        counts = torch.bincount(labels, minlength=k).to(X.dtype)
        empty = (counts == 0).nonzero().flatten()
        C = sums / counts.clamp(min=1).unsqueeze(1)
        if len(empty):  # re-seed empty clusters with the worst-served rows (deterministic)
            C[empty] = X[torch.argsort(best, stable=True)[: len(empty)]]
        if spherical:
            C = torch.nn.functional.normalize(C, dim=1)
    return C.float().cpu().numpy()


def _fit_sklearn(x, init, niter, seed, spherical):
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=len(init), init=init, n_init=1, max_iter=niter, random_state=seed, algorithm="lloyd")
    km.fit(x)
    return km.cluster_centers_.astype(np.float32)


@dataclass
class Refined:
    mapping: np.ndarray  # (k_init,) int32: final cluster id of each k-means cluster, -1 = pruned
    centroids: np.ndarray  # (k_final, d) float32: size-weighted means of the merged centroids
    pruned: list[dict]  # one entry per pruned k-means cluster or final cluster: what and why


def refine(centroids: np.ndarray, counts: np.ndarray, *, k: int | None = None, method: str = "ward",
           distance: float | None = None, min_docs: int = 0, quality: np.ndarray | None = None,
           min_quality: float | None = None, spherical: bool = True) -> Refined:
    """CLIMB-style refinement of k-means clusters (pure; the stage feeds it full-corpus counts).

    1. k-means clusters whose mean `quality` is below `min_quality` are pruned (before merging, as
       CLIMB does, so a bad cluster cannot hide inside a good one). Empty clusters are dropped.
    2. The rest are merged by agglomerative clustering of their centroids (`method` linkage on
       Euclidean distance between unit vectors): down to `k` clusters, and/or joining only clusters
       closer than `distance`; with both, the coarser of the two cuts.
    3. Merged clusters with fewer than `min_docs` documents are pruned.
    Final ids: largest first (ties: lowest k-means id), so cluster 0 is the biggest.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    k_init = len(centroids)
    counts = np.asarray(counts, dtype=np.int64)
    pruned: list[dict] = []
    alive = counts > 0
    if min_quality is not None and quality is not None:
        low = alive & np.isfinite(quality) & (quality < min_quality)
        pruned += [{"kmeans_cluster": int(i), "docs": int(counts[i]), "mean_quality": float(quality[i]), "why": "quality"}
                   for i in np.flatnonzero(low)]
        alive &= ~low
    idx = np.flatnonzero(alive)
    group = np.arange(len(idx))  # each survivor its own group until merged
    if len(idx) > 1 and (k is not None or distance is not None):
        z = linkage(np.asarray(centroids, dtype=np.float64)[idx], method=method, metric="euclidean")
        cuts = []
        if k is not None:
            cuts.append(fcluster(z, t=min(k, len(idx)), criterion="maxclust"))
        if distance is not None:
            cuts.append(fcluster(z, t=distance, criterion="distance"))
        group = min(cuts, key=lambda c: len(np.unique(c))) - 1
    groups = {}
    for g, i in zip(group, idx):
        groups.setdefault(int(g), []).append(int(i))
    members = sorted(groups.values(), key=lambda m: (-int(counts[m].sum()), min(m)))
    mapping = np.full(k_init, -1, dtype=np.int32)
    final = []
    for m in members:
        size = int(counts[m].sum())
        if size < min_docs:
            pruned.append({"kmeans_clusters": m, "docs": size, "why": "tiny"})
            continue
        mapping[m] = len(final)
        c = (np.asarray(centroids, dtype=np.float64)[m] * counts[m, None]).sum(0) / max(size, 1)
        final.append(c)
    dim = np.asarray(centroids).shape[1]
    fc = np.asarray(final, dtype=np.float32).reshape(len(final), dim)
    return Refined(mapping, normalize(fc) if spherical and len(fc) else fc, pruned)


def _dots(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """x @ c.T, each entry summed in one fixed order whatever the number or position of rows:
    BLAS sgemm is not (measured with numpy's OpenBLAS: the same rows in chunks of 7, 64 or 1000, or
    in fixed-shape blocks at another offset, give other last bits, ~3e-5), and a last bit can flip
    a near-tie. numpy's einsum loop (no BLAS) is ~6x slower than sgemm here (0.15 s per 32k rows x
    64 centroids x 384 dims), noise next to the embedding."""
    return np.einsum("ij,kj->ik", x, c, optimize=False)


def assign(x: np.ndarray, centroids: np.ndarray, *, spherical: bool = True, chunk: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row: (labels int32, score float32), score = cosine (spherical) or
    squared distance. Chunked, so memory is chunk x k whatever the number of rows. Ties go to the
    lowest centroid id. A row's label and score are the same bits whatever rows it is assigned
    with (census, write and re-runs with another run.docs_per_batch agree; see `_dots`)."""
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    labels = np.empty(len(x), dtype=np.int32)
    score = np.empty(len(x), dtype=np.float32)
    csq = np.einsum("ij,ij->i", c, c)
    for s in range(0, len(x), chunk):
        xb = np.asarray(x[s:s + chunk], dtype=np.float32)
        if spherical:
            xb = normalize(xb)
            sim = _dots(xb, c)
            labels[s:s + chunk] = sim.argmax(axis=1)
            score[s:s + chunk] = sim[np.arange(len(xb)), labels[s:s + chunk]]
        else:
            d = np.einsum("ij,ij->i", xb, xb)[:, None] - 2 * _dots(xb, c) + csq[None, :]
            labels[s:s + chunk] = d.argmin(axis=1)
            score[s:s + chunk] = np.maximum(d[np.arange(len(xb)), labels[s:s + chunk]], 0)
    return labels, score


def fit_sample(x: np.ndarray, k: int, seed: int, iters: int = 25) -> np.ndarray:
    """(k, d) float32 centroids, L2-normalized: spherical k-means of a bounded sample from faiss's own
    seeded start, on one thread (scikit-learn without faiss), k lowered to the rows there are.
    Semantic dedup's buckets (they only bound its pairwise search). `fit` (k-means++ start, a
    resolved backend) gives other centroids on the same sample (measured: Rand index 0.87-0.96,
    1 pair in 100 lost at k=8), so dedup keeps this fit and its output."""
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
