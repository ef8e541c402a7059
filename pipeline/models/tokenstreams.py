"""Token streams for proxy LMs: a dataset dir tokenized per shard, per-domain streams, target splits.

The mix and evaluate stages share these pieces (stages never import each other):

  tokenize_pass    two passes, one task per input shard each: count_shard (every document's
                   token count and seeded id hash -> <work>-count/docs-<key>.parquet; its marker
                   counts documents and tokens per domain), then tokenize_shard (only the documents
                   whose hash is below their domain's threshold, i.e. what a stream of `cap` tokens
                   can take: <work>/tokens-<key>.npy + docs-<key>.parquet). The token store holds
                   O(cap x domains) tokens, not the corpus; the count pass holds no ids.
  build_streams    driver step: per domain, whole documents in id-hash order until `cap` tokens,
                   concatenated into <dest>/<i>.npy. Proxies read these with mmap.
  split_targets    target sets tokenized and split by a hash of each example id into a `search`
                   part (what the optimizer sees) and an `eval` part (held out for `evaluate`).
  proxy_task       one proxy LM run on given streams and weights; its marker holds the losses, so
                   a finished run is never trained again after a crash.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io, runner
from pipeline.bounded import Smallest
from pipeline.manifest import COUNTERS
from pipeline.models.train import id_rank

ZERO = {c: 0 for c in COUNTERS}  # proxy tasks and token files move no documents: the accounting is trivially 0 = 0
STREAM_CAP = 20  # a proxy's token stream per domain: at most this many times its training tokens


def digest(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- tokenizing a dataset dir


def sample_texts(shards: list[Path], n: int, seed: int) -> list[str]:
    """A deterministic uniform sample of at most n document texts across shards (for BPE training)."""
    rows = [pq.ParquetFile(p).metadata.num_rows for p in shards]
    total = sum(rows)
    if total == 0:
        return []
    pick = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    out, start = [], 0
    for p, r in zip(shards, rows):
        idx = pick[(pick >= start) & (pick < start + r)] - start
        if len(idx):
            col = pq.read_table(p, columns=["text"]).column("text")
            out.extend(col.take(pa.array(idx)).to_pylist())
        start += r
    return out


def doc_hash(ids: list, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each document id (blake2b, as train.sample_docs ranks documents): the
    order streams take documents in, the same whatever shard a document is in."""
    return np.array([id_rank(seed, "" if i is None else i) for i in ids], np.uint64)


def count_shard(path: str, work: str, key: str, tokenizer: str, domain_column: str | None, batch_size: int, seed: int) -> dict:
    """Pass 1: every document's BPE token count and id hash -> <work>/docs-<key>.parquet (domain,
    n_tokens, hash; no token ids kept); domain None = one domain named '' (the raw corpus)."""
    from pipeline.models import bpe

    tok = bpe.load(tokenizer)
    pf = pq.ParquetFile(path)
    has_id = "id" in pf.schema_arrow.names
    cols = ["text"] + ([domain_column] if domain_column else []) + (["id"] if has_id else [])
    domains, lengths, hashes, row = [], [], [], 0
    for rb in pf.iter_batches(columns=cols, batch_size=batch_size):
        lengths.append(bpe.encode_docs(tok, rb.column("text").to_pylist())[1])
        hashes.append(doc_hash(rb.column("id").to_pylist() if has_id else [f"{key}:{row + j}" for j in range(rb.num_rows)], seed))
        d = rb.column(domain_column).to_pylist() if domain_column else [""] * rb.num_rows
        domains.extend("" if v is None else str(v) for v in d)
        row += rb.num_rows
    lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    io.write_parquet(pa.table({"domain": pa.array(domains, pa.string()), "n_tokens": pa.array(lens, pa.int64()),
                               "hash": pa.array(np.concatenate(hashes) if hashes else np.zeros(0, np.uint64), pa.uint64())}),
                     Path(work) / f"docs-{key}.parquet")
    per: dict[str, list[int]] = {}
    for d, n in zip(domains, lens.tolist()):
        c = per.setdefault(d, [0, 0])
        c[0] += 1
        c[1] += n
    return {**ZERO, "domains": per, "tokens": int(lens.sum()), "docs": len(lens)}


