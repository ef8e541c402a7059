"""The per-shard passes of remix (Ray tasks): census, scatter, write.

  census  (per input shard)   <out>/_census/census-<shard>.parquet: per document its domain (string)
                              and n_tokens (recounted with the tokenizer when there is one). Does not
                              depend on the weights: re-mixing (even --force) reuses it.
  scatter (per input shard)   read the shard once; its sampled rows, in output order, go to
                              <out>/_work/scatter/scatter-<shard>.parquet with one row group per output
                              shard they belong to (and the metadata prefix chosen for each sample).
  write   (per output shard)  gather its row groups, order by plan position, write part-NNNNN.parquet
                              (id, text, domain, n_tokens, epoch [, prefix]); with token ids also
                              part-NNNNN.tokens.npy (ids, one EOS after each document) and
                              part-NNNNN.index.npy (int64 offsets, rows + 1).

Every input byte is read once and every sample written twice (scatter, shard), whatever the numbers
of input and output shards (reading the needed input shards from each output task instead reads the
corpus once per output shard: measured 10x the reads for 10 output shards).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io
from pipeline.schema import ID, N_TOKENS, TEXT
from pipeline.taskio import TaskOutput
from pipeline.tokens import count_tokens, load_tokenizer

STAGE = "remix"
EOS_TOKEN = "<|endoftext|>"
OUT_SCHEMA = [(ID, pa.string()), (TEXT, pa.large_string()), ("domain", pa.string()), (N_TOKENS, pa.int64()), ("epoch", pa.int16())]
ROW_GROUP = 1024  # rows per row group of the output shards
PREFIX = "prefix"  # column: the metadata line prepended to the text (null = none), only with remix.metadata_prefix


def domain_strings(col) -> pa.Array:
    """Domain values as strings (the weights name domains by `str(value)`); nulls stay null."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    if pa.types.is_string(col.type):
        return col
    if pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_integer(col.type):
        return pc.cast(col, pa.string())
    return pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())


def token_dtype(tokenizer) -> tuple[int, np.dtype]:
    """EOS id (0 when the tokenizer has no <|endoftext|>) and the smallest dtype holding every id."""
    eos = tokenizer.token_to_id(EOS_TOKEN)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    return (0 if eos is None else int(eos)), np.dtype(np.uint16 if vocab <= 65535 else np.uint32)


# ---------------------------------------------------------------- census


def census_shard(path: str, key: str, work: str, domain_column: str, tokenizer: str | None, batch_size: int,
                 score_column: str | None = None, order_column: str | None = None) -> dict:
    """`score_column` (remix.select) -> census column `score`; `order_column` (remix.order.by) ->
    `order_score` (missing = NaN)."""
    pf = pq.ParquetFile(path)
    need_text = tokenizer is not None or N_TOKENS not in pf.schema_arrow.names
    cols = list(dict.fromkeys([domain_column] + ([TEXT] if need_text else [N_TOKENS]) + ([score_column] if score_column else [])
                              + ([order_column] if order_column else [])))
    doms, toks, scores, oscores = [], [], [], []

    def floats(col) -> np.ndarray:
        return pc.cast(col, pa.float64()).fill_null(float("nan")).to_numpy(zero_copy_only=False)

    for rb in pf.iter_batches(batch_size=batch_size, columns=cols):
        doms.append(domain_strings(rb.column(domain_column)))
        if score_column:  # a missing score ranks last
            scores.append(floats(rb.column(score_column)))
        if order_column:
            oscores.append(floats(rb.column(order_column)))
        if need_text:
            toks.append(count_tokens([t or "" for t in rb.column(TEXT).to_pylist()], tokenizer))
        else:
            toks.append(rb.column(N_TOKENS).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64))
    dom = pa.concat_arrays(doms) if doms else pa.array([], pa.string())
    ntok = np.concatenate(toks) if toks else np.zeros(0, np.int64)
    name = f"census-{key}.parquet"
    cols = {"domain": dom, N_TOKENS: pa.array(ntok, pa.int64())}
    if score_column:
        cols["score"] = pa.array(np.concatenate(scores) if scores else np.zeros(0), pa.float64())
    if order_column:
        cols["order_score"] = pa.array(np.concatenate(oscores) if oscores else np.zeros(0), pa.float64())
    io.write_parquet(pa.table(cols), Path(work) / name)
    n, t = len(ntok), int(ntok.sum())
    return {"rows_in": n, "kept": n, "rejected": 0, "quarantined": 0, "tokens_in": t, "tokens_kept": t,
            "census": name, "rows": n, "inputs": [path], "pass_output": True}


