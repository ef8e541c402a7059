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

from pipeline import io
from pipeline.errors import ModelError, describe
from pipeline.models.embedder import load_target_embeddings, topk_mean
from scorers import register
from scorers.base import Context, ScorerSpec, model_id

class BenchSimScorer:
    name = "bench_sim"

    def __init__(self, targets_npz: str | Path, names: list[str], k: int = 5, model: str | None = None,
                 max_tokens: int = 128, batch_size: int = 64, device: str | None = None, resolved: dict | None = None):
        from pipeline.models.embedder import Embedder, for_task

        self.targets_npz, self.names, self.k = str(targets_npz), list(names), int(k)
        self.embed_args = dict(model=model, max_tokens=max_tokens, batch_size=batch_size, device=device)
        try:
            self._targets = load_target_embeddings(self.targets_npz)
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


def prepare(b, ctx: Context) -> dict:
    """The target sets' embeddings, computed once per targets, model and precision."""
    from pipeline.models import embedder as E
    from pipeline.models import train
    from pipeline.models.embedder import save_target_embeddings

    targets = train.load_targets(b.targets)
    resolved = E.resolve()  # once, here: every task embeds with the same precision and device
    emb = E.for_task(b.model, b.max_tokens, b.docs_per_forward, resolved)
    key = ctx.cache_key({"targets": train.targets_digest(targets), "model": model_id(emb.model_path), "max_tokens": b.max_tokens,
                         "resolved": resolved, "v": ctx.version})
    path = Path(ctx.models_dir) / f"bench-{key}.npz"
    if not path.exists():
        save_target_embeddings(path, {name: emb.encode([t for _, t in rows]) for name, rows in targets.items()})
    return {"path": str(path), "names": list(targets), "sha256": io.sha256_file(path), "resolved": resolved,
            "examples": {k: len(v) for k, v in targets.items()}}


def build(b, m: dict) -> BenchSimScorer:
    return BenchSimScorer(m["path"], m["names"], b.k, b.model, b.max_tokens, b.docs_per_forward, resolved=m["resolved"])


register(ScorerSpec("bench_sim", prepare, build, position=50))