def thresholds(count_dir: Path, keys: list[str], cap: int) -> dict[str, int]:
    """Per domain: the largest id hash a stream of `cap` tokens can take (documents in hash order,
    each with its EOS, until the running total reaches cap). Read shard by shard; each domain keeps
    only its smallest hashes that reach cap (pipeline.bounded.Smallest), so memory is
    O(sample + shard), never O(corpus)."""
    pools: dict[str, Smallest] = {}
    for k in keys:
        t = pq.read_table(count_dir / f"docs-{k}.parquet")
        enc = pc.dictionary_encode(t.column("domain").combine_chunks())
        codes = enc.indices.to_numpy(zero_copy_only=False)
        h, n = t.column("hash").to_numpy(), t.column("n_tokens").to_numpy() + 1
        for c, d in enumerate(enc.dictionary.to_pylist()):
            m = codes == c
            pools.setdefault(d, Smallest(cap)).add(h[m], tokens=n[m])
    out = {}
    for d, pool in pools.items():
        kept, _ = pool.final()
        if len(kept):
            out[d] = int(kept[-1])
    return out


def tokenize_shard(path: str, work: str, key: str, tokenizer: str, count_dir: str, limits: dict[str, int], batch_size: int) -> dict:
    """Pass 2: the documents a stream can use (id hash <= their domain's limit, see thresholds)
    tokenized -> <work>/tokens-<key>.npy (BPE ids, each document followed by EOS, in row order) +
    docs-<key>.parquet (domain, n_tokens, offset, hash). Text is read for those rows only."""
    from pipeline.models import bpe

    tok = bpe.load(tokenizer)
    c = pq.read_table(Path(count_dir) / f"docs-{key}.parquet")
    dom = c.column("domain")
    hv = c.column("hash").to_numpy()
    enc = pc.dictionary_encode(dom.combine_chunks())
    vals = enc.dictionary.to_pylist()
    has = np.array([v in limits for v in vals], bool)
    lut = np.array([limits.get(v, 0) for v in vals] or [0], np.uint64)
    codes = enc.indices.to_numpy(zero_copy_only=False)
    sel = np.flatnonzero(has[codes] & (hv <= lut[codes])) if len(codes) else np.zeros(0, np.int64)
    pf = pq.ParquetFile(path)
    parts, lengths, lo = [], [], 0
    for rb in pf.iter_batches(columns=["text"], batch_size=batch_size):
        at = sel[(sel >= lo) & (sel < lo + rb.num_rows)] - lo
        if len(at):
            ids, lens = bpe.encode_docs(tok, rb.column("text").take(pa.array(at)).to_pylist())
            parts.append(ids)
            lengths.append(lens)
        lo += rb.num_rows
    if lo != c.num_rows:
        raise RuntimeError(f"{path}: {lo} rows, its token count file {c.num_rows}; re-run with --force")
    dtype = bpe.token_dtype(tok.get_vocab_size())
    ids = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
    lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    if not np.array_equal(lens, c.column("n_tokens").to_numpy()[sel]):
        raise RuntimeError(f"{path}: token counts changed since the count pass; re-run with --force")
    offsets = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]).astype(np.int64) if len(lens) else np.zeros(0, np.int64)
    w = Path(work)
    io.write_npy(ids, w / f"tokens-{key}.npy")
    io.write_parquet(pa.table({"domain": dom.take(pa.array(sel, pa.int64())), "n_tokens": pa.array(lens, pa.int64()),
                               "offset": pa.array(offsets, pa.int64()), "hash": pa.array(hv[sel], pa.uint64())}), w / f"docs-{key}.parquet")
    return {**ZERO, "docs": int(len(sel)), "tokens": int(lens.sum()), "rows": int(c.num_rows)}


