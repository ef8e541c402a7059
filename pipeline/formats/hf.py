"""HF `datasets` mixture from a remix dir's `hf_interleave.json`, without a script.

    from pipeline.loader import hf_mixture
    ds = hf_mixture("runs/default/remix")               # all phases, in order
    ds = hf_mixture("runs/default/remix", phase=1)      # one phase
    ds = hf_mixture("runs/default/remix", streaming=True)  # an IterableDataset

Per phase: `interleave_datasets` of the per-domain Arrow files with the recipe's probabilities and
seed and `stopping_strategy="all_exhausted_without_replacement"`, so every document of the phase
comes exactly once (each domain file holds exactly its planned samples, so the probabilities, the
domains' shares of the phase's documents, give the mixture's token shares). Phases are
concatenated in order. Needs the remix to have run with `hf` in remix.formats.
"""
from __future__ import annotations

import json
from pathlib import Path


def hf_mixture(path: str | Path, phase: int | None = None, streaming: bool = False):
    import datasets

    recipe_path = Path(path) / "hf_interleave.json"
    if not recipe_path.exists():
        raise FileNotFoundError(f"{recipe_path} not found; run remix with 'hf' in remix.formats")
    recipe = json.loads(recipe_path.read_text())
    phases = recipe["phases"]
    if phase is not None:
        phases = [p for p in phases if p["index"] == phase]
        if not phases:
            raise ValueError(f"{recipe_path}: no phase {phase}; it has {[p['index'] for p in recipe['phases']]}")
    parts = []
    for p in phases:
        dsets = [datasets.load_dataset(recipe["format"], data_files=d["data_files"], split="train", streaming=streaming)
                 for d in p["datasets"]]
        parts.append(datasets.interleave_datasets(dsets, probabilities=p["probabilities"], seed=recipe["seed"],
                                                  stopping_strategy=recipe["stopping_strategy"]))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
