"""remix: weighted, globally shuffled training shards under a token budget.

Reads a dataset dir whose documents carry a domain column (`cluster`, `source` ...) and the
`weights.json` of the mix stage, and writes training shards in which every domain d gets
w_d * budget tokens (within one document's tokens), upsampled by whole seeded passes over the
domain plus one partial pass, never beyond `max_epochs`. Three passes:

  1. census  (per input shard)  <out>/_census/census-<shard>.parquet: per document its domain
                                (string) and n_tokens (recounted with the tokenizer when there is
                                one). Does not depend on the weights: re-mixing (even --force)
                                reuses it; it is recomputed when the input, domain column or
                                tokenizer changed.
  2. plan    (driver, numpy)    per domain: floor(T_d/A_d) full passes, each a fresh permutation
                                of its docs, then docs of another permutation taken while the
                                running sum stays <= the remaining target (skipping docs that
                                overshoot, so the target is filled closely). All samples
                                (shard, row, epoch) are then permuted with run.seed and cut into
                                output shards of run.shard.target_rows rows:
                                <out>/_work/plan-<hash>.npy (+ .json with per-domain numbers).
  3. scatter (per input shard)  read the shard once (id, text, domain column); its sampled rows, in
                                output order, go to <out>/_work/scatter/scatter-<shard>.parquet with
                                one row group per output shard they belong to.
  4. write   (per output shard) gather its row groups from the scatter files, order by plan
                                position, write part-NNNNN.parquet (id, text, domain, n_tokens,
                                epoch); with `tokenized` and a tokenizer also part-NNNNN.tokens.npy
                                (ids, EOS after each doc) and part-NNNNN.index.npy (int64 offsets,
                                rows + 1).
     finalize                   <out>/_remix.json: realised tokens and shares per domain; the
                                scatter files (a copy of the sample) are deleted.

Every input byte is read once and every sample written twice (scatter, shard), whatever the
numbers of input and output shards: reading the needed input shards from each output task
instead reads the corpus once per output shard (measured: 10x the reads for 10 output shards).

Accounting: remix is a sampler, not a filter. A write task's `rows_in` is the number of samples
the plan gives its output shard, all of them kept (rows_in = kept, rejected = quarantined = 0);
a document repeated for several epochs counts once per sample, a document of a zero-weight
domain or left out by the budget is simply not sampled (see `accounting` in `_remix.json`).
A repeated document's id gets the suffix `#e<epoch>` (epoch >= 1), so ids stay unique.

Memory: the plan holds ~30 bytes per input document and ~30 per sample in the driver; a scatter
task holds one input shard's projected columns, a write task one output shard.
"""
from __future__ import annotations

import hashlib
import json
import math
import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io, runner
from pipeline.config import Config, ConfigError, RemixConfig
from pipeline.schema import ID, N_TOKENS, TEXT
from pipeline.version import __version__

STAGE = "remix"
REMIX_JSON = "_remix.json"
CENSUS_DIR = "_census"
EOS_TOKEN = "<|endoftext|>"
SAMPLE = np.dtype([("shard", "<i4"), ("row", "<i8"), ("epoch", "<i2"), ("dom", "<i4"), ("ntok", "<i8")])
SHARE_TOL = 0.02


