"""Heuristic mixtures every search is compared against (MIXTURE.md "Baselines and caps").

- `uniform`       w_i = 1/K
- `proportional`  w_i ∝ n_i (token shares: the natural "concatenate everything" mix)
- `temperature`   w_i ∝ n_i^(1/τ) (τ=1 proportional, τ→∞ uniform; multilingual models use 1/τ≈0.3)
- `unimax`        UniMax (Chung et al. 2023): fill the budget as uniformly as possible, each domain
                  repeated at most `max_epochs` times; smallest domains are served first and the
                  leftover budget goes to the larger ones.

`baseline(...)` returns one of these passed through `constraints.project`, so floors, max_weight
and the epoch caps hold for every baseline too.
"""
from __future__ import annotations

import numpy as np

from stages.mix.constraints import Bounds, check_inputs, project

BASELINES = ("uniform", "proportional", "temperature", "unimax")


def uniform(tokens) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    return np.full(tokens.size, 1.0 / tokens.size)


def proportional(tokens) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.sum() <= 0:
        raise ValueError("proportional mixture needs at least one domain with tokens > 0")
    return tokens / tokens.sum()


def temperature(tokens, tau: float) -> np.ndarray:
    """w ∝ n^(1/τ)."""
    if not tau > 0:
        raise ValueError(f"temperature tau must be > 0, got {tau}")
    tokens = np.asarray(tokens, dtype=np.float64)
    w = np.where(tokens > 0, tokens, 0.0) ** (1.0 / tau)
    if w.sum() <= 0:
        raise ValueError("temperature mixture needs at least one domain with tokens > 0")
    return w / w.sum()


def unimax(tokens, budget: float, max_epochs: float) -> np.ndarray:
    """UniMax: domains by size ascending; the i-th gets a_i = min(B_rem / (K - i), E * n_i); w = a / B.

    If even E epochs of everything fall short of the budget, the weights sum below 1 before
    normalization; `baseline` (via `project`) then raises the one-line infeasibility error.
    """
    tokens = check_inputs(tokens, budget)
    k = tokens.size
    a = np.zeros(k)
    rem = float(budget)
    for i, d in enumerate(np.argsort(tokens, kind="stable")):
        a[d] = min(rem / (k - i), max_epochs * tokens[d])
        rem -= a[d]
    return a / float(budget)


def baseline(name: str, tokens, budget: float, bounds: Bounds = Bounds(), tau: float = 3.0) -> np.ndarray:
    """The named baseline (one of BASELINES), projected onto the constraints."""
    if name == "uniform":
        w = uniform(tokens)
    elif name == "proportional":
        w = proportional(tokens)
    elif name == "temperature":
        w = temperature(tokens, tau)
    elif name == "unimax":
        w = unimax(tokens, budget, bounds.max_epochs)
    else:
        raise ValueError(f"unknown baseline {name!r}; use one of {list(BASELINES)}")
    return project(w, tokens, budget, bounds)
