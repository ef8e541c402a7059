"""Regressors from mixture weights to proxy loss (RegMix / CLIMB).

`Predictor("lightgbm")` follows the published settings (CLIMB tutorial / RegMix): LightGBM
regression, lr 0.01, up to 1000 trees, reg_alpha = reg_lambda = 1, max_depth 4, min_child_samples 5,
early stopping on held-out runs. Adapted for the few dozen proxy runs a small machine affords:

- min_child_samples = clamp(n // 4, 2, 5) and min_data_in_bin = 1, so trees can split at all;
- the target is standardized (z-scores), else the L1/L2 leaf penalties zero every leaf when a
  few dozen losses differ by ~0.01;
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
                 n_estimators: int = 1000, n_estimators_small: int = 300, patience: int = 50,
                 min_iter: int = 100):
        if kind not in KINDS:
            raise ValueError(f"unknown predictor {kind!r}; use one of {list(KINDS)}")
        self.kind, self.seed = kind, int(seed)
        self.learning_rate, self.n_estimators = learning_rate, n_estimators
        self.n_estimators_small, self.patience, self.min_iter = n_estimators_small, patience, min_iter
        self.rho: float | None = None
        self.n_iter: int | None = None
        self.model = None
        self.y_mu, self.y_sd = 0.0, 1.0

    # -- lightgbm --------------------------------------------------------------------------
    def _params(self, n: int) -> dict:
        return dict(objective="regression", learning_rate=self.learning_rate, max_depth=4, num_leaves=15,
                    lambda_l1=1.0, lambda_l2=1.0, min_data_in_leaf=int(np.clip(n // 4, 2, 5)),
                    min_sum_hessian_in_leaf=1e-3, min_data_in_bin=1, feature_pre_filter=False,
                    deterministic=True, force_row_wise=True, num_threads=1, verbose=-1, seed=self.seed)

    def _cv_lgb(self, W, y) -> tuple[np.ndarray, int]:
        """5-fold CV, early-stopped on the mean held-out l2: out-of-fold predictions, best iteration."""
        import lightgbm as lgb

        n = len(y)
        folds = [(np.setdiff1d(np.arange(n), held_out), held_out) for held_out in _folds(n, self.seed)]
        res = lgb.cv(self._params(n - len(folds[0][1])), lgb.Dataset(W, y, free_raw_data=False),
                     num_boost_round=self.n_estimators, folds=folds, metrics="l2", seed=self.seed,
                     callbacks=[lgb.early_stopping(self.patience, verbose=False)], return_cvbooster=True)
        best = len(res["valid l2-mean"])
        oof = np.empty(n)
        for (_, held_out), b in zip(folds, res["cvbooster"].boosters):
            oof[held_out] = b.predict(W[held_out], num_iteration=best)
        return oof, best

    # -- public ----------------------------------------------------------------------------
    def fit(self, W, y) -> "Predictor":
        W = np.asarray(W, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if W.ndim != 2 or y.shape != (W.shape[0],):
            raise ValueError(f"fit needs W (n, K) and y (n,), got {W.shape} and {y.shape}")
        if len(y) < 2 or not np.all(np.isfinite(W)) or not np.all(np.isfinite(y)):
            raise ValueError(f"fit needs >= 2 runs with finite weights and losses, got {len(y)}")
        n = len(y)
        self.rho = self.n_iter = None
        # standardized target: the L1/L2 leaf penalties (1.0, tuned on hundreds of runs) would
        # otherwise zero every leaf when a dozen losses differ by ~0.01
        self.y_mu, self.y_sd = float(y.mean()), float(y.std()) or 1.0
        y = (y - self.y_mu) / self.y_sd
        if self.kind == "linear":
            if n >= MIN_RHO_RUNS:
                oof = np.empty(n)
                for held_out in _folds(n, self.seed):
                    train_rows = np.setdiff1d(np.arange(n), held_out)
                    oof[held_out] = _Linear().fit(W[train_rows], y[train_rows]).predict(W[held_out])
                self.rho = spearman(oof, y)
            self.model = _Linear().fit(W, y)
            return self
        import lightgbm as lgb

        self.n_iter = self.n_estimators_small
        if n >= MIN_RHO_RUNS:
            oof, best = self._cv_lgb(W, y)
            self.rho = spearman(oof, y)
            self.n_iter = max(best, self.min_iter)
        self.model = lgb.train(self._params(n), lgb.Dataset(W, y), num_boost_round=self.n_iter)
        return self

    def predict(self, W) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("Predictor.predict called before fit")
        W = np.asarray(W, dtype=np.float64)
        one = W.ndim == 1
        out = np.asarray(self.model.predict(np.atleast_2d(W)), dtype=np.float64) * self.y_sd + self.y_mu
        return out[0] if one else out
