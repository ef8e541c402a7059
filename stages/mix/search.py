"""Mixture search: RegMix (one round of random proxies + regression) and CLIMB (iterative rounds).

An evaluator is any callable `evaluate(round: int, W: np.ndarray) -> np.ndarray` returning one loss
per row of W (lower is better; NaN = a failed run, kept in `runs` but not fitted). It trains proxy
LMs, so it is slow and the caller caches its results: both searches are deterministic functions
of (inputs, seed, losses so far), so a resumed search passes bit-identical W to every round and
every cached round is a hit. Randomness comes from `np.random.default_rng([seed, round, purpose])`
streams, independent of how many draws earlier steps consumed; predictors are deterministic.

RegMix (arXiv 2407.01492): N Dirichlet-sampled proxies, LightGBM fit, predict 100k draws,
final = mean of the 128 lowest predicted. CLIMB (arXiv 2504.13161): rounds of 64/32/16 proxies,
each later round refits on all runs so far, scores 100k draws and picks n without replacement from
the top max(n², 128); final = best predicted. Defaults here are the small-machine sizes
(`pipeline.config.SearchConfig`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from stages.mix.baselines import proportional, uniform
from stages.mix.constraints import Bounds, check_feasible, project
from stages.mix.predictor import Predictor

Evaluator = Callable[[int, np.ndarray], np.ndarray]

TINY = 2e-4          # RegMix zeroes weights below this
REGMIX_K = 17        # RegMix's domain count; concentrations are scaled up for larger K
_DEDUP_DECIMALS = 6
_PURPOSE = {"runs": 1, "candidates": 2, "pick": 3}


@dataclass
class SearchResult:
    weights: np.ndarray
    predicted_loss: float
    runs: list[dict] = field(default_factory=list)
    rho: float | None = None
    method: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = [float(x) for x in self.weights]
        return d


def _rng(seed: int, rnd: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(rnd), _PURPOSE[purpose]])


def _dirichlet(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """Rows ~ Dirichlet(alpha[i]) for a (n, K) alpha, robust to tiny alpha (no all-zero rows).

    Gamma(a) = Gamma(a + 1) * U^(1/a), done in log space and normalized with a softmax, so shapes
    like 0.005 (RegMix's low concentrations over many domains) do not underflow to 0/0.
    """
    alpha = np.maximum(alpha, 1e-12)
    logg = np.log(rng.standard_gamma(alpha + 1.0)) + np.log(rng.random(alpha.shape)) / alpha
    logg -= logg.max(axis=1, keepdims=True)
    g = np.exp(logg)
    return g / g.sum(axis=1, keepdims=True)


def _finish(W: np.ndarray, tokens, budget, bounds) -> np.ndarray:
    W = np.where(W < TINY, 0.0, W)
    return project(W, tokens, budget, bounds)


def _row_keys(W: np.ndarray) -> np.ndarray:
    """64-bit key per row of W rounded to 1e-6 (a fixed random linear hash; collisions ~n²/2^64)."""
    q = np.round(np.atleast_2d(W) * 10**_DEDUP_DECIMALS).astype(np.uint64)
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, size=q.shape[1], dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        return (q * mult).sum(axis=1, dtype=np.uint64)


def _unique_rows(W: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """First occurrence of each row (rounded to 1e-6), in order, minus rows also in `exclude`."""
    key = _row_keys(W)
    _, first = np.unique(key, return_index=True)
    keep = np.zeros(len(W), bool)
    keep[first] = True
    if exclude is not None and len(exclude):
        keep &= ~np.isin(key, _row_keys(exclude))
    return W[keep]


def _concentrations(rng, n: int, conc_range, k: int) -> np.ndarray:
    lo, hi = conc_range
    if not 0 < lo <= hi:
        raise ValueError(f"conc_range must be 0 < low <= high, got {conc_range}")
    s = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
    return s * max(1.0, k / REGMIX_K)


def _draw(rng, center: np.ndarray, n: int, conc: np.ndarray, tokens, budget, bounds) -> np.ndarray:
    return _finish(_dirichlet(rng, center[None, :] * conc[:, None]), tokens, budget, bounds)


def sample_mixtures(rng: np.random.Generator, prior, n: int, bounds: Bounds, tokens, budget: float,
                    conc_range=(0.1, 5.0), *, exclude: np.ndarray | None = None,
                    oversample: float = 1.25, max_tries: int = 50) -> np.ndarray:
    """RegMix sampler: n distinct feasible mixtures, shape (n, K).

    prior p (token shares) is tempered p^0.5 and renormalized; each draw is Dirichlet(p * s) with s
    log-uniform in `conc_range` (RegMix: 15 log-spaced values in [0.1, 5]), s scaled by K/17 when
    K > 17 (RegMix had 17 domains; with K≈64 smaller s collapses samples onto one or two domains);
    weights < 2e-4 are zeroed, the rest projected onto the constraints, duplicates (and rows in
    `exclude`) dropped, and more drawn until n remain. Fewer than n come back only when the
    feasible set has fewer distinct points (e.g. K=1 or all caps binding).
    """
    p = _prior(prior, tokens)
    k = p.size
    p = np.sqrt(p)
    p /= p.sum()
    out = np.zeros((0, k))
    for _ in range(max_tries):
        need = n - len(out)
        if need <= 0:
            break
        m = max(int(need * oversample), 16)
        W = _draw(rng, p, m, _concentrations(rng, m, conc_range, k), tokens, budget, bounds)
        out = _unique_rows(np.vstack([out, W]), exclude)
    return out[:n]


def _prior(prior, tokens) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    p = proportional(tokens) if prior is None else np.asarray(prior, dtype=np.float64)
    if p.shape != tokens.shape or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"prior must be {tokens.size} non-negative weights with a positive sum, got shape {p.shape}")
    return p / p.sum()


def _call(evaluate: Evaluator, rnd: int, W: np.ndarray) -> np.ndarray:
    y = np.asarray(evaluate(rnd, W.copy()), dtype=np.float64)
    if y.shape != (len(W),):
        raise ValueError(f"evaluator returned shape {y.shape} for round {rnd}; expected ({len(W)},)")
    return y


def _record(runs: list, rnd: int, W, y, pred) -> None:
    for i in range(len(W)):
        runs.append({"round": rnd, "index": i, "weights": [float(x) for x in W[i]],
                     "loss": float(y[i]) if np.isfinite(y[i]) else None,
                     "predicted": None if pred is None else float(pred[i])})


def _fit(runs: list, kind: str, seed: int) -> Predictor:
    ok = [r for r in runs if r["loss"] is not None]
    if len(ok) < 2:
        raise ValueError(f"only {len(ok)} of {len(runs)} proxy runs returned a finite loss; need at least 2 to fit a predictor")
    W = np.array([r["weights"] for r in ok])
    y = np.array([r["loss"] for r in ok])
    return Predictor(kind, seed).fit(W, y)


def _anchors(prior, tokens, budget, bounds) -> np.ndarray:
    """The prior (token-share) mixture and uniform, projected: always among round-1 runs."""
    return _unique_rows(project(np.vstack([prior, uniform(tokens)]), tokens, budget, bounds))


def _round_one(n: int, prior, tokens, budget, bounds, seed, conc_range) -> np.ndarray:
    A = _anchors(prior, tokens, budget, bounds)[:n]
    R = sample_mixtures(_rng(seed, 1, "runs"), prior, n - len(A), bounds, tokens, budget, conc_range, exclude=A)
    return np.vstack([A, R])


def _validate(tokens, budget, bounds, prior):
    check_feasible(tokens, budget, bounds)
    if len(tokens) < 2:
        raise ValueError("a mixture search needs at least 2 domains (with one, its weight is 1)")
    return _prior(prior, tokens)


def regmix(evaluate: Evaluator, prior, tokens, budget: float, bounds: Bounds = Bounds(), *, runs: int = 24,
           candidates: int = 100_000, top_k: int = 128, predictor: str = "lightgbm", seed: int = 0,
           conc_range=(0.1, 5.0)) -> SearchResult:
    """RegMix: one round of `runs` proxies (prior and uniform included as anchors), fit, predict
    `candidates` fresh draws, final = projected mean of the `top_k` lowest predicted."""
    prior = _validate(tokens, budget, bounds, prior)
    W = _round_one(runs, prior, tokens, budget, bounds, seed, conc_range)
    log: list[dict] = []
    _record(log, 1, W, _call(evaluate, 1, W), None)
    model = _fit(log, predictor, seed)
    C = sample_mixtures(_rng(seed, 2, "candidates"), prior, candidates, bounds, tokens, budget, conc_range)
    pred = model.predict(C)
    top = np.argsort(pred, kind="stable")[:top_k]
    final = project(C[top].mean(axis=0), tokens, budget, bounds)
    return SearchResult(final, float(model.predict(final)), log, model.rho, "regmix")


def _local_candidates(rng, log, n: int, rnd: int, prior, tokens, budget, bounds, conc_range) -> np.ndarray:
    """Half global RegMix draws (exploration, as CLIMB's Dirichlet(token shares)), half Dirichlet
    draws centred on the mean of the best quarter of runs so far, the concentration doubling each
    round (20·2^(round-2)·max(1, K/17)): the search shrinks around what worked."""
    ok = sorted((r for r in log if r["loss"] is not None), key=lambda r: (r["loss"], r["round"], r["index"]))
    top = np.array([r["weights"] for r in ok[:max(2, len(ok) // 4)]])
    k = top.shape[1]
    center = 0.9 * top.mean(axis=0) + 0.1 / k  # keep every domain reachable
    n_loc = n // 2
    conc = np.full(n_loc, 20.0 * 2.0 ** (rnd - 2) * max(1.0, k / REGMIX_K))
    L = _draw(rng, center, n_loc, conc, tokens, budget, bounds)
    G = sample_mixtures(rng, prior, n - n_loc, bounds, tokens, budget, conc_range)
    return _unique_rows(np.vstack([L, G]))


def climb(evaluate: Evaluator, prior, tokens, budget: float, bounds: Bounds = Bounds(), *, rounds=(16, 8, 4),
          candidates: int = 100_000, top_k: int = 128, predictor: str = "lightgbm", seed: int = 0,
          conc_range=(0.1, 5.0)) -> SearchResult:
    """CLIMB: round 1 = `rounds[0]` RegMix samples (anchors included); round r > 1 refits on all runs,
    scores `candidates` fresh draws (see `_local_candidates`), and runs `rounds[r-1]` picked without
    replacement from the top max(n², top_k) predicted (never one already run). The last fit scores a
    final candidate set; final = the lowest predicted, or the best observed run if that predicts lower."""
    prior = _validate(tokens, budget, bounds, prior)
    if not rounds or any(int(n) < 1 for n in rounds):
        raise ValueError(f"rounds must be a non-empty list of positive run counts, got {list(rounds)}")
    log: list[dict] = []
    W = _round_one(int(rounds[0]), prior, tokens, budget, bounds, seed, conc_range)
    _record(log, 1, W, _call(evaluate, 1, W), None)
    model = None
    for rnd in range(2, len(rounds) + 2):
        model = _fit(log, predictor, seed)
        C = _local_candidates(_rng(seed, rnd, "candidates"), log, candidates, rnd, prior, tokens, budget, bounds, conc_range)
        if rnd == len(rounds) + 1:
            break
        done = np.array([r["weights"] for r in log])
        C = _unique_rows(C, exclude=done)
        pred = model.predict(C)
        n = int(rounds[rnd - 1])
        pool = np.argsort(pred, kind="stable")[:max(n * n, top_k)]
        pick = np.sort(_rng(seed, rnd, "pick").choice(pool, size=min(n, len(pool)), replace=False))
        W = C[pick]
        _record(log, rnd, W, _call(evaluate, rnd, W), pred[pick])
    pred = model.predict(C)
    i = int(np.argmin(pred))
    final, final_pred = C[i], float(pred[i])
    ok = [r for r in log if r["loss"] is not None]
    best = np.array(min(ok, key=lambda r: (r["loss"], r["round"], r["index"]))["weights"])
    best_pred = float(model.predict(best))
    if best_pred < final_pred:
        final, final_pred = best, best_pred
    return SearchResult(project(final, tokens, budget, bounds), final_pred, log, model.rho, "climb")
