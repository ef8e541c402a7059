"""BETR (Mizrahi et al. 2025, "Language Models Improve When Pretraining Data Matches Target Tasks"):
rank documents by how similar they are to the target tasks' examples, cheaply at corpus scale.

  1. embed the target examples (only the `search` part of each set: the part `evaluate` holds out
     is never used to choose data) and a seeded sample of documents (all-MiniLM-L6-v2, offline);
  2. a document's similarity = mean over target sets of the mean cosine of its k nearest examples;
  3. label the sample: the top `top` share positive, the bottom `bottom` share negative; train a
     fastText classifier on those labels (pipeline.models.train.train_fasttext);
  4. the score stage scores every document with it (column `betr` = P(positive)): embedding the
     whole corpus is what this avoids (fastText reads ~10^4 docs/s per core, MiniLM ~10^2 on CPU).

Quality of the distillation: Spearman rho between the classifier's score and the embedding
similarity on held-out sample documents (not used for labels), recorded in the model's meta.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from pipeline.models import train


def split_mask(name: str, ids: list[str], eval_fraction: float) -> np.ndarray:
    """True = the example is held out for evaluation. A hash of (set name, example id), so the split
    is stable when examples are added; the mix stage splits with the same function."""
    u = np.array([int(hashlib.sha256(f"{name}\0{i}".encode()).hexdigest()[:8], 16) / 2**32 for i in ids])
    return u < eval_fraction if eval_fraction > 0 else np.zeros(len(ids), bool)


def search_part(targets: dict[str, list[tuple[str, str]]], eval_fraction: float) -> dict[str, list[str]]:
    return {name: [t for (_, t), held in zip(rows, split_mask(name, [i for i, _ in rows], eval_fraction)) if not held]
            for name, rows in targets.items()}


def similarity(docs: np.ndarray, targets: dict[str, np.ndarray], k: int) -> np.ndarray:
    """Mean over target sets of the mean cosine of each document's k most similar examples."""
    from pipeline.models.embedder import topk_mean

    return np.mean([topk_mean(docs @ t.T, min(k, len(t))) for t in targets.values()], axis=0)


def train_betr(inp: str | Path, targets: dict[str, list[tuple[str, str]]], out_dir: str | Path, embedder, *, sample_docs: int,
               top: float, bottom: float, k: int, eval_fraction: float, params, seed: int = 0, held_out: float = 0.2) -> dict:
    """Train the BETR classifier into out_dir (model.bin, model.json); returns its meta."""
    search = search_part(targets, eval_fraction)
    empty = [n for n, v in search.items() if not v]
    if empty:
        raise ValueError(f"score.betr: target set(s) {empty} have no search examples (eval_fraction {eval_fraction})")
    temb = {n: embedder.encode(v) for n, v in search.items()}
    docs = train.sample_docs(train.iter_docs(inp), sample_docs, seed)
    if len(docs) < 20:
        raise ValueError(f"score.betr: {inp} has {len(docs)} documents; need at least 20 to train the ranker")
    sim = similarity(embedder.encode([d.text for d in docs]), temb, k)
    # sample_docs is already in a seeded random order: its first `held_out` share is held out
    return train.distil_fasttext(docs, sim, out_dir, params, top=top, bottom=bottom, seed=seed, held_out=held_out,
                                 agreement_key="spearman_vs_embedding_held_out", data_info={
        "method": "betr", "input": str(inp), "sample_docs": len(docs), "top": top, "bottom": bottom, "k": k,
        "targets": {n: len(v) for n, v in search.items()}, "eval_fraction": eval_fraction})
