"""Pass 2 of remix (driver, numpy): which documents go where, in which order.

Per domain d, the goal over all phases is G_d = sum_p fraction_p * budget * w_{p,d} tokens, never more
than max_epochs passes. The domain's documents are taken in whole seeded passes (each a fresh
permutation) while a full pass fits, then from one more permutation while the running sum stays
<= the rest (documents that would overshoot are skipped, so the goal is filled closely). That
ordered list is cut between the phases at the cumulative phase targets, so a domain repeats a
document only once it has used all of them, whatever the phases. Inside each phase the samples are
permuted with run.seed, and each phase is cut into its own output shards of run.shard.target_rows
rows: phase boundaries fall on shard boundaries (the loader and the trainer outputs keep the order).
With remix.order ({by, direction}) each phase is instead sorted by that score column (a quality
curriculum), ties in the order the seeded shuffle gives them, missing scores last; which samples each
phase holds is the same as without it.

With one phase the plan is the same as before phases existed (same permutations, same bytes).

Memory is O(samples + one census shard), never O(corpus): the census is read twice, shard by shard
(per-domain totals, then each domain's pool). A domain used once in full or more is held whole
(all of it is sampled) and ordered by the seeded permutations above; with remix.select the pool is
the kept top of the ranking (ties by a seeded hash of the document index); a domain that is only
partly used (goal < its tokens) takes its partial pass in the order of a seeded hash of the document
index, from the window of smallest hashes holding 2x its goal (a permutation of the whole domain
would need O(domain) memory; this is the one place the plan differs from the all-in-memory one).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.bounded import Smallest
from pipeline.config import ConfigError
from pipeline.schema import N_TOKENS

SAMPLE = np.dtype([("shard", "<i4"), ("row", "<i8"), ("epoch", "<i2"), ("dom", "<i4"), ("ntok", "<i8")])


def rng(seed: int, *parts) -> np.random.Generator:
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


def curriculum(keys: np.ndarray, direction: str, tie: np.ndarray) -> np.ndarray:
    """Positions of a phase's samples sorted by `keys` (ascending or descending), missing (NaN) last,
    ties in the order of `tie` (the seeded shuffle's ranks): a total, deterministic order."""
    k = np.where(np.isnan(keys), np.inf, keys if direction == "ascending" else -keys)
    return np.lexsort((tie, k))


def doc_keys(g: np.ndarray, seed: int, *parts) -> np.ndarray:
    """A seeded 64-bit hash per global document index (splitmix64): an order that needs no
    permutation of the whole domain, so it can be built shard by shard."""
    salt = np.uint64(zlib.crc32(repr((seed & 0xFFFFFFFF, *parts)).encode()) | (seed & 0xFFFFFFFF) << 32)
    with np.errstate(over="ignore"):
        x = (g.astype(np.uint64) + salt) * np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


class _Pool:
    """One domain's candidate documents, gathered shard by shard. mode "all": every document, in
    input order. "window": the smallest doc_keys whose tokens reach `tokens` (the partial pass's
    candidates; pipeline.bounded.Smallest). "rank": the best `k` by score (ties by doc_keys),
    extended down the ranking until they hold `tokens`. A bounded pool is cut whenever its pending
    rows outgrow it, so it holds O(pool + shard) rows; the cut keeps everything the final cut keeps
    (a prefix of a subset ranks no lower in the whole), so the result does not depend on the shard order."""

    def __init__(self, mode: str, name: str, seed: int, tokens: float = 0.0, k: int = 0, higher_is_better: bool = True):
        self.mode, self.name, self.seed, self.tokens, self.k, self.hib = mode, name, seed, tokens, k, higher_is_better
        self.cols: dict[str, list[np.ndarray]] = {}
        self.kept = self.pending = 0
        self.window = Smallest(tokens, tokens="tok") if mode == "window" else None

    def add(self, **cols: np.ndarray) -> None:
        if self.window is not None:  # doc_keys are distinct for distinct documents: no ties
            self.window.add(doc_keys(cols["g"], self.seed, "remix", "window", self.name), **cols)
            return
        for c, v in cols.items():
            self.cols.setdefault(c, []).append(v)
        self.pending += len(cols["g"])
        if self.mode != "all" and self.pending > max(2 * self.kept, 4096):
            self._cut()

    def _cut(self) -> None:  # mode "rank"
        c = {k: np.concatenate(v) for k, v in self.cols.items()}
        s = c["score"]
        key = np.where(np.isnan(s), np.inf, -s if self.hib else s)
        at = np.lexsort((c["g"], doc_keys(c["g"], self.seed, "remix", "select", self.name), key))
        n = max(self.k, int(np.searchsorted(np.cumsum(c["tok"][at]), self.tokens, side="left")) + 1)
        at = at[:n]
        self.cols = {k: [v[at]] for k, v in c.items()}
        self.kept, self.pending = len(at), len(at)

    def final(self) -> dict[str, np.ndarray]:
        """The pool's columns in its order (input order, key order or rank order)."""
        if self.window is not None:
            return self.window.final()[1]
        if self.mode != "all":
            self._cut()
        return {k: np.concatenate(v) for k, v in self.cols.items()} if self.cols else {}


def _domain_order(n: int, tok: np.ndarray, goal: int, avail: int, r: np.random.Generator, keep_order: bool = False):
    """The domain's samples in take order as positions in its pool: (positions, epoch) of whole
    passes (seeded permutations of the pool), then the partial one (the pool's own order when
    `keep_order`, else a fresh permutation). Generator.permutation draws the same swaps whatever
    the array holds, so a permutation of positions equals the one of document indices."""
    docs = np.arange(n, dtype=np.int64)
    full = int(goal // avail) if avail else 0
    chosen = [(r.permutation(docs), e) for e in range(full)]
    rem = goal - full * avail
    if rem > 0:
        chosen.append((_partial_pass(docs if keep_order else r.permutation(docs), tok, rem), full))
    idx = np.concatenate([c for c, _ in chosen]) if chosen else np.zeros(0, np.int64)
    ep = np.concatenate([np.full(len(c), e, np.int16) for c, e in chosen]) if chosen else np.zeros(0, np.int16)
    return idx, ep


def _shards(census: list[tuple[str, int]], columns: list[str]):
    """(shard index, first global row, table) per census file, one at a time."""
    lo = 0
    for s, (f, rows) in enumerate(census):
        t = pq.read_table(f, columns=columns)
        if t.num_rows != rows:
            raise RuntimeError(f"{f}: {t.num_rows} rows, expected {rows}; delete it and re-run")
        yield s, lo, t
        lo += rows


def _codes(t, index: dict[str, int], unweighted: dict[str, int] | None = None) -> np.ndarray:
    """Domain index per row (-1 = not in the weights); counts the unweighted domains' documents."""
    enc = pc.dictionary_encode(t.column("domain").combine_chunks())
    vals = enc.dictionary.to_pylist()
    codes = enc.indices.fill_null(len(vals)).to_numpy(zero_copy_only=False)
    if unweighted is not None:
        for v, c in zip(vals + [None], np.bincount(codes, minlength=len(vals) + 1)):
            if c and index.get(v, -1) < 0:
                unweighted[str(v)] = unweighted.get(str(v), 0) + int(c)
    return np.array([index.get(v, -1) for v in vals] + [-1], np.int32)[codes]


def _floats(t, col: str) -> np.ndarray:
    return t.column(col).to_numpy(zero_copy_only=False).astype(np.float64)


def _totals(census, names: list[str], with_score: bool):
    """Pass 1 over the census: per domain documents, tokens, score sum and count; unweighted docs."""
    k = len(names)
    docs, toks, ssum, scnt = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k), np.zeros(k, np.int64)
    unweighted: dict[str, int] = {}
    index, n = {nm: i for i, nm in enumerate(names)}, 0
    for _, _, t in _shards(census, ["domain", N_TOKENS] + (["score"] if with_score else [])):
        d = _codes(t, index, unweighted)
        m = d >= 0
        docs += np.bincount(d[m], minlength=k)
        toks += np.bincount(d[m], weights=t.column(N_TOKENS).to_numpy(zero_copy_only=False)[m], minlength=k).astype(np.int64)
        if with_score:
            sc = _floats(t, "score")
            ok = m & ~np.isnan(sc)
            ssum += np.bincount(d[ok], weights=sc[ok], minlength=k)
            scnt += np.bincount(d[ok], minlength=k)
        n += t.num_rows
    return docs, toks, ssum, scnt, unweighted, n


def _gather(census, names: list[str], pools: dict[int, _Pool], with_score: bool, with_order: bool) -> None:
    """Pass 2 over the census: each domain's rows into its pool, one shard at a time."""
    index = {nm: i for i, nm in enumerate(names)}
    cols = ["domain", N_TOKENS] + (["score"] if with_score else []) + (["order_score"] if with_order else [])
    for _, lo, t in _shards(census, cols):
        d = _codes(t, index)
        srt = np.argsort(d, kind="stable")
        b = np.searchsorted(d[srt], np.arange(len(names) + 1))
        tok = t.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.int64)
        sc = _floats(t, "score") if with_score else None
        osc = _floats(t, "order_score") if with_order else None
        for i, pool in pools.items():
            at = srt[b[i]:b[i + 1]]
            if len(at):
                extra = ({"score": sc[at]} if with_score else {}) | ({"oscore": osc[at]} if with_order else {})
                pool.add(g=at + lo, tok=tok[at], **extra)


