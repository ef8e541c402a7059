"""Feasible mixture weights: per-domain floors, caps and epoch limits.

A mixture is a K-vector of non-negative weights summing to 1; domain i then gets
`w_i * budget` training tokens out of `tokens_i` available, i.e. `w_i * budget / tokens_i` epochs.
Caps (MIXTURE.md "Baselines and caps"):

    cap_i   = min(max_weight, max_epochs * tokens_i / budget)
    floor_i = min(min_weight, cap_i)        # a small domain cannot be forced past its epoch cap

Repeating data beyond ~4 epochs stops helping (Muennighoff et al., "To Repeat or Not To Repeat"),
hence `max_epochs=4`. Megatron-LM repeats small sources silently with no cap, so every optimizer's
output goes through `project` before it is written.

`project` is the ratio-preserving projection RegMix/CLIMB-style caps use: clip to [floor, cap],
then hand the excess (or deficit) to the domains not at a bound in proportion to their weights,
until the sum is 1. Zero weights stay zero unless the free domains cannot absorb the mass.
It works on one vector or a (n, K) batch of them (candidate sets of 100k draws).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_TOL = 1e-12


@dataclass(frozen=True)
class Bounds:
    """Per-domain limits (the fields of `pipeline.config.MixConstraints`)."""

    min_weight: float = 0.0
    max_weight: float = 1.0
    max_epochs: float = 4.0

    @classmethod
    def from_config(cls, c) -> "Bounds":
        """From a `MixConstraints` (or anything with the three attributes)."""
        return cls(float(c.min_weight), float(c.max_weight), float(c.max_epochs))


def human(n: float) -> str:
    """12_300_000 -> '12.3M' (token counts in error messages)."""
    n = float(n)
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.3g}"


def check_inputs(tokens, budget) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ValueError(f"tokens must be a non-empty 1-D array of per-domain counts, got shape {tokens.shape}")
    if not np.all(np.isfinite(tokens)) or np.any(tokens < 0):
        raise ValueError("tokens must be finite and >= 0 for every domain")
    if not (np.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a positive number of tokens, got {budget}")
    return tokens


def caps(tokens, budget: float, bounds: Bounds = Bounds()) -> np.ndarray:
    """Upper bound per domain: min(max_weight, max_epochs * tokens / budget)."""
    tokens = check_inputs(tokens, budget)
    return np.minimum(bounds.max_weight, bounds.max_epochs * tokens / float(budget))


def floors(tokens, budget: float, bounds: Bounds = Bounds()) -> np.ndarray:
    """Lower bound per domain: min(min_weight, cap) (the epoch cap wins over the floor)."""
    return np.minimum(bounds.min_weight, caps(tokens, budget, bounds))


def check_feasible(tokens, budget: float, bounds: Bounds = Bounds()) -> None:
    """Raise a one-line ValueError naming the constraint to relax when no mixture satisfies `bounds`."""
    tokens = check_inputs(tokens, budget)
    k = tokens.size
    if not (0 <= bounds.min_weight <= 1 and 0 < bounds.max_weight <= 1 and bounds.max_epochs > 0):
        raise ValueError(f"bounds out of range: need 0 <= min_weight <= 1, 0 < max_weight <= 1, max_epochs > 0; got {bounds}")
    if bounds.min_weight > bounds.max_weight:
        raise ValueError(f"min_weight {bounds.min_weight:g} > max_weight {bounds.max_weight:g}: lower min_weight or raise max_weight")
    if k * bounds.min_weight > 1 + 1e-9:
        raise ValueError(f"min_weight {bounds.min_weight:g} x {k} domains = {k * bounds.min_weight:.3g} > 1: lower min_weight")
    hi = caps(tokens, budget, bounds)
    if hi.sum() >= 1 - 1e-9:
        return
    total = tokens.sum()
    if bounds.max_epochs * total < budget:
        raise ValueError(f"max_epochs {bounds.max_epochs:g} x {human(total)} tokens available < budget {human(budget)}: "
                         "raise max_epochs or lower the budget")
    if k * bounds.max_weight < 1:
        raise ValueError(f"max_weight {bounds.max_weight:g} x {k} domains = {k * bounds.max_weight:.3g} < 1: raise max_weight")
    raise ValueError(f"per-domain caps min(max_weight {bounds.max_weight:g}, max_epochs {bounds.max_epochs:g} x tokens / budget "
                     f"{human(budget)}) sum to {hi.sum():.4g} < 1: raise max_weight or max_epochs, or lower the budget")


def feasible(w, tokens, budget: float, bounds: Bounds = Bounds(), tol: float = 1e-9) -> bool:
    """True when `w` (one vector) sums to 1 and lies within [floor, cap] for every domain."""
    w = np.asarray(w, dtype=np.float64)
    hi = caps(tokens, budget, bounds)
    lo = np.minimum(bounds.min_weight, hi)
    return bool(w.shape == hi.shape and np.all(np.isfinite(w)) and abs(w.sum() - 1) <= tol
                and np.all(w >= lo - tol) and np.all(w <= hi + tol))


def project(w, tokens, budget: float, bounds: Bounds = Bounds()) -> np.ndarray:
    """Closest feasible weights that keep the ratios among unconstrained domains.

    `w`: (K,) or (n, K) non-negative weights (any scale; NaN/negative count as 0; an all-zero row
    starts from uniform). Returns the same shape, each row in [floor, cap] and summing to 1
    (to float rounding: the last residual goes to one domain with room).
    """
    check_feasible(tokens, budget, bounds)
    hi = caps(tokens, budget, bounds)
    lo = np.minimum(bounds.min_weight, hi)
    w = np.array(w, dtype=np.float64, copy=True)
    one = w.ndim == 1
    W = np.atleast_2d(w)
    if W.shape[1] != hi.size:
        raise ValueError(f"weights have {W.shape[1]} domains, tokens have {hi.size}")
    W[~np.isfinite(W) | (W < 0)] = 0.0
    s = W.sum(axis=1, keepdims=True)
    zero = s[:, 0] <= 0
    W[zero] = 1.0 / hi.size
    s[zero] = 1.0
    W = np.clip(W / s, lo, hi)
    act = np.nonzero(np.abs(1.0 - W.sum(axis=1)) > _TOL)[0]  # rows still off the simplex
    for _ in range(2 * hi.size + 4):  # each pass either finishes a row or pins >= 1 more domain at a bound
        if act.size == 0:
            break
        A = W[act]
        d = 1.0 - A.sum(axis=1)
        up = d[:, None] > 0
        # moving up: domains below their cap share d in proportion to their weights (uniformly when
        # those are all zero); moving down: domains above their floor give in proportion to weight
        free = np.where(up, A < hi - _TOL, A > lo + _TOL)
        fw = np.where(free, A, 0.0)
        mass = fw.sum(axis=1, keepdims=True)
        nfree = free.sum(axis=1, keepdims=True)
        share = np.where(mass > _TOL, fw / np.maximum(mass, _TOL), free / np.maximum(nfree, 1))
        A = np.clip(A + d[:, None] * share, lo, hi)
        W[act] = A
        act = act[np.abs(1.0 - A.sum(axis=1)) > _TOL]
    # final rounding residual: give it to the domain with the most room in its direction
    d = 1.0 - W.sum(axis=1)
    rows = np.nonzero(d != 0)[0]
    if rows.size:
        room = np.where(d[rows, None] > 0, hi - W[rows], W[rows] - lo)
        j = room.argmax(axis=1)
        W[rows, j] = np.clip(W[rows, j] + d[rows], lo[j], hi[j])
    return W[0] if one else W
