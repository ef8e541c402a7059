"""Paired differences over seeds with a t interval: is an arm really better than another?

One proxy run per (arm, seed); seed s of every arm shares the proxy's initialization and data-order
seed, so the per-seed differences cancel that noise (a paired comparison). The relative difference
of arm a to reference r at seed s is (L_a,s - L_r,s) / L_r,s; we report its mean, sample std and the
95 % Student-t interval of the mean. With one seed there is no interval (std and bounds are None)
and nothing is called significant: one seed's 1-2 % is noise until the spread says otherwise.
"""
from __future__ import annotations

import math

import numpy as np

T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131}  # Student t, two-sided 95 %, by degrees of freedom


def t975(df: int) -> float:
    return T975.get(df, 1.96 + 2.4 / df)  # beyond the table: within 0.2 % of the exact quantile


def paired(arm: list[float], ref: list[float]) -> dict:
    """{mean, std, lo, hi, n, significant} of the relative difference (arm - ref) / ref, paired by seed."""
    a, r = np.asarray(arm, np.float64), np.asarray(ref, np.float64)
    if a.shape != r.shape or a.size == 0:
        raise ValueError(f"paired: need the same seeds on both sides, got {a.size} and {r.size}")
    d = (a - r) / r
    n = int(d.size)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "std": None, "lo": None, "hi": None, "n": n, "significant": False}
    std = float(d.std(ddof=1))
    half = t975(n - 1) * std / math.sqrt(n)
    lo, hi = mean - half, mean + half
    return {"mean": mean, "std": std, "lo": lo, "hi": hi, "n": n, "significant": bool(lo > 0 or hi < 0)}


def describe(x: dict | None) -> str:
    """'-2.10 % [-3.02, -1.18]' or '+0.40 % [-0.9, 1.7] n.s.' (percent)."""
    if not x:
        return "-"
    s = f"{100 * x['mean']:+.2f} %"
    if x.get("lo") is None:
        return s + " (1 seed)"
    s += f" [{100 * x['lo']:+.2f}, {100 * x['hi']:+.2f}]"
    return s if x["significant"] else s + " n.s."
