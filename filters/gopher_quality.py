"""Gopher quality heuristics (Rae et al. 2021, arXiv:2112.11446, appendix A.1.1, table A1); the
repetition heuristics of the same table are in `gopher_repetition`.

Defaults are the paper's thresholds, as datatrove ships them (GopherQualityFilter); datatrove's
`max_non_alpha_words_ratio` is called `min_alpha_words_ratio` here, which is what it is. What differs
from datatrove, and why:

- Words are whitespace-split (`Batch.words`, shared by every filter) instead of spaCy tokens, which
  cost datatrove most of its filter time. Where spaCy's splitting of punctuation matters we undo it
  cheaply: word lengths and stop-word matches use the word stripped of leading/trailing punctuation
  ("the," counts as "the"), and "non-symbol words" are words with any non-punctuation character,
  which is what spaCy's tokens give.
- alpha_words_ratio and symbol_word_ratio divide by whitespace words, as the paper words it. On
  spaCy tokens every comma and period is a word without a letter: datatrove's rule then drops 51% of
  Shakespeare, 73% of the German/Spanish/Italian/Russian fortunes and 96% of the Python docs in the
  sample corpus (whitespace words: 0%, 0%, 6%).
- A ratio whose denominator is zero (no words, no lines) never fires; counts (min words, min stop
  words) still do. datatrove raised ZeroDivisionError for some of these when rules were disabled.

`punctuation_as_words: true` (here, in gopher_repetition and in fineweb_quality) uses
`text.punctuation_tokens()`, an imitation of spaCy's English tokenizer, wherever datatrove counts or
n-grams words: on 5000 sample documents it makes the same decision as datatrove on 98.8% (quality) and
98.4% (repetition) of them, vs 47% and 93% with whitespace words (bench/README_filters.md). Use it to
reproduce FineWeb-style filtering.

Costs: the quality rules do one `str.isalnum` per word and a `str.strip` only for words that are not
alphanumeric.
"""
from __future__ import annotations

from itertools import compress
from operator import not_
from typing import Any, ClassVar

import numpy as np

from . import register
from .base import Batch, Filter, FilterResult, check_number, first_failing
from .text import PUNCT_CHARS, batch_punctuation_tokens, safe_ratio

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


