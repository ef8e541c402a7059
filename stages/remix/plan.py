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
Memory: ~30 bytes per input document and per sample.
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


def _read_census(census: list[tuple[str, int]], index: dict[str, int]):
    """Per input document: shard, row, domain index (-1 = not in the weights), tokens; and the
    document counts of the domains the weights do not name."""
    shard_l, row_l, dom_l, tok_l, score_l, order_l = [], [], [], [], [], []
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
        for v, c in zip(vals + [None], np.bincount(codes, minlength=len(vals) + 1)):
            if c and index.get(v, -1) < 0:
                unweighted[str(v)] = unweighted.get(str(v), 0) + int(c)
        shard_l.append(np.full(rows, s, np.int32))
        row_l.append(np.arange(rows, dtype=np.int64))
        dom_l.append(lut[codes])
        tok_l.append(t.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.int64))
        if "score" in t.column_names:
            score_l.append(t.column("score").to_numpy(zero_copy_only=False).astype(np.float64))
        if "order_score" in t.column_names:
            order_l.append(t.column("order_score").to_numpy(zero_copy_only=False).astype(np.float64))

    def cat(parts, dtype):
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    score = cat(score_l, np.float64) if score_l else None
    oscore = cat(order_l, np.float64) if order_l else None
    return cat(shard_l, np.int32), cat(row_l, np.int64), cat(dom_l, np.int32), cat(tok_l, np.int64), score, unweighted, oscore


def curriculum(keys: np.ndarray, direction: str, tie: np.ndarray) -> np.ndarray:
    """Positions of a phase's samples sorted by `keys` (ascending or descending), missing (NaN) last,
    ties in the order of `tie` (the seeded shuffle's ranks): a total, deterministic order."""
    k = np.where(np.isnan(keys), np.inf, keys if direction == "ascending" else -keys)
    return np.lexsort((tie, k))


def ranked(docs: np.ndarray, score: np.ndarray, higher_is_better: bool, r: np.random.Generator) -> np.ndarray:
    """`docs` best first by score (missing scores last, ties in a seeded random order)."""
    s = score[docs]
    key = np.where(np.isnan(s), np.inf, -s if higher_is_better else s)
    return docs[np.lexsort((r.permutation(len(docs)), key))]


def selected(docs: np.ndarray, tok: np.ndarray, score: np.ndarray | None, select: dict | None, r: np.random.Generator,
             need: float) -> tuple[np.ndarray, bool]:
    """The domain's documents that may be sampled, and whether a partial pass takes them in that
    order (best first). Without `select`: all, in a random order per pass. With it: the top `keep`
    share, extended down the ranking as far as the epoch cap needs (`need` = the fewest tokens the
    kept documents must hold), so a selection never makes a feasible mixture infeasible."""
    if not select or not len(docs):
        return docs, False
    best = ranked(docs, score, select.get("higher_is_better", True), r)
    k = max(1, int(math.ceil(select.get("keep", 1.0) * len(docs))))
    k = max(k, min(len(best), int(np.searchsorted(np.cumsum(tok[best]), need, side="left")) + 1))
    return best[:k], select.get("order", "best_first") == "best_first"


