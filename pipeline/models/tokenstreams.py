"""Token streams for proxy LMs: a dataset dir tokenized per shard, per-domain streams, target splits.

The mix and evaluate stages share these pieces (stages never import each other):

  tokenize_shard   one task per input shard: <work>/tokens-<key>.npy (every document's BPE ids,
                   each followed by EOS, in row order) + docs-<key>.parquet (domain, n_tokens,
                   offset). Its marker counts documents and tokens per domain.
  build_streams    driver step: per domain, whole documents in a seeded order until `cap` tokens,
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
from pipeline.manifest import COUNTERS

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


def tokenize_shard(path: str, work: str, key: str, tokenizer: str, domain_column: str | None, batch_size: int) -> dict:
    """Tokenize one shard's documents; domain None = one domain named '' (the raw corpus)."""
    from pipeline.models import bpe

    tok = bpe.load(tokenizer)
    pf = pq.ParquetFile(path)
    cols = ["text"] + ([domain_column] if domain_column else [])
    parts, domains, lengths = [], [], []
    for rb in pf.iter_batches(columns=cols, batch_size=batch_size):
        ids, lens = bpe.encode_docs(tok, rb.column("text").to_pylist())
        parts.append(ids)
        lengths.append(lens)
        d = rb.column(domain_column).to_pylist() if domain_column else [""] * rb.num_rows
        domains.extend("" if v is None else str(v) for v in d)
    dtype = bpe.token_dtype(tok.get_vocab_size())
    ids = np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)
    lens = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens + 1)[:-1]]).astype(np.int64) if len(lens) else np.zeros(0, np.int64)
    w = Path(work)
    io.write_npy(ids, w / f"tokens-{key}.npy")
    io.write_parquet(pa.table({"domain": pa.array(domains, pa.string()), "n_tokens": pa.array(lens, pa.int64()),
                               "offset": pa.array(offsets, pa.int64())}), w / f"docs-{key}.parquet")
    per: dict[str, list[int]] = {}
    for d, n in zip(domains, lens.tolist()):
        c = per.setdefault(d, [0, 0])
        c[0] += 1
        c[1] += n
    return {**ZERO, "domains": per, "tokens": int(lens.sum()), "docs": len(lens)}


def drop_stale_markers(work: Path, keys: list[str]) -> None:
    """A finished tokenize task whose files went away (deleted, moved) runs again."""
    for k in keys:
        m = io.marker_path(work, k)
        if m.exists() and not ((work / f"tokens-{k}.npy").exists() and (work / f"docs-{k}.parquet").exists()):
            m.unlink()


def tokenize_pass(phase, name: str, shards: list[Path], work: Path, tokenizer: Path, tok_sha: str,
                  domain_column: str | None, batch_size: int, fp: str) -> runner.StageResult:
    """Every shard tokenized into `work` as one resumable runner pass (see tokenize_shard)."""
    keys = [p.stem for p in shards]
    drop_stale_markers(work, keys)
    tasks = [runner.Task(p.stem, tokenize_shard, dict(path=str(p), work=str(work), key=p.stem, tokenizer=str(tokenizer),
                                                      domain_column=domain_column, batch_size=batch_size)) for p in shards]
    return runner.work_phase(phase, name, work, tasks, digest(tok_sha, domain_column), fp)


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
    """Per domain: whole documents (EOS included) in a seeded order until `cap` tokens -> <dest>/<i>.npy.
    Returns one entry per name: file, tokens in the stream, documents in it."""
    docs = {k: pq.read_table(work / f"docs-{k}.parquet", columns=["domain", "offset", "n_tokens"]) for k in keys}
    rank = {k: r for r, k in enumerate(sorted(keys))}  # the shard order reads happen in
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        kk, oo, nn = [], [], []  # per shard: key rank, offset, length incl. EOS (numpy, no per-doc objects)
        for k in keys:
            t = docs[k]
            mask = pc.fill_null(pc.equal(t.column("domain"), pa.scalar(name, pa.string())), False).to_numpy(zero_copy_only=False)
            if mask.any():
                off = t.column("offset").to_numpy()[mask]
                kk.append(np.full(len(off), rank[k], np.int64))
                oo.append(off.astype(np.int64))
                nn.append(t.column("n_tokens").to_numpy()[mask].astype(np.int64) + 1)
        kr = np.concatenate(kk) if kk else np.zeros(0, np.int64)
        off = np.concatenate(oo) if oo else np.zeros(0, np.int64)
        n = np.concatenate(nn) if nn else np.zeros(0, np.int64)
        order = np.random.default_rng([seed, i]).permutation(len(n))
        cs = np.cumsum(n[order])
        # whole documents in `order` while the running total is below cap (the last one may cross it)
        m = 0 if cap <= 0 else min(int(np.searchsorted(cs, cap, side="left")) + 1, len(order))
        total = int(cs[m - 1]) if m else 0
        sel = order[:m]
        sel = sel[np.lexsort((off[sel], kr[sel]))]  # read each shard's token file in order
        by_rank = sorted(keys)
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
