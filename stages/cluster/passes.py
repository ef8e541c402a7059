"""The per-shard tasks of the cluster stage (plain functions `(paths, params) -> marker`, no Ray) and
the k-means fit the driver runs between them:

  embed_shard   texts -> <cache>/<shard>-<sha256>-<model key>.npy (float16), skipped when it exists
  fit           k-means on a uniform sample of all embeddings; the sample's texts give the vocabulary
  census_shard  docs, tokens and summed quality per k-means cluster of one shard
  write_shard   the shard with its `cluster` column, pruned documents to _rejected/, and the shard's
                partial cluster descriptions (`describe.describe_batch`) in its marker
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io
from pipeline.config import ClusterConfig, ConfigError
from pipeline.models import kmeans
from pipeline.schema import N_TOKENS, REASON
from pipeline.taskio import TaskOutput
from stages.cluster.describe import describe_batch, vectorizer, vocabulary

STAGE = "cluster"
REASON_PRUNED = "cluster:pruned"


def npy_rows(path: Path) -> int | None:
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError):
        return None


def _counters(work: Path, key: str, phase: str, rows_in: int, processed: int, **extra) -> dict:
    """Marker of a pass that writes no documents: every row read is accounted as processed."""
    res = TaskOutput(work, key, phase, target_rows=1 << 62, target_bytes=1 << 62, single=True)
    res.rows_in = rows_in
    res.c["kept"] = processed
    return res.finish(pass_output=True, **extra)  # derived state, no documents: the runner checks no kept files


def _embedder(embed: dict):
    """The task's embedder, with the precision and device the driver resolved (never "auto")."""
    from pipeline.models.embedder import for_task

    return for_task(embed["model"], embed["max_tokens"], embed["docs_per_forward"], embed["resolved"])


def embed_shard(path: str, sha: str | None, key: str, work: str, cache_dir: str, embed: dict, batch_size: int) -> dict:
    from pipeline.models import embedder as E

    emb = _embedder(embed)  # cheap: the model loads on first use
    sha = sha or io.sha256_file(Path(path))
    target = Path(cache_dir) / f"{key}-{sha[:16]}-{emb.cache_key()}.npy"
    pf = pq.ParquetFile(path)
    rows_in = pf.metadata.num_rows
    loads0, texts0 = E.COUNTERS["model_loads"], E.COUNTERS["texts"]  # (precision, device: the driver's)
    cached = npy_rows(target) == rows_in
    if not cached:
        parts = [np.zeros((0, emb.dim if rows_in else 0), dtype=np.float16)]
        chunks = (rb.column(0).to_pylist() for rb in pf.iter_batches(batch_size=batch_size, columns=["text"]))
        parts += [e.astype(np.float16) for e in emb.encode_many(chunks)]
        io.write_npy(np.concatenate(parts), target)
    return _counters(Path(work), key, "cluster:embed", rows_in, npy_rows(target) or 0,
                     embeddings=target.name, cached=cached, embedded=E.COUNTERS["texts"] - texts0,
                     model_loads=E.COUNTERS["model_loads"] - loads0, precision=emb.precision, device=E.device_kind(emb.device),
                     inputs=[path])


def fit(files: list[tuple[str, str, int]], c: ClusterConfig, seed: int, work: Path, backend: str | None = None) -> dict:
    """k-means on a uniform sample of all embeddings; the sample's texts give the term vocabulary.
    files: (shard path, embedding file, rows); backend: the driver's resolved one (default: resolve
    c.kmeans.backend here). Cached in _work by everything that determines it."""
    backend = backend or kmeans.resolve_backend(c.kmeans.backend)
    h = io.content_hash([[Path(f[1]).name for f in files], c.kmeans.model_dump(), backend, c.describe.vocab_size, c.describe.max_chars, seed])
    meta_path, cent_path = work / f"fit-{h}.json", work / f"fit-{h}.npy"
    if meta_path.exists() and cent_path.exists():
        return {**io.read_json(meta_path), "seconds": 0.0, "centroids": str(cent_path), "hash": h}
    total = sum(n for *_, n in files)
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(total, c.kmeans.sample_size, replace=False)) if total > c.kmeans.sample_size else np.arange(total)
    x, texts, start = [], [], 0
    vocab_docs = 20_000  # texts for the vocabulary: plenty for the top vocab_size terms
    for shard, emb_file, n in files:
        local = take[(take >= start) & (take < start + n)] - start
        start += n
        if not len(local):
            continue
        x.append(np.asarray(np.load(emb_file, mmap_mode="r")[local], dtype=np.float32))
        if len(texts) < vocab_docs:
            texts += _rows_text(shard, local[: vocab_docs - len(texts)], c.describe.max_chars)
    x = np.concatenate(x) if x else np.zeros((0, 0), np.float32)
    k = min(c.kmeans.k_init, len(x))
    if k < 1:
        raise ConfigError(f"cluster: input has no documents to cluster ({total} rows)")
    res = kmeans.fit(x, k, niter=c.kmeans.niter, seed=seed, spherical=c.kmeans.spherical, backend=backend)
    meta = {"k_init": k, "sample_rows": int(len(x)), "rows": int(total), "objective": round(res.objective, 6),
            "backend": res.backend, "seconds": round(res.seconds, 3), "vocab": vocabulary(texts, c.describe.vocab_size)}
    io.write_npy(res.centroids, cent_path)
    io.write_json(meta, meta_path)
    return {**meta, "centroids": str(cent_path), "hash": h}