def _domain_order(docs: np.ndarray, tok: np.ndarray, goal: int, avail: int, r: np.random.Generator, best_first: bool = False):
    """The domain's samples in take order: (doc indices, epoch) of whole passes, then the partial one
    (its candidates in the given order when `best_first`, else a fresh permutation)."""
    full = int(goal // avail) if avail else 0
    chosen = [(r.permutation(docs), e) for e in range(full)]
    rem = goal - full * avail
    if rem > 0:
        chosen.append((_partial_pass(docs if best_first else r.permutation(docs), tok, rem), full))
    idx = np.concatenate([c for c, _ in chosen]) if chosen else np.zeros(0, np.int64)
    ep = np.concatenate([np.full(len(c), e, np.int16) for c, e in chosen]) if chosen else np.zeros(0, np.int16)
    return idx, ep


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
    `order_spec` {by, direction} (remix.order): each phase sorted by the census's order_score instead of shuffled."""
    names = [str(d["name"]) for d in weights["domains"]]
    if phases is None:
        w = np.array([float(d["weight"]) for d in weights["domains"]], np.float64)
        phases = [{"index": 0, "fraction": 1.0, "weights": (w / w.sum()).tolist(), "metadata_prefix": False}]
    pw = np.array([p["weights"] for p in phases], np.float64)  # phases x domains
    pt = np.array([p["fraction"] for p in phases])[:, None] * pw * budget  # target tokens per phase and domain
    shard, row, dom, tok, score, unweighted, oscore = _read_census(census, {n: i for i, n in enumerate(names)})
    if select and score is None:
        raise RuntimeError("remix.select: the census has no score column; re-run with --force")
    if order_spec and oscore is None:
        raise RuntimeError("remix.order: the census has no order_score column; re-run with --force")
    per_key: list[list[np.ndarray]] = [[] for _ in phases]  # order scores of the samples (remix.order)
    order = np.argsort(dom, kind="stable")  # docs grouped by domain, in input order
    bounds = np.searchsorted(dom[order], np.arange(len(names) + 1))
    target = pt.sum(axis=0)
    pools = [selected(order[bounds[i]:bounds[i + 1]], tok, score, select, rng(seed, "remix", "select", n), target[i] / max_epochs)
             for i, n in enumerate(names)]
    docs_all = np.diff(bounds)
    docs_avail = np.array([len(p) for p, _ in pools], np.int64)
    tok_avail = np.array([int(tok[p].sum()) for p, _ in pools], np.int64)
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
    per_phase: list[list[np.ndarray]] = [[] for _ in phases]
    domains = []
    for i, n in enumerate(names):
        docs, best_first = pools[i]
        goal = min(int(round(target[i])), int(math.floor(max_epochs * tok_avail[i])))  # never a pass beyond the cap
        idx, ep = _domain_order(docs, tok, goal, int(tok_avail[i]), rng(seed, "remix", n), best_first)
        cut = _cuts(tok[idx], pt[:, i])
        for p in range(len(phases)):
            sl = slice(cut[p], cut[p + 1])
            a = np.empty(cut[p + 1] - cut[p], SAMPLE)
            a["shard"], a["row"], a["epoch"], a["dom"], a["ntok"] = shard[idx[sl]], row[idx[sl]], ep[sl], i, tok[idx[sl]]
            per_phase[p].append(a)
            if order_spec:
                per_key[p].append(oscore[idx[sl]])
        got = int(tok[idx].sum())
        srt = np.sort(docs)
        reps = np.bincount(np.searchsorted(srt, idx), minlength=len(docs)) if len(docs) else np.zeros(0, np.int64)
        domains.append({"name": n, "weight": round(float(w_all[i]), 8), "target_tokens": int(goal), "tokens": got,
                        "docs_available": int(docs_avail[i]), "tokens_available": int(tok_avail[i]), "samples": int(len(idx)),
                        "epochs": round(got / tok_avail[i], 6) if tok_avail[i] else 0.0,
                        "max_repeats": int(reps.max()) if len(reps) else 0, "full_passes": int(goal // tok_avail[i]) if tok_avail[i] else 0})
        if select:
            taken = np.unique(idx)
            domains[-1].update({"docs_in_domain": int(docs_all[i]), "docs_sampled": int(len(taken)),
                                "mean_score_sampled": _nanmean(score[taken]), "mean_score_domain": _nanmean(score[order[bounds[i]:bounds[i + 1]]])})
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
            "samples": int(len(samples)), "tokens": total, "docs_in": int(len(dom)),
            "unweighted_docs": dict(sorted(unweighted.items())), "target_rows": target_rows,
            "shards": len(shard_starts), "shard_starts": shard_starts + [int(len(samples))], "phases": phase_info,
            "select": select, **({"order": {**order_spec, "ties": "seeded shuffle (run.seed)", "missing": "last",
                                                   "scope": "within each phase"}} if order_spec else {})}
    return samples, info
