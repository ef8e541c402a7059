"""BETR (benchmark-targeted ranking) -> `betr` (score.betr): a fastText classifier distilled from the
embedding similarity of a document sample to the targets' search examples (pipeline/models/betr.py),
trained once per input, targets and settings, and applied to every document like `fasttext`.
"""
from __future__ import annotations

from pathlib import Path

from scorers import register
from scorers.base import Context, ScorerSpec, brief, cached_meta, model_id
from scorers.fasttext import FastTextScorer


def prepare(b, ctx: Context) -> dict:
    from pipeline.models import betr
    from pipeline.models import embedder as E
    from pipeline.models import train

    targets = train.load_targets(b.targets)
    frac = 0.5 if b.eval_fraction is None else b.eval_fraction
    resolved = E.resolve()
    emb = E.for_task(b.model, b.max_tokens, b.docs_per_forward, resolved)
    key = ctx.cache_key({"betr": b.model_dump(mode="json", exclude={"targets", "column"}), "targets": train.targets_digest(targets),
                         "eval_fraction": frac, "data": ctx.input_fingerprint(), "model": model_id(emb.model_path),
                         "resolved": resolved, "seed": ctx.seed, "v": ctx.version})
    d = Path(ctx.models_dir) / f"betr-{key}"
    meta = cached_meta(d / "model.json", d / "model.bin")
    if meta is None:
        meta = betr.train_betr(ctx.inp, targets, d, emb, sample_docs=b.sample_docs, top=b.top, bottom=b.bottom, k=b.k,
                               eval_fraction=frac, params=b.params, seed=ctx.seed)
    return {"path": str(d / "model.bin"), "sha256": meta["sha256"], "trained": brief(meta),
            "spearman_vs_embedding_held_out": meta.get("spearman_vs_embedding_held_out")}


register(ScorerSpec("betr", prepare, lambda b, m: FastTextScorer(m["path"], "pos", b.column), position=30))