def drop_stale_markers(work: Path, keys: list[str], files=("tokens-{k}.npy", "docs-{k}.parquet")) -> None:
    """A finished task whose files went away (deleted, moved) runs again."""
    for k in keys:
        m = io.marker_path(work, k)
        if m.exists() and not all((work / f.format(k=k)).exists() for f in files):
            m.unlink()


def tokenize_pass(phase, name: str, shards: list[Path], work: Path, tokenizer: Path, tok_sha: str,
                  domain_column: str | None, batch_size: int, fp: str, cap: int, seed: int) -> runner.StageResult:
    """Two resumable runner passes: count (every document's tokens; its markers hold the
    per-domain totals, see domain_totals; <work>-count) and tokenize (only the documents a stream of
    `cap` tokens per domain can take, <work>): the token store is O(sample), not O(corpus)."""
    keys, cdir = [p.stem for p in shards], count_dir(work)
    drop_stale_markers(cdir, keys, ("docs-{k}.parquet",))
    tasks = [runner.Task(p.stem, count_shard, dict(path=str(p), work=str(cdir), key=p.stem, tokenizer=str(tokenizer),
                                                   domain_column=domain_column, batch_size=batch_size, seed=seed)) for p in shards]
    r = runner.work_phase(phase, f"{name}:count", cdir, tasks, digest(tok_sha, domain_column, seed), fp)
    if not r.ok:
        return r
    limits = thresholds(cdir, keys, cap)
    drop_stale_markers(work, keys)
    tasks = [runner.Task(p.stem, tokenize_shard, dict(path=str(p), work=str(work), key=p.stem, tokenizer=str(tokenizer),
                                                      count_dir=str(cdir), limits=limits, batch_size=batch_size)) for p in shards]
    return runner.work_phase(phase, name, work, tasks, digest(tok_sha, domain_column, seed, cap, sorted(limits.items())), fp)


def count_dir(work: Path) -> Path:
    """Where tokenize_pass's count pass writes (its markers: per-domain documents and tokens): a
    sibling of `work`, which its own pass may clear."""
    return Path(work).with_name(Path(work).name + "-count")


def domain_totals(markers: dict[str, dict]) -> dict[str, tuple[int, int]]:
    """name -> (docs, tokens) over all shards' tokenize markers, names sorted (numbers numerically)."""
    tot: dict[str, list[int]] = {}
    for m in markers.values():
        for d, (docs, toks) in m["domains"].items():
            t = tot.setdefault(d, [0, 0])
            t[0] += docs
            t[1] += toks
    order = sorted(tot, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))
    return {d: (tot[d][0], tot[d][1]) for d in order}


def build_streams(work: Path, keys: list[str], names: list[str], cap: int, seed: int, dest: Path) -> list[dict]:
    """Per domain: whole documents (EOS included) in id-hash order (seeded by the count pass) until
    `cap` tokens, in shard and row order -> <dest>/<i>.npy. Reads the tokenize pass's sample only
    (O(sample) memory). Returns one entry per name: file, tokens in the stream, documents in it."""
    by_rank = sorted(keys)
    rank = {k: r for r, k in enumerate(by_rank)}  # the shard order reads happen in
    tabs = [(rank[k], pq.read_table(work / f"docs-{k}.parquet", columns=["domain", "offset", "n_tokens", "hash"])) for k in keys]
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        kk, oo, nn, hh = [], [], [], []  # per shard: key rank, offset, length incl. EOS, id hash
        for r, t in tabs:
            mask = pc.fill_null(pc.equal(t.column("domain"), pa.scalar(name, pa.string())), False).to_numpy(zero_copy_only=False)
            if mask.any():
                kk.append(np.full(int(mask.sum()), r, np.int64))
                oo.append(t.column("offset").to_numpy()[mask].astype(np.int64))
                nn.append(t.column("n_tokens").to_numpy()[mask].astype(np.int64) + 1)
                hh.append(t.column("hash").to_numpy()[mask])
        kr, off, n, h = (np.concatenate(x) if x else np.zeros(0, dt) for x, dt in ((kk, np.int64), (oo, np.int64), (nn, np.int64), (hh, np.uint64)))
        order = np.lexsort((off, kr, h))
        cs = np.cumsum(n[order])
        # whole documents in hash order while the running total is below cap (the last one may cross it)
        m = 0 if cap <= 0 else min(int(np.searchsorted(cs, cap, side="left")) + 1, len(order))
        total = int(cs[m - 1]) if m else 0
        sel = order[:m]
        sel = sel[np.lexsort((off[sel], kr[sel]))]  # read each shard's token file in order
        mm = {r: np.load(work / f"tokens-{by_rank[r]}.npy", mmap_mode="r") for r in np.unique(kr[sel]).tolist()}
        arr = (np.concatenate([mm[r][o:o + c] for r, o, c in zip(kr[sel].tolist(), off[sel].tolist(), n[sel].tolist())])
               if m else np.zeros(0, np.uint16))
        f = dest / f"{i:04d}.npy"
        io.write_npy(np.ascontiguousarray(arr), f)
        out.append({"name": name, "file": f.name, "tokens": int(total), "docs": int(m)})
    return out


