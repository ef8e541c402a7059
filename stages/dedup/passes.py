"""The tasks of the dedup passes: plain functions `(inputs, params) -> marker counters`, no Ray.

Documents are named by `uid = shard << 32 | row` (shard: index of the input shard, row: position
in it); the *home* of a uid is its shard, and every per-node step (verify, connected components,
groups, the final write) runs one task per home. Global steps keyed by something else (LSH band
hashes, component roots, k-means clusters) run one task per hash partition. Between passes rows
travel through `shuffle` files, so every task reads only its own partition.

Pass outputs (files listed in the task's marker, `kept_files`, each with its `parts`):
  sig       sig-<shard>.parquet (uid, id, length, score, n_tokens, exact hash, signature[, embedding])
            bands-<shard>.parquet (band, key, ekey, uid) -> band partitions
  buckets   edges-/pairs-/oldmatch-/oldcand-<p>.parquet -> homes
  verify_a  carry-/oldmatch-<h>.parquet -> homes of the second document
  verify_b  edges-<h>.parquet -> homes
  kmeans / assign / sem_pairs (semantic): centroids, cluster partitions, edges
  cc_large / cc_small: star edges between rounds (and node kinds in round 1)
  groups    members-<h>.parquet -> root partitions
  elect     decisions-<p>.parquet -> homes
  final     the output dataset (kept, _rejected/ with dup_of and reason) and _index/<shard>.parquet
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io
from stages.dedup import cc, hashing, lsh, semantic, shuffle
from stages.dedup.minhash import MinHasher, band_keys, signatures_from_hashes
from stages.dedup.text import Normalization, compact

OLD_BIT = np.uint64(1 << 63)
LOW32 = np.uint64(0xFFFFFFFF)
EXACT, FUZZY, SEMANTIC = 1, 2, 4
REASONS = {EXACT: "dup:exact", FUZZY: "dup:fuzzy", SEMANTIC: "dup:semantic"}

U64, I64 = pa.uint64(), pa.int64()
BAND_SCHEMA = pa.schema([("band", pa.int16()), ("key", U64), ("ekey", U64), ("uid", U64)])
EDGE_SCHEMA = pa.schema([("key", U64), ("nbr", U64), ("kind", pa.uint8())])
STAR_SCHEMA = pa.schema([("key", U64), ("nbr", U64)])
PAIR_SCHEMA = pa.schema([("a", U64), ("b", U64)])
CARRY_SCHEMA = pa.schema([("a", U64), ("b", U64), ("hashes", pa.list_(pa.uint32()))])
KIND_SCHEMA = pa.schema([("uid", U64), ("kinds", pa.uint8())])
OLD_SCHEMA = pa.schema([("uid", U64), ("old_id", pa.string()), ("old_ehi", U64), ("old_elo", U64)])
OLDCAND_SCHEMA = pa.schema([*OLD_SCHEMA, ("src", pa.int32()), ("file", pa.string()), ("row", I64)])
INDEX_SCHEMA = pa.schema([("band", pa.int16()), ("key", U64), ("ekey", U64), ("id", pa.string()), ("file", pa.string()),
                          ("row", I64), ("ehi", U64), ("elo", U64)])
MEMBER_SCHEMA = pa.schema([("root", U64), ("uid", U64), ("id", pa.string()), ("score", pa.float64()), ("length", I64),
                           ("ehi", U64), ("elo", U64), ("kinds", pa.uint8()), *list(OLD_SCHEMA)[1:]])
DECISION_SCHEMA = pa.schema([("uid", U64), ("dup_of", pa.string()), ("dup_group", I64), ("reason", pa.string())])
ASSIGN_SCHEMA = pa.schema([("cluster", I64), ("uid", U64), ("ekey", U64)])


def home(uid: np.ndarray) -> np.ndarray:
    return (uid >> np.uint64(32)).astype(np.int64)


def _rows(uid: np.ndarray) -> np.ndarray:
    return (uid & LOW32).astype(np.int64)


def counters(rows_in: int, files: list[dict], **extra) -> dict:
    """Marker payload of an intermediate pass: every input row is accounted as processed; its files
    hold derived rows, each file checked by the runner against the rows recorded for it (`pass_output`)."""
    return {"rows_in": rows_in, "kept": rows_in, "rejected": 0, "quarantined": 0, "tokens_in": 0, "tokens_kept": 0,
            "tokens_rejected": 0, "bytes_in": 0, "bytes_kept": 0, "kept_files": files, "rejected_files": [],
            "quarantine_files": [], "reasons": {}, "by_source": {}, "pass_output": True, **extra}


def _np(table: pa.Table, col: str) -> np.ndarray:
    return table.column(col).to_numpy() if table.num_rows else np.zeros(0, dtype=table.schema.field(col).type.to_pandas_dtype())


def _write(out: str, name: str, table: pa.Table, part: np.ndarray, n_parts: int, files: list[dict]) -> None:
    if table.num_rows:
        files.append(shuffle.write(Path(out) / name, table, part, n_parts))


def _edge_table(a: np.ndarray, b: np.ndarray, kind: int | None = None) -> tuple[pa.Table, np.ndarray]:
    """Both directions of every edge (large-star input), routed to the home of `key`."""
    key, nbr = np.concatenate([a, b]), np.concatenate([b, a])
    cols = {"key": key, "nbr": nbr}
    if kind is not None:
        cols["kind"] = np.full(len(key), kind, dtype=np.uint8)
    return pa.table(cols, schema=EDGE_SCHEMA if kind is not None else STAR_SCHEMA), home(key)


def minhasher(p: dict) -> MinHasher:
    f = p["fuzzy"]
    return MinHasher(num_perm=f["num_perm"], seed=f["seed"], scheme=f["scheme"], hash=f["hash"], ngram=f["ngram"],
                     unit=f["shingle"], norm=Normalization(**f["normalize"]))


def _jaccard(x: np.ndarray, y: np.ndarray) -> float:
    inter = len(np.intersect1d(x, y, assume_unique=True))
    union = len(x) + len(y) - inter
    return inter / union if union else 0.0


def shingle_sets(texts: list[str], mh: MinHasher) -> list[np.ndarray]:
    """Sorted distinct shingle hashes of each text (what the verify step compares)."""
    hv, offsets, _ = mh.shingle_hashes(texts)
    return [np.unique(hv[offsets[i]:offsets[i + 1]]) for i in range(len(texts))]


def _read_texts(path: str, rows: np.ndarray) -> list[str]:
    if not len(rows):
        return []
    return pq.read_table(path, columns=["text"]).column("text").take(pa.array(rows)).to_pylist()


# ---------------------------------------------------------------------------- pass 1: signatures


def sig_task(path: str, out: str, key: str, shard: int, n_parts: int, batch_size: int, params: dict) -> dict:
    methods = params["method"]
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    score_col = params["score_column"] if params["score_column"] in names else None
    cols = ["id", "text"] + [c for c in ("n_tokens", score_col) if c and c in names]
    exact_norm = Normalization(**params["exact"]["normalize"])
    mh = minhasher(params) if "fuzzy" in methods else None
    embedder = None
    if "semantic" in methods:
        from pipeline.models.embedder import for_task

        s = params["semantic"]  # "resolved": the driver's precision/device (stages/dedup.py)
        embedder = for_task(s["model"], s["max_tokens"], s["docs_per_forward"], s["resolved"])
    sig_parts, band_parts = [], []
    row0, n_empty, n_shingles = 0, 0, 0
    for rb in pf.iter_batches(batch_size=batch_size, columns=cols):
        t = pa.Table.from_batches([rb])
        texts = t.column("text").to_pylist()
        n = len(texts)
        uid = (np.uint64(shard) << np.uint64(32)) | np.arange(row0, row0 + n, dtype=np.uint64)
        row0 += n
        c = None
        if mh is not None:
            hv, offsets, c = mh.shingle_hashes(texts)
            counts = np.diff(offsets)
            sig = signatures_from_hashes(hv, offsets, mh.a, mh.b, mh.scheme)
            n_shingles += int(counts.sum())
        if c is None or mh.norm != exact_norm:
            c = compact(texts, exact_norm)
        ehi, elo = hashing.exact_hashes(c.buf, c.doc_start, c.doc_end)
        score = t.column(score_col).cast(pa.float64()) if score_col else pa.nulls(n, pa.float64())
        ntok = t.column("n_tokens") if "n_tokens" in t.column_names else pa.array(np.zeros(n, dtype=np.int64))
        table = {"uid": pa.array(uid), "id": t.column("id"), "length": pc.utf8_length(t.column("text")).cast(I64),
                 "score": score, "n_tokens": ntok, "ehi": pa.array(ehi), "elo": pa.array(elo)}
        bands = [pa.table({"band": np.full(n, lsh.EXACT_BAND, dtype=np.int16), "key": elo, "ekey": ehi, "uid": uid}, schema=BAND_SCHEMA)]
        if mh is not None:
            table["n_shingles"] = pa.array(counts.astype(np.int32))
            table["signature"] = pa.FixedSizeListArray.from_arrays(pa.array(sig.ravel()), mh.num_perm)
            has = np.flatnonzero(counts > 0)  # no shingles, no buckets (all-max signatures would collide)
            n_empty += n - len(has)
            keys = band_keys(sig[has], params["fuzzy"]["bands"], params["fuzzy"]["rows"])
            nb = keys.shape[1]
            bands.append(pa.table({"band": np.tile(np.arange(nb, dtype=np.int16), len(has)), "key": keys.ravel(),
                                   "ekey": np.repeat(elo[has], nb), "uid": np.repeat(uid[has], nb)}, schema=BAND_SCHEMA))
        if embedder is not None:
            emb = embedder.encode(texts).astype(np.float32)
            table["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1])
        sig_parts.append(pa.table(table))
        band_parts.extend(bands)
    files = []
    sig_table = pa.concat_tables(sig_parts) if sig_parts else pa.table({"uid": pa.array([], U64)})
    sig_path = Path(out) / f"sig-{key}.parquet"
    io.write_parquet(sig_table, sig_path)
    files.append({"name": sig_path.name, "rows": sig_table.num_rows, "bytes": sig_path.stat().st_size, "sha256": io.sha256_file(sig_path)})
    bt = pa.concat_tables(band_parts) if band_parts else BAND_SCHEMA.empty_table()
    files.append(shuffle.write(Path(out) / f"bands-{key}.parquet", bt, (_np(bt, "key") % np.uint64(n_parts)).astype(np.int64), n_parts))
    return counters(pf.metadata.num_rows, files, docs=pf.metadata.num_rows, no_shingles=n_empty, shingles=n_shingles)


# ---------------------------------------------------------------------------- pass 2: LSH buckets


def buckets_task(out: str, key: str, p: int, band_srcs: list, old_srcs: list, n_homes: int, params: dict) -> dict:
    """Candidate pairs of one band partition. `old_srcs`: (src, path, parts) of --against indexes."""
    t = shuffle.read(band_srcs, p, schema=BAND_SCHEMA)
    band, k, e, u = (_np(t, c) for c in ("band", "key", "ekey", "uid"))
    olds = [_with_src(shuffle.read([(path, parts)], p, schema=INDEX_SCHEMA), src) for src, path, parts in old_srcs]
    old = pa.concat_tables(olds) if olds else INDEX_SCHEMA.append(pa.field("src", pa.int32())).empty_table()
    if old.num_rows:
        ouid = OLD_BIT | np.arange(old.num_rows, dtype=np.uint64)
        band = np.concatenate([band, _np(old, "band")])
        k = np.concatenate([k, _np(old, "key")])
        e = np.concatenate([e, _np(old, "ekey")])
        u = np.concatenate([u, ouid])
    verify = "fuzzy" in params["method"] and params["fuzzy"]["verify"]
    pairs = lsh.bucket_pairs(band, k, e, u, collapse_exact=True, all_pairs=verify,
                             max_pairs_bucket=params["fuzzy"]["max_pairs_bucket"])
    files: list[dict] = []
    edges_a, edges_b, kinds, match_new, match_old, cand_new, cand_old = [], [], [], [], [], [], []
    stats = {}
    for kind_name, (a, b) in pairs.items():
        kind = EXACT if kind_name == "exact" else FUZZY
        new_new = (b & OLD_BIT) == 0
        new_old = ((a & OLD_BIT) == 0) & ~new_new
        stats[f"{kind_name}_pairs"] = int(new_new.sum())
        stats[f"{kind_name}_old_pairs"] = int(new_old.sum())
        if kind == FUZZY and verify:
            _write(out, f"pairs-{key}.parquet", pa.table({"a": a[new_new], "b": b[new_new]}, schema=PAIR_SCHEMA),
                   home(a[new_new]), n_homes, files)
            cand_new.append(a[new_old])
            cand_old.append(b[new_old])
        else:
            edges_a.append(a[new_new])
            edges_b.append(b[new_new])
            kinds.append(np.full(int(new_new.sum()), kind, dtype=np.uint8))
            match_new.append(a[new_old])
            match_old.append(b[new_old])
    if edges_a:
        a, b = np.concatenate(edges_a), np.concatenate(edges_b)
        kd = np.concatenate(kinds)
        table = pa.table({"key": np.concatenate([a, b]), "nbr": np.concatenate([b, a]), "kind": np.concatenate([kd, kd])}, schema=EDGE_SCHEMA)
        _write(out, f"edges-{key}.parquet", table, home(_np(table, "key")), n_homes, files)
    for tag, news, olds_ in (("oldmatch", match_new, match_old), ("oldcand", cand_new, cand_old)):
        if news and sum(len(x) for x in news):
            nu, ou = np.concatenate(news), np.concatenate(olds_)
            o = old.take(pa.array((ou & ~OLD_BIT).astype(np.int64)))
            cols = {"uid": nu, "old_id": o.column("id"), "old_ehi": o.column("ehi"), "old_elo": o.column("elo")}
            schema = OLD_SCHEMA
            if tag == "oldcand":
                cols.update(src=o.column("src"), file=o.column("file"), row=o.column("row"))
                schema = OLDCAND_SCHEMA
            _write(out, f"{tag}-{key}.parquet", pa.table(cols, schema=schema), home(nu), n_homes, files)
    return counters(t.num_rows + old.num_rows, files, band_rows=t.num_rows, index_rows=old.num_rows, **stats)


def _with_src(t: pa.Table, src: int) -> pa.Table:
    return t.append_column("src", pa.array(np.full(t.num_rows, src, dtype=np.int32)))


# ---------------------------------------------------------------------------- pass 3: verify


def verify_a_task(out: str, key: str, h: int, input_path: str, pair_srcs: list, cand_srcs: list, old_dirs: list[str],
                  n_homes: int, params: dict) -> dict:
    """Attach the shingle set of `a` (in this shard) to each pair, routed to the home of `b`;
    check candidates against --against documents here (their text is read by file and row)."""
    mh = minhasher(params)
    thr = params["fuzzy"]["threshold"]
    t = shuffle.read(pair_srcs, h, schema=PAIR_SCHEMA)
    a, b = cc.unique_pairs(_np(t, "a"), _np(t, "b"))
    oc = shuffle.read(cand_srcs, h, schema=OLDCAND_SCHEMA)
    if oc.num_rows:  # one check per (document, old document)
        oc = oc.group_by(["uid", "old_id"], use_threads=False).aggregate([(c, "min") for c in ("old_ehi", "old_elo", "src", "file", "row")])
        oc = oc.rename_columns([c.removesuffix("_min") for c in oc.column_names]).sort_by([("uid", "ascending"), ("old_id", "ascending")])
    need = np.unique(np.concatenate([a, _np(oc, "uid")])) if oc.num_rows else np.unique(a)
    sets = dict(zip(need.tolist(), shingle_sets(_read_texts(input_path, _rows(need)), mh)))
    files: list[dict] = []
    hashes = [sets[x] for x in a.tolist()]
    carry = pa.table({"a": a, "b": b, "hashes": pa.array(hashes, type=pa.list_(pa.uint32()))}, schema=CARRY_SCHEMA)
    _write(out, f"carry-{key}.parquet", carry, home(b), n_homes, files)
    matched = np.zeros(oc.num_rows, dtype=bool)
    if oc.num_rows:
        src, fname, row = (oc.column(c).to_pylist() for c in ("src", "file", "row"))
        old_sets: dict[tuple, np.ndarray] = {}
        for (s, f) in sorted(set(zip(src, fname))):
            rows = sorted({r for s2, f2, r in zip(src, fname, row) if (s2, f2) == (s, f)})
            texts = _read_texts(str(Path(old_dirs[s]) / f), np.array(rows, dtype=np.int64))
            old_sets.update({(s, f, r): x for r, x in zip(rows, shingle_sets(texts, mh))})
        uids = _np(oc, "uid").tolist()
        matched = np.array([_jaccard(sets[x], old_sets[(s, f, r)]) >= thr for x, s, f, r in zip(uids, src, fname, row)], dtype=bool)
        om = oc.filter(pa.array(matched)).select(OLD_SCHEMA.names)
        _write(out, f"oldmatch-{key}.parquet", om, home(_np(om, "uid")), n_homes, files)
    return counters(len(a) + oc.num_rows, files, pairs=len(a), old_checked=oc.num_rows, old_matched=int(matched.sum()))


def verify_b_task(out: str, key: str, h: int, input_path: str, carry_srcs: list, n_homes: int, params: dict) -> dict:
    mh = minhasher(params)
    thr = params["fuzzy"]["threshold"]
    t = shuffle.read(carry_srcs, h, schema=CARRY_SCHEMA)
    if t.num_rows:
        t = t.sort_by([("a", "ascending"), ("b", "ascending")])
    a, b = _np(t, "a"), _np(t, "b")
    need = np.unique(b)
    sets = dict(zip(need.tolist(), shingle_sets(_read_texts(input_path, _rows(need)), mh)))
    ok = np.zeros(len(a), dtype=bool)
    jac = np.zeros(len(a))
    for i, (hs, bb) in enumerate(zip(t.column("hashes").to_numpy(zero_copy_only=False) if t.num_rows else [], b.tolist())):
        jac[i] = _jaccard(hs, sets[bb])
        ok[i] = jac[i] >= thr
    files: list[dict] = []
    table, part = _edge_table(a[ok], b[ok], FUZZY)
    _write(out, f"edges-{key}.parquet", table, part, n_homes, files)
    hist = np.histogram(jac, bins=10, range=(0, 1))[0].tolist() if len(jac) else [0] * 10
    return counters(len(a), files, checked=len(a), verified=int(ok.sum()), jaccard_hist=hist)


# ---------------------------------------------------------------------------- semantic


def kmeans_task(out: str, key: str, sample: list, k: int, seed: int, iters: int) -> dict:
    """sample: (sig file, rows) per shard. Writes centroids.parquet (one list<float32> per row)."""
    xs = []
    for path, rows in sample:
        if rows:
            col = pq.read_table(path, columns=["embedding"]).column("embedding").take(pa.array(rows))
            xs.append(np.asarray(pc.list_flatten(col).to_numpy(), dtype=np.float32).reshape(len(rows), -1))
    x = np.concatenate(xs)
    cent = semantic.fit_kmeans(x, k, seed, iters)
    table = pa.table({"centroid": pa.FixedSizeListArray.from_arrays(pa.array(cent.ravel()), cent.shape[1])})
    path = Path(out) / "centroids.parquet"
    io.write_parquet(table, path)
    return counters(len(x), [{"name": path.name, "rows": table.num_rows, "bytes": path.stat().st_size, "sha256": io.sha256_file(path)}],
                    k=int(cent.shape[0]), sample=len(x))


def _embeddings(table: pa.Table) -> np.ndarray:
    col = table.column("embedding")
    if not table.num_rows:
        return np.zeros((0, 1), dtype=np.float32)
    return np.asarray(pc.list_flatten(col).to_numpy(), dtype=np.float32).reshape(table.num_rows, -1)


def assign_task(out: str, key: str, sig_path: str, centroids_path: str, n_parts: int) -> dict:
    t = pq.read_table(sig_path, columns=["uid", "elo", "embedding"])
    cent = _embeddings(pq.read_table(centroids_path).rename_columns(["embedding"]))
    x = _embeddings(t)
    cl = semantic.assign(x, cent) if t.num_rows else np.zeros(0, dtype=np.int64)
    table = pa.table({"cluster": cl, "uid": t.column("uid"), "ekey": t.column("elo"), "embedding": t.column("embedding")})
    files: list[dict] = []
    _write(out, f"assign-{key}.parquet", table, cl % n_parts, n_parts, files)
    return counters(t.num_rows, files)


def sem_pairs_task(out: str, key: str, p: int, assign_srcs: list, n_homes: int, threshold: float) -> dict:
    t = shuffle.read(assign_srcs, p)
    files: list[dict] = []
    if not t.num_rows:
        return counters(0, files, pairs=0, clusters=0)
    t = t.sort_by([("cluster", "ascending"), ("ekey", "ascending"), ("uid", "ascending")])
    cl, ek, uid = _np(t, "cluster"), _np(t, "ekey"), _np(t, "uid")
    rep = np.ones(len(uid), dtype=bool)  # one representative per identical text (exact edges join the rest)
    rep[1:] = (cl[1:] != cl[:-1]) | (ek[1:] != ek[:-1])
    x = _embeddings(t)
    pa_, pb_ = [], []
    starts = np.flatnonzero(np.r_[True, cl[1:] != cl[:-1]])
    for s, e in zip(starts, np.append(starts[1:], len(cl))):
        idx = np.arange(s, e)[rep[s:e]]
        a, b = semantic.similar_pairs(x[idx], uid[idx], threshold)
        pa_.append(a)
        pb_.append(b)
    a, b = np.concatenate(pa_), np.concatenate(pb_)
    table, part = _edge_table(a, b, SEMANTIC)
    _write(out, f"edges-{key}.parquet", table, part, n_homes, files)
    return counters(t.num_rows, files, pairs=len(a), clusters=len(starts))


# ---------------------------------------------------------------------------- connected components


def cc_large_task(out: str, key: str, h: int, srcs: list, n_homes: int, first: bool) -> dict:
    t = shuffle.read(srcs, h, columns=["key", "nbr", "kind"] if first else ["key", "nbr"],
                     schema=EDGE_SCHEMA if first else STAR_SCHEMA)
    k, nbr = _np(t, "key"), _np(t, "nbr")
    files: list[dict] = []
    if first and t.num_rows:  # which kinds of edge touch each node, for the reason of its removal
        kd = _np(t, "kind")
        o = np.argsort(k, kind="stable")
        starts = np.flatnonzero(np.r_[True, k[o][1:] != k[o][:-1]])
        kinds = pa.table({"uid": k[o][starts], "kinds": np.bitwise_or.reduceat(kd[o], starts)}, schema=KIND_SCHEMA)
        _write(out, f"kinds-{key}.parquet", kinds, home(_np(kinds, "uid")), n_homes, files)
    v, m, changes = cc.large_star(k, nbr)
    _write(out, f"star-{key}.parquet", pa.table({"key": v, "nbr": m}, schema=STAR_SCHEMA), home(v), n_homes, files)
    return counters(t.num_rows, files, changes=changes, edges_out=len(v))


def cc_small_task(out: str, key: str, h: int, srcs: list, n_homes: int) -> dict:
    t = shuffle.read(srcs, h, schema=STAR_SCHEMA)
    x, r, changes = cc.small_star(_np(t, "key"), _np(t, "nbr"))
    table, part = _edge_table(x, r)
    files: list[dict] = []
    _write(out, f"star-{key}.parquet", table, part, n_homes, files)
    return counters(t.num_rows, files, changes=changes, edges_out=len(x))


# ---------------------------------------------------------------------------- groups and election


def groups_task(out: str, key: str, h: int, sig_path: str, label_srcs: list, kind_srcs: list, old_srcs: list, n_parts: int) -> dict:
    """Members of every group that has a document of this shard: (root, attributes) -> root partitions."""
    lab = shuffle.read(label_srcs, h, schema=STAR_SCHEMA)
    node, root = cc.labels(_np(lab, "key"), _np(lab, "nbr"))
    om = shuffle.read(old_srcs, h, schema=OLD_SCHEMA)
    if om.num_rows:  # a document's best old match: the smallest old id
        om = om.sort_by([("uid", "ascending"), ("old_id", "ascending")])
        ou = _np(om, "uid")
        om = om.take(pa.array(np.flatnonzero(np.r_[True, ou[1:] != ou[:-1]])))
    ou = _np(om, "uid")
    extra = np.setdiff1d(ou, node)
    node, root = np.concatenate([node, extra]), np.concatenate([root, extra])
    o = np.argsort(node, kind="stable")
    node, root = node[o], root[o]
    files: list[dict] = []
    if not len(node):
        return counters(0, files, members=0)
    kt = shuffle.read(kind_srcs, h, schema=KIND_SCHEMA)
    kinds = np.zeros(len(node), dtype=np.uint8)
    if kt.num_rows:
        ku, kk = _np(kt, "uid"), _np(kt, "kinds")
        pos = np.searchsorted(node, ku)
        np.bitwise_or.at(kinds, pos, kk)
    attrs = pq.read_table(sig_path, columns=["id", "score", "length", "ehi", "elo"]).take(pa.array(_rows(node)))
    match = {"old_id": pa.nulls(len(node), pa.string()), "old_ehi": pa.nulls(len(node), U64), "old_elo": pa.nulls(len(node), U64)}
    if om.num_rows:
        idx = np.full(len(node), -1, dtype=np.int64)
        idx[np.searchsorted(node, ou)] = np.arange(len(ou))
        take = pa.array(np.where(idx >= 0, idx, 0), mask=idx < 0)
        match = {c: om.column(c).take(take) for c in ("old_id", "old_ehi", "old_elo")}
    table = pa.table({"root": root, "uid": node, "id": attrs.column("id"), "score": attrs.column("score"),
                      "length": attrs.column("length"), "ehi": attrs.column("ehi"), "elo": attrs.column("elo"),
                      "kinds": kinds, **match}, schema=MEMBER_SCHEMA)
    part = (hashing.fmix64(root) % np.uint64(n_parts)).astype(np.int64)
    _write(out, f"members-{key}.parquet", table, part, n_parts, files)
    return counters(len(node), files, members=len(node))


def _sort_indices(t: pa.Table, order: list[tuple[str, str]]) -> pa.Array:
    """Nulls last in every key (a missing score ranks below any score)."""
    try:
        return pc.sort_indices(t, sort_keys=[(c, o, "at_end") for c, o in order])
    except (TypeError, ValueError, pa.ArrowInvalid):  # pyarrow < 25: one placement for all keys
        return pc.sort_indices(t, sort_keys=order, null_placement="at_end")


def _group_id(ids: list[str]) -> np.ndarray:
    import xxhash

    return np.fromiter((xxhash.xxh64_intdigest(i.encode()) & ((1 << 63) - 1) for i in ids), dtype=np.int64, count=len(ids))


def elect_task(out: str, key: str, p: int, member_srcs: list, n_homes: int, keep: str) -> dict:
    """One keeper per group: an --against document if the group has one (it is already kept),
    else by the keep rule; everyone else is a duplicate of it, with the reason of the relation."""
    t = shuffle.read(member_srcs, p, schema=MEMBER_SCHEMA)
    files: list[dict] = []
    if not t.num_rows:
        return counters(0, files, groups=0, sizes={}, removed={})
    t = t.append_column("has_old", pc.is_valid(t.column("old_id")))
    order = [("root", "ascending"), ("has_old", "descending"), ("old_id", "ascending")]
    if keep == "best":
        order += [("score", "descending"), ("length", "descending")]
    elif keep == "longest":
        order += [("length", "descending")]
    order += [("id", "ascending")]
    t = t.take(_sort_indices(t, order))
    root = _np(t, "root")
    first = np.flatnonzero(np.r_[True, root[1:] != root[:-1]])
    sizes = np.diff(np.append(first, len(root)))
    g = np.repeat(first, sizes)  # row of each row's group head
    ids = t.column("id").to_pylist()
    old_id = t.column("old_id").to_pylist()
    anchored = np.array([old_id[i] is not None for i in first.tolist()], dtype=bool)
    anchored_row = np.repeat(anchored, sizes)
    ehi, elo = _np(t, "ehi"), _np(t, "elo")
    old_ehi = t.column("old_ehi").fill_null(0).to_numpy()
    old_elo = t.column("old_elo").fill_null(0).to_numpy()
    keeper_ehi = np.where(anchored_row, old_ehi[g], ehi[g])
    keeper_elo = np.where(anchored_row, old_elo[g], elo[g])
    same_text = (ehi == keeper_ehi) & (elo == keeper_elo)
    kinds = _np(t, "kinds")
    group_kinds = np.bitwise_or.reduceat(kinds, first)[np.repeat(np.arange(len(first)), sizes)] if len(kinds) else kinds
    removed = anchored_row | (np.arange(len(root)) != g)
    reason = np.where(same_text, EXACT,
                      np.where(kinds & FUZZY, FUZZY, np.where(kinds & SEMANTIC, SEMANTIC,
                                                               np.where(group_kinds & FUZZY, FUZZY, SEMANTIC))))
    keeper_id = [old_id[i] if a else ids[i] for i, a in zip(g.tolist(), anchored_row.tolist())]
    gid = _group_id(keeper_id)
    dup_of = pa.array([k if r else None for k, r in zip(keeper_id, removed.tolist())], pa.string())
    reasons = pa.array([REASONS[int(x)] if r else None for x, r in zip(reason.tolist(), removed.tolist())], pa.string())
    uid = _np(t, "uid")
    dec = pa.table({"uid": uid, "dup_of": dup_of, "dup_group": gid, "reason": reasons}, schema=DECISION_SCHEMA)
    _write(out, f"decisions-{key}.parquet", dec, home(uid), n_homes, files)
    # Group sizes count the kept document, also when it is an --against document.
    full = sizes + anchored.astype(np.int64)
    size_hist = {str(int(s)): int(n) for s, n in zip(*np.unique(full, return_counts=True))}
    rem = {REASONS[int(x)]: int(n) for x, n in zip(*np.unique(reason[removed], return_counts=True))}
    return counters(t.num_rows, files, groups=len(first), groups_against=int(anchored.sum()), sizes=size_hist, removed=rem)


# ---------------------------------------------------------------------------- final write


def final_task(path: str, out: str, key: str, h: int, decision_srcs: list, bands_file: str, sig_path: str, n_parts: int,
               batch_size: int, write_index: bool) -> dict:
    from pipeline.schema import REASON
    from pipeline.taskio import TaskOutput

    dec = shuffle.read(decision_srcs, h, schema=DECISION_SCHEMA)
    dec = dec.sort_by([("uid", "ascending")]) if dec.num_rows else dec
    drow = _rows(_np(dec, "uid"))
    res = TaskOutput(Path(out), key, "dedup", target_rows=1 << 62, target_bytes=1 << 62, single=True)
    pf = pq.ParquetFile(path)
    res.rows_in = pf.metadata.num_rows
    n_sig = pq.ParquetFile(sig_path).metadata.num_rows
    if n_sig != res.rows_in:  # the signature pass wrote one row per document of this shard
        raise RuntimeError(f"{sig_path}: {n_sig} signature rows for the {res.rows_in} documents of {path}; an intermediate "
                           "file changed: re-run the stage with --force")
    tokens_by_reason: dict[str, int] = {}
    kept_rows, kept_ids = [], []
    offset = 0
    for rb in pf.iter_batches(batch_size=batch_size):
        table = pa.Table.from_batches([rb])
        n = table.num_rows
        res.tokens_in += int(pc.sum(table.column("n_tokens")).as_py() or 0) if "n_tokens" in table.column_names else 0
        res.bytes_in += int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)
        lo, hi = np.searchsorted(drow, [offset, offset + n])
        d = dec.slice(lo, hi - lo)
        pos = drow[lo:hi] - offset
        take = np.full(n, -1, dtype=np.int64)
        take[pos] = np.arange(len(pos))
        if d.num_rows:
            idx = pa.array(np.where(take >= 0, take, 0), mask=take < 0)
            group, reason, dup_of = (d.column(c).take(idx) for c in ("dup_group", "reason", "dup_of"))
        else:
            group, reason, dup_of = pa.nulls(n, I64), pa.nulls(n, pa.string()), pa.nulls(n, pa.string())
        if "dup_group" in table.column_names:  # re-dedup of a dedup output: ours replaces it
            table = table.drop_columns(["dup_group"])
        table = table.append_column("dup_group", group)
        is_dup = pc.fill_null(pc.is_valid(reason), False).to_numpy(zero_copy_only=False)
        keep_idx = np.flatnonzero(~is_dup)
        drop_idx = np.flatnonzero(is_dup)
        kept = table.take(pa.array(keep_idx))
        res.add_kept(kept)
        kept_rows.append(offset + keep_idx)
        kept_ids.extend(kept.column("id").to_pylist())
        rej = table.take(pa.array(drop_idx))
        rej = rej.append_column("dup_of", dup_of.take(pa.array(drop_idx))).append_column(REASON, reason.take(pa.array(drop_idx)))
        res.add_rejected(rej)
        if "n_tokens" in rej.column_names and rej.num_rows:
            for r, tk in zip(rej.column(REASON).to_pylist(), rej.column("n_tokens").to_pylist()):
                tokens_by_reason[r] = tokens_by_reason.get(r, 0) + int(tk or 0)
        offset += n
    extra = {}
    if write_index:
        extra["index_file"] = _write_index(out, key, h, np.concatenate(kept_rows) if kept_rows else np.zeros(0, np.int64),
                                           kept_ids, bands_file, sig_path, n_parts)
    return res.finish(inputs=[path], tokens_by_reason=tokens_by_reason, **extra)


def _write_index(out: str, key: str, h: int, kept_rows: np.ndarray, kept_ids: list[str], bands_file: str,
                 sig_path: str, n_parts: int) -> dict:
    """Band rows of the kept documents, partitioned like this run's band partitions, with the id,
    output file and row of each (so a later run can read its text to verify a match)."""
    bt = pq.read_table(bands_file)
    uid = _np(bt, "uid")
    rows = _rows(uid)
    out_row = np.full(int(rows.max()) + 1 if len(rows) else 0, -1, dtype=np.int64)
    out_row[kept_rows[kept_rows < len(out_row)]] = np.flatnonzero(kept_rows < len(out_row))
    sel = np.flatnonzero(out_row[rows] >= 0) if len(rows) else np.zeros(0, dtype=np.int64)
    bt = bt.take(pa.array(sel))
    r = rows[sel]
    orow = out_row[r]
    eh = pq.read_table(sig_path, columns=["ehi", "elo"])
    ehi, elo = _np(eh, "ehi")[r], _np(eh, "elo")[r]
    idx = pa.table({"band": bt.column("band"), "key": bt.column("key"), "ekey": bt.column("ekey"),
                    "id": pa.array(kept_ids, pa.string()).take(pa.array(orow)), "file": pa.array([f"{key}.parquet"] * len(sel), pa.string()),
                    "row": orow, "ehi": ehi, "elo": elo}, schema=INDEX_SCHEMA)
    d = Path(out) / "_index"
    d.mkdir(parents=True, exist_ok=True)
    entry = shuffle.write(d / f"{key}.parquet", idx, (_np(idx, "key") % np.uint64(n_parts)).astype(np.int64), n_parts)
    return entry
