"""An n-gram LM from its files, with the backend that scores it: `kenlm` (the kenlm module on the
ARPA/binary file) or `numpy` (pipeline.models.ngram on the .npz twin). `load(path)` gives an object
with `doc_scores(texts) -> (sum log10 p, tokens)`, cached per process."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.ngram import NGramLM, tokenize

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


def bits_per_token(lp: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, -lp / np.maximum(n, 1) * math.log2(10), np.nan)
