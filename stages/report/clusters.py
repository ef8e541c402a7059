"""The report's cluster section: sizes with top terms, a table per cluster, and a 2-D PCA map of
<= MAX_MAP_POINTS document embeddings from the embedding cache, coloured by cluster (the centroids,
scaled by size, when the cache is gone).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline import io
from stages.report.charts import colors, figure, img, style, truncate_label
from stages.report.context import SEED, RunContext
from stages.report.markup import fmt, note, read_json, short, table

MAX_MAP_POINTS = 5_000


def clusters(ctx: RunContext) -> str:
    cluster_dir = ctx.stage_dir("cluster")
    if not (cluster_dir / "clusters.json").exists():
        return note("cluster/clusters.json is missing: no cluster sizes or map.")
    clusters_doc = ctx.clusters_json()
    entries = clusters_doc.get("clusters", [])
    if not entries:
        return note("clusters.json lists no clusters.")
    out = []
    kmeans, refine = clusters_doc.get("kmeans", {}), clusters_doc.get("refine", {})
    out.append(note(f"{clusters_doc.get('k', len(entries))} clusters: k-means with k={kmeans.get('k_init_used', '?')} on "
                    f"{fmt(kmeans.get('sample_rows'))} sampled docs, merged by {refine.get('method', '?')}; "
                    f"{fmt(clusters_doc.get('totals', {}).get('pruned_docs', 0))} docs pruned.", "caption"))
    labels = [truncate_label(ctx.cluster_label(c["id"]), 45) for c in entries]
    with style():
        fig, axs = figure(11, 0.8 + 0.26 * len(entries), 1, 2, sharey=True)
        y = np.arange(len(entries))
        palette = colors(len(entries))
        for ax, key, title in ((axs[0, 0], "docs", "documents per cluster"), (axs[0, 1], "tokens", "tokens per cluster")):
            ax.barh(y, [c.get(key, 0) for c in entries], color=palette)
            ax.set_title(title)
            ax.grid(axis="y", visible=False)
        axs[0, 0].set_yticks(y, labels)
        axs[0, 0].invert_yaxis()
        out.append(img(fig, "cluster sizes"))
    rows = []
    for c in entries:
        n = c.get("docs", 0) or 1
        sources = sorted(c.get("sources", {}).items(), key=lambda item: (-item[1], item[0]))[:3]
        example = (c.get("examples") or [{}])[0]
        rows.append([str(c["id"]), c.get("docs", 0), f"{100 * c.get('share_docs', 0):.1f}", f"{100 * c.get('share_tokens', 0):.1f}",
                     ", ".join(c.get("top_terms", [])[:8]), ", ".join(f"{s} {100 * v / n:.0f}%" for s, v in sources),
                     ", ".join(f"{k} {fmt(v, 3)}" for k, v in sorted(c.get("scores", {}).items())), short(example.get("snippet", ""), 120)])
    out.append(table(["id", "docs", "% docs", "% tokens", "top terms", "main sources", "mean scores", "closest example"], rows,
                     numeric={0, 1, 2, 3}))
    out.append("<h3>2-D map (PCA)</h3>")
    try:
        out.append(cluster_map(ctx, clusters_doc))
    except Exception as e:  # noqa: BLE001
        out.append(note(f"The map could not be drawn: {type(e).__name__}: {e}", "error"))
    return "\n".join(out)


def embedding_sample(ctx: RunContext, clusters_doc: dict) -> tuple[np.ndarray, np.ndarray, str] | None:
    """<= MAX_MAP_POINTS rows of the embedding cache with their final cluster (-1: pruned)."""
    import pyarrow.parquet as pq

    cluster_dir = ctx.stage_dir("cluster")
    manifest = read_json(cluster_dir / io.MANIFEST) if (cluster_dir / io.MANIFEST).exists() else {}
    embeddings = manifest.get("embeddings") or clusters_doc.get("embedding") or {}
    files = embeddings.get("files") or {}
    caches = [Path(p) for p in (embeddings.get("cache_dir"),) if p] + [cluster_dir / "_embeddings"]
    shards = manifest.get("shards", {})
    parts = []  # (key, npy path, rows)
    for key, name in sorted(files.items()):
        path = next((c / name for c in caches if (c / name).exists()), None)
        if path is None:
            continue
        parts.append((key, path, int(np.load(path, mmap_mode="r").shape[0])))
    if not parts:
        return None
    total = sum(n for *_, n in parts)
    rng = np.random.default_rng(SEED)
    take = np.sort(rng.choice(total, MAX_MAP_POINTS, replace=False)) if total > MAX_MAP_POINTS else np.arange(total)
    vectors, labels, start = [], [], 0
    for key, path, n in parts:
        local = take[(take >= start) & (take < start + n)] - start
        start += n
        if not len(local):
            continue
        row_clusters = row_labels(ctx, key, n, shards.get(key, {}), pq)
        if row_clusters is None:
            continue
        vectors.append(np.asarray(np.load(path, mmap_mode="r")[local], dtype=np.float32))
        labels.append(row_clusters[local])
    if not vectors:
        return None
    return (np.concatenate(vectors), np.concatenate(labels),
            f"{fmt(sum(len(v) for v in vectors))} of {fmt(total)} documents (seed {SEED})")


def row_labels(ctx: RunContext, key: str, n: int, shard: dict, pq) -> np.ndarray | None:
    """Cluster of each row of input shard `key` (the embedding file's row order); -1 = pruned.
    Rows are matched by id: the input shard's ids (manifest `inputs`) against the kept shards'
    `id, cluster`; when the input is gone and nothing was pruned, the kept rows are the rows."""
    cluster_dir = ctx.stage_dir("cluster")
    kept = [cluster_dir / f["name"] for f in shard.get("files", []) if f.get("dir") == "" and (cluster_dir / f["name"]).exists()]
    if not kept and (cluster_dir / f"{key}.parquet").exists():
        kept = [cluster_dir / f"{key}.parquet"]
    if not kept:
        return None
    tables = [pq.read_table(p, columns=["id", "cluster"]) for p in kept]
    ids = [i for t in tables for i in t.column("id").to_pylist()]
    cluster = np.concatenate([t.column("cluster").to_numpy(zero_copy_only=False) for t in tables]).astype(np.int64)
    inputs = [Path(p) for p in shard.get("inputs", [])]
    if len(inputs) == 1 and not inputs[0].exists():  # the run dir was moved: the same stage dir here
        inputs = [ctx.run / inputs[0].parent.name / inputs[0].name]
    if len(inputs) == 1 and inputs[0].exists():
        in_ids = pq.read_table(inputs[0], columns=["id"]).column("id").to_pylist()
        if len(in_ids) == n:
            where = dict(zip(ids, cluster.tolist()))
            return np.array([where.get(i, -1) for i in in_ids], dtype=np.int64)
    if len(ids) == n:
        return cluster
    return None


def cluster_map(ctx: RunContext, clusters_doc: dict) -> str:
    cluster_dir = ctx.stage_dir("cluster")
    entries = clusters_doc.get("clusters", [])
    k = max([c["id"] for c in entries] + [clusters_doc.get("k", 0) - 1]) + 1
    palette = colors(k)
    sample = embedding_sample(ctx, clusters_doc)
    centroids = np.load(cluster_dir / "centroids.npy").astype(np.float32) if (cluster_dir / "centroids.npy").exists() else None
    with style():
        fig, axs = figure(8, 6)
        ax = axs[0, 0]
        if sample is not None:
            x, labels, what = sample
            mean = x.mean(0)
            comps = pca(x - mean)
            points = (x - mean) @ comps.T
            pruned = labels < 0
            if pruned.any():
                ax.scatter(points[pruned, 0], points[pruned, 1], s=4, color="#bbbbbb", label="pruned", alpha=0.6, linewidths=0)
            for i in range(k):
                mask = labels == i
                if mask.any():
                    ax.scatter(points[mask, 0], points[mask, 1], s=5, color=palette[i], alpha=0.7, linewidths=0,
                               label=truncate_label(ctx.cluster_label(i, 2), 28))
            if centroids is not None and centroids.shape[1] == x.shape[1]:
                centre_points = (centroids - mean) @ comps.T
                for i, (px, py) in enumerate(centre_points[:, :2]):
                    ax.annotate(str(i), (px, py), ha="center", va="center", fontsize=8, fontweight="bold",
                                bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec=palette[i % len(palette)], alpha=0.85))
            caption = f"PCA of the embeddings of {what}, coloured by cluster; numbers mark the cluster centroids."
        elif centroids is not None and len(centroids) >= 2:
            mean = centroids.mean(0)
            comps = pca(centroids - mean)
            points = (centroids - mean) @ comps.T
            docs = np.array([next((c.get("docs", 0) for c in entries if c["id"] == i), 0) for i in range(len(centroids))], dtype=np.float64)
            size = 30 + 1500 * docs / max(docs.max(), 1)
            for i in range(len(centroids)):
                ax.scatter(points[i, 0], points[i, 1], s=size[i], color=palette[i % len(palette)], alpha=0.6)
                ax.annotate(truncate_label(ctx.cluster_label(i, 2), 28), (points[i, 0], points[i, 1]), ha="center", va="center", fontsize=8)
            ax.margins(0.15)
            caption = "The embedding cache is absent: PCA of the cluster centroids, areas proportional to documents."
        else:
            return note("Neither the embedding cache nor centroids.npy is readable: no map.")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.set_title("clusters in embedding space")
        if sample is not None and k <= 24:
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5)
        return img(fig, "cluster map") + note(caption, "caption")


def pca(x: np.ndarray, n: int = 2) -> np.ndarray:
    """Top-n principal directions of centred rows (numpy SVD), sign-fixed so the output is deterministic."""
    if len(x) < 2:
        return np.eye(n, x.shape[1], dtype=x.dtype)
    _, _, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    comps = vt[:n]
    if len(comps) < n:
        comps = np.vstack([comps, np.zeros((n - len(comps), x.shape[1]))])
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    return (comps * np.where(signs == 0, 1, signs)[:, None]).astype(np.float32)