def _hash(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _domain_strings(col) -> pa.Array:
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


# ---------------------------------------------------------------- weights


def load_weights(path: Path) -> dict:
    """weights.json of the mix stage, checked; raises ConfigError with one line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"remix.weights: {path} not found; run the mix stage first or set remix.weights")
    try:
        w = io.read_json(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"remix.weights: {path}: not valid JSON ({str(e).splitlines()[0]})") from None
    doms = w.get("domains") if isinstance(w, dict) else None
    if not isinstance(doms, list) or not doms:
        raise ConfigError(f"remix.weights: {path}: needs a non-empty 'domains' list of {{name, weight}}")
    names = []
    for i, d in enumerate(doms):
        if not isinstance(d, dict) or "name" not in d or not isinstance(d.get("weight"), (int, float)) or isinstance(d.get("weight"), bool):
            raise ConfigError(f"remix.weights: {path}: domains[{i}] needs 'name' and a numeric 'weight'")
        if not math.isfinite(d["weight"]) or d["weight"] < 0:
            raise ConfigError(f"remix.weights: {path}: domains[{i}] ({d['name']}): weight {d['weight']} must be finite and >= 0")
        names.append(str(d["name"]))
    if len(set(names)) != len(names):
        raise ConfigError(f"remix.weights: {path}: duplicate domain names")
    total = sum(float(d["weight"]) for d in doms)
    if total <= 0:
        raise ConfigError(f"remix.weights: {path}: all weights are 0")
    if not isinstance(w.get("domain_column", "cluster"), str):
        raise ConfigError(f"remix.weights: {path}: 'domain_column' must be a string")
    return w


def resolve(weights_path: Path, weights: dict, tokens: int | None, max_epochs: float | None,
            tokenizer: str | Path | None, run_tokenizer: str | None) -> tuple[int, float, Path | None]:
    """Budget, epoch cap and tokenizer: explicit values, else the weights', else defaults."""
    budget = tokens if tokens is not None else weights.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise ConfigError(f"remix.tokens: no token budget (weights {weights_path} has budget_tokens={budget!r}); set remix.tokens")
    cap = max_epochs if max_epochs is not None else weights.get("max_epochs", 4.0)
    if not isinstance(cap, (int, float)) or not cap > 0:
        raise ConfigError(f"remix.max_epochs: {cap!r} must be > 0")
    tok = None
    if tokenizer is not None:
        tok = Path(tokenizer)
        where = "remix.tokenizer"
    elif weights.get("tokenizer"):
        tok = Path(weights_path).parent / weights["tokenizer"]
        where = f"tokenizer of {weights_path}"
    elif run_tokenizer:
        tok = Path(run_tokenizer)
        where = "run.tokens.tokenizer"
    if tok is not None and not tok.is_file():
        raise ConfigError(f"{where}: {tok} not found; fix the path")
    return int(budget), float(cap), tok


# ---------------------------------------------------------------- pass 1: census


def census_shard(path: str, key: str, work: str, domain_column: str, tokenizer: str | None, batch_size: int) -> dict:
    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    need_text = tokenizer is not None or N_TOKENS not in names
    cols = [domain_column] + ([TEXT] if need_text else [N_TOKENS])
    doms, toks = [], []
    for rb in pf.iter_batches(batch_size=batch_size, columns=cols):
        doms.append(_domain_strings(rb.column(domain_column)))
        if need_text:
            from pipeline.tokens import count_tokens

            texts = [t or "" for t in rb.column(TEXT).to_pylist()]
            toks.append(count_tokens(texts, tokenizer))
        else:
            toks.append(rb.column(N_TOKENS).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64))
    dom = pa.concat_arrays(doms) if doms else pa.array([], pa.string())
    ntok = np.concatenate(toks) if toks else np.zeros(0, np.int64)
    name = f"census-{key}.parquet"
    io.write_parquet(pa.table({"domain": dom, N_TOKENS: pa.array(ntok, pa.int64())}), Path(work) / name)
    n, t = len(ntok), int(ntok.sum())
    return {"rows_in": n, "kept": n, "rejected": 0, "quarantined": 0, "tokens_in": t, "tokens_kept": t,
            "census": name, "rows": n, "inputs": [path], "pass_output": True}


# ---------------------------------------------------------------- pass 2: plan (driver)


def _rng(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, *(zlib.crc32(str(p).encode()) for p in parts)])


def _partial_pass(perm: np.ndarray, tok: np.ndarray, remaining: int) -> np.ndarray:
    """Docs of `perm` (in that order) taken while the running sum stays <= remaining; a doc that
    would overshoot is skipped and later, smaller ones may still fill the gap."""
    take, gap, rest = [], int(remaining), perm
    while gap > 0 and len(rest):
        t = tok[rest]
        fits = t <= gap
        if not fits.any():
            break
        cand, tc = rest[fits], t[fits]
        cs = np.cumsum(tc)
        k = int(np.searchsorted(cs, gap, side="right"))  # cand[:k] fit in one go (k >= 1)
        take.append(cand[:k])
        gap -= int(cs[k - 1])
        rest = cand[k:]
    return np.concatenate(take) if take else np.zeros(0, np.int64)