# ---------------------------------------------------------------- scatter

BYSHARD = np.dtype([("pos", "<i8"), ("row", "<i8"), ("epoch", "<i2"), ("dom", "<i4"), ("ntok", "<i8")])


def by_shard(samples: np.ndarray, n_shards: int) -> tuple[np.ndarray, list[int]]:
    """The plan regrouped by input shard (positions ascending inside each) and the shard bounds."""
    order = np.argsort(samples["shard"], kind="stable")
    a = np.empty(len(samples), BYSHARD)
    a["pos"] = order
    for f in ("row", "epoch", "dom", "ntok"):
        a[f] = samples[f][order]
    bounds = np.searchsorted(samples["shard"][order], np.arange(n_shards + 1)).tolist()
    return a, [int(x) for x in bounds]


def prefix_column(field: str) -> tuple[str, str]:
    """(column, key): a column name, or ("meta", key) for meta.<key> of the JSON `meta` column."""
    col, _, key = field.partition(".") if field.startswith("meta.") else (field, "", "")
    return col, key


def _field_values(col: pa.ChunkedArray, key: str) -> list:
    """The metadata field's values: the column's, or `key` of each JSON object in it."""
    vals = col.to_pylist()
    if not key:
        return vals
    out = []
    for v in vals:
        try:
            m = json.loads(v) if isinstance(v, str) else (v or {})
        except ValueError:
            m = {}
        out.append(m.get(key) if isinstance(m, dict) else None)
    return out


def prefix_chosen(pos: np.ndarray, seed: int, fraction: float) -> np.ndarray:
    """Seeded, order-free choice of the samples that get a prefix: a hash of (seed, position) < fraction."""
    x = (pos.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)) * np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


def output_shard(pos: np.ndarray, spans: list[list[int]], target_rows: int) -> np.ndarray:
    """The output shard of each sample position: phase [lo, hi) starts at shard `first` and is cut
    every target_rows samples (as the plan's shard_starts; O(phases) to carry, not O(shards))."""
    j = np.full(len(pos), -1, np.int64)
    for lo, hi, first in spans:
        m = (pos >= lo) & (pos < hi)
        j[m] = first + (pos[m] - lo) // target_rows
    return j


