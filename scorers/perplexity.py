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

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.errors import ModelError, describe
from pipeline.models.lm import kenlm_available, load, model_file, model_files, resolve_backend
from scorers import register
from scorers.base import Context, ScorerSpec, cached_meta

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


def prepare(pp, ctx: Context) -> dict:
    """The LM trained in the run (score.perplexity.train, cached by hash) and/or the reference LM."""
    trained = None
    if pp.train is not None:
        from pipeline.models import train

        t = pp.train
        key = ctx.cache_key({"train": t.model_dump(mode="json"), "data": ctx.data_fingerprint(t.data.path), "seed": ctx.seed,
                             "v": ctx.version})
        stem = str(Path(ctx.models_dir) / f"lm-{key}")
        want_arpa = pp.backend == "kenlm" or (pp.backend == "auto" and kenlm_available())
        if cached_meta(Path(stem + ".json"), Path(stem + ".npz")) is None or (want_arpa and not Path(stem + ".arpa").exists()):
            docs = train.sample_docs(train.iter_docs(t.data.path or ctx.inp, t.data.text_field, t.data.source_field, sources=t.data.sources),
                                     t.data.max_docs, ctx.seed)
            train.train_lm(docs, stem, order=t.order, min_count=t.min_count, arpa=want_arpa,
                           data_info={"path": str(t.data.path or ctx.inp), "sources": t.data.sources})
        trained = _lm_entry(stem, pp.backend)
    return trained if pp.reference == "none" else _reference_entry(pp, trained)


def _lm_entry(stem: str, backend: str) -> dict:
    files = model_files(stem)
    main = files.get("npz") or files.get("arpa") or files.get("bin")
    return {"path": stem, "backend": resolve_backend(stem, backend), "sha256": io.sha256_file(main)}


def _reference_entry(pp, trained: dict | None) -> dict:
    """The reference LM (bundled or a path): path, backend, sha256 of each of its files; `fallback`:
    the LM trained in the run, for documents of other languages. A missing bundled model is a broken
    install, not a config error: ModelError (exit 1), one line."""
    from pipeline.config import BUNDLED_REFERENCE_LM

    stem = str(BUNDLED_REFERENCE_LM) if pp.reference == "bundled" else pp.reference
    files = model_files(stem)
    if not files:
        raise ModelError(f"scorer 'perplexity': the bundled reference LM is missing ({stem}.npz / .arpa.gz); restore data/reference_lm "
                         "(git checkout) or rebuild it with python data/reference_lm/build.py, or set score.perplexity.reference")
    out = {**_lm_entry(stem, pp.backend), "reference": pp.reference if pp.reference == "bundled" else "path", "lang": pp.reference_lang}
    out["file"] = str(model_file(stem, out["backend"]))  # what the scorer loads; files: the sha256 of each file of the model
    out["files"] = {p.name: io.sha256_file(p) for p in sorted(set(files.values()))}
    if pp.reference_lang is None:
        out["note"] = "every document is scored with the reference LM (reference_lang: null)"
    elif trained is not None:
        out["fallback"] = trained
        out["note"] = (f"documents whose lang is not {pp.reference_lang!r} (or unknown) are scored with the LM trained in this run "
                       "(fallback); compare perplexities within a language (ppl_bucket is per lang)")
    else:
        out["note"] = (f"the reference LM is {pp.reference_lang!r}; without score.perplexity.train every document, whatever its "
                       "language, is scored with it")
    return out


def build(pp, m: dict) -> PerplexityScorer:
    fb = m.get("fallback")
    return PerplexityScorer(m["path"], m["backend"], fallback=(fb["path"], fb["backend"]) if fb else None, lang=m.get("lang"))


register(ScorerSpec("perplexity", prepare, build, position=40))
