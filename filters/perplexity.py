"""Per-document perplexity under an n-gram LM (CCNet): `perplexity` = 10^(-sum log10 p / tokens).

Lines are sentences (<s> ... </s>), tokens as in `pipeline.models.ngram.tokenize`, and every line
adds its </s> to the token count, as CCNet does. Two backends give the same numbers (up to float32
rounding, see tests/test_score_ngram.py):

- `kenlm`: the `kenlm` module on the model's ARPA file (C++, ~3x faster per document here);
- `numpy`: our vectorized scorer on the `.npz` twin (no compiled dependency, loads in ~0.1 s).

`auto` takes kenlm when it imports and an ARPA/KenLM-binary file is there, else numpy. A document
without any token gets NaN. The model loads when the scorer is built (the score stage's task set-up,
before any document), once per process; one that cannot load raises ModelError naming the path.

CCNet scores against a reference LM of one language (Wikipedia per language). With a `fallback` LM
and `lang`, documents whose `lang` column is not `lang` (or is missing) are scored with the fallback
instead (the score stage: the bundled English reference, and the LM trained in the run for the rest).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.ngram import NGramLM, tokenize

from .base import ModelError, describe

_MODELS: dict[tuple[str, str], Any] = {}
BACKENDS = ("auto", "numpy", "kenlm")


def model_files(path: str | Path) -> dict[str, Path]:
    """The files of a model given by any of its names: stem, .npz, .arpa, .arpa.gz or .bin."""
    p = Path(path)
    stem = p
    for suf in (".gz", ".arpa", ".npz", ".bin"):
        if stem.name.endswith(suf):
            stem = stem.with_name(stem.name[: -len(suf)])
    out = {}
    for kind, cand in (("npz", stem.with_name(stem.name + ".npz")), ("arpa", stem.with_name(stem.name + ".arpa")),
                       ("arpa", stem.with_name(stem.name + ".arpa.gz")), ("bin", stem.with_name(stem.name + ".bin"))):
        if cand.exists() and kind not in out:
            out[kind] = cand
    if p.exists() and p.suffix in (".arpa", ".gz", ".bin", ".npz"):
        out[{".gz": "arpa"}.get(p.suffix, p.suffix[1:])] = p
    return out


def kenlm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("kenlm") is not None


def resolve_backend(path: str | Path, backend: str = "auto") -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    files = model_files(path)
    if not files:
        raise FileNotFoundError(f"n-gram model not found: {path} (expected .npz, .arpa or .bin; train one with `curate train-lm`)")
    has_kenlm_file = "arpa" in files or "bin" in files
    if backend == "auto":
        return "kenlm" if has_kenlm_file and kenlm_available() else "numpy"
    if backend == "kenlm":
        if not kenlm_available():
            raise RuntimeError("backend 'kenlm' needs the kenlm module (scripts/install.sh builds it); or use backend: numpy")
        if not has_kenlm_file:
            raise FileNotFoundError(f"{path}: backend 'kenlm' needs an .arpa or .bin file next to the model")
    if backend == "numpy" and "npz" not in files and "arpa" not in files:
        raise FileNotFoundError(f"{path}: backend 'numpy' needs the .npz (or an .arpa) file")
    return backend


class _KenLM:
    def __init__(self, path: Path):
        import kenlm

        self.model = kenlm.Model(str(path))

    def doc_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        score = self.model.score
        lp = np.zeros(len(texts))
        n = np.zeros(len(texts), dtype=np.int64)
        for i, t in enumerate(texts):
            for s in tokenize(t):
                lp[i] += score(" ".join(s), bos=True, eos=True)
                n[i] += len(s) + 1
        return lp, n


def model_file(path: str | Path, backend: str) -> Path:
    """The file a resolved backend loads: kenlm the binary or ARPA file, numpy the .npz or ARPA."""
    files = model_files(path)
    return (files.get("bin") or files["arpa"]) if backend == "kenlm" else (files.get("npz") or files["arpa"])


def load(path: str | Path, backend: str = "auto"):
    """Object with `doc_scores(texts) -> (sum log10 p, tokens)`, cached per process."""
    backend = resolve_backend(path, backend)
    key = (str(Path(path).resolve()), backend)
    m = _MODELS.get(key)
    if m is None:
        f = model_file(path, backend)
        m = _KenLM(f) if backend == "kenlm" else NGramLM.load(f)
        _MODELS[key] = m
    return m


class PerplexityScorer:
    """Adds `perplexity` (float32; NaN without tokens) and `lm_tokens` (int32). With `fallback`
    ((path, backend) of a second LM) and `lang`, it reads the `lang` column (`input_columns`) and
    scores the documents of other languages with the fallback; `docs` counts both."""

    name = "perplexity"

    def __init__(self, model_path: str | Path, backend: str = "auto", column: str = "perplexity",
                 fallback: tuple[str | Path, str] | None = None, lang: str | None = None):
        self.model_path, self.backend, self.column = str(model_path), backend, column
        self._lm = _load_or_fail(self.model_path, backend)
        self._fallback = _load_or_fail(str(fallback[0]), fallback[1]) if fallback and lang else None
        self.lang = lang
        self.input_columns = ("lang",) if self._fallback is not None else ()
        self.docs = {"reference": 0, "fallback": 0}

    @property
    def output_columns(self) -> dict[str, str]:
        return {self.column: "float32", "lm_tokens": "int32"}

    def __call__(self, texts: list[str], lang: list[str | None] | None = None) -> dict[str, Any]:
        if self._fallback is None or lang is None:
            lp, n = self._lm.doc_scores(texts)
            self.docs["reference"] += len(texts)
        else:
            lp, n = np.zeros(len(texts)), np.zeros(len(texts), dtype=np.int64)
            ref = np.array([x == self.lang for x in lang], dtype=bool)
            for lm, idx, key in ((self._lm, np.flatnonzero(ref), "reference"), (self._fallback, np.flatnonzero(~ref), "fallback")):
                if len(idx):
                    lp[idx], n[idx] = lm.doc_scores([texts[i] for i in idx])
                self.docs[key] += len(idx)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ppl = np.where(n > 0, np.power(10.0, -lp / np.maximum(n, 1)), np.nan)
        return {self.column: ppl.astype(np.float32), "lm_tokens": n.astype(np.int32)}


def _load_or_fail(path: str, backend: str):
    try:
        return load(path, backend)
    except Exception as e:
        raise ModelError(f"scorer 'perplexity': cannot load model {path} ({describe(e)}); give an n-gram LM from `curate train-lm` "
                         "(score.perplexity.reference), use reference: bundled (rebuild it: python data/reference_lm/build.py) "
                         "or train one (score.perplexity.train)") from None


def bits_per_token(lp: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, -lp / np.maximum(n, 1) * math.log2(10), np.nan)
