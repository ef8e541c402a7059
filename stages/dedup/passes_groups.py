"""The last dedup passes: connected components of the duplicate pairs (large-star / small-star
rounds), the members of each group, the election of one keeper per group, and the final write of
the output dataset (kept rows, `_rejected/` with `dup_of` and `reason`) and of its `_index/`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.dedup import cc, hashing, shuffle
from stages.dedup.tables import (DECISION_SCHEMA, EDGE_SCHEMA, EXACT, FUZZY, I64, INDEX_SCHEMA, KIND_SCHEMA, MEMBER_SCHEMA,
                                 OLD_SCHEMA, REASONS, SEMANTIC, STAR_SCHEMA, U64, counters, edge_table, home, np_column,
                                 read_rows, row_of, shard_of, write_parts)


def cc_large_task(out: str, key: str, h: int, srcs: list, n_homes: int, per_home: int, first: bool) -> dict:
    t = shuffle.read(srcs, h, columns=["key", "nbr", "kind"] if first else ["key", "nbr"],
                     schema=EDGE_SCHEMA if first else STAR_SCHEMA)
    node, nbr = np_column(t, "key"), np_column(t, "nbr")
    files: list[dict] = []
    if first and t.num_rows:  # which kinds of edge touch each node, for the reason of its removal
        edge_kind = np_column(t, "kind")
        order = np.argsort(node, kind="stable")
        starts = np.flatnonzero(np.r_[True, node[order][1:] != node[order][:-1]])
        kinds = pa.table({"uid": node[order][starts], "kinds": np.bitwise_or.reduceat(edge_kind[order], starts)}, schema=KIND_SCHEMA)
        write_parts(out, f"kinds-{key}.parquet", kinds, home(np_column(kinds, "uid"), per_home), n_homes, files)
    star_node, star_nbr, changes = cc.large_star(node, nbr)
    write_parts(out, f"star-{key}.parquet", pa.table({"key": star_node, "nbr": star_nbr}, schema=STAR_SCHEMA),
                home(star_node, per_home), n_homes, files)
    return counters(t.num_rows, files, changes=changes, edges_out=len(star_node))


def cc_small_task(out: str, key: str, h: int, srcs: list, n_homes: int, per_home: int) -> dict:
    t = shuffle.read(srcs, h, schema=STAR_SCHEMA)
    star_node, star_nbr, changes = cc.small_star(np_column(t, "key"), np_column(t, "nbr"))
    table, part = edge_table(star_node, star_nbr, per_home)
    files: list[dict] = []
    write_parts(out, f"star-{key}.parquet", table, part, n_homes, files)
    return counters(t.num_rows, files, changes=changes, edges_out=len(star_node))


# ---------------------------------------------------------------------------- groups and election


def groups_task(out: str, key: str, h: int, sig_paths: dict, label_srcs: list, kind_srcs: list, old_srcs: list, n_parts: int) -> dict:
    """Members of every group that has a document of this home (signature files `sig_paths`: shard ->
    path): (root, attributes) -> root partitions."""
    labels = shuffle.read(label_srcs, h, schema=STAR_SCHEMA)
    node, root = cc.labels(np_column(labels, "key"), np_column(labels, "nbr"))
    old_match = shuffle.read(old_srcs, h, schema=OLD_SCHEMA)
    if old_match.num_rows:  # a document's best old match: the smallest old id
        old_match = old_match.sort_by([("uid", "ascending"), ("old_id", "ascending")])
        matched_uid = np_column(old_match, "uid")
        old_match = old_match.take(pa.array(np.flatnonzero(np.r_[True, matched_uid[1:] != matched_uid[:-1]])))
    matched_uid = np_column(old_match, "uid")
    extra = np.setdiff1d(matched_uid, node)
    node, root = np.concatenate([node, extra]), np.concatenate([root, extra])
    order = np.argsort(node, kind="stable")
    node, root = node[order], root[order]
    files: list[dict] = []
    if not len(node):
        return counters(0, files, members=0)
    node_kinds = shuffle.read(kind_srcs, h, schema=KIND_SCHEMA)
    kinds = np.zeros(len(node), dtype=np.uint8)
    if node_kinds.num_rows:
        pos = np.searchsorted(node, np_column(node_kinds, "uid"))
        np.bitwise_or.at(kinds, pos, np_column(node_kinds, "kinds"))
    attrs = read_rows(sig_paths, node, ["id", "score", "length", "ehi", "elo"])
    match = {"old_id": pa.nulls(len(node), pa.string()), "old_ehi": pa.nulls(len(node), U64), "old_elo": pa.nulls(len(node), U64)}
    if old_match.num_rows:
        idx = np.full(len(node), -1, dtype=np.int64)
        idx[np.searchsorted(node, matched_uid)] = np.arange(len(matched_uid))
        take = pa.array(np.where(idx >= 0, idx, 0), mask=idx < 0)
        match = {c: old_match.column(c).take(take) for c in ("old_id", "old_ehi", "old_elo")}
    table = pa.table({"root": root, "uid": node, "id": attrs.column("id"), "score": attrs.column("score"),
                      "length": attrs.column("length"), "ehi": attrs.column("ehi"), "elo": attrs.column("elo"),
                      "kinds": kinds, **match}, schema=MEMBER_SCHEMA)
    part = (hashing.fmix64(root) % np.uint64(n_parts)).astype(np.int64)
    write_parts(out, f"members-{key}.parquet", table, part, n_parts, files)
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


def _text_kinds(root: np.ndarray, ehi: np.ndarray, elo: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """The kinds of edge touching any copy of each row's text in its group. LSH and semantic pairs
    are found for one representative of identical texts, the smallest uid, so which copy carries
    the fuzzy/semantic edges follows the sharding; the removal reason must not."""
    if not len(kinds):
        return kinds
    order = np.lexsort((elo, ehi, root))
    r, h, lo = root[order], ehi[order], elo[order]
    starts = np.flatnonzero(np.r_[True, (r[1:] != r[:-1]) | (h[1:] != h[:-1]) | (lo[1:] != lo[:-1])])
    out = np.empty_like(kinds)
    out[order] = np.repeat(np.bitwise_or.reduceat(kinds[order], starts), np.diff(np.append(starts, len(order))))
    return out


def elect_task(out: str, key: str, p: int, member_srcs: list, n_homes: int, per_home: int, keep: str) -> dict:
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
    root = np_column(t, "root")
    first = np.flatnonzero(np.r_[True, root[1:] != root[:-1]])
    sizes = np.diff(np.append(first, len(root)))
    head = np.repeat(first, sizes)  # row of each row's group head
    ids = t.column("id").to_pylist()
    old_id = t.column("old_id").to_pylist()
    anchored = np.array([old_id[i] is not None for i in first.tolist()], dtype=bool)
    anchored_row = np.repeat(anchored, sizes)
    ehi, elo = np_column(t, "ehi"), np_column(t, "elo")
    old_ehi = t.column("old_ehi").fill_null(0).to_numpy()
    old_elo = t.column("old_elo").fill_null(0).to_numpy()
    keeper_ehi = np.where(anchored_row, old_ehi[head], ehi[head])
    keeper_elo = np.where(anchored_row, old_elo[head], elo[head])
    same_text = (ehi == keeper_ehi) & (elo == keeper_elo)
    kinds = _text_kinds(root, ehi, elo, np_column(t, "kinds"))
    group_kinds = np.bitwise_or.reduceat(kinds, first)[np.repeat(np.arange(len(first)), sizes)] if len(kinds) else kinds
    removed = anchored_row | (np.arange(len(root)) != head)
    reason = np.where(same_text, EXACT,
                      np.where(kinds & FUZZY, FUZZY, np.where(kinds & SEMANTIC, SEMANTIC,
                                                               np.where(group_kinds & FUZZY, FUZZY, SEMANTIC))))
    keeper_id = [old_id[i] if a else ids[i] for i, a in zip(head.tolist(), anchored_row.tolist())]
    group_id = _group_id(keeper_id)
    dup_of = pa.array([k if r else None for k, r in zip(keeper_id, removed.tolist())], pa.string())
    reasons = pa.array([REASONS[int(x)] if r else None for x, r in zip(reason.tolist(), removed.tolist())], pa.string())
    uid = np_column(t, "uid")
    decisions = pa.table({"uid": uid, "dup_of": dup_of, "dup_group": group_id, "reason": reasons}, schema=DECISION_SCHEMA)
    write_parts(out, f"decisions-{key}.parquet", decisions, home(uid, per_home), n_homes, files)
    # Group sizes count the kept document, also when it is an --against document.
    full = sizes + anchored.astype(np.int64)
    size_hist = {str(int(s)): int(n) for s, n in zip(*np.unique(full, return_counts=True))}
    removed_by = {REASONS[int(x)]: int(n) for x, n in zip(*np.unique(reason[removed], return_counts=True))}
    return counters(t.num_rows, files, groups=len(first), groups_against=int(anchored.sum()), sizes=size_hist, removed=removed_by)


# ---------------------------------------------------------------------------- final write


def final_task(path: str, out: str, key: str, h: int, decision_srcs: list, bands_file: str, sig_path: str, n_parts: int,
               per_home: int, batch_size: int, write_index: bool) -> dict:
    from pipeline.schema import REASON
    from pipeline.taskio import TaskOutput

    decisions = shuffle.read(decision_srcs, h // per_home, schema=DECISION_SCHEMA)  # its home's: keep this shard's
    decisions = decisions.filter(pa.array(shard_of(np_column(decisions, "uid")) == h)) if decisions.num_rows else decisions
    decisions = decisions.sort_by([("uid", "ascending")]) if decisions.num_rows else decisions
    decision_row = row_of(np_column(decisions, "uid"))  # row in this shard of each decision
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
        lo, hi = np.searchsorted(decision_row, [offset, offset + n])
        batch_decisions = decisions.slice(lo, hi - lo)
        pos = decision_row[lo:hi] - offset
        take = np.full(n, -1, dtype=np.int64)
        take[pos] = np.arange(len(pos))
        if batch_decisions.num_rows:
            idx = pa.array(np.where(take >= 0, take, 0), mask=take < 0)
            group, reason, dup_of = (batch_decisions.column(c).take(idx) for c in ("dup_group", "reason", "dup_of"))
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
        rejected = table.take(pa.array(drop_idx))
        rejected = (rejected.append_column("dup_of", dup_of.take(pa.array(drop_idx)))
                    .append_column(REASON, reason.take(pa.array(drop_idx))))
        res.add_rejected(rejected)
        if "n_tokens" in rejected.column_names and rejected.num_rows:
            for why, tokens in zip(rejected.column(REASON).to_pylist(), rejected.column("n_tokens").to_pylist()):
                tokens_by_reason[why] = tokens_by_reason.get(why, 0) + int(tokens or 0)
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
    bands = pq.read_table(bands_file)
    rows = row_of(np_column(bands, "uid"))
    out_row = np.full(int(rows.max()) + 1 if len(rows) else 0, -1, dtype=np.int64)  # input row -> output row (-1: not kept)
    out_row[kept_rows[kept_rows < len(out_row)]] = np.flatnonzero(kept_rows < len(out_row))
    sel = np.flatnonzero(out_row[rows] >= 0) if len(rows) else np.zeros(0, dtype=np.int64)
    bands = bands.take(pa.array(sel))
    in_row = rows[sel]
    kept_row = out_row[in_row]
    exact = pq.read_table(sig_path, columns=["ehi", "elo"])
    ehi, elo = np_column(exact, "ehi")[in_row], np_column(exact, "elo")[in_row]
    index = pa.table({"band": bands.column("band"), "key": bands.column("key"), "ekey": bands.column("ekey"),
                      "id": pa.array(kept_ids, pa.string()).take(pa.array(kept_row)),
                      "file": pa.array([f"{key}.parquet"] * len(sel), pa.string()), "row": kept_row, "ehi": ehi, "elo": elo},
                     schema=INDEX_SCHEMA)
    index_dir = Path(out) / "_index"
    index_dir.mkdir(parents=True, exist_ok=True)
    part = (np_column(index, "key") % np.uint64(n_parts)).astype(np.int64)
    return shuffle.write(index_dir / f"{key}.parquet", index, part, n_parts)