def plan(census: list[tuple[str, int]], weights: dict, budget: int, max_epochs: float, seed: int,
         target_rows: int) -> tuple[np.ndarray, dict]:
    """Samples in output order and the per-domain numbers. census: (census file, rows) per shard."""
    names = [str(d["name"]) for d in weights["domains"]]
    w = np.array([float(d["weight"]) for d in weights["domains"]], np.float64)
    w = w / w.sum()
    index = {n: i for i, n in enumerate(names)}
    shard_l, row_l, dom_l, tok_l = [], [], [], []
    unweighted: dict[str, int] = {}
    for s, (f, rows) in enumerate(census):
        t = pq.read_table(f)
        d = t.column("domain").combine_chunks()
        if len(d) != rows:
            raise RuntimeError(f"{f}: {len(d)} rows, expected {rows}; delete it and re-run")
        enc = pc.dictionary_encode(d)
        vals = enc.dictionary.to_pylist()
        lut = np.array([index.get(v, -1) for v in vals] + [-1], np.int32)
        codes = enc.indices.fill_null(len(vals)).to_numpy(zero_copy_only=False)
        dom = lut[codes]
        for v, c in zip(vals + [None], np.bincount(codes, minlength=len(vals) + 1)):
            if c and index.get(v, -1) < 0:
                unweighted[str(v)] = unweighted.get(str(v), 0) + int(c)
        shard_l.append(np.full(rows, s, np.int32))
        row_l.append(np.arange(rows, dtype=np.int64))
        dom_l.append(dom)
        tok_l.append(t.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.int64))
    shard = np.concatenate(shard_l) if shard_l else np.zeros(0, np.int32)
    row = np.concatenate(row_l) if row_l else np.zeros(0, np.int64)
    dom = np.concatenate(dom_l) if dom_l else np.zeros(0, np.int32)
    tok = np.concatenate(tok_l) if tok_l else np.zeros(0, np.int64)
    docs_avail = np.bincount(dom[dom >= 0], minlength=len(names))
    tok_avail = np.bincount(dom[dom >= 0], weights=tok[dom >= 0], minlength=len(names)).astype(np.int64)
    target = w * budget
    # Errors first, all domains at once (one line each, the first raised).
    for i, n in enumerate(names):
        if w[i] > 0 and docs_avail[i] == 0:
            raise ConfigError(f"remix: domain {n!r} of the weights (weight {w[i]:.4g}) has no documents in the input; "
                              f"check domain_column {weights.get('domain_column', 'cluster')!r} or re-run the mix stage")
        if w[i] > 0 and tok_avail[i] == 0:
            raise ConfigError(f"remix: domain {n!r} has {docs_avail[i]} documents but 0 tokens; it cannot fill {target[i]:.0f} tokens")
        if w[i] > 0 and target[i] > max_epochs * tok_avail[i] * (1 + 1e-6):
            raise ConfigError(f"remix: domain {n!r} needs {target[i] / tok_avail[i]:.2f} epochs ({target[i]:.0f} of {tok_avail[i]} tokens) "
                              f"> max_epochs {max_epochs:g}; raise max_epochs or lower tokens")
    order = np.argsort(dom, kind="stable")  # docs grouped by domain, in input order
    bounds = np.searchsorted(dom[order], np.arange(len(names) + 1))
    parts, domains = [], []
    for i, n in enumerate(names):
        docs = order[bounds[i]:bounds[i + 1]]
        rng = _rng(seed, "remix", n)
        goal = min(int(round(target[i])), int(math.floor(max_epochs * tok_avail[i])))  # never a pass beyond the cap
        full = int(goal // tok_avail[i]) if w[i] > 0 else 0
        chosen = [(rng.permutation(docs), e) for e in range(full)]
        rem = goal - full * int(tok_avail[i])
        if rem > 0:
            chosen.append((_partial_pass(rng.permutation(docs), tok, rem), full))
        for idx, e in chosen:
            a = np.empty(len(idx), SAMPLE)
            a["shard"], a["row"], a["epoch"], a["dom"], a["ntok"] = shard[idx], row[idx], e, i, tok[idx]
            parts.append(a)
        got = sum(int(tok[idx].sum()) for idx, _ in chosen)
        reps = np.zeros(len(docs), np.int64)
        if len(docs):
            pos = np.full(len(dom), -1, np.int64)
            pos[docs] = np.arange(len(docs))
            for idx, _ in chosen:
                reps[pos[idx]] += 1
        domains.append({"name": n, "weight": round(float(w[i]), 8), "target_tokens": int(goal), "tokens": got,
                        "docs_available": int(docs_avail[i]), "tokens_available": int(tok_avail[i]),
                        "samples": int(sum(len(idx) for idx, _ in chosen)),
                        "epochs": round(got / tok_avail[i], 6) if tok_avail[i] else 0.0,
                        "max_repeats": int(reps.max()) if len(reps) else 0, "full_passes": full})
    samples = np.concatenate(parts) if parts else np.zeros(0, SAMPLE)
    samples = samples[_rng(seed, "remix", "shuffle").permutation(len(samples))]
    total = int(samples["ntok"].sum())
    for d in domains:
        d["share"] = round(d["tokens"] / total, 8) if total else 0.0
        d["share_error"] = round(abs(d["share"] - d["weight"]), 8)
    info = {"budget_tokens": int(budget), "max_epochs": max_epochs, "seed": seed, "domains": domains,
            "max_abs_share_error": max((d["share_error"] for d in domains), default=0.0),
            "samples": int(len(samples)), "tokens": total, "docs_in": int(len(dom)),
            "unweighted_docs": dict(sorted(unweighted.items())), "target_rows": target_rows,
            "shards": int(math.ceil(len(samples) / target_rows)) if len(samples) else 0}
    return samples, info


# ---------------------------------------------------------------- pass 3: write


def _eos_and_dtype(tok) -> tuple[int, np.dtype]:
    eos = tok.token_to_id(EOS_TOKEN)
    vocab = tok.get_vocab_size(with_added_tokens=True)
    return (0 if eos is None else int(eos)), np.dtype(np.uint16 if vocab <= 65535 else np.uint32)


BYSHARD = np.dtype([("pos", "<i8"), ("row", "<i8"), ("epoch", "<i2"), ("dom", "<i4"), ("ntok", "<i8")])
OUT_SCHEMA = [(ID, pa.string()), (TEXT, pa.large_string()), ("domain", pa.string()), (N_TOKENS, pa.int64()), ("epoch", pa.int16())]


def by_shard(samples: np.ndarray, n_shards: int) -> tuple[np.ndarray, list[int]]:
    """The plan regrouped by input shard (positions ascending inside each) and the shard bounds."""
    order = np.argsort(samples["shard"], kind="stable")
    a = np.empty(len(samples), BYSHARD)
    a["pos"] = order
    for f in ("row", "epoch", "dom", "ntok"):
        a[f] = samples[f][order]
    bounds = np.searchsorted(samples["shard"][order], np.arange(n_shards + 1)).tolist()
    return a, [int(x) for x in bounds]


def scatter_shard(path: str, key: str, work: str, plan_file: str, lo: int, hi: int, domain_column: str,
                  names: list[str], target_rows: int) -> dict:
    """Read one input shard once; write its sampled rows, in output order, to one file with one row
    group per output shard they go to (the gather step reads exactly its row groups)."""
    a = np.load(plan_file, mmap_mode="r")[lo:hi]
    n = len(a)
    name = f"scatter-{key}.parquet"
    groups: list[list[int]] = []
    if n:
        t = pq.read_table(path, columns=[ID, TEXT, domain_column]).take(pa.array(np.asarray(a["row"]), pa.int64()))
        want = pa.array([names[i] for i in a["dom"]], pa.string())
        if not pc.all(pc.equal(_domain_strings(t.column(domain_column)), want)).as_py():
            raise RuntimeError(f"{path}: domain column changed since the census; re-run with --force")
        epoch = np.asarray(a["epoch"], np.int16)
        suffix = pa.array(["" if e == 0 else f"#e{e}" for e in epoch.tolist()], pa.string())
        table = pa.table({"pos": pa.array(np.asarray(a["pos"]), pa.int64()),
                          ID: pc.binary_join_element_wise(t.column(ID).cast(pa.string()), suffix, ""),
                          TEXT: t.column(TEXT).cast(pa.large_string()), "domain": want,
                          N_TOKENS: pa.array(np.asarray(a["ntok"]), pa.int64()), "epoch": pa.array(epoch, pa.int16())})
        j = np.asarray(a["pos"]) // target_rows
        cuts = np.flatnonzero(np.diff(j)) + 1
        starts, ends = np.r_[0, cuts], np.r_[cuts, n]

        def write(tmp: Path) -> None:
            with pq.ParquetWriter(tmp, table.schema, **io.PARQUET_OPTS) as w:
                for b, e in zip(starts.tolist(), ends.tolist()):
                    w.write_table(table.slice(b, e - b), row_group_size=e - b)

        io._atomic(Path(work) / name, write)
        groups = [[int(j[b]), g, int(e - b)] for g, (b, e) in enumerate(zip(starts.tolist(), ends.tolist()))]
    return {"rows_in": n, "kept": n, "rejected": 0, "quarantined": 0, "scatter": name if n else None,
            "groups": groups, "inputs": [path], "pass_output": True}


def write_shard(out: str, key: str, parts: list[list], rows: int, names: list[str], tokenizer: str | None,
                tokenized: bool, batch_size: int) -> dict:
    """Gather the row groups of one output shard from the scatter files, in plan order; write it
    (and its token files)."""
    pieces = [pq.ParquetFile(f).read_row_group(g) for f, g in parts]
    if pieces:
        t = pa.concat_tables(pieces)
        t = t.take(pc.sort_indices(t.column("pos")))
    else:
        t = pa.table({"pos": pa.array([], pa.int64()), **{c: pa.array([], ty) for c, ty in OUT_SCHEMA}})
    n = t.num_rows
    if n != rows:
        raise RuntimeError(f"{key}: gathered {n} rows, the plan has {rows}; re-run with --force")
    table = t.drop_columns(["pos"])
    ntok = table.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.int64)
    extra = {}
    if tokenized and tokenizer:
        from pipeline.tokens import _tokenizer

        tk = _tokenizer(tokenizer)
        eos, dtype = _eos_and_dtype(tk)
        texts, ids = table.column(TEXT).to_pylist(), table.column(ID)
        chunks, offsets = [], np.zeros(n + 1, np.int64)
        for b in range(0, n, batch_size):
            for j, e in enumerate(tk.encode_batch(texts[b:b + batch_size], add_special_tokens=False), start=b):
                if len(e.ids) != ntok[j]:
                    raise RuntimeError(f"{key}: row {j} ({ids[j]}) encodes to {len(e.ids)} tokens, census said {ntok[j]}; re-run with --force")
                chunks.append(np.asarray(e.ids + [eos], dtype))
                offsets[j + 1] = offsets[j] + len(e.ids) + 1
        arr = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
        io.write_npy(arr, Path(out) / f"{key}.tokens.npy")
        io.write_npy(offsets, Path(out) / f"{key}.index.npy")
        extra = {"token_files": [f"{key}.tokens.npy", f"{key}.index.npy"], "token_ids": int(len(arr)), "token_dtype": str(dtype)}
    from pipeline.taskio import TaskOutput

    res = TaskOutput(Path(out), key, STAGE, target_rows=1 << 62, target_bytes=1 << 62, single=True)
    res.rows_in = n  # a sampler: every planned sample is written (see module docstring)
    res.tokens_in = int(ntok.sum())
    if n:
        res.add_kept(table)
    counters = res.finish(**extra)
    if not n:  # an empty shard still gets its file, so the listing has no holes
        p = Path(out) / f"{key}.parquet"
        io.write_parquet(table, p)
        counters["kept_files"] = [{"name": p.name, "rows": 0, "bytes": p.stat().st_size, "sha256": io.sha256_file(p)}]
    index = {nm: i for i, nm in enumerate(names)}
    dom = np.array([index[d] for d in table.column("domain").to_pylist()], np.int64)
    counters["domain_tokens"] = [int(x) for x in np.bincount(dom, weights=ntok, minlength=len(names))] if n else [0] * len(names)
    counters["inputs"] = sorted({Path(f).name for f, _ in parts})
    return counters


