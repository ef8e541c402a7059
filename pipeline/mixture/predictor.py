"""Regressors from mixture weights to proxy loss (RegMix / CLIMB).

`Predictor("lightgbm")` follows the published settings (CLIMB tutorial / RegMix): LightGBM
regression, lr 0.01, up to 1000 trees, reg_alpha = reg_lambda = 1, max_depth 4, min_child_samples 5,
early stopping on held-out runs. Adapted for the few dozen proxy runs a small machine affords:

- min_child_samples = clamp(n // 4, 2, 5) and min_data_in_bin = 1, so trees can split at all;
- with n >= 10 runs, 5-fold cross-validation (instead of one 90/10 split, which would hold out
  one or two runs): every fold early-stops on its held-out runs (patience 50), the out-of-fold
  predictions give `rho` (Spearman, RegMix's fit criterion), and the final model is refit on all
  runs with the median best iteration count. With n < 10: no validation, `n_estimators_small`
  trees, `rho = None`.
- deterministic=True, num_threads=1, force_row_wise, fixed seed: the same runs give bit-identical
  predictions, which the searches rely on to re-propose the same mixtures on resume.

`Predictor("linear")`: ridge regression on [w, log(w + 1e-3)] (standardized), the ridge strength
picked by exact leave-one-out error over a fixed grid. Smooth and sensible with very few runs, and
the log term models diminishing returns of a domain's share.
"""
from __future__ import annotations

import numpy as np

KINDS = ("lightgbm", "linear")
MIN_RHO_RUNS = 10
FOLDS = 5


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); 0.0 when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else 0.0


def _folds(n: int, seed: int, k: int = FOLDS) -> list[np.ndarray]:
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    return [perm[i::k] for i in range(k)]


class _Linear:
    ALPHAS = 10.0 ** np.arange(-4, 4.5, 0.5)

    def __init__(self):
        self.coef = self.mu = self.sd = None
        self.intercept = 0.0
        self.alpha = None

    @staticmethod
    def features(W: np.ndarray) -> np.ndarray:
        return np.hstack([W, np.log(W + 1e-3)])

    def fit(self, W, y):
        X = self.features(W)
        self.mu, self.sd = X.mean(0), X.std(0)
        self.sd[self.sd < 1e-12] = 1.0
        Z = (X - self.mu) / self.sd
        self.intercept = float(y.mean())
        yc = y - self.intercept
        # SVD once, then the ridge solution and its hat-matrix diagonal for every alpha
        U, s, Vt = np.linalg.svd(Z, full_matrices=False)
        Uty = U.T @ yc
        best = None
        n = len(y)
        for a in self.ALPHAS:
            f = s**2 / (s**2 + a)
            resid = yc - U @ (f * Uty)
            h = (U**2 * f).sum(1) + 1.0 / n  # + intercept leverage
            loo = float(np.mean((resid / np.maximum(1 - h, 1e-9)) ** 2))
            if best is None or loo < best[0] - 1e-15:
                best = (loo, a)
        self.alpha = float(best[1])
        self.coef = Vt.T @ (s / (s**2 + self.alpha) * Uty)
        return self

    def predict(self, W):
        return ((self.features(W) - self.mu) / self.sd) @ self.coef + self.intercept


class Predictor:
    """`fit(W, y)` then `predict(W)`; `rho` = Spearman of held-out predictions (None when n < 10)."""

    def __init__(self, kind: str = "lightgbm", seed: int = 0, *, learning_rate: float = 0.01,
                 n_estimators: int = 1000, n_estimators_small: int = 300, patience: int = 50):
        if kind not in KINDS:
            raise ValueError(f"unknown predictor {kind!r}; use one of {list(KINDS)}")
        self.kind, self.seed = kind, int(seed)
        self.learning_rate, self.n_estimators = learning_rate, n_estimators
        self.n_estimators_small, self.patience = n_estimators_small, patience
        self.rho: float | None = None
        self.n_iter: int | None = None
        self.model = None

    # -- lightgbm --------------------------------------------------------------------------
    def _lgb(self, n: int, n_estimators: int):
        import lightgbm as lgb

        return lgb.LGBMRegressor(
            learning_rate=self.learning_rate, n_estimators=n_estimators, max_depth=4, num_leaves=15,
            reg_alpha=1.0, reg_lambda=1.0, min_child_samples=int(np.clip(n // 4, 2, 5)),
            min_child_weight=1e-3, min_data_in_bin=1, subsample=1.0, colsample_bytree=1.0,
            deterministic=True, force_row_wise=True, num_threads=1, verbose=-1, random_state=self.seed)

    def _fit_lgb_fold(self, Wtr, ytr, Wva, yva):
        import lightgbm as lgb

        m = self._lgb(len(ytr), self.n_estimators)
        m.fit(Wtr, ytr, eval_set=[(Wva, yva)], eval_metric="l2",
              callbacks=[lgb.early_stopping(self.patience, first_metric_only=True, verbose=False)])
        best = m.best_iteration_ or self.n_estimators
        return m, int(best)

    # -- public ----------------------------------------------------------------------------
    def fit(self, W, y) -> "Predictor":
        W = np.asarray(W, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if W.ndim != 2 or y.shape != (W.shape[0],):
            raise ValueError(f"fit needs W (n, K) and y (n,), got {W.shape} and {y.shape}")
        if len(y) < 2 or not np.all(np.isfinite(W)) or not np.all(np.isfinite(y)):
            raise ValueError(f"fit needs >= 2 runs with finite weights and losses, got {len(y)}")
        n = len(y)
        self.rho, iters = None, []
        if n >= MIN_RHO_RUNS:
            oof = np.empty(n)
            for va in _folds(n, self.seed):
                tr = np.setdiff1d(np.arange(n), va)
                if self.kind == "linear":
                    oof[va] = _Linear().fit(W[tr], y[tr]).predict(W[va])
                else:
                    m, best = self._fit_lgb_fold(W[tr], y[tr], W[va], y[va])
                    oof[va] = m.predict(W[va], num_iteration=best)
                    iters.append(best)
            self.rho = spearman(oof, y)
        if self.kind == "linear":
            self.model = _Linear().fit(W, y)
        else:
            self.n_iter = int(np.median(iters)) if iters else self.n_estimators_small
            self.model = self._lgb(n, max(self.n_iter, 1)).fit(W, y)
        return self

    def predict(self, W) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("Predictor.predict called before fit")
        W = np.asarray(W, dtype=np.float64)
        one = W.ndim == 1
        out = np.asarray(self.model.predict(np.atleast_2d(W)), dtype=np.float64)
        return out[0] if one else out