def _rows_text(path: str, rows: np.ndarray, max_chars: int) -> list[str]:
    """Texts of the given row numbers of a shard, reading one record batch at a time."""
    out, start, want = [], 0, set(rows.tolist())
    for rb in pq.ParquetFile(path).iter_batches(batch_size=4096, columns=["text"]):
        col = rb.column(0)
        out += [col[i - start].as_py()[:max_chars] for i in range(start, start + rb.num_rows) if i in want]
        start += rb.num_rows
    return out


def census_shard(path: str, key: str, work: str, embeddings: str, centroids: str, spherical: bool, quality_column: str | None) -> dict:
    cols = [c for c in dict.fromkeys((N_TOKENS, quality_column)) if c and c in pq.read_schema(path).names]
    table = pq.read_table(path, columns=cols)
    c = np.load(centroids)
    x = np.load(embeddings, mmap_mode="r")
    labels = kmeans.assign(x, c, spherical=spherical)[0] if len(x) else np.zeros(0, np.int32)
    k = len(c)
    tokens = table.column(N_TOKENS).to_numpy(zero_copy_only=False) if N_TOKENS in cols else np.zeros(len(labels))
    out = {"docs": np.bincount(labels, minlength=k).tolist(),
           "tokens": np.bincount(labels, weights=tokens, minlength=k).astype(np.int64).tolist()}
    if quality_column:
        q = table.column(quality_column).cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
        ok = np.isfinite(q)
        out["quality_sum"] = np.bincount(labels[ok], weights=q[ok], minlength=k).tolist()
        out["quality_n"] = np.bincount(labels[ok], minlength=k).tolist()
    return _counters(Path(work), key, "cluster:census", table.num_rows, len(labels), census=out, inputs=[path])


def score_columns(schema: pa.Schema) -> list[str]:
    """Float columns of the input are scores (quality, perplexity, bench_sim, lang_score ...)."""
    return [f.name for f in schema if pa.types.is_floating(f.type)]


def write_shard(path: str, out: str, key: str, work: str, embeddings: str, refined: str, vocab: list[str],
                cfg: dict, batch_size: int) -> dict:
    c = ClusterConfig.model_validate(cfg)
    ref = np.load(refined)
    init_c, mapping, final_c = ref["init_centroids"], ref["mapping"], ref["final_centroids"]
    k = len(final_c)
    res = TaskOutput(Path(out), key, STAGE, target_rows=1 << 62, target_bytes=1 << 62, single=True)
    pf = pq.ParquetFile(path)
    res.rows_in = pf.metadata.num_rows
    x = np.load(embeddings, mmap_mode="r")
    scores = score_columns(pf.schema_arrow)
    vec = vectorizer(vocab) if vocab and c.describe.top_terms else None
    terms = np.zeros((k, len(vocab)), dtype=np.int64)
    d = {"docs": [0] * k, "tokens": [0] * k, "sources": [Counter() for _ in range(k)],
         "score_sum": {s: [0.0] * k for s in scores}, "score_n": {s: [0] * k for s in scores},
         "examples": [[] for _ in range(k)]}
    start = 0
    for rb in pf.iter_batches(batch_size=batch_size):
        table = pa.Table.from_batches([rb])
        table = table.drop_columns([col for col in ("cluster", "embedding") if col in table.column_names])  # re-clustering
        n = table.num_rows
        xb = np.asarray(x[start:start + n], dtype=np.float32)
        start += n
        res.tokens_in += int(pc.sum(table.column(N_TOKENS)).as_py() or 0) if N_TOKENS in table.column_names else 0
        res.bytes_in += int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)
        lab = mapping[kmeans.assign(xb, init_c, spherical=c.kmeans.spherical)[0]]
        keep = np.flatnonzero(lab >= 0)
        drop = np.flatnonzero(lab < 0)
        kept = table.take(keep).append_column("cluster", pa.array(lab[keep], pa.int32()))
        if c.keep_embedding:
            flat = pa.array(xb[keep].ravel(), pa.float32())
            kept = kept.append_column("embedding", pa.FixedSizeListArray.from_arrays(flat, xb.shape[1]))
        res.add_kept(kept)
        rejected = table.take(drop)
        res.add_rejected(rejected.append_column(REASON, pa.array([REASON_PRUNED] * len(drop), pa.string())))
        if len(keep):
            describe_batch(d, terms, vec, kept, lab[keep], xb[keep], final_c, scores, c)
    if start != res.rows_in:
        raise RuntimeError(f"{path}: {res.rows_in} rows but {embeddings} has {start}; delete the embedding file and re-run")
    io.write_npy(terms, Path(work) / "terms" / f"{key}.npy")
    d["sources"] = [dict(s) for s in d["sources"]]
    return res.finish(inputs=[path], describe=d)
