"""The tasks of the dedup passes: plain functions `(inputs, params) -> marker counters`, no Ray.

This module holds the passes that find duplicate pairs by text: signatures, LSH buckets and the
verification of candidate pairs. `passes_semantic` finds pairs by embedding; `passes_groups` turns
pairs into groups, elects the keepers and writes the output. `tables` holds what they share.

Every per-node step (verify, connected components, groups, the final write) runs one task per
*home* (a range of input shards, see `tables`). Global steps keyed by something else (LSH band
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
from stages.dedup import cc, hashing, lsh, shuffle
from stages.dedup.minhash import MinHasher, band_keys, signatures_from_hashes
from stages.dedup.tables import (BAND_SCHEMA, CARRY_SCHEMA, EDGE_SCHEMA, EXACT, FUZZY, I64, INDEX_SCHEMA, OLD_BIT, OLD_SCHEMA,
                                 OLDCAND_SCHEMA, PAIR_SCHEMA, U64, counters, edge_table, home, np_column, read_rows, write_parts)
from stages.dedup.text import Normalization, compact


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


def _home_texts(inputs: dict, uids: np.ndarray) -> list[str]:
    """Texts of `uids` (ascending) from the home's input shards (`inputs`: shard -> path)."""
    return read_rows(inputs, uids, ["text"]).column("text").to_pylist() if len(uids) else []


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

        s = params["semantic"]  # "resolved": the driver's precision/device (stages/dedup/stage.py)
        embedder = for_task(s["model"], s["max_tokens"], s["docs_per_forward"], s["resolved"])
    sig_parts, band_parts = [], []
    row0, n_empty, n_shingles = 0, 0, 0
    # An empty shard (e.g. a filter output shard with every row rejected) runs the body once on no
    # rows: its signature file then has every column the later passes read (groups, final/_index).
    batches = (pa.Table.from_batches([rb]) for rb in pf.iter_batches(batch_size=batch_size, columns=cols))
    for t in batches if pf.metadata.num_rows else [pf.schema_arrow.empty_table().select(cols)]:
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
    band_table = pa.concat_tables(band_parts) if band_parts else BAND_SCHEMA.empty_table()
    band_part = (np_column(band_table, "key") % np.uint64(n_parts)).astype(np.int64)
    files.append(shuffle.write(Path(out) / f"bands-{key}.parquet", band_table, band_part, n_parts))
    return counters(pf.metadata.num_rows, files, docs=pf.metadata.num_rows, no_shingles=n_empty, shingles=n_shingles)


# ---------------------------------------------------------------------------- pass 2: LSH buckets


