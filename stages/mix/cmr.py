"""Critical mixture ratio (CMR) for continual pretraining: the loss-vs-ratio law, its held-out error
and the largest domain share that keeps the general-domain loss within a tolerance.

Seed paper: Gu et al., "CMR Scaling Law: Predicting Critical Mixture Ratios for Continual
Pre-training of Language Models" (arXiv 2407.17467). The paper fits, per model size, a power law of
loss in training tokens T and mixture ratio R, and defines the critical mixture ratio as the largest
domain share whose general loss stays within a tolerance of the general-only run. It does not pin
one closed form we could copy for tiny proxies, so the law here is a documented form (6 parameters)

    L(r, T) = a + b * phi_alpha(T / T_ref) + c * (T / T_ref)^gamma * r^beta
    phi_alpha(t) = (t^(-alpha) - 1) / alpha      (-> -ln t as alpha -> 0)
    (b >= 0, alpha in [0, 4], beta in [0.1, 4], gamma in [-2, 2])

fitted separately to the general-domain validation loss and to the domain validation loss (for the
general loss c > 0 means forgetting; for the domain loss c < 0 means the domain is learnt). Why this
form: the token term is the usual data power law a' + b' T^-alpha written so that a is the loss at
r = 0 and T = T_ref (the reference the tolerance is relative to) and the log law of early training
is its alpha = 0 limit (with a + b' T^-alpha, small proxies drove alpha to 0 and a, b' to +-1700);
the ratio term is a power of the share, 0 at r = 0, whose size may grow with tokens (gamma): on the
bundled corpus the general-loss penalty of r = 0.8 grew from 0.32 to 0.52 nats from 25k to 100k
tokens, which an additive law (gamma = 0) missed, so the critical ratio depends on T as in the
paper. The critical ratio has a closed form:

    L_g(r, T*) <= (1 + tol) * L_g(0, T*)  <=>  c t*^gamma r^beta <= tol * (a + b phi_alpha(t*))
    r* = min(1, (tol * L_g(0, T*) / (c t*^gamma))^(1/beta))  when c > 0, else 1 (no forgetting).

Pure numpy + scipy: no torch, no IO.
"""
from __future__ import annotations

import numpy as np

PARAMS = ("a", "b", "alpha", "c", "beta", "gamma")
FORM = "L(r, T) = a + b * ((T/T_ref)^(-alpha) - 1) / alpha + c * (T/T_ref)^gamma * r^beta  (alpha -> 0: -b ln(T/T_ref))"
_LO = np.array([-np.inf, 0.0, 0.0, -np.inf, 0.1, -2.0])
_HI = np.array([np.inf, np.inf, 4.0, np.inf, 4.0, 2.0])
_STARTS = ((0.1, 0.5), (0.1, 1.0), (0.1, 2.0), (1.0, 0.5), (1.0, 1.0), (1.0, 2.0))  # (alpha, beta); gamma starts at 0


def phi(alpha: float, t) -> np.ndarray:
    """(t^-alpha - 1) / alpha, and its limit -ln t at alpha = 0: 0 at t = 1, falling in t."""
    t = np.asarray(t, np.float64)
    if abs(alpha) < 1e-8:
        return -np.log(t)
    return np.expm1(-alpha * np.log(t)) / alpha


def law(theta, r, t) -> np.ndarray:
    """The law at ratios r and relative token counts t = T / T_ref (arrays of one shape)."""
    a, b, alpha, c, beta, gamma = theta
    r, t = np.asarray(r, np.float64), np.asarray(t, np.float64)
    return a + b * phi(alpha, t) + c * t ** gamma * np.where(r > 0, np.maximum(r, 1e-300) ** beta, 0.0)


def _solve(r, t, y, x0):
    from scipy.optimize import least_squares

    res = least_squares(lambda th: law(th, r, t) - y, np.clip(x0, _LO + 1e-9, _HI - 1e-9), bounds=(_LO, _HI),
                        method="trf", x_scale="jac", max_nfev=2000)
    return res.x, float(np.sum(res.fun ** 2))


