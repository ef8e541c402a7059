"""k-means backends, CLIMB refinement and distinctive terms on small synthetic data (no model, no Ray)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from pipeline.models import kmeans
from stages.cluster import distinctive_terms


def blobs(centers: np.ndarray, per: list[int], spread: float = 0.05, seed: int = 0):
    """Unit vectors scattered around unit `centers`; labels = index of the center."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([c + spread * rng.standard_normal((n, centers.shape[1])) for c, n in zip(centers, per)])
    return kmeans.normalize(x), np.repeat(np.arange(len(per)), per)


def random_centers(k: int, dim: int = 32, seed: int = 1) -> np.ndarray:
    return kmeans.normalize(np.random.default_rng(seed).standard_normal((k, dim)))


@pytest.mark.parametrize("backend", ["faiss", "torch", "sklearn"])
def test_every_backend_recovers_separated_blobs_deterministically(backend):
    x, y = blobs(random_centers(6), [120, 80, 60, 40, 30, 20])
    a = kmeans.fit(x, 6, seed=3, backend=backend)
    labels, score = kmeans.assign(x, a.centroids)
    assert adjusted_rand_score(y, labels) == 1.0
    assert a.backend == backend and a.centroids.shape == (6, 32)
    assert np.allclose(np.linalg.norm(a.centroids, axis=1), 1, atol=1e-5)  # spherical
    assert np.all(score > 0.8) and abs(a.objective - score.mean()) < 1e-5
    b = kmeans.fit(x, 6, seed=3, backend=backend)
    assert np.array_equal(a.centroids, b.centroids)


def test_faiss_and_torch_agree_from_the_same_seeds():
    x, _ = blobs(random_centers(10, seed=5), [50] * 10, spread=0.3)  # overlapping: a real fit, not a trivial one
    f = kmeans.fit(x, 10, seed=0, backend="faiss")
    t = kmeans.fit(x, 10, seed=0, backend="torch")
    assert adjusted_rand_score(kmeans.assign(x, f.centroids)[0], kmeans.assign(x, t.centroids)[0]) > 0.95


def test_kmeans_pp_seeds_are_rows_and_spread_out():
    x, y = blobs(random_centers(4), [300, 15, 15, 15], spread=0.02)
    for seed in range(5):
        seeds = kmeans.kmeans_pp(x, 4, seed=seed)
        rows = [int(np.flatnonzero((x == s).all(1))[0]) for s in seeds]  # every seed is a row of x
        # D^2 sampling finds the three small blobs although they hold 13% of the rows
        assert sorted(y[rows]) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="at least as many rows"):
        kmeans.kmeans_pp(x[:3], 4, seed=0)


def test_assign_in_chunks_equals_one_pass():
    x, _ = blobs(random_centers(5), [40] * 5, spread=0.4)
    c = random_centers(7, seed=9)
    a = kmeans.assign(x, c, chunk=7)
    b = kmeans.assign(x, c, chunk=10_000)
    # the same bits whatever rows are assigned together (census and write passes, any run.docs_per_batch)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    one = [kmeans.assign(x[i:i + 1], c) for i in range(0, len(x), 17)]
    assert np.array_equal(np.concatenate([o[1] for o in one]), b[1][::17])
    assert np.array_equal(a[0], (kmeans.normalize(x) @ c.T).argmax(1))
    l2, d2 = kmeans.assign(x, c, spherical=False)
    assert np.array_equal(l2, ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)) and np.all(d2 >= 0)


def test_backend_names_are_checked():
    with pytest.raises(ValueError, match="backend"):
        kmeans.resolve_backend("cuml")
    assert kmeans.resolve_backend("auto") in ("faiss", "torch", "sklearn")


# ---------------------------------------------------------------- refinement (CLIMB)


def _two_families():
    """Six k-means centroids: 0-2 near one direction, 3-5 near another."""
    base = random_centers(2, seed=4)
    rng = np.random.default_rng(0)
    c = np.concatenate([base[0] + 0.05 * rng.standard_normal((3, 32)), base[1] + 0.05 * rng.standard_normal((3, 32))])
    return kmeans.normalize(c)


def test_merge_to_k_joins_near_centroids_and_orders_by_size():
    c = _two_families()
    counts = np.array([10, 20, 30, 100, 5, 5])
    r = kmeans.refine(c, counts, k=2)
    assert r.mapping.tolist() == [1, 1, 1, 0, 0, 0]  # family 3-5 holds 110 docs: id 0
    expect = kmeans.normalize((c[3:] * counts[3:, None]).sum(0, keepdims=True))
    assert np.allclose(r.centroids[0], expect[0], atol=1e-6) and not r.pruned


def test_merge_by_distance_and_the_coarser_cut_wins():
    c = _two_families()
    counts = np.full(6, 10)
    assert len(set(kmeans.refine(c, counts, k=None, distance=0.5).mapping)) == 2  # families are ~1.4 apart
    assert len(set(kmeans.refine(c, counts, k=None, distance=1e-3).mapping)) == 6
    assert len(set(kmeans.refine(c, counts, k=1, distance=1e-3).mapping)) == 1
    assert len(set(kmeans.refine(c, counts, k=None, distance=None).mapping)) == 6  # no merge asked


def test_quality_pruning_happens_before_merging_and_tiny_after():
    c = _two_families()
    counts = np.array([10, 20, 30, 100, 5, 5])
    quality = np.array([0.9, 0.1, 0.8, 0.7, 0.6, np.nan])  # unknown quality is not judged
    r = kmeans.refine(c, counts, k=2, quality=quality, min_quality=0.5)
    assert r.mapping[1] == -1 and (r.mapping[[0, 2, 3, 4, 5]] >= 0).all()
    assert r.pruned == [{"kmeans_cluster": 1, "docs": 20, "mean_quality": 0.1, "why": "quality"}]
    r = kmeans.refine(c, counts, k=2, min_docs=50)  # family 0-2 has 60 docs: kept
    assert (r.mapping >= 0).all()
    r = kmeans.refine(c, counts, k=2, min_docs=61)
    assert r.mapping.tolist() == [-1, -1, -1, 0, 0, 0] and r.pruned[0]["why"] == "tiny" and len(r.centroids) == 1


def test_empty_kmeans_clusters_are_dropped():
    c = _two_families()
    r = kmeans.refine(c, np.array([0, 5, 5, 0, 5, 5]), k=None)
    assert r.mapping[0] == -1 and r.mapping[3] == -1 and len(r.centroids) == 4


# ---------------------------------------------------------------- descriptions


def test_distinctive_terms_prefer_frequent_here_rare_elsewhere():
    vocab = ["the", "verse", "lord", "python", "rare"]
    # docs containing each term, per cluster (cluster 0: 100 docs of scripture, cluster 1: 100 of code)
    terms = np.array([[95, 60, 70, 0, 1],
                      [97, 0, 1, 80, 0]])
    top = distinctive_terms(terms, np.array([100, 100]), vocab, top=3)
    assert [t for t, _ in top[0]] == ["lord", "verse"]  # "the" is everywhere, "rare" is in one doc
    scores = dict(top[1])
    assert top[1][0][0] == "python" and scores.get("the", 0) < 0.05 * scores["python"]  # 97% vs 95%: barely
    assert all(s > 0 for _, s in top[0])