def scatter_shard(path: str, key: str, work: str, plan_file: str, lo: int, hi: int, domain_column: str,
                  names: list[str], spans: list[list[int]], target_rows: int, prefix: dict | None = None) -> dict:
    """Read one input shard once; write its sampled rows, in output order, to one file with one row
    group per output shard they go to (the write step reads exactly its row groups). `prefix`:
    {field, fraction, template, seed, spans: [[lo, hi], ...] of the sample positions of phases with prefixes}."""
    a = np.load(plan_file, mmap_mode="r")[lo:hi]
    n = len(a)
    name = f"scatter-{key}.parquet"
    groups: list[list[int]] = []
    if n:
        rows = np.asarray(a["row"])
        fcol, fkey = prefix_column(prefix["field"]) if prefix is not None else (None, "")
        if fcol is not None and fcol not in (names_in := pq.read_schema(path).names):
            raise RuntimeError(f"{path}: remix.metadata_prefix.field {prefix['field']!r}: no column {fcol!r} "
                               f"(columns: {names_in}); fix the field")
        cols_in = list(dict.fromkeys([ID, TEXT, domain_column] + ([fcol] if fcol else [])))
        t = pq.read_table(path, columns=cols_in).take(pa.array(rows, pa.int64()))  # the shard is read once
        want = pa.array([names[i] for i in a["dom"]], pa.string())
        if not pc.all(pc.equal(domain_strings(t.column(domain_column)), want)).as_py():
            raise RuntimeError(f"{path}: domain column changed since the census; re-run with --force")
        pos, epoch = np.asarray(a["pos"]), np.asarray(a["epoch"], np.int16)
        suffix = pa.array(["" if e == 0 else f"#e{e}" for e in epoch.tolist()], pa.string())
        cols = {"pos": pa.array(pos, pa.int64()), ID: pc.binary_join_element_wise(t.column(ID).cast(pa.string()), suffix, ""),
                TEXT: t.column(TEXT).cast(pa.large_string()), "domain": want,
                N_TOKENS: pa.array(np.asarray(a["ntok"]), pa.int64()), "epoch": pa.array(epoch, pa.int16())}
        if prefix is not None:
            on = np.zeros(n, bool)
            for s, e in prefix["spans"]:
                on |= (pos >= s) & (pos < e)
            on &= prefix_chosen(pos, prefix["seed"], prefix["fraction"])
            vals = _field_values(t.column(fcol), fkey)
            cols[PREFIX] = pa.array([prefix["template"].format(value=v) if o and v not in (None, "") else None
                                     for o, v in zip(on.tolist(), vals)], pa.string())
        table = pa.table(cols)
        j = output_shard(pos, spans, target_rows)
        cuts = np.flatnonzero(np.diff(j)) + 1
        starts, ends = np.r_[0, cuts], np.r_[cuts, n]

        def write(tmp: Path) -> None:
            with pq.ParquetWriter(tmp, table.schema, **io.PARQUET_OPTS) as w:
                for b, e in zip(starts.tolist(), ends.tolist()):
                    w.write_table(table.slice(b, e - b), row_group_size=e - b)

        io.atomic_write(Path(work) / name, write)
        groups = [[int(j[b]), g, int(e - b)] for g, (b, e) in enumerate(zip(starts.tolist(), ends.tolist()))]
    return {"rows_in": n, "kept": n, "rejected": 0, "quarantined": 0, "scatter": name if n else None,
            "groups": groups, "inputs": [path], "pass_output": True}


# ---------------------------------------------------------------- write


def _apply_prefix(table: pa.Table, tokenizer: str | None) -> tuple[pa.Table, np.ndarray]:
    """Prepend the prefix column to the text; n_tokens recounted for the prefixed rows. Returns the
    table and the tokens each row gained (0 without a prefix)."""
    pre = table.column(PREFIX)
    has = pc.is_valid(pre).to_numpy(zero_copy_only=False)
    ntok = table.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.int64)
    if not has.any():
        return table, np.zeros(len(ntok), np.int64)
    text = pc.if_else(pc.is_valid(pre), pc.binary_join_element_wise(pre.cast(pa.large_string()), table.column(TEXT), pa.scalar("", pa.large_string())),
                      table.column(TEXT))
    new = ntok.copy()
    idx = np.flatnonzero(has)
    new[idx] = count_tokens(pc.take(text, pa.array(idx)).to_pylist(), tokenizer)
    table = table.set_column(table.schema.get_field_index(TEXT), TEXT, text)
    table = table.set_column(table.schema.get_field_index(N_TOKENS), N_TOKENS, pa.array(new, pa.int64()))
    return table, new - ntok


