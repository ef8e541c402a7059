"""cluster: embed every document, k-means on a sample, CLIMB-style refinement, cluster descriptions.

Five passes; the per-shard ones are runner phases with their own markers, so a killed run resumes
where it stopped, and the global ones hold only a sample and the centroids in memory:

  1. embed   (per shard)  texts -> <embed.cache_dir>/<shard>-<sha256>-<model key>.npy (float16).
                          A shard whose file exists is not embedded again: re-clustering (another
                          k, another refinement) never calls the model.
  2. fit     (driver)     <= kmeans.sample_size embeddings drawn with run.seed -> k_init centroids;
                          the same sample's texts give the vocabulary of the descriptions.
  3. census  (per shard)  docs, tokens and mean quality of every k-means cluster, full corpus.
  4. refine  (driver)     prune low-quality clusters, merge the rest (Ward on centroids) to refine.k,
                          prune tiny ones (pipeline.models.kmeans.refine).
  5. write   (per shard)  <out>/<shard>.parquet with a `cluster` column; documents of pruned
                          clusters -> _rejected/ with reason `cluster:pruned`; partial descriptions
                          merged by `finalize` into <out>/clusters.json (+ centroids.npy).

Passes 1, 3 and 5 ask Ray for a GPU when this machine has one (see `_task`); pass 1 is the only
one that needs it. Intermediate state lives under <out>/_work/ (cleared by --force); the embedding
cache (<out>/_embeddings/ or embed.cache_dir) is never cleared: its file names say what made them.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io, lock, runner
from pipeline.config import ClusterConfig, Config, ConfigError
from pipeline.models import kmeans
from pipeline.registry import Stage
from pipeline.schema import N_TOKENS, REASON, SOURCE
from pipeline.taskio import TaskOutput
from pipeline.version import __version__

STAGE = "cluster"
REASON_PRUNED = "cluster:pruned"
CLUSTERS_JSON, CENTROIDS = "clusters.json", "centroids.npy"
RESOLVED = "resolved.json"  # in _work/: the driver's choices for `auto` when the run started
TERM_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"  # words of 3+ letters: no numbers, no snake_case fragments


# ---------------------------------------------------------------- helpers


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _task(key: str, fn, kwargs: dict) -> runner.Task:
    """A runner task that asks Ray for a GPU when there is one. runner.Task has no resource field
    yet; when it gets `num_gpus`, this passes it (until then tasks are scheduled on CPUs)."""
    t = runner.Task(key=key, fn=fn, kwargs=kwargs)
    if hasattr(t, "num_gpus"):
        import torch

        t.num_gpus = 1 if torch.cuda.is_available() else 0
    return t


def _npy_rows(path: Path) -> int | None:
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


def resolve(c: ClusterConfig) -> dict:
    """Driver: what `auto` means on this machine, chosen once for every task of the run (config hash,
    manifest): embedding precision and device (+ cpu_bf16 for bf16) and the k-means backend."""
    from pipeline.models import embedder as E

    return {**E.resolve(c.embed.precision), "kmeans_backend": kmeans.resolve_backend(c.kmeans.backend)}


def as_run(cfg: Config, resolved: dict) -> tuple[Config, str]:
    """The config as this run executes it (auto replaced by the driver's choices) and its hash, which
    also covers the device and, for bf16, cpu_bf16: `precision: auto` that resolved to fp32 and an
    explicit `precision: fp32` are the same run; the same config resolved otherwise is not."""
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.cluster.embed.precision = resolved["precision"]
    run_cfg.cluster.kmeans.backend = resolved["kmeans_backend"]
    hw = {k: v for k, v in resolved.items() if k not in ("precision", "kmeans_backend")}
    return run_cfg, run_cfg.stage_hash(STAGE, hw)


def _refuse_other_resolution(out: Path, plain_hash: str, fp: str, resolved: dict, force: bool) -> None:
    """Same config and input, but this machine resolves `auto` differently from the one that started
    <out>: refused (never mixed), naming the choices and how to resume."""
    old = io.read_json(out / "_work" / RESOLVED) if (out / "_work" / RESOLVED).exists() else None
    if force or not old or (old.get("config_hash"), old.get("input_fingerprint")) != (plain_hash, fp) or old.get("resolved") == resolved:
        return
    was, now = old["resolved"], resolved
    diff = ", ".join(f"{k} {was.get(k)} -> {now.get(k)}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k))
    if any(was.get(k) != now.get(k) for k in ("device", "cpu_bf16")):
        how = f"resume it on a machine like the first (device {was.get('device')}, cpu_bf16 {was.get('cpu_bf16', 'n/a')})"
    else:
        how = f"set cluster.embed.precision: {was['precision']} and cluster.kmeans.backend: {was['kmeans_backend']} to resume it"
    raise runner.StageConflict(f"{out}: holds cluster output made with other choices for `auto` than this machine makes ({diff}); "
                               f"{how}, or re-run with --force to recompute (cached embeddings are kept)")


# ---------------------------------------------------------------- pass 1: embed


def embed_shard(path: str, sha: str | None, key: str, work: str, cache_dir: str, embed: dict, batch_size: int) -> dict:
    from pipeline.models import embedder as E

    emb = _embedder(embed)  # cheap: the model loads on first use
    sha = sha or io.sha256_file(Path(path))
    target = Path(cache_dir) / f"{key}-{sha[:16]}-{emb.cache_key()}.npy"
    pf = pq.ParquetFile(path)
    rows_in = pf.metadata.num_rows
    loads0, texts0 = E.COUNTERS["model_loads"], E.COUNTERS["texts"]  # (precision, device: the driver's)
    cached = _npy_rows(target) == rows_in
    if not cached:
        parts = [np.zeros((0, emb.dim if rows_in else 0), dtype=np.float16)]
        chunks = (rb.column(0).to_pylist() for rb in pf.iter_batches(batch_size=batch_size, columns=["text"]))
        parts += [e.astype(np.float16) for e in emb.encode_many(chunks)]
        io.write_npy(np.concatenate(parts), target)
    return _counters(Path(work), key, "cluster:embed", rows_in, _npy_rows(target) or 0,
                     embeddings=target.name, cached=cached, embedded=E.COUNTERS["texts"] - texts0,
                     model_loads=E.COUNTERS["model_loads"] - loads0, precision=emb.precision, device=E.device_kind(emb.device),
                     inputs=[path])


# ---------------------------------------------------------------- pass 2: fit (driver)


def fit(files: list[tuple[str, str, int]], c: ClusterConfig, seed: int, work: Path, backend: str | None = None) -> dict:
    """k-means on a uniform sample of all embeddings; the sample's texts give the term vocabulary.
    files: (shard path, embedding file, rows); backend: the driver's resolved one (default: resolve
    c.kmeans.backend here). Cached in _work by everything that determines it."""
    backend = backend or kmeans.resolve_backend(c.kmeans.backend)
    h = _hash([Path(f[1]).name for f in files], c.kmeans.model_dump(), backend, c.describe.vocab_size, c.describe.max_chars, seed)
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
            "backend": res.backend, "seconds": round(res.seconds, 3), "vocab": _vocabulary(texts, c.describe.vocab_size)}
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


def _vectorizer(vocab: list[str] | None = None, max_features: int | None = None):
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    return CountVectorizer(vocabulary=vocab, max_features=max_features, binary=True, lowercase=True,
                           token_pattern=TERM_PATTERN, stop_words=None if vocab else sorted(ENGLISH_STOP_WORDS), dtype=np.int32)


def _vocabulary(texts: list[str], size: int) -> list[str]:
    if not texts:
        return []
    try:
        v = _vectorizer(max_features=size).fit(texts)
    except ValueError:  # no term at all (e.g. only digits)
        return []
    return sorted(v.vocabulary_, key=v.vocabulary_.get)


# ---------------------------------------------------------------- pass 3: census


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


# ---------------------------------------------------------------- pass 5: write + describe


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
    vec = _vectorizer(vocab) if vocab and c.describe.top_terms else None
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
            _describe_batch(d, terms, vec, kept, lab[keep], xb[keep], final_c, scores, c)
    if start != res.rows_in:
        raise RuntimeError(f"{path}: {res.rows_in} rows but {embeddings} has {start}; delete the embedding file and re-run")
    io.write_npy(terms, Path(work) / "terms" / f"{key}.npy")
    d["sources"] = [dict(s) for s in d["sources"]]
    return res.finish(inputs=[path], describe=d)


def _describe_batch(d: dict, terms: np.ndarray, vec, kept: pa.Table, lab: np.ndarray, xb: np.ndarray,
                    final_c: np.ndarray, scores: list[str], c: ClusterConfig) -> None:
    k = len(final_c)
    for i, n in enumerate(np.bincount(lab, minlength=k)):
        d["docs"][i] += int(n)
    if N_TOKENS in kept.column_names:
        tok = kept.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.float64)
        for i, t in enumerate(np.bincount(lab, weights=tok, minlength=k)):
            d["tokens"][i] += int(t)
    if SOURCE in kept.column_names:
        for i, s in zip(lab.tolist(), kept.column(SOURCE).to_pylist()):
            d["sources"][i][s] += 1
    for s in scores:
        v = kept.column(s).cast(pa.float64()).to_numpy(zero_copy_only=False)
        ok = np.isfinite(v)
        for i, (sm, cnt) in enumerate(zip(np.bincount(lab[ok], weights=v[ok], minlength=k), np.bincount(lab[ok], minlength=k))):
            d["score_sum"][s][i] += float(sm)
            d["score_n"][s][i] += int(cnt)
    texts = kept.column("text").to_pylist()
    if vec is not None:
        from scipy import sparse

        m = vec.transform([t[: c.describe.max_chars] for t in texts])
        onehot = sparse.csr_matrix((np.ones(len(lab), dtype=np.int64), (lab, np.arange(len(lab)))), shape=(k, len(lab)))
        terms += np.asarray((onehot @ m).todense(), dtype=np.int64)
    if c.describe.examples:
        sims = np.einsum("ij,ij->i", kmeans.normalize(xb), final_c[lab])
        ids = kept.column("id").to_pylist()
        for i in range(k):
            rows = np.flatnonzero(lab == i)
            best = sorted(rows, key=lambda r: (-float(sims[r]), ids[r]))[: c.describe.examples]
            cand = d["examples"][i] + [{"id": ids[r], "similarity": round(float(sims[r]), 4),
                                        "snippet": _snippet(texts[r], c.describe.snippet_chars)} for r in best]
            d["examples"][i] = sorted(cand, key=lambda e: (-e["similarity"], e["id"]))[: c.describe.examples]


def _snippet(text: str, n: int) -> str:
    s = re.sub(r"\s+", " ", text).strip()
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def distinctive_terms(terms: np.ndarray, docs: np.ndarray, vocab: list[str], top: int) -> list[list[tuple[str, float]]]:
    """Per cluster, terms by p_c * log(p_c / p_rest): p = share of the cluster's (rest's) documents
    containing the term, Laplace-smoothed. Frequent in the cluster and rare elsewhere scores high;
    a term as common in the rest as in the cluster scores <= 0 and is left out."""
    out = []
    total_df, total_n = terms.sum(0), docs.sum()
    for i in range(len(terms)):
        n_c, n_r = docs[i], total_n - docs[i]
        p_c = terms[i] / max(n_c, 1)
        p_r = (total_df - terms[i] + 1) / (n_r + 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(terms[i] >= 2, p_c * np.log(np.maximum(p_c, 1e-12) / p_r), 0.0)
        order = np.lexsort((np.arange(len(score)), -score))[:top]
        out.append([(vocab[j], round(float(score[j]), 4)) for j in order if score[j] > 0])
    return out


def finalize(out: Path, markers: dict[str, dict], *, work: Path, info: dict, vocab: list[str], top_terms: int) -> None:
    """Merge the per-shard partial descriptions into clusters.json; save the final centroids."""
    out = Path(out)
    ref = np.load(work / "refined.npz")
    final_c = ref["final_centroids"]
    k = len(final_c)
    docs, tokens = np.zeros(k, np.int64), np.zeros(k, np.int64)
    terms = np.zeros((k, len(vocab)), dtype=np.int64)
    sources = [Counter() for _ in range(k)]
    ssum, sn = {}, {}
    examples = [[] for _ in range(k)]
    for key in sorted(markers):
        d = markers[key]["describe"]
        docs += np.asarray(d["docs"], np.int64)
        tokens += np.asarray(d["tokens"], np.int64)
        t = np.load(work / "terms" / f"{key}.npy")
        if t.size:
            terms += t
        for i in range(k):
            sources[i].update(d["sources"][i])
            examples[i] += d["examples"][i]
        for s in d["score_sum"]:
            ssum.setdefault(s, np.zeros(k))[:] += d["score_sum"][s]
            sn.setdefault(s, np.zeros(k))[:] += d["score_n"][s]
    top = distinctive_terms(terms, docs, vocab, top_terms) if vocab else [[] for _ in range(k)]
    n_docs, n_tok = int(docs.sum()), int(tokens.sum())
    pruned_docs = sum(m["rejected"] for m in markers.values())
    mapping = ref["mapping"]
    clusters = []
    for i in range(k):
        clusters.append({
            "id": i, "docs": int(docs[i]), "tokens": int(tokens[i]),
            "share_docs": round(docs[i] / n_docs, 6) if n_docs else 0.0,
            "share_tokens": round(tokens[i] / n_tok, 6) if n_tok else 0.0,
            "kmeans_clusters": np.flatnonzero(mapping == i).tolist(),
            "top_terms": [t for t, _ in top[i]], "term_scores": [s for _, s in top[i]],
            "scores": {s: round(float(ssum[s][i] / sn[s][i]), 6) for s in sorted(ssum) if sn[s][i]},
            "sources": dict(sorted(sources[i].items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
            "examples": sorted(examples[i], key=lambda e: (-e["similarity"], e["id"]))[: info["examples"]],
        })
    io.write_npy(final_c.astype(np.float32), out / CENTROIDS)
    embedding = {k_: v for k_, v in info["embedding"].items() if k_ != "cache_dir"}  # no absolute paths: same run, same bytes
    doc = {**{k_: v for k_, v in info.items() if k_ != "examples"}, "embedding": embedding, "k": k, "clusters": clusters, "centroids": CENTROIDS,
           "totals": {"docs": n_docs, "tokens": n_tok, "pruned_docs": int(pruned_docs)}}
    io.write_json(doc, out / CLUSTERS_JSON)


# ---------------------------------------------------------------- the stage


def _input_shas(inp: Path) -> dict[str, str]:
    m = inp / io.MANIFEST
    if not m.exists():
        return {}
    man = io.read_json(m)
    return {f["name"]: f["sha256"] for s in man.get("shards", {}).values() for f in s.get("files", []) if f.get("dir") == "" and f.get("sha256")}






def run(cfg: Config, inp: Path, out: Path, phase, force: bool = False) -> runner.StageResult:
    c: ClusterConfig = cfg.cluster
    if inp is None:
        raise ConfigError("cluster: no input dataset dir; use `curate cluster --input DIR`, or run the stage before it too")
    inp, out = Path(inp), Path(out)
    resolved = resolve(c)  # once, here: every task gets these values, never "auto"
    plain_hash, fp = cfg.stage_hash(STAGE), io.dataset_fingerprint(inp)
    cfg, h = as_run(cfg, resolved)
    c = cfg.cluster
    header = {"stage": STAGE, "version": __version__, "config_hash": h, "input_fingerprint": fp}
    _refuse_other_resolution(out, plain_hash, fp, resolved, force)
    runner.refuse_other_output(out, h, fp, force, "cluster", hint=" (cached embeddings are kept)")
    shards = io.shard_files(inp)
    q = c.refine.quality_column
    if q and shards and q not in pq.read_schema(shards[0]).names:
        raise ConfigError(f"cluster.refine.quality_column: column {q!r} is not in {inp} (run the score stage first, or unset it)")
    with lock.dir_lock(out):  # passes 1-4; the runner locks <out> again for pass 5
        if force:
            io.clear_dir(out)  # contract files and _work/; the embedding cache stays
        io.write_json({"config_hash": plain_hash, "input_fingerprint": fp, "resolved": resolved}, out / "_work" / RESOLVED)
        prep = _prepare(cfg, inp, out, partial(phase, force=False), shards, fp, header, resolved)
    if isinstance(prep, runner.StageResult):
        return prep
    tasks, info, fitted, seconds = prep
    work = out / "_work"
    res = phase(STAGE, out, tasks, config_hash=h, input_fingerprint=fp, force=False,
                finalize=partial(finalize, work=work, info=info, vocab=fitted["vocab"], top_terms=c.describe.top_terms))
    seconds["write"] = res.seconds
    _annotate(out, res, info["embedding"], seconds, resolved)
    return res


def _prepare(cfg: Config, inp: Path, out: Path, phase, shards: list[Path], fp: str, header: dict, resolved: dict):
    """Passes 1-4. Returns the write tasks and what finalize needs, or a StageResult if a pass failed."""
    c: ClusterConfig = cfg.cluster
    q = c.refine.quality_column
    work = out / "_work"
    cache = Path(c.embed.cache_dir or out / "_embeddings")
    cache.mkdir(parents=True, exist_ok=True)
    shas, seconds = _input_shas(inp), {}

    embed = c.embed.model_dump(mode="json", exclude={"cache_dir"})  # precision: the resolved one
    embed["resolved"] = {k: v for k, v in resolved.items() if k != "kmeans_backend"}
    for p in shards:  # a finished shard whose cache file went away (or moved with the dir) is embedded again
        m = io.read_marker(work / "embed", p.stem)
        if m and _npy_rows(cache / m["embeddings"]) != m["rows_in"]:
            io.marker_path(work / "embed", p.stem).unlink()
    tasks = [_task(p.stem, embed_shard, dict(path=str(p), sha=shas.get(p.name), key=p.stem, work=str(work / "embed"),
                                             cache_dir=str(cache), embed=embed, batch_size=cfg.run.docs_per_batch)) for p in shards]
    r = runner.work_phase(phase, "cluster:embed", work / "embed", tasks, _hash(embed), fp)
    seconds["embed"] = r.seconds
    if not r.ok:
        return runner.stopped(STAGE, out, header, r)
    emarkers = {p.stem: io.read_marker(work / "embed", p.stem) for p in shards}
    files = [(str(p), str(cache / emarkers[p.stem]["embeddings"]), emarkers[p.stem]["rows_in"]) for p in shards]

    fitted = fit(files, c, cfg.run.seed, work, resolved["kmeans_backend"])
    seconds["fit"] = fitted["seconds"]

    tasks = [_task(p.stem, census_shard, dict(path=str(p), key=p.stem, work=str(work / "census"), embeddings=f,
                                              centroids=fitted["centroids"], spherical=c.kmeans.spherical, quality_column=q))
             for p, (_, f, _) in zip(shards, files)]
    r = runner.work_phase(phase, "cluster:census", work / "census", tasks, _hash(fitted["hash"], q), fp)
    seconds["census"] = r.seconds
    if not r.ok:
        return runner.stopped(STAGE, out, header, r)
    k0 = fitted["k_init"]
    counts, qsum, qn = np.zeros(k0, np.int64), np.zeros(k0), np.zeros(k0)
    for p in shards:
        cen = io.read_marker(work / "census", p.stem)["census"]
        counts += np.asarray(cen["docs"], np.int64)
        if q:
            qsum += cen["quality_sum"]
            qn += cen["quality_n"]
    quality = np.where(qn > 0, qsum / np.maximum(qn, 1), np.nan) if q else None
    init_c = np.load(fitted["centroids"])
    rf = c.refine
    ref = kmeans.refine(init_c, counts, k=rf.k, method=rf.method, distance=rf.distance, min_docs=rf.min_docs,
                        quality=quality, min_quality=rf.min_quality, spherical=c.kmeans.spherical)
    refined = work / "refined.npz"

    def save_refined(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, init_centroids=init_c, mapping=ref.mapping, final_centroids=ref.centroids)

    io.atomic_write(refined, save_refined)

    from pipeline.models.embedder import default_model_path

    info = {
        "stage": STAGE, "version": __version__, "seed": cfg.run.seed, "examples": c.describe.examples,
        "embedding": {"model": c.embed.model or f"all-MiniLM-L6-v2 ({Path(default_model_path()).parent.name})",
                      "max_tokens": c.embed.max_tokens, "precision": resolved["precision"], "device": resolved["device"],
                      "dtype": "float16", "cache_dir": str(cache), "files": {k_: m["embeddings"] for k_, m in sorted(emarkers.items())}},
        "kmeans": {"k_init": c.kmeans.k_init, "k_init_used": k0, "sample_rows": fitted["sample_rows"], "rows": fitted["rows"],
                   "niter": c.kmeans.niter, "spherical": c.kmeans.spherical, "backend": fitted["backend"], "objective": fitted["objective"],
                   "docs_per_cluster": counts.tolist(),
                   **({"mean_quality": [round(float(v), 6) if np.isfinite(v) else None for v in quality]} if q else {})},
        "refine": {**rf.model_dump(mode="json"), "pruned": ref.pruned},
    }
    tasks = [_task(p.stem, write_shard, dict(path=str(p), out=str(out), key=p.stem, work=str(work), embeddings=f,
                                             refined=str(refined), vocab=fitted["vocab"], cfg=c.model_dump(mode="json"),
                                             batch_size=cfg.run.docs_per_batch))
             for p, (_, f, _) in zip(shards, files)]
    (work / "terms").mkdir(parents=True, exist_ok=True)
    return tasks, info, fitted, seconds


def _annotate(out: Path, res: runner.StageResult, embedding: dict, seconds: dict, resolved: dict) -> None:
    """Reference the embedding cache from the manifest, record the driver's choices for `auto` (and
    this machine's cpu_bf16) in manifest and _stats.json, and time every pass in _stats.json."""
    from pipeline.models.embedder import describe

    numerics = {**describe({k: v for k, v in resolved.items() if k != "kmeans_backend"}), "kmeans_backend": resolved["kmeans_backend"]}
    res.manifest["embeddings"] = embedding
    res.manifest["resolved"] = numerics
    io.write_json(res.manifest, out / io.MANIFEST)
    st = io.read_json(out / io.STATS) if (out / io.STATS).exists() else {}
    st["resolved"] = numerics
    st.setdefault("timings", {})["passes"] = {k: round(v, 3) for k, v in seconds.items()}
    st["timings"]["wall_seconds"] = round(sum(seconds.values()), 3)
    io.write_json(st, out / io.STATS)


SPEC = Stage(STAGE, run=run, recompute_on_growth=True)
