"""Benchmark similarity: how close a document is to each target set in embedding space.

`bench_sim_<name>` = mean cosine similarity of the document to its k nearest examples of target set
<name> (all-MiniLM-L6-v2 by default, via `pipeline.models.embedder`), `bench_sim_max` = the largest
of them. Target embeddings are computed once per run by the score stage and saved as an .npz
(`targets_npz`); documents are embedded per batch (GPU when present). Mean of the top k (not the
single nearest) keeps one near-duplicate question from dominating; k=5 by default. The targets and
the embedder load when the scorer is built (the score stage's task set-up, before any document); one
that cannot load raises ModelError naming the path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import ModelError, describe

_TARGETS: dict[str, dict[str, np.ndarray]] = {}


def topk_mean(sims: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest values of each row (all of them when a row has fewer)."""
    if sims.shape[1] == 0:
        return np.full(sims.shape[0], np.nan, dtype=np.float32)
    k = min(k, sims.shape[1])
    part = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k:]
    return part.mean(axis=1)


def save_targets(path: str | Path, embeddings: dict[str, np.ndarray]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{name: e.astype(np.float32) for name, e in embeddings.items()})
    tmp.replace(path)


def load_targets(path: str) -> dict[str, np.ndarray]:
    t = _TARGETS.get(path)
    if t is None:
        with np.load(path, allow_pickle=False) as z:
            t = _TARGETS[path] = {name: z[name] for name in z.files}
    return t


class BenchSimScorer:
    name = "bench_sim"

    def __init__(self, targets_npz: str | Path, names: list[str], k: int = 5, model: str | None = None,
                 max_tokens: int = 128, batch_size: int = 64, device: str | None = None, resolved: dict | None = None):
        from pipeline.models.embedder import Embedder, for_task

        self.targets_npz, self.names, self.k = str(targets_npz), list(names), int(k)
        self.embed_args = dict(model=model, max_tokens=max_tokens, batch_size=batch_size, device=device)
        try:
            self._targets = load_targets(self.targets_npz)
            missing = [n for n in self.names if n not in self._targets]
            if missing:
                raise KeyError(f"no target set {missing[0]!r} in the file")
        except Exception as e:
            raise ModelError(f"scorer 'bench_sim': cannot load the target embeddings {self.targets_npz} ({describe(e)}); "
                             "re-run the score stage to rebuild them (they live in <score output>/_models)") from None
        try:
            # `resolved`: the driver's precision/device (score stage); without it (library use) the
            # embedder resolves them itself
            self._embedder = (for_task(model, max_tokens, batch_size, resolved) if resolved is not None
                              else Embedder(**self.embed_args))
            self._embedder.model  # noqa: B018 - loads the model now
        except Exception as e:
            raise ModelError(f"scorer 'bench_sim': cannot load the embedding model {model or 'all-MiniLM-L6-v2 (bundled)'} "
                             f"({describe(e)}); give a local sentence-transformers dir as score.bench_sim.model") from None

    @property
    def output_columns(self) -> dict[str, str]:
        return {**{f"bench_sim_{n}": "float32" for n in self.names}, "bench_sim_max": "float32"}

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._embedder.encode(texts)

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        targets = self._targets
        emb = self.embed(texts)
        cols = {}
        for name in self.names:
            cols[f"bench_sim_{name}"] = topk_mean(emb @ targets[name].T, self.k).astype(np.float32)
        cols["bench_sim_max"] = np.max(np.stack(list(cols.values()), axis=1), axis=1) if cols else np.full(len(texts), np.nan, np.float32)
        return cols