def finalize(out: Path, markers: dict[str, dict], *, info: dict) -> None:
    out = Path(out)
    names = [d["name"] for d in info["domains"]]
    realised = np.zeros(len(names), np.int64)
    for m in markers.values():
        realised += np.asarray(m.get("domain_tokens", [0] * len(names)), np.int64)
    total = int(realised.sum())
    doc = json.loads(json.dumps(info))
    for d, r in zip(doc["domains"], realised.tolist()):
        if r != d["tokens"]:
            raise RuntimeError(f"remix: domain {d['name']!r}: shards hold {r} tokens, the plan {d['tokens']}")
    doc["tokens"] = total
    doc["samples"] = int(sum(m["kept"] for m in markers.values()))
    doc["shard_files"] = sorted(f["name"] for m in markers.values() for f in m.get("kept_files", []))
    doc["accounting"] = ("sampler: per output shard rows_in = kept = samples written; documents of zero-weight or "
                         "unknown domains and those beyond the budget are not sampled; repeats count once per sample")
    io.write_json(doc, out / REMIX_JSON)
    for p in (out / "_work" / "scatter").glob("scatter-*.parquet"):  # a copy of every sample: free the disk
        p.unlink()
    keep = {f for m in markers.values() for f in m.get("token_files", [])}
    for p in list(out.glob("part-*.tokens.npy")) + list(out.glob("part-*.index.npy")):
        if p.name not in keep:
            p.unlink()


