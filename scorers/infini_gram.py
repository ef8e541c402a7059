"""∞-gram scorer (score.infini_gram): how predictable a document is, token by token, from exact
matches in a reference corpus of any length (Infini-gram, Liu et al. 2024).

Columns, over the document's first `max_tokens` tokens (its index's tokenizer):
- `<column>_logprob`: mean natural log of the ∞-gram probability of each token given the tokens
  before it in the document: P = cnt(c w) / cnt(c), c the longest suffix of the context that occurs
  in the reference (pipeline/models/infini_gram.py). Where the reference has the context but never
  followed by this token (P = 0) the token counts as 1 / (cnt(c) + 1), below anything seen after c.
  Near 0: the text is (a copy of) reference text; very negative: novel or off-distribution text.
- `<column>_zero`: share of tokens with P = 0 (novel continuations of a context the reference has).
- `<column>_ctx`: mean length in tokens of the context used (long: the document shares long spans
  with the reference).
An empty document gets NaN. Against an index of the corpus itself every document scores ~0 (it is
in its own reference): build the index of a reference dataset (curate ngram build REF -o DIR).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.errors import ModelError, describe
from scorers import register
from scorers.base import Context, ScorerSpec


class InfiniGramScorer:
    name = "infini_gram"

    def __init__(self, index: str, column: str = "infini_gram", max_tokens: int | None = 1024):
        from pipeline.models.infini_gram import InfiniGram

        self.column, self.max_tokens = column, max_tokens
        try:
            self.index = InfiniGram(Path(index))
            if self.index.tok is None:
                raise ValueError("it has no tokenizer.json (built from token files without --tokenizer)")
        except Exception as e:
            raise ModelError(f"scorer 'infini_gram': cannot open index {index} ({describe(e)}); build it with "
                             f"curate ngram build REFERENCE_DIR -o {index} --tokenizer TOK.json (score.infini_gram.index)") from None

    @property
    def output_columns(self) -> dict[str, str]:
        return {f"{self.column}_{k}": "float32" for k in ("logprob", "zero", "ctx")}

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        seqs = [s[:self.max_tokens] if self.max_tokens else s for s in self.index.encode(texts)]
        r = self.index.infgram(seqs)
        n = np.array([len(s) for s in seqs], np.float64)
        lp = np.log(np.where(r["prob"] > 0, r["prob"], 1.0 / (r["ctx_count"] + 1.0)))
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = {k: np.bincount(r["doc"], weights=v, minlength=len(seqs)) / n
                    for k, v in (("logprob", lp), ("zero", (r["prob"] == 0).astype(np.float64)), ("ctx", r["ctx"].astype(np.float64)))}
        return {f"{self.column}_{k}": np.where(n > 0, v, np.nan).astype(np.float32) for k, v in mean.items()}


def prepare(section, ctx: Context) -> dict:
    """The index is built outside the score stage (curate ngram build); its index.json holds the sha256
    of every index file, so its own sha256 stands for the whole index in the config hash."""
    return {"path": str(section.index), "sha256": io.sha256_file(Path(section.index) / "index.json")}


register(ScorerSpec("infini_gram", prepare, lambda s, m: InfiniGramScorer(m["path"], s.column, s.max_tokens), position=60))
