"""Mixture search cost and quality on synthetic objectives (no proxies trained).

    python bench/mixture.py [--k 6,64] [--candidates 100000] [--seeds 3]

Per K: time of `sample_mixtures` + projection for `--candidates` draws, then RegMix (24 runs) and
CLIMB (16/8/4) with the SearchConfig defaults (top_k 128) for each predictor, on
loss(w) = 2 - 1.2*w[t] + 0.3*sum(w^2) + deterministic noise, t = a small-ish domain. Printed:
wall seconds (search overhead only), weight on t, true loss of the result vs uniform / proportional.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from stages.mix import Bounds, baseline, climb, regmix, sample_mixtures  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", default="6,64")
    ap.add_argument("--candidates", type=int, default=100_000)
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    for k in map(int, a.k.split(",")):
        rng = np.random.default_rng(0)
        tokens = rng.lognormal(15, 1, k).round()
        budget = tokens.sum() / 2
        t = int(np.argsort(tokens)[k // 3])

        def loss(W, t=t):
            W = np.atleast_2d(W)
            h = np.round(W * 1e6).astype(np.int64).sum(axis=1)
            return 2.0 - 1.2 * W[:, t] + 0.3 * (W**2).sum(axis=1) + 0.002 * np.sin(h * 1e-3)

        b = Bounds()
        t0 = time.perf_counter()
        W = sample_mixtures(np.random.default_rng(0), None, a.candidates, b, tokens, budget)
        print(f"K={k}: sample_mixtures {len(W)} x {k}: {time.perf_counter() - t0:.2f}s; cap on target {min(1, 4 * tokens[t] / budget):.3f}")
        print(f"  uniform {loss(baseline('uniform', tokens, budget, b))[0]:.4f}  proportional {loss(baseline('proportional', tokens, budget, b))[0]:.4f}")
        for pred in ("lightgbm", "linear"):
            for name, fn, kw in (("regmix", regmix, dict(runs=24)), ("climb", climb, dict(rounds=[16, 8, 4]))):
                res = []
                for seed in range(a.seeds):
                    t0 = time.perf_counter()
                    r = fn(lambda rnd, W: loss(W), None, tokens, budget, b, candidates=a.candidates, top_k=128,
                           predictor=pred, seed=seed, **kw)
                    res.append((time.perf_counter() - t0, r.weights[t], loss(r.weights)[0], r.rho))
                s, w, l, rho = map(np.array, zip(*res))
                print(f"  {name:6s} {pred:8s} {s.mean():6.1f}s  w[target] {w.mean():.3f}  true loss {l.mean():.4f} "
                      f"(min {l.min():.4f} max {l.max():.4f})  rho {np.mean(rho):.2f}")


if __name__ == "__main__":
    main()
