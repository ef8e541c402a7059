"""fastText quality classifier -> `fasttext_score` (score.fasttext): P(positive label) of each document
under a classifier given by path or trained by the score stage (labels from datasets, from another
score column, or PreSelect: pipeline/models/train.py). The model and its fast scoring path are in
pipeline/models/fasttext.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.errors import ModelError, describe
from pipeline.models.fasttext import load_model
from scorers import register
from scorers.base import Context, ScorerSpec, brief, cached_meta


class FastTextScorer:
    """Adds `column` (default `fasttext_score`): P(positive) under the classifier at `model_path`
    (float32; NaN when fastText would predict nothing, i.e. no known word and no </s> in the model)."""

    name = "fasttext"

    def __init__(self, model_path: str, positive_label: str = "pos", column: str = "fasttext_score"):
        self.model_path, self.positive_label, self.column = str(model_path), positive_label, column
        try:
            self._model = load_model(self.model_path, self.positive_label)
        except Exception as e:
            raise ModelError(f"scorer 'fasttext': cannot load model {self.model_path} ({describe(e)}); "
                             "give a fastText classifier .bin (score.fasttext.model) or train one (score.fasttext.train)") from None

    @property
    def output_columns(self) -> dict[str, str]:
        return {self.column: "float32"}

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        p = self._model.p_positive(texts)
        return {self.column: np.clip(p, 0.0, 1.0).astype(np.float32)}


def prepare(ft, ctx: Context) -> dict:
    if ft.model is not None:
        return {"path": str(ft.model), "sha256": io.sha256_file(ft.model)}
    from pipeline.models import train

    t = ft.train
    srcs = [x.path for x in t.positive + t.negative] + ([t.from_column.path] if t.from_column else [None] if t.preselect else [])
    key = ctx.cache_key({"train": t.model_dump(mode="json"), "data": [ctx.data_fingerprint(p) for p in srcs], "seed": ctx.seed,
                         "v": ctx.version})
    d = Path(ctx.models_dir) / f"fasttext-{key}"
    meta = cached_meta(d / "model.json", d / "model.bin")
    if meta is None:
        meta = train.fasttext_from_config(t, d, ctx.inp, ctx.seed)
    return {"path": str(d / "model.bin"), "sha256": meta["sha256"], "trained": brief(meta)}


register(ScorerSpec("fasttext", prepare, lambda ft, m: FastTextScorer(m["path"], ft.positive_label, ft.column), position=20))
