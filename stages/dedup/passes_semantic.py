"""The semantic passes of dedup (SemDeDup): k-means on a sample of the embeddings the signature
pass wrote, every document assigned to its nearest centroid, then pairs of documents of one
cluster whose cosine similarity reaches the threshold, as edges for the connected components.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io
from pipeline.models import kmeans
from stages.dedup import hashing, semantic, shuffle
from stages.dedup.tables import SEMANTIC, counters, edge_table, np_column, write_parts


def sample_rows(elo: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a signature file in the k-means sample, and their sample hash: a hash of the
    document's exact-text hash at most `fraction` of 2^64. The sample (and its order, by that hash)
    depends on the texts only, not on how they are cut into shards or ordered in them."""
    h = hashing.fmix64(elo)
    rows = np.flatnonzero(h <= np.uint64(min(int(fraction * 2 ** 64), 2 ** 64 - 1))) if fraction < 1 else np.arange(len(elo))
    return rows, h[rows]


def kmeans_task(out: str, key: str, sig_paths: list[str], fraction: float, k: int, seed: int, iters: int) -> dict:
    """The documents of the sig files whose sample hash is under `fraction` (sample_rows), in
    the order of that hash (then their text hash). Writes centroids.parquet (one list<float32> per row)."""
    parts, hashes = [], []
    for path in sig_paths:
        if not pq.ParquetFile(path).metadata.num_rows:
            continue
        elo = np_column(pq.read_table(path, columns=["elo"]), "elo")
        rows, h = sample_rows(elo, fraction)
        if len(rows):
            col = pq.read_table(path, columns=["embedding"]).column("embedding").take(pa.array(rows))
            parts.append(np.asarray(pc.list_flatten(col).to_numpy(), dtype=np.float32).reshape(len(rows), -1))
            hashes.append(np.stack([h, elo[rows]]))
    h = np.concatenate(hashes, axis=1)
    x = np.concatenate(parts)[np.lexsort((h[1], h[0]))]
    centroids = kmeans.fit_sample(x, k, seed, iters)
    table = pa.table({"centroid": pa.FixedSizeListArray.from_arrays(pa.array(centroids.ravel()), centroids.shape[1])})
    path = Path(out) / "centroids.parquet"
    io.write_parquet(table, path)
    return counters(len(x), [{"name": path.name, "rows": table.num_rows, "bytes": path.stat().st_size, "sha256": io.sha256_file(path)}],
                    k=int(centroids.shape[0]), sample=len(x))


def _embeddings(table: pa.Table) -> np.ndarray:
    col = table.column("embedding")
    if not table.num_rows:
        return np.zeros((0, 1), dtype=np.float32)
    return np.asarray(pc.list_flatten(col).to_numpy(), dtype=np.float32).reshape(table.num_rows, -1)


def assign_task(out: str, key: str, sig_path: str, centroids_path: str, n_parts: int) -> dict:
    t = pq.read_table(sig_path, columns=["uid", "elo", "embedding"])
    centroids = _embeddings(pq.read_table(centroids_path).rename_columns(["embedding"]))
    x = _embeddings(t)
    cluster = kmeans.assign(x, centroids)[0].astype(np.int64) if t.num_rows else np.zeros(0, dtype=np.int64)
    table = pa.table({"cluster": cluster, "uid": t.column("uid"), "ekey": t.column("elo"), "embedding": t.column("embedding")})
    files: list[dict] = []
    write_parts(out, f"assign-{key}.parquet", table, cluster % n_parts, n_parts, files)
    return counters(t.num_rows, files)


def sem_pairs_task(out: str, key: str, p: int, assign_srcs: list, n_homes: int, per_home: int, threshold: float) -> dict:
    t = shuffle.read(assign_srcs, p)
    files: list[dict] = []
    if not t.num_rows:
        return counters(0, files, pairs=0, clusters=0)
    t = t.sort_by([("cluster", "ascending"), ("ekey", "ascending"), ("uid", "ascending")])
    cluster, ekey, uid = np_column(t, "cluster"), np_column(t, "ekey"), np_column(t, "uid")
    rep = np.ones(len(uid), dtype=bool)  # one representative per identical text (exact edges join the rest)
    rep[1:] = (cluster[1:] != cluster[:-1]) | (ekey[1:] != ekey[:-1])
    x = _embeddings(t)
    pairs_a, pairs_b = [], []
    starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]])
    for start, end in zip(starts, np.append(starts[1:], len(cluster))):
        idx = np.arange(start, end)[rep[start:end]]
        a, b = semantic.similar_pairs(x[idx], uid[idx], threshold)
        pairs_a.append(a)
        pairs_b.append(b)
    a, b = np.concatenate(pairs_a), np.concatenate(pairs_b)
    table, part = edge_table(a, b, per_home, SEMANTIC)
    write_parts(out, f"edges-{key}.parquet", table, part, n_homes, files)
    return counters(t.num_rows, files, pairs=len(a), clusters=len(starts))