# ---------------------------------------------------------------- the stage






def run(cfg: Config, inp: Path, out: Path, phase) -> runner.StageResult:
    c: RemixConfig = cfg.remix
    if inp is None:
        raise ConfigError("remix: no input dataset dir; use `curate remix --input DIR`, or run the stage before it too")
    weights = Path(c.weights) if c.weights is not None else Path(cfg.run.output) / "mix" / "weights.json"
    return remix(inp, out, weights, c.tokens, seed=cfg.run.seed, max_epochs=c.max_epochs, tokenized=c.tokenized,
                 tokenizer=c.tokenizer, target_rows=cfg.run.shard.target_rows, phase=phase,
                 run_tokenizer=cfg.run.tokens.tokenizer, batch_size=cfg.run.batch_size, base_hash=cfg.stage_hash(STAGE))


def remix(inp: Path, out: Path, weights_path: Path, tokens: int | None = None, *, seed: int = 0,
          max_epochs: float | None = None, tokenized: bool = True, tokenizer: str | Path | None = None,
          target_rows: int = 50_000, phase=None, run_tokenizer: str | None = None, batch_size: int = 2_000,
          base_hash: str = "") -> runner.StageResult:
    """The stage without a Config (CLI). `phase` as in `pipeline.driver` (default: local, no Ray)."""
    if phase is None:
        phase = partial(runner.run_stage, use_ray=False)
    inp, out, weights_path = Path(inp), Path(out), Path(weights_path)
    w = load_weights(weights_path)
    budget, cap, tok = resolve(weights_path, w, tokens, max_epochs, tokenizer, run_tokenizer)
    col = w.get("domain_column", "cluster")
    shards = io.shard_files(inp)
    if not shards:
        raise ConfigError(f"remix: input {inp} has no part-*.parquet shards")
    schema = pq.read_schema(shards[0])
    missing = [x for x in (ID, TEXT, col) if x not in schema.names]
    if missing:
        raise ConfigError(f"remix: input {inp} lacks column(s) {missing} (domain_column {col!r} of {weights_path}); run the cluster stage first or fix the weights")
    tok_sha = io.sha256_file(tok) if tok else None
    fp = io.dataset_fingerprint(inp)
    h = _hash(base_hash, io.sha256_file(weights_path), budget, cap, seed, tok_sha, bool(tokenized and tok), target_rows)
    header = {"stage": STAGE, "version": __version__, "config_hash": h, "input_fingerprint": fp}
    force = bool(getattr(phase, "keywords", {}).get("force", False))
    runner.refuse_other_output(out, h, fp, force, "remix", what_config="config or weights")
    work = out / "_work"
    with io.dir_lock(out):
        if force:
            io.clear_dir(out)
            for p in list(out.glob("part-*.tokens.npy")) + list(out.glob("part-*.index.npy")) + [out / REMIX_JSON]:
                p.unlink(missing_ok=True)
        cdir = out / CENSUS_DIR  # outside _work: --force (new weights) keeps it; its own hash says when it is stale
        for p in shards:  # a census file that went away is recomputed
            m = io.read_marker(cdir, p.stem)
            if m and not (cdir / m["census"]).exists():
                io.marker_path(cdir, p.stem).unlink()
        tasks = [runner.Task(p.stem, census_shard, dict(path=str(p), key=p.stem, work=str(cdir), domain_column=col,
                                                       tokenizer=str(tok) if tok else None, batch_size=batch_size)) for p in shards]
        r = runner.work_phase(partial(phase, force=False), "remix:census", cdir, tasks, _hash(col, tok_sha), fp)
        if not r.ok:
            return runner.stopped(STAGE, out, header, r)
        census = [(str(cdir / m["census"]), m["rows"]) for m in (io.read_marker(cdir, p.stem) for p in shards)]
        ph = _hash(h, fp)
        plan_file, info_file = work / f"plan-{ph}.npy", work / f"plan-{ph}.json"
        if plan_file.exists() and info_file.exists():
            info = io.read_json(info_file)
        else:
            samples, info = plan(census, w, budget, cap, seed, target_rows)
            grouped, bounds = by_shard(samples, len(shards))
            info = {"stage": STAGE, "version": __version__, "weights": str(weights_path), "weights_sha256": io.sha256_file(weights_path),
                    "method": w.get("method"), "domain_column": col, "tokenizer": tok.name if tok else None,
                    "tokenizer_sha256": tok_sha, "tokenized": bool(tokenized and tok), **info, "shard_bounds": bounds}
            io.write_npy(grouped, plan_file)
            io.write_json(info, info_file)
        for p in work.glob("plan-*"):
            if ph not in p.name:
                p.unlink(missing_ok=True)
        names, bounds = [d["name"] for d in info["domains"]], info["shard_bounds"]
        keys = [f"part-{j:05d}" for j in range(info["shards"])]
        for key in keys:  # an output shard whose token files went away is written again
            m = io.read_marker(out, key)
            if m and any(not (out / f).exists() for f in m.get("token_files", [])):
                io.marker_path(out, key).unlink()
        parts: list[list] = [[] for _ in keys]
        if any(io.read_marker(out, key) is None for key in keys):  # else the scatter files are not needed (and deleted)
            sdir = work / "scatter"
            for p in shards:
                m = io.read_marker(sdir, p.stem)
                if m and m["scatter"] and not (sdir / m["scatter"]).exists():
                    io.marker_path(sdir, p.stem).unlink()
            tasks = [runner.Task(p.stem, scatter_shard, dict(path=str(p), key=p.stem, work=str(sdir), plan_file=str(plan_file),
                                                            lo=bounds[i], hi=bounds[i + 1], domain_column=col, names=names,
                                                            target_rows=target_rows)) for i, p in enumerate(shards)]
            r = runner.work_phase(partial(phase, force=False), "remix:scatter", sdir, tasks, ph, fp)
            if not r.ok:
                return runner.stopped(STAGE, out, header, r)
            for p in shards:
                m = io.read_marker(sdir, p.stem)
                for j, g, _ in m["groups"]:
                    parts[j].append([str(sdir / m["scatter"]), g])
    n = info["samples"]
    tasks = [runner.Task(key, write_shard, dict(
        out=str(out), key=key, parts=parts[j], rows=min(n, (j + 1) * target_rows) - j * target_rows, names=names,
        tokenizer=str(tok) if tok else None, tokenized=bool(tokenized), batch_size=batch_size)) for j, key in enumerate(keys)]
    return phase(STAGE, out, tasks, config_hash=h, input_fingerprint=fp, force=False, finalize=partial(finalize, info=info))
