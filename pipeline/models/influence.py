"""Data influence of documents on a target batch (MATES: Yu et al. 2024, "MATES: Model-Aware Data
Selection for Efficient Pretraining with Data Influence Models"), measured on the proxy LM.

MATES probes the *oracle* influence of a document x on the current model: take one training step on
x alone, measure the change of the loss on a reference (target) batch, restore the model. It then
fits a small "data influence model" on those probes and lets it score the whole pool. Here:

  1. a proxy LM (pipeline/models/proxy_lm.py, TinyGPT) is trained briefly on a warm-up sample of the
     corpus (disjoint from the probed documents), on a BPE trained on both samples;
  2. each probed document's first `doc_tokens` tokens (non-overlapping windows of ctx+1) give its
     loss gradient g_x; the target batch (each target set's search part, its first `target_tokens`
     tokens) gives g_T, the gradient of the target loss: the mean over target sets of their mean
     token loss (`mean`), or (`balanced`) each set weighted by 1 / the norm of its own gradient at
     the saved state, so that one set (code, whose gradients are largest here) cannot set the
     direction alone;
  3. influence(x) = g_x . g_T (method `gradient`): the first-order estimate of how much one SGD step
     of size lr on x lowers the target loss, divided by lr: (L_T(theta) - L_T(theta - lr g_x)) / lr
     = g_x . g_T + O(lr). Method `probe` computes that left-hand side exactly (the step, the target
     loss, restore). Higher = the document helps the target more.

Why the gradient by default: it needs one forward/backward per document and one target gradient per
run; the probe needs an extra forward of the whole target batch per document and is a difference of
two nearly equal fp32 losses. `spearman_first_order_vs_probe` (computed on `check_docs` documents)
says how well the estimate ranks like the probe. The probe takes an SGD step (not AdamW): a single
AdamW step depends on optimizer moments the warm-up would have to hand over, and from a fresh state
it is sign(g), whose first-order term is not a dot product; with SGD the dot product is the exact
first-order term of the probe, so the check measures only the curvature the estimate ignores.

Determinism: fp32 on CPU, one torch thread, documents one at a time in a fixed order (no batch
composition in any number), seeded warm-up (proxy_lm.train_proxy is bitwise reproducible).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.models import proxy_lm as P

CPU = torch.device("cpu")




def doc_windows(ids: np.ndarray, lengths: np.ndarray, doc_tokens: int, ctx: int) -> list[np.ndarray | None]:
    """Per document (ids = all documents' tokens concatenated, no EOS): its first `doc_tokens` tokens
    as non-overlapping (n, ctx+1) int64 windows; one shorter window when it has fewer than ctx+1
    tokens; None under 2 tokens (nothing to predict)."""
    out, pos, w = [], 0, ctx + 1
    for n in lengths.tolist():
        t = np.asarray(ids[pos:pos + min(n, doc_tokens)], dtype=np.int64)
        pos += n
        if len(t) >= w:
            out.append(t[: (len(t) // w) * w].reshape(-1, w))
        elif len(t) >= 2:
            out.append(t.reshape(1, -1))
        else:
            out.append(None)
    return out


@dataclass
class Influence:
    """One trained proxy and its target batch: gradients, first-order influences and exact probes."""

    model: torch.nn.Module
    targets: dict[str, np.ndarray]  # name -> (n, ctx+1) int64 windows
    weighting: str = "mean"  # mean of the sets' losses, or balanced: each set weighted by 1/|its gradient|

    def __post_init__(self):
        if self.weighting not in ("mean", "balanced"):
            raise ValueError(f"target weighting must be mean or balanced, not {self.weighting!r}")
        self.model.eval()  # no dropout in TinyGPT; eval() for clarity
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.weights = torch.full((len(self.targets),), 1.0 / len(self.targets))
        if self.weighting == "balanced":  # fixed at the saved state, so the probe's target loss is the same function
            with P.threads(1):
                norms = torch.stack([torch.linalg.vector_norm(self._flat_grad(P.window_loss(self.model, torch.from_numpy(w), CPU)))
                                     for w in self.targets.values()])
            self.weights = (1.0 / norms) / (1.0 / norms).sum()
        self._gt: torch.Tensor | None = None
        self._l0: float | None = None  # target loss at the saved state (the probe's "before")

    def target_loss(self) -> float:
        """Weighted mean over target sets of their mean token cross-entropy (nats)."""
        with torch.no_grad():
            return float(self._target_loss())

    def _target_loss(self) -> torch.Tensor:
        losses = [P.window_loss(self.model, torch.from_numpy(w), CPU) for w in self.targets.values()]
        return (torch.stack(losses) * self.weights).sum()

    def _flat_grad(self, loss: torch.Tensor) -> torch.Tensor:
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, self.params)])

    def target_grad(self) -> torch.Tensor:
        if self._gt is None:
            self._gt = self._flat_grad(self._target_loss())
        return self._gt

    def doc_grad(self, win: np.ndarray) -> torch.Tensor:
        return self._flat_grad(P.window_loss(self.model, torch.from_numpy(win), CPU))

    def first_order(self, win: np.ndarray | None) -> float:
        """g_x . g_T (NaN for a document without windows)."""
        if win is None:
            return float("nan")
        return float(torch.dot(self.doc_grad(win), self.target_grad()))

    def probe(self, win: np.ndarray | None, lr: float) -> float:
        """(L_T before - L_T after one SGD step of size lr on the document) / lr; the model is restored."""
        if win is None:
            return float("nan")
        if self._l0 is None:
            self._l0 = self.target_loss()
        g = self.doc_grad(win)
        saved = [p.detach().clone() for p in self.params]
        try:
            with torch.no_grad():
                off = 0
                for p in self.params:
                    n = p.numel()
                    p.sub_(lr * g[off:off + n].view_as(p))
                    off += n
            after = self.target_loss()
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)
        return (self._l0 - after) / lr


def warm_proxy(stream: np.ndarray, spec: P.ProxySpec, seed: int) -> tuple[torch.nn.Module, dict]:
    """The proxy trained on `stream` (one token stream) for spec.tokens tokens; returns (model, info)."""
    box: dict = {}
    res = P.train_proxy([stream], [1.0], {}, spec, seed, on_step=lambda step, m: box.setdefault("model", m))
    return box["model"], {k: res[k] for k in ("tokens", "steps", "seconds", "params")}


def influences(infl: Influence, windows: list[np.ndarray | None], method: str, probe_lr: float,
               check_docs: int = 0) -> tuple[np.ndarray, dict]:
    """Influence of every document (`method` gradient or probe; NaN where a document has no tokens),
    and info: seconds, and on the first `check_docs` documents with windows the Spearman rho of the
    first-order estimate against the probe."""
    from pipeline.models.train import spearman

    if method not in ("gradient", "probe"):
        raise ValueError(f"influence method must be gradient or probe, not {method!r}")
    with P.threads(1):
        t0 = time.perf_counter()
        one = (lambda w: infl.first_order(w)) if method == "gradient" else (lambda w: infl.probe(w, probe_lr))
        vals = np.array([one(w) for w in windows], dtype=np.float64)
        info = {"method": method, "seconds": round(time.perf_counter() - t0, 3),
                "target_loss": round(infl.target_loss(), 5)}
        if check_docs:
            t1 = time.perf_counter()
            idx = [i for i, w in enumerate(windows) if w is not None][:check_docs]
            fo = np.array([infl.first_order(windows[i]) for i in idx])
            pr = np.array([infl.probe(windows[i], probe_lr) for i in idx])
            info["check"] = {"docs": len(idx), "probe_lr": probe_lr, "spearman_first_order_vs_probe": spearman(fo, pr),
                             "seconds": round(time.perf_counter() - t1, 3)}
    return vals, info