@register
class GopherQualityFilter(Filter):
    """Gopher quality rules; reasons, checked in this order (datatrove's):

    gopher:min_doc_words / gopher:max_doc_words  non-symbol words outside [50, 100000]
    gopher:mean_word_length      mean length of non-symbol words (edge punctuation stripped) outside [3, 10]
    gopher:symbol_word_ratio     '#' count or ellipsis ('...', '…') count per word > 0.1
    gopher:bullet_lines_ratio    > 90% of lines start with '•' or '-'
    gopher:ellipsis_lines_ratio  > 30% of lines end with '...' or '…'
    gopher:alpha_words_ratio     < 80% of words contain an alphabetic character
    gopher:stop_words            fewer than 2 of the stop words (case-sensitive, as datatrove)

    Any threshold set to null disables its rule.
    """

    name: ClassVar[str] = "gopher_quality"
    params: ClassVar[dict[str, Any]] = {
        "min_doc_words": 50,
        "max_doc_words": 100_000,
        "min_avg_word_length": 3,
        "max_avg_word_length": 10,
        "max_symbol_word_ratio": 0.1,
        "max_bullet_lines_ratio": 0.9,
        "max_ellipsis_lines_ratio": 0.3,
        # datatrove calls this max_non_alpha_words_ratio, but it is a minimum on alpha words.
        "min_alpha_words_ratio": 0.8,
        "min_stop_words": 2,
        "stop_words": list(STOP_WORDS),
        # false: symbol_word_ratio and alpha_words_ratio divide by whitespace words (the paper's
        # "words"). true: by punctuation_tokens(), like datatrove's spaCy tokens.
        "punctuation_as_words": False,
    }

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        for key, value in self.cfg.items():
            if key not in ("stop_words", "punctuation_as_words"):
                check_number(key, value)
        if not isinstance(self.cfg["punctuation_as_words"], bool):
            raise ValueError(f"parameter 'punctuation_as_words' must be true or false, got {self.cfg['punctuation_as_words']!r}")
        sw = self.cfg["stop_words"]
        if isinstance(sw, str) or not all(isinstance(w, str) for w in sw):
            raise ValueError(f"parameter 'stop_words' must be a list of strings, got {sw!r}")
        self._stop = frozenset(sw)

    def apply(self, batch: Batch) -> FilterResult:
        c = self.cfg
        n = len(batch)
        texts, words, lines = batch.texts, batch.words, batch.lines
        n_words = batch.n_words
        split_punct = c["punctuation_as_words"]
        n_tokens = n_words
        if split_punct:
            tokens = batch_punctuation_tokens(batch, np.flatnonzero(n_words >= max(c["min_doc_words"] or 0, 1)))
            n_tokens = np.fromiter((len(t) if t is not None else 0 for t in tokens), dtype=np.int64, count=n)
        n_nonsym = np.zeros(n, dtype=np.int64)
        sum_len = np.zeros(n, dtype=np.int64)
        n_alpha = np.zeros(n, dtype=np.int64)
        n_stop = np.zeros(n, dtype=np.int64)
        # Non-symbol words are a subset of whitespace words, so a document with fewer whitespace
        # words than min_doc_words fails that rule whatever else it holds: skip its per-word work.
        min_words = c["min_doc_words"] or 0
        stop, strip = self._stop, PUNCT_CHARS
        for i in np.flatnonzero(n_words >= max(min_words, 1)):
            ws = words[i]
            # str.strip with ~300 characters costs ~200 ns; most words are alphanumeric and have
            # nothing to strip. (datatrove's set holds the fullwidth digit "１", which this skips.)
            stripped = [w if w.isalnum() else w.strip(strip) for w in ws]
            n_nonsym[i] = len(stripped) - stripped.count("")
            sum_len[i] = sum(map(len, stripped))
            # str.isalpha decides most words at C speed; only the others go character by character.
            alpha = list(map(str.isalpha, stripped))
            rest = compress(stripped, map(not_, alpha))
            n_alpha[i] = sum(alpha) + sum(1 for s in rest if any(map(str.isalpha, s)))
            n_stop[i] = len(stop.intersection(stripped))

        checks: list[tuple[str, np.ndarray]] = []
        if c["min_doc_words"] is not None:
            checks.append(("gopher:min_doc_words", n_nonsym < c["min_doc_words"]))
        if c["max_doc_words"] is not None:
            checks.append(("gopher:max_doc_words", n_nonsym > c["max_doc_words"]))
        mean_len = safe_ratio(sum_len, n_nonsym)
        if c["min_avg_word_length"] is not None:
            checks.append(("gopher:mean_word_length", mean_len < c["min_avg_word_length"]))
        if c["max_avg_word_length"] is not None:
            checks.append(("gopher:mean_word_length", mean_len > c["max_avg_word_length"]))
        if c["max_symbol_word_ratio"] is not None:
            hashes = np.fromiter((t.count("#") for t in texts), dtype=np.int64, count=n)
            ellipses = np.fromiter((t.count("...") + t.count("\u2026") for t in texts), dtype=np.int64, count=n)
            thr = c["max_symbol_word_ratio"]
            checks.append(("gopher:symbol_word_ratio", (safe_ratio(hashes, n_tokens) > thr) | (safe_ratio(ellipses, n_tokens) > thr)))
        n_lines = np.fromiter(map(len, lines), dtype=np.int64, count=n)
        if c["max_bullet_lines_ratio"] is not None:
            bullets = np.fromiter(
                (sum(1 for s in ls if s.lstrip().startswith(("\u2022", "-"))) for ls in lines), dtype=np.int64, count=n
            )
            checks.append(("gopher:bullet_lines_ratio", safe_ratio(bullets, n_lines) > c["max_bullet_lines_ratio"]))
        if c["max_ellipsis_lines_ratio"] is not None:
            ell = np.fromiter(
                (sum(1 for s in ls if s.rstrip().endswith(("...", "\u2026"))) for ls in lines), dtype=np.int64, count=n
            )
            checks.append(("gopher:ellipsis_lines_ratio", safe_ratio(ell, n_lines) > c["max_ellipsis_lines_ratio"]))
        if c["min_alpha_words_ratio"] is not None:
            checks.append(("gopher:alpha_words_ratio", safe_ratio(n_alpha, n_tokens) < c["min_alpha_words_ratio"]))
        if c["min_stop_words"] is not None:
            checks.append(("gopher:stop_words", n_stop < c["min_stop_words"]))
        return FilterResult(first_failing(n, checks))