def cached_streams(work: Path, keys: list[str], names: list[str], cap: int, seed: int, dest: Path, key: str,
                   **meta) -> list[dict]:
    """build_streams, unless <dest>/index.json was written for the same `key` (what made them)."""
    index = dest / "index.json"
    if not index.exists() or io.read_json(index).get("key") != key:
        built = build_streams(work, keys, names, cap, seed, dest)
        io.write_json({"key": key, **meta, "domains": built}, index)
    return io.read_json(index)["domains"]


def split_targets(targets: dict[str, list[tuple[str, str]]], tokenizer: str, eval_fraction: float, dest: Path) -> dict:
    """Each target set -> <dest>/<name>.search.npy and <name>.eval.npy (by a hash of the example id,
    so the split is stable when examples are added). eval_fraction 0 -> both parts are the whole set."""
    from pipeline.models import bpe

    from pipeline.models.betr import split_mask

    tok = bpe.load(tokenizer)
    dest.mkdir(parents=True, exist_ok=True)
    info = {}
    for name, rows in targets.items():
        held = split_mask(name, [i for i, _ in rows], eval_fraction)
        parts = {"search": [t for (_, t), h in zip(rows, held) if not h], "eval": [t for (_, t), h in zip(rows, held) if h]}
        if eval_fraction == 0:
            parts["eval"] = parts["search"]
        entry = {}
        for part, texts in parts.items():
            if not texts:
                raise ValueError(f"target set {name}: its {part} part is empty ({len(rows)} examples, eval_fraction {eval_fraction}); add examples or change mix.eval_fraction")
            ids, _ = bpe.encode_docs(tok, texts)
            io.write_npy(ids, dest / f"{name}.{part}.npy")
            entry[part] = {"file": f"{name}.{part}.npy", "examples": len(texts), "tokens": int(len(ids))}
        info[name] = entry
    return info


# ---------------------------------------------------------------- proxy runs


def proxy_task(streams: list[str], weights: list[float], evals: dict[str, str], spec: dict, seed: int,
               init: str | None = None, save: str | None = None) -> dict:
    """Train one proxy LM (pipeline.models.proxy_lm) and return its losses as marker counters
    (init / save: continue from / write a weights file, see proxy_lm.train_proxy)."""
    from pipeline.models import proxy_lm

    t0 = time.perf_counter()
    arrays = [np.load(s, mmap_mode="r") if w > 0 else np.zeros(0, np.uint16) for s, w in zip(streams, weights)]
    ev = {k: np.load(v, mmap_mode="r") for k, v in evals.items()}
    res = proxy_lm.train_proxy(arrays, weights, ev, proxy_lm.ProxySpec(**spec), seed, init_state=init, save_state=save)
    res = {k: v for k, v in res.items() if isinstance(v, (int, float, str, dict))}
    return {**ZERO, **res, "weights": [float(w) for w in weights], "seed": seed, "wall": round(time.perf_counter() - t0, 3)}