def _nanmean(x: np.ndarray) -> float | None:
    x = x[~np.isnan(x)]
    return round(float(x.mean()), 6) if len(x) else None


def _cuts(tokens: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Indices cutting an ordered token list at the cumulative targets (nearest boundary)."""
    cs = np.concatenate([[0], np.cumsum(tokens)])
    goal = np.cumsum(targets)[:-1]
    hi = np.clip(np.searchsorted(cs, goal, side="left"), 0, len(cs) - 1)
    lo = np.clip(hi - 1, 0, len(cs) - 1)
    pick = np.where(np.abs(cs[lo] - goal) <= np.abs(cs[hi] - goal), lo, hi)
    return np.concatenate([[0], np.maximum.accumulate(pick), [len(tokens)]])


def plan(census: list[tuple[str, int]], weights: dict, budget: int, max_epochs: float, seed: int,
         target_rows: int, phases: list[dict] | None = None, select: dict | None = None,
         order_spec: dict | None = None) -> tuple[np.ndarray, dict]:
    """Samples in output order and the per-domain and per-phase numbers. census: (file, rows) per shard.
    `order_spec` {by, direction} (remix.order): each phase sorted by the census's order_score instead of shuffled.
    Reads the census twice, one shard at a time (totals, then each domain's pool)."""
    names = [str(d["name"]) for d in weights["domains"]]
    if phases is None:
        w = np.array([float(d["weight"]) for d in weights["domains"]], np.float64)
        phases = [{"index": 0, "fraction": 1.0, "weights": (w / w.sum()).tolist(), "metadata_prefix": False}]
    pw = np.array([p["weights"] for p in phases], np.float64)  # phases x domains
    pt = np.array([p["fraction"] for p in phases])[:, None] * pw * budget  # target tokens per phase and domain
    cols = pq.read_schema(census[0][0]).names if census else []
    if select and "score" not in cols:
        raise RuntimeError("remix.select: the census has no score column; re-run with --force")
    if order_spec and "order_score" not in cols:
        raise RuntimeError("remix.order: the census has no order_score column; re-run with --force")
    docs_all, tok_all, ssum, scnt, unweighted, docs_in = _totals(census, names, bool(select))
    target = pt.sum(axis=0)
    pools: dict[int, _Pool] = {}
    for i, n in enumerate(names):
        if select:
            pools[i] = _Pool("rank", n, seed, tokens=target[i] / max_epochs, k=max(1, int(math.ceil(select.get("keep", 1.0) * docs_all[i]))),
                             higher_is_better=select.get("higher_is_better", True))
        elif target[i] > 0 and docs_all[i]:
            goal = min(int(round(target[i])), int(math.floor(max_epochs * tok_all[i])))
            # a domain used once in full or more is held whole (all of it is sampled); a partial one only its window
            pools[i] = _Pool("all", n, seed) if goal >= tok_all[i] else _Pool("window", n, seed, tokens=2 * goal)
    _gather(census, names, pools, bool(select), bool(order_spec))
    pool = {i: p.final() for i, p in pools.items()}
    if select:
        docs_avail = np.array([len(pool[i].get("g", ())) for i in range(len(names))], np.int64)
        tok_avail = np.array([int(pool[i]["tok"].sum()) if pool[i] else 0 for i in range(len(names))], np.int64)
    else:
        docs_avail, tok_avail = docs_all, tok_all
    w_all = target / budget
    for i, n in enumerate(names):  # errors first, all domains at once (one line each, the first raised)
        if target[i] > 0 and docs_avail[i] == 0:
            raise ConfigError(f"remix: domain {n!r} of the weights (weight {w_all[i]:.4g}) has no documents in the input; "
                              f"check domain_column {weights.get('domain_column', 'cluster')!r} or re-run the mix stage")
        if target[i] > 0 and tok_avail[i] == 0:
            raise ConfigError(f"remix: domain {n!r} has {docs_avail[i]} documents but 0 tokens; it cannot fill {target[i]:.0f} tokens")
        if target[i] > 0 and target[i] > max_epochs * tok_avail[i] * (1 + 1e-6):
            raise ConfigError(f"remix: domain {n!r} needs {target[i] / tok_avail[i]:.2f} epochs ({target[i]:.0f} of {tok_avail[i]} tokens) "
                              f"> max_epochs {max_epochs:g}; raise max_epochs or lower tokens")
    offsets = np.cumsum([0] + [r for _, r in census])
    per_phase: list[list[np.ndarray]] = [[] for _ in phases]
    per_key: list[list[np.ndarray]] = [[] for _ in phases]  # order scores of the samples (remix.order)
    domains = []
    for i, n in enumerate(names):
        c = pool.get(i) or {"g": np.zeros(0, np.int64), "tok": np.zeros(0, np.int64), "score": np.zeros(0), "oscore": np.zeros(0)}
        goal = min(int(round(target[i])), int(math.floor(max_epochs * tok_avail[i])))  # never a pass beyond the cap
        if i in pools and pools[i].mode == "window":  # the partial pass in doc_keys order
            idx = _partial_pass(np.arange(len(c["g"]), dtype=np.int64), c["tok"], goal)
            ep = np.zeros(len(idx), np.int16)
        else:
            keep_order = bool(select) and select.get("order", "best_first") == "best_first"
            idx, ep = _domain_order(len(c["g"]), c["tok"], goal, int(tok_avail[i]), rng(seed, "remix", n), keep_order)
        g, t = c["g"][idx], c["tok"][idx]
        cut = _cuts(t, pt[:, i])
        shard = np.searchsorted(offsets, g, side="right") - 1
        for p in range(len(phases)):
            sl = slice(cut[p], cut[p + 1])
            a = np.empty(cut[p + 1] - cut[p], SAMPLE)
            a["shard"], a["row"], a["epoch"], a["dom"], a["ntok"] = shard[sl], g[sl] - offsets[shard[sl]], ep[sl], i, t[sl]
            per_phase[p].append(a)
            if order_spec:
                per_key[p].append(c["oscore"][idx[sl]])
        got = int(t.sum())
        reps = np.bincount(idx, minlength=len(c["g"]))
        domains.append({"name": n, "weight": round(float(w_all[i]), 8), "target_tokens": int(goal), "tokens": got,
                        "docs_available": int(docs_avail[i]), "tokens_available": int(tok_avail[i]), "samples": int(len(idx)),
                        "epochs": round(got / tok_avail[i], 6) if tok_avail[i] else 0.0,
                        "max_repeats": int(reps.max()) if len(reps) else 0, "full_passes": int(goal // tok_avail[i]) if tok_avail[i] else 0})
        if select:
            taken = np.unique(idx)
            sc = c["score"][taken][np.argsort(c["g"][taken], kind="stable")]  # in input order, as the mean always was
            domains[-1].update({"docs_in_domain": int(docs_all[i]), "docs_sampled": int(len(taken)), "mean_score_sampled": _nanmean(sc),
                                "mean_score_domain": round(float(ssum[i] / scnt[i]), 6) if scnt[i] else None})
    del pool
    parts, shard_starts, phase_info, lo = [], [], [], 0
    for p, ph in enumerate(phases):
        s = np.concatenate(per_phase[p]) if per_phase[p] else np.zeros(0, SAMPLE)
        perm = rng(seed, "remix", "shuffle", *([p] if p else [])).permutation(len(s))
        s = s[perm]
        if order_spec:  # the curriculum: sorted by the column, ties in the shuffle's order
            k = np.concatenate(per_key[p])[perm] if per_key[p] else np.zeros(0)
            at = curriculum(k, order_spec["direction"], np.arange(len(s)))
            s = s[at]
            k = k[at]
        parts.append(s)
        first = len(shard_starts)
        shard_starts += list(range(lo, lo + len(s), target_rows))
        dtok = np.bincount(s["dom"], weights=s["ntok"], minlength=len(names)).astype(np.int64)
        dsam = np.bincount(s["dom"], minlength=len(names))
        phase_info.append({"index": p, "fraction": ph["fraction"], "metadata_prefix": ph["metadata_prefix"],
                           "weights": {n: round(float(x), 8) for n, x in zip(names, ph["weights"])},
                           "target_tokens": int(round(ph["fraction"] * budget)), "tokens": int(dtok.sum()),
                           "domain_tokens": {n: int(x) for n, x in zip(names, dtok)},
                           "domain_samples": {n: int(x) for n, x in zip(names, dsam)},
                           "samples": [lo, lo + len(s)], "shards": [first, len(shard_starts)]})
        if order_spec:
            ok = k[~np.isnan(k)]
            phase_info[-1]["order_score"] = {"first": float(ok[0]) if len(ok) else None, "last": float(ok[-1]) if len(ok) else None,
                                             "missing": int(np.isnan(k).sum())}
        lo += len(s)
    samples = np.concatenate(parts) if parts else np.zeros(0, SAMPLE)
    total = int(samples["ntok"].sum())
    for d in domains:
        d["share"] = round(d["tokens"] / total, 8) if total else 0.0
        d["share_error"] = round(abs(d["share"] - d["weight"]), 8)
    info = {"budget_tokens": int(budget), "max_epochs": max_epochs, "seed": seed, "domains": domains,
            "max_abs_share_error": max((d["share_error"] for d in domains), default=0.0),
            "samples": int(len(samples)), "tokens": total, "docs_in": int(docs_in),
            "unweighted_docs": dict(sorted(unweighted.items())), "target_rows": target_rows,
            "shards": len(shard_starts), "shard_starts": shard_starts + [int(len(samples))], "phases": phase_info,
            "select": select, **({"order": {**order_spec, "ties": "seeded shuffle (run.seed)", "missing": "last",
                                                   "scope": "within each phase"}} if order_spec else {})}
    return samples, info