def _token_files(table: pa.Table, out: Path, key: str, tokenizer: str, batch_size: int) -> dict:
    tk = load_tokenizer(tokenizer)
    eos, dtype = token_dtype(tk)
    n = table.num_rows
    texts, ids = table.column(TEXT).to_pylist(), table.column(ID)
    ntok = table.column(N_TOKENS).to_numpy(zero_copy_only=False)
    chunks, offsets = [], np.zeros(n + 1, np.int64)
    for b in range(0, n, batch_size):
        for j, e in enumerate(tk.encode_batch(texts[b:b + batch_size], add_special_tokens=False), start=b):
            if len(e.ids) != ntok[j]:
                raise RuntimeError(f"{key}: row {j} ({ids[j]}) encodes to {len(e.ids)} tokens, census said {ntok[j]}; re-run with --force")
            chunks.append(np.asarray(e.ids + [eos], dtype))
            offsets[j + 1] = offsets[j] + len(e.ids) + 1
    arr = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
    io.write_npy(arr, out / f"{key}.tokens.npy")
    io.write_npy(offsets, out / f"{key}.index.npy")
    return {"token_files": [f"{key}.tokens.npy", f"{key}.index.npy"], "token_ids": int(len(arr)), "token_dtype": str(dtype)}


def write_shard(out: str, key: str, parts: list[list] | str, rows: int, names: list[str], tokenizer: str | None,
                tokenized: bool, batch_size: int, prefix: bool = False, part: int | None = None) -> dict:
    """Gather the row groups of one output shard from the scatter files, in plan order; write it
    (and its token files). `parts`: [[scatter file, row group], ...], or the scatter pass's index
    file (io.write_part_index) holding them for every output shard (`part` = this one)."""
    out = Path(out)
    if isinstance(parts, str):
        t = io.read_part_index(parts, part).to_pydict()
        parts = [[f, g] for f, g in zip(t["file"], t["group"])]
    pieces = [pq.ParquetFile(f).read_row_group(g) for f, g in parts]
    schema = OUT_SCHEMA + ([(PREFIX, pa.string())] if prefix else [])
    if pieces:
        t = pa.concat_tables(pieces)
        t = t.take(pc.sort_indices(t.column("pos")))
    else:
        t = pa.table({"pos": pa.array([], pa.int64()), **{c: pa.array([], ty) for c, ty in schema}})
    n = t.num_rows
    if n != rows:
        raise RuntimeError(f"{key}: gathered {n} rows, the plan has {rows}; re-run with --force")
    table = t.drop_columns(["pos"])
    gained = np.zeros(n, np.int64)
    if prefix:
        table, gained = _apply_prefix(table, tokenizer)
    ntok = table.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.int64)
    extra = _token_files(table, out, key, tokenizer, batch_size) if tokenized and tokenizer else {}
    # row groups of ROW_GROUP rows: a loader worker decodes only the groups of its share (bench/loader.py)
    res = TaskOutput(out, key, STAGE, target_rows=1 << 62, target_bytes=1 << 62, single=True, row_group_size=ROW_GROUP)
    res.rows_in = n  # a sampler: every planned sample is written (see the package docstring)
    res.tokens_in = int(ntok.sum())
    if n:
        res.add_kept(table)
    counters = res.finish(**extra)
    if not n:  # an empty shard still gets its file, so the listing has no holes
        p = out / f"{key}.parquet"
        io.write_parquet(table, p)
        counters["kept_files"] = [{"name": p.name, "rows": 0, "bytes": p.stat().st_size, "sha256": io.sha256_file(p)}]
    index = {nm: i for i, nm in enumerate(names)}
    dom = np.array([index[d] for d in table.column("domain").to_pylist()], np.int64)
    counters["domain_tokens"] = [int(x) for x in np.bincount(dom, weights=ntok, minlength=len(names))] if n else [0] * len(names)
    if prefix:
        counters["prefix_tokens"] = [int(x) for x in np.bincount(dom, weights=gained, minlength=len(names))] if n else [0] * len(names)
        counters["prefixed_docs"] = int(pc.sum(pc.is_valid(table.column(PREFIX))).as_py() or 0) if n else 0
    counters["inputs"] = sorted({Path(f).name for f, _ in parts})
    return counters
