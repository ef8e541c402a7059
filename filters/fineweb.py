"""FineWeb quality heuristics (Penedo et al. 2024, arXiv:2406.17557, section 3.3.3).

Defaults are FineWeb's, as datatrove's FineWebQualityFilter ships them. Differences from datatrove:

- Lines come from `str.splitlines()` (shared `Batch.lines`) instead of `text.split("\\n")`, so a
  CRLF document's lines do not end in '\\r' (datatrove then saw no line ending in punctuation and
  dropped every CRLF page for line_punct_ratio).
- list_ratio divides newlines by whitespace words instead of spaCy tokens; spaCy tokens are ~15-25%
  more numerous on prose (punctuation), so this rule is slightly stricter here, unless
  `punctuation_as_words: true` counts text.punctuation_tokens() (spaCy-like) instead.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from . import register
from .base import Batch, Filter, FilterResult, check_number, first_failing
from .text import TERMINAL_PUNCTUATION, batch_punctuation_tokens, safe_ratio


@register
class FineWebQualityFilter(Filter):
    """FineWeb rules over the non-blank lines; reasons, checked in this order:

    fineweb:empty             no non-blank line
    fineweb:line_punct_ratio  lines ending in terminal punctuation / lines < 0.12
                              (line_punct_exclude_zero: a ratio of exactly 0 passes)
    fineweb:short_line_ratio  lines of <= 30 characters / lines > 0.67
    fineweb:char_dup_ratio    characters in duplicate lines / non-newline characters > 0.01
    fineweb:list_ratio        newlines / words > 0.3

    `stop_chars` (null = terminal punctuation of all scripts) may hold multi-character strings.
    """

    name: ClassVar[str] = "fineweb_quality"
    params: ClassVar[dict[str, Any]] = {
        "line_punct_thr": 0.12,
        "line_punct_exclude_zero": False,
        "stop_chars": None,
        "short_line_thr": 0.67,
        "short_line_length": 30,
        "char_duplicates_ratio": 0.01,
        "new_line_ratio": 0.3,
        "punctuation_as_words": False,
    }

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        for key in ("line_punct_thr", "short_line_thr", "short_line_length", "char_duplicates_ratio", "new_line_ratio"):
            check_number(key, self.cfg[key])
        for key in ("line_punct_exclude_zero", "punctuation_as_words"):
            if not isinstance(self.cfg[key], bool):
                raise ValueError(f"parameter '{key}' must be true or false, got {self.cfg[key]!r}")
        sc = self.cfg["stop_chars"]
        if sc is None:
            sc = TERMINAL_PUNCTUATION
        elif isinstance(sc, str) or not all(isinstance(s, str) and s for s in sc):
            raise ValueError(f"parameter 'stop_chars' must be a list of non-empty strings or null, got {sc!r}")
        self._stop_tuple = tuple(sc)
        # Fast path: single characters are looked up as the line's last character in a set.
        self._stop_set = frozenset(sc) if all(len(s) == 1 for s in sc) else None

    def apply(self, batch: Batch) -> FilterResult:
        c = self.cfg
        n = len(batch)
        texts = batch.texts
        stats = np.zeros((n, 4), dtype=np.int64)  # lines, punct-ended lines, short lines, dup line chars
        stop_set, stop_tuple, short = self._stop_set, self._stop_tuple, c["short_line_length"]
        for i, raw in enumerate(batch.lines):
            ls = [s for s in raw if s and not s.isspace()]
            if not ls:
                continue
            if stop_set is not None:
                punct = sum(1 for s in ls if s[-1] in stop_set)
            else:
                punct = sum(1 for s in ls if s.endswith(stop_tuple))
            n_short = sum(1 for s in ls if len(s) <= short) if short is not None else 0
            uniq = set(ls)
            stats[i] = (len(ls), punct, n_short, sum(map(len, ls)) - sum(map(len, uniq)))
        n_lines = stats[:, 0]
        newlines = np.fromiter((t.count("\n") for t in texts), dtype=np.int64, count=n)
        checks: list[tuple[str, np.ndarray]] = [("fineweb:empty", n_lines == 0)]
        if c["line_punct_thr"] is not None:
            ratio = safe_ratio(stats[:, 1], n_lines)
            fails = ratio < c["line_punct_thr"]
            if c["line_punct_exclude_zero"]:
                fails &= ratio != 0
            checks.append(("fineweb:line_punct_ratio", fails))
        if c["short_line_thr"] is not None and short is not None:
            checks.append(("fineweb:short_line_ratio", safe_ratio(stats[:, 2], n_lines) > c["short_line_thr"]))
        if c["char_duplicates_ratio"] is not None:
            checks.append(("fineweb:char_dup_ratio", safe_ratio(stats[:, 3], batch.n_chars - newlines) > c["char_duplicates_ratio"]))
        if c["new_line_ratio"] is not None:
            n_words = batch.n_words
            if c["punctuation_as_words"]:
                tokens = batch_punctuation_tokens(batch, range(n))
                n_words = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
            checks.append(("fineweb:list_ratio", safe_ratio(newlines, n_words) > c["new_line_ratio"]))
        return FilterResult(first_failing(n, checks))
