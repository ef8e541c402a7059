"""MATES data influence -> `mates_influence` (score.mates): a fastText classifier distilled from the
first-order influence of a document sample on the targets' search examples under a briefly trained
proxy LM (pipeline/models/mates.py, pipeline/models/influence.py), trained once per input, targets
and settings, and applied to every document like `fasttext` (column = P(high influence)).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.errors import ModelError
from scorers import register
from scorers.base import Context, ScorerSpec, brief, cached_meta
from scorers.fasttext import FastTextScorer


def prepare(m, ctx: Context) -> dict:
    from pipeline.models import mates, train

    targets = train.load_targets(m.targets)
    s = m.model_copy(update={"eval_fraction": 0.5 if m.eval_fraction is None else m.eval_fraction})
    key = ctx.cache_key({"mates": s.model_dump(mode="json", exclude={"targets", "column"}), "targets": train.targets_digest(targets),
                         "data": ctx.input_fingerprint(), "seed": ctx.seed, "v": ctx.version})
    d = Path(ctx.models_dir) / f"mates-{key}"
    meta = cached_meta(d / "model.json", d / "model.bin")
    if meta is None:
        meta = mates.train_mates(ctx.inp, targets, d, s, seed=ctx.seed)
    return {"path": str(d / "model.bin"), "sha256": meta["sha256"], "trained": brief(meta),
            "spearman_vs_influence_held_out": meta.get("spearman_vs_influence_held_out"),
            "influence": {k: meta["influence"].get(k) for k in ("method", "check", "target_loss")}}


def build(m, entry: dict) -> FastTextScorer:
    try:
        return FastTextScorer(entry["path"], "pos", m.column)
    except ModelError:
        raise ModelError(f"scorer 'mates': cannot load the distilled influence model {entry['path']}; delete its "
                         "_models/mates-* folder so the score stage trains it again (score.mates)") from None


register(ScorerSpec("mates", prepare, build, position=70))