def fit(r, t, y, x0=None) -> np.ndarray:
    """Least-squares fit of the law to points (r, t, y). Deterministic: a fixed set of starts (or
    the given start x0 only, for bootstrap refits), the lowest squared error wins."""
    r, t, y = (np.asarray(v, np.float64) for v in (r, t, y))
    if not (r.shape == t.shape == y.shape) or r.ndim != 1:
        raise ValueError(f"fit needs three 1-d arrays of one length, got {r.shape}, {t.shape}, {y.shape}")
    if len(y) < len(PARAMS) + 1 or not np.all(np.isfinite(y)):
        raise ValueError(f"fit needs at least {len(PARAMS) + 1} finite losses, got {len(y)}")
    if x0 is not None:
        return _solve(r, t, y, np.asarray(x0, np.float64))[0]
    # start values from the data: the spread over tokens at r = 0 and over ratios at the largest T
    base = y[r == r.min()]
    amp_t = float(np.ptp(base)) if len(base) > 1 else float(np.std(y))
    top = t == t.max()
    order = np.argsort(r[top])
    amp_r = float(y[top][order][-1] - y[top][order][0]) if top.sum() > 1 else 0.0
    lowest = np.flatnonzero(r == r.min())
    a0 = float(y[lowest[np.argmax(t[lowest])]])  # the reference: the lowest ratio at the most tokens
    best = None
    for alpha, beta in _STARTS:
        x, cost = _solve(r, t, y, np.array([a0, max(amp_t, 1e-3), alpha, amp_r or 1e-3, beta, 0.0]))
        if best is None or cost < best[1] - 1e-15:
            best = (x, cost)
    return best[0]


def leave_one_out(r, t, y) -> dict:
    """Leave-one-point-out error: each grid point predicted by the law fitted on the others."""
    r, t, y = (np.asarray(v, np.float64) for v in (r, t, y))
    pred = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred[i] = law(fit(r[keep], t[keep], y[keep]), r[i:i + 1], t[i:i + 1])[0]
    err = pred - y
    return {"points": int(len(y)), "rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
            "max_abs": float(np.max(np.abs(err))), "mean_rel": float(np.mean(np.abs(err) / np.abs(y))),
            "predicted": [float(v) for v in pred]}


def critical_ratio(theta, tolerance: float, t_star: float = 1.0) -> float:
    """Largest r in [0, 1] with L(r, t*) <= (1 + tolerance) * L(0, t*) under the law `theta`."""
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance must be in (0, 1), got {tolerance}")
    a, b, alpha, c, beta, gamma = (float(v) for v in theta)
    ref = a + b * float(phi(alpha, t_star))
    eff = c * t_star ** gamma
    if eff <= 0:
        return 1.0
    if ref <= 0:
        return 0.0
    return float(min(1.0, (tolerance * ref / eff) ** (1.0 / beta)))


def grid_ratio(ratios, losses, tolerance: float) -> float:
    """Model-free check: the largest grid ratio whose measured loss is within tolerance of r = 0
    (every smaller grid ratio too), at one token count."""
    ratios, losses = np.asarray(ratios, np.float64), np.asarray(losses, np.float64)
    order = np.argsort(ratios)
    ratios, losses = ratios[order], losses[order]
    if ratios[0] != 0:
        raise ValueError("the grid needs the ratio 0 (the general-only reference)")
    ok = losses <= (1 + tolerance) * losses[0]
    bad = np.flatnonzero(~ok)
    return float(ratios[-1] if not len(bad) else ratios[bad[0] - 1])


def bootstrap(r, t, cells: np.ndarray, theta, tolerance: float, t_star: float, n: int, seed: int) -> dict:
    """A 95 % interval of r* by refitting on resampled data.

    `cells` is (points, seeds): the losses of every grid point's proxy runs. With >= 2 seeds the
    seeds are resampled with replacement within each point (the proxy's seed noise, as measured);
    with one seed the residuals of the fit are resampled (residual bootstrap). Refits start from the
    point estimate `theta`."""
    r, t, cells = np.asarray(r, np.float64), np.asarray(t, np.float64), np.asarray(cells, np.float64)
    rng = np.random.default_rng([int(seed), 0xC3A])
    y = cells.mean(axis=1)
    fitted = law(theta, r, t)
    resid = y - fitted
    resid = resid - resid.mean()
    kind = "seeds" if cells.shape[1] >= 2 else "residuals"
    out = np.empty(n)
    for k in range(n):
        if kind == "seeds":
            pick = rng.integers(0, cells.shape[1], size=cells.shape)
            yb = np.take_along_axis(cells, pick, axis=1).mean(axis=1)
        else:
            yb = fitted + rng.choice(resid, size=len(resid), replace=True)
        out[k] = critical_ratio(fit(r, t, yb, x0=theta), tolerance, t_star)
    lo, hi = np.percentile(out, [2.5, 97.5])
    return {"low": float(lo), "high": float(hi), "level": 0.95, "replicates": int(n), "resample": kind,
            "median": float(np.median(out)), "share_at_1": float(np.mean(out >= 1.0))}


def params(theta, t_ref: int) -> dict:
    return {**{k: float(v) for k, v in zip(PARAMS, theta)}, "T_ref": int(t_ref)}
