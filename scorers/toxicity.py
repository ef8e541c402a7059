"""Offensive language -> `toxicity` (score.toxicity): P(offensive) of each document under the
classifier that `alt-profanity-check` ships (MIT; a scikit-learn TF-IDF vectorizer + calibrated
linear SVM trained on the t-davidson hate-speech-and-offensive-language tweets and the Jigsaw
toxic-comment Wikipedia comments), or a model dir of the same layout (`score.toxicity.model`).

`score.toxicity.unit: line` scores the most offensive non-blank line instead of the whole text.
`score.toxicity.threshold` rejects documents scoring above it with reason `toxicity`; the select pass
applies it (stages/score/select.py), so changing it never re-scores. The model's files are read
with joblib (a pickle: only trusted files) without importing `profanity_check`, which would load the
model at import time and hide a broken install behind an ImportError.

Scores are per-row (sparse row times a fixed weight vector, then calibration): the same document gets
the same score in any batch. The classifier was trained on short comments; in long documents a few
offensive words are diluted by the TF-IDF normalisation, and archaic or clinical words (Shakespeare,
the KJV Bible, dictionary entries) score high: see bench/README_toxicity.md.
"""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.errors import ModelError, describe
from scorers import register
from scorers.base import Context, ScorerSpec

FILES = ("vectorizer.joblib", "model.joblib")
PACKAGE = "alt-profanity-check"
LICENSE = "MIT"


def bundled_dir() -> Path:
    """The model dir alt-profanity-check installs (ModelError, one line, when it is not installed)."""
    spec = importlib.util.find_spec("profanity_check")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"scorer 'toxicity': the {PACKAGE} package is not installed; run `make install` "
                         f"(or pip install {PACKAGE}==1.9.1), or give a model dir in score.toxicity.model")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def model_dir(model: str | Path | None) -> Path:
    """`model`, or the bundled dir; ModelError (one line) when one of its files is missing."""
    d = Path(model) if model is not None else bundled_dir()
    for f in FILES:
        if not (d / f).is_file():
            raise ModelError(f"scorer 'toxicity': model file {d / f} does not exist; "
                             + ("reinstall " + PACKAGE if model is None else "give a dir with " + " and ".join(FILES) + " (score.toxicity.model)"))
    return d


def model_sha256(d: Path) -> str:
    """One hash of the model's two files (what the score stage's cache and config hash depend on)."""
    return io.content_hash({f: io.sha256_file(d / f) for f in FILES})


class ToxicityScorer:
    """Adds `column` (default `toxicity`): P(offensive) (float32 in [0, 1])."""

    name = "toxicity"

    def __init__(self, model_path: str | Path | None, column: str = "toxicity", unit: str = "document"):
        if unit not in ("document", "line"):
            raise ValueError(f"scorer 'toxicity': unit must be document or line, not {unit!r}")
        self.column, self.unit = column, unit
        d = model_dir(model_path)
        try:
            import joblib
            from sklearn.exceptions import InconsistentVersionWarning

            with warnings.catch_warnings():
                # a model pickled by another scikit-learn may load and give other numbers: refuse it
                warnings.simplefilter("error", InconsistentVersionWarning)
                self._vectorizer = joblib.load(d / FILES[0])
                self._model = joblib.load(d / FILES[1])
            classes = list(self._model.classes_)
            self._pos = classes.index(1)
            self._vectorizer.transform(["probe"])
        except Exception as e:
            raise ModelError(f"scorer 'toxicity': cannot load model {d} ({describe(e)}); reinstall {PACKAGE} "
                             "(its scikit-learn pin must match the installed one) or fix score.toxicity.model") from None

    @property
    def output_columns(self) -> dict[str, str]:
        return {self.column: "float32"}

    def _p(self, texts: list[str]) -> np.ndarray:
        return self._model.predict_proba(self._vectorizer.transform(texts))[:, self._pos] if texts else np.zeros(0)

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        if self.unit == "document":
            p = self._p(texts)
        else:  # every non-blank line of the batch in one call, then the maximum per document
            lines, counts = [], np.zeros(len(texts), np.int64)
            for i, t in enumerate(texts):
                ls = [x for x in t.splitlines() if x.strip()] or [t]
                lines += ls
                counts[i] = len(ls)
            p = np.maximum.reduceat(self._p(lines), np.cumsum(counts) - counts) if texts else np.zeros(0)
        return {self.column: np.clip(p, 0.0, 1.0).astype(np.float32)}


def prepare(t, ctx: Context) -> dict:
    d = model_dir(t.model)
    entry = {"path": str(d), "sha256": model_sha256(d)}
    if t.model is None:
        from importlib.metadata import version

        entry.update(package=f"{PACKAGE} {version(PACKAGE)}", license=LICENSE)
    return entry


register(ScorerSpec("toxicity", prepare, lambda t, m: ToxicityScorer(m["path"], t.column, t.unit), position=70))
