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
from stages.dedup import semantic, shuffle
from stages.dedup.tables import SEMANTIC, counters, edge_table, np_column, write_parts


def kmeans_task(out: str, key: str, sample: list, k: int, seed: int, iters: int) -> dict:
    """sample: (sig file, rows) per shard. Writes centroids.parquet (one list<float32> per row)."""
    parts = []
    for path, rows in sample:
        if rows:
            col = pq.read_table(path, columns=["embedding"]).column("embedding").take(pa.array(rows))
            parts.append(np.asarray(pc.list_flatten(col).to_numpy(), dtype=np.float32).reshape(len(rows), -1))
    x = np.concatenate(parts)
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