def buckets_task(out: str, key: str, p: int, band_srcs: list, old_srcs: list, n_homes: int, per_home: int, params: dict) -> dict:
    """Candidate pairs of one band partition. `old_srcs`: index files (shuffle.write_index) of the
    --against indexes' (src, path, parts)."""
    t = shuffle.read(band_srcs, p, schema=BAND_SCHEMA)
    band, band_key, ekey, uid = (np_column(t, c) for c in ("band", "key", "ekey", "uid"))
    olds = [_with_src(shuffle.read([(path, parts)], p, schema=INDEX_SCHEMA), src) for src, path, parts in shuffle.sources(old_srcs, p)]
    old = pa.concat_tables(olds) if olds else INDEX_SCHEMA.append(pa.field("src", pa.int32())).empty_table()
    if old.num_rows:
        band = np.concatenate([band, np_column(old, "band")])
        band_key = np.concatenate([band_key, np_column(old, "key")])
        ekey = np.concatenate([ekey, np_column(old, "ekey")])
        uid = np.concatenate([uid, OLD_BIT | np.arange(old.num_rows, dtype=np.uint64)])
    verify = "fuzzy" in params["method"] and params["fuzzy"]["verify"]
    pairs = lsh.bucket_pairs(band, band_key, ekey, uid, collapse_exact=True, all_pairs=verify,
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
            write_parts(out, f"pairs-{key}.parquet", pa.table({"a": a[new_new], "b": b[new_new]}, schema=PAIR_SCHEMA),
                        home(a[new_new], per_home), n_homes, files)
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
        edge_kind = np.concatenate(kinds)
        table = pa.table({"key": np.concatenate([a, b]), "nbr": np.concatenate([b, a]), "kind": np.concatenate([edge_kind, edge_kind])},
                         schema=EDGE_SCHEMA)
        write_parts(out, f"edges-{key}.parquet", table, home(np_column(table, "key"), per_home), n_homes, files)
    for tag, new_uids, old_uids in (("oldmatch", match_new, match_old), ("oldcand", cand_new, cand_old)):
        if new_uids and sum(len(x) for x in new_uids):
            new_uid, old_uid = np.concatenate(new_uids), np.concatenate(old_uids)
            old_rows = old.take(pa.array((old_uid & ~OLD_BIT).astype(np.int64)))
            cols = {"uid": new_uid, "old_id": old_rows.column("id"), "old_ehi": old_rows.column("ehi"), "old_elo": old_rows.column("elo")}
            schema = OLD_SCHEMA
            if tag == "oldcand":
                cols.update(src=old_rows.column("src"), file=old_rows.column("file"), row=old_rows.column("row"))
                schema = OLDCAND_SCHEMA
            write_parts(out, f"{tag}-{key}.parquet", pa.table(cols, schema=schema), home(new_uid, per_home), n_homes, files)
    return counters(t.num_rows + old.num_rows, files, band_rows=t.num_rows, index_rows=old.num_rows, **stats)


def _with_src(t: pa.Table, src: int) -> pa.Table:
    return t.append_column("src", pa.array(np.full(t.num_rows, src, dtype=np.int32)))


# ---------------------------------------------------------------------------- pass 3: verify


def verify_a_task(out: str, key: str, h: int, inputs: dict, pair_srcs: list, cand_srcs: list, old_dirs: list[str],
                  n_homes: int, per_home: int, params: dict) -> dict:
    """Attach the shingle set of `a` (in this home's shards, `inputs`) to each pair, routed to the home of `b`;
    check candidates against --against documents here (their text is read by file and row)."""
    mh = minhasher(params)
    threshold = params["fuzzy"]["threshold"]
    t = shuffle.read(pair_srcs, h, schema=PAIR_SCHEMA)
    a, b = cc.unique_pairs(np_column(t, "a"), np_column(t, "b"))
    cands = shuffle.read(cand_srcs, h, schema=OLDCAND_SCHEMA)
    if cands.num_rows:  # one check per (document, old document)
        cands = cands.group_by(["uid", "old_id"], use_threads=False).aggregate([(c, "min") for c in ("old_ehi", "old_elo", "src", "file", "row")])
        cands = cands.rename_columns([c.removesuffix("_min") for c in cands.column_names]).sort_by([("uid", "ascending"), ("old_id", "ascending")])
    need = np.unique(np.concatenate([a, np_column(cands, "uid")])) if cands.num_rows else np.unique(a)
    sets = dict(zip(need.tolist(), shingle_sets(_home_texts(inputs, need), mh)))
    files: list[dict] = []
    hashes = [sets[x] for x in a.tolist()]
    carry = pa.table({"a": a, "b": b, "hashes": pa.array(hashes, type=pa.list_(pa.uint32()))}, schema=CARRY_SCHEMA)
    write_parts(out, f"carry-{key}.parquet", carry, home(b, per_home), n_homes, files)
    matched = np.zeros(cands.num_rows, dtype=bool)
    if cands.num_rows:
        src, fname, row = (cands.column(c).to_pylist() for c in ("src", "file", "row"))
        old_sets: dict[tuple, np.ndarray] = {}
        for (index, file) in sorted(set(zip(src, fname))):  # an --against dir (by its index in old_dirs) and a file of it
            rows = sorted({r for s, f, r in zip(src, fname, row) if (s, f) == (index, file)})
            texts = _read_texts(str(Path(old_dirs[index]) / file), np.array(rows, dtype=np.int64))
            old_sets.update({(index, file, r): x for r, x in zip(rows, shingle_sets(texts, mh))})
        uids = np_column(cands, "uid").tolist()
        matched = np.array([_jaccard(sets[x], old_sets[(s, f, r)]) >= threshold for x, s, f, r in zip(uids, src, fname, row)], dtype=bool)
        matches = cands.filter(pa.array(matched)).select(OLD_SCHEMA.names)
        write_parts(out, f"oldmatch-{key}.parquet", matches, home(np_column(matches, "uid"), per_home), n_homes, files)
    return counters(len(a) + cands.num_rows, files, pairs=len(a), old_checked=cands.num_rows, old_matched=int(matched.sum()))


def verify_b_task(out: str, key: str, h: int, inputs: dict, carry_srcs: list, n_homes: int, per_home: int, params: dict) -> dict:
    mh = minhasher(params)
    threshold = params["fuzzy"]["threshold"]
    t = shuffle.read(carry_srcs, h, schema=CARRY_SCHEMA)
    if t.num_rows:
        t = t.sort_by([("a", "ascending"), ("b", "ascending")])
    a, b = np_column(t, "a"), np_column(t, "b")
    need = np.unique(b)
    sets = dict(zip(need.tolist(), shingle_sets(_home_texts(inputs, need), mh)))
    ok = np.zeros(len(a), dtype=bool)
    similarity = np.zeros(len(a))
    for i, (hashes_a, uid_b) in enumerate(zip(t.column("hashes").to_numpy(zero_copy_only=False) if t.num_rows else [], b.tolist())):
        similarity[i] = _jaccard(hashes_a, sets[uid_b])
        ok[i] = similarity[i] >= threshold
    files: list[dict] = []
    table, part = edge_table(a[ok], b[ok], per_home, FUZZY)
    write_parts(out, f"edges-{key}.parquet", table, part, n_homes, files)
    hist = np.histogram(similarity, bins=10, range=(0, 1))[0].tolist() if len(similarity) else [0] * 10
    return counters(len(a), files, checked=len(a), verified=int(ok.sum()), jaccard_hist=hist)
