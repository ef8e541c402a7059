"""Gopher repetition heuristics (Rae et al. 2021, arXiv:2112.11446, appendix A.1.1, table A1); the
quality heuristics of the same table are in `gopher_quality`, whose docstring says what differs
from datatrove for both (whitespace words, ratios that never fire on a zero denominator,
`punctuation_as_words`). What differs for repetition, and why:

- Repetition lines are the non-empty lines, so a leading/trailing newline or the blank line of a CRLF
  text is not a "duplicate line" (datatrove's `re.split("\\n+")` yields '' at both ends and '\\r'
  for every CRLF blank line; "\\nfoo\\n" had 1/3 duplicate lines). An empty or whitespace-only text
  is dropped as gopher:empty (datatrove: only "").
- N-grams are of whitespace words, so "= = = =" reST underlines or "# # #" comment rulers, which
  spaCy cuts into one token per character, are not the repeated n-grams they are for datatrove.
  Duplicate n-grams are compared as word sequences; datatrove compares "".join(words) strings.

Costs: the n-gram statistics hash every word once (`hash`), build n-gram keys for the whole batch
with numpy (a polynomial rolling hash over the 64-bit word hashes, salted per document) and sort
them; a repeated n-gram starts with a repeated (n-1)-gram, so after the first level only positions
whose shorter n-gram repeats are sorted. The greedy duplicate-n-gram count of the paper/datatrove is
sequential: it runs in Python only for documents whose upper bound (characters covered by non-first
occurrences of the smallest-n n-grams) exceeds a threshold.
"""
from __future__ import annotations

import re
from itertools import chain
from typing import Any, ClassVar, Sequence

import numpy as np

from . import register
from .base import Batch, Filter, FilterResult, check_number, first_failing
from .text import batch_punctuation_tokens, safe_ratio

_PARA_RE = re.compile(r"\n{2,}")
# Odd 64-bit multipliers for the rolling n-gram hash and the per-document salt.
_HASH_MUL = np.uint64(0x9E3779B97F4A7C15)
_SALT_MUL = np.uint64(0xBF58476D1CE4E5B9)


def _dups(items: Sequence[str]) -> tuple[int, int]:
    """(duplicate elements, characters in duplicate elements): every occurrence after the first."""
    uniq = set(items)
    return len(items) - len(uniq), sum(map(len, items)) - sum(map(len, uniq))


def _pairs(name: str, value: Any) -> tuple[tuple[int, float], ...]:
    try:
        pairs = tuple((int(k), float(v)) for k, v in value)
    except (TypeError, ValueError):
        raise ValueError(f"parameter '{name}' must be a list of [n, fraction] pairs, got {value!r}") from None
    if any(k < 1 or v < 0 for k, v in pairs):
        raise ValueError(f"parameter '{name}': n must be >= 1 and fraction >= 0, got {value!r}")
    return pairs


class _NGrams:
    """Word n-grams of several documents, hashed into one uint64 array per n.

    Position p (into the concatenated words) starts an n-gram iff p + n <= end of its document.
    """

    def __init__(self, words: Any, docs: np.ndarray):  # words[i]: the word list of document i
        lens = np.fromiter((len(words[i]) for i in docs), dtype=np.int64, count=len(docs))
        total = int(lens.sum())
        flat = list(chain.from_iterable(words[i] for i in docs))
        self.whash = np.fromiter(map(hash, flat), dtype=np.int64, count=total).view(np.uint64)
        wlen = np.fromiter(map(len, flat), dtype=np.int64, count=total)
        self.cumlen = np.concatenate(([0], np.cumsum(wlen)))
        self.wlen = wlen
        self.doc = np.repeat(np.arange(len(docs)), lens)  # local doc index per word
        self.start = np.concatenate(([0], np.cumsum(lens)))  # per local doc
        self.room = self.start[1:][self.doc] - np.arange(total)  # words from p to the doc end
        self.salt = (np.arange(len(docs), dtype=np.uint64) + np.uint64(1)) * _SALT_MUL
        self._cache: dict[int, np.ndarray] = {1: self.whash}

    def hashes(self, n: int) -> np.ndarray:
        """Hash of the n-gram at every position (length total - n + 1; valid ones filtered later)."""
        k = max(k for k in self._cache if k <= n)
        h = self._cache[k]
        while k < n:
            k += 1
            h = h[:-1] * _HASH_MUL + self.whash[k - 1 :]
            self._cache[k] = h
        return h

    def groups(self, n: int, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Group the n-grams starting at `pos` (valid positions) by key.

        Returns (count per group, first position per group, positions of the non-first occurrences,
        positions in groups of two or more, ascending).
        """
        keys = self.hashes(n)[pos] + self.salt[self.doc[pos]]
        order = np.argsort(keys)  # unstable (SIMD) sort; the first position is taken as a minimum
        spos = pos[order]
        skeys = keys[order]
        if not len(skeys):
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, empty
        new = np.empty(len(skeys), dtype=bool)
        new[0] = True
        np.not_equal(skeys[1:], skeys[:-1], out=new[1:])
        gstart = np.flatnonzero(new)
        count = np.diff(np.append(gstart, len(skeys)))
        first = np.minimum.reduceat(spos, gstart)
        repeats = spos[spos != np.repeat(first, count)]
        repeated = np.sort(spos[np.repeat(count, count) > 1])
        return count, first, repeats, repeated

    def chars(self, pos: np.ndarray, n: int) -> np.ndarray:
        """Characters in the words of the n-gram at pos (no separators)."""
        return self.cumlen[pos + n] - self.cumlen[pos]


@register
class GopherRepetitionFilter(Filter):
    """Gopher repetition rules; reasons, checked in this order (datatrove's):

    gopher:empty                 text is empty or whitespace only (nothing to measure)
    gopher:dup_para_frac         duplicate paragraphs (split on 2+ newlines) / paragraphs > 0.3
    gopher:dup_para_char_frac    characters in duplicate paragraphs / characters > 0.2
    gopher:dup_line_frac         duplicate non-empty lines / non-empty lines > 0.3
    gopher:dup_line_char_frac    characters in duplicate lines / characters > 0.2
    gopher:top_{n}_gram          characters of the most frequent word n-gram (words + spaces, times
                                 its count) / characters > 0.20, 0.18, 0.16 for n = 2, 3, 4
    gopher:dup_{n}_gram          characters of duplicate n-grams (greedy: every occurrence after the
                                 first, non-overlapping, word characters only) / characters
                                 > 0.15 ... 0.10 for n = 5 ... 10

    "Most frequent" ties break to the n-gram seen first, as Counter.most_common does in datatrove.
    """

    name: ClassVar[str] = "gopher_repetition"
    params: ClassVar[dict[str, Any]] = {
        "dup_line_frac": 0.3,
        "dup_para_frac": 0.3,
        "dup_line_char_frac": 0.2,
        "dup_para_char_frac": 0.2,
        "top_n_grams": [[2, 0.2], [3, 0.18], [4, 0.16]],
        "dup_n_grams": [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]],
        # true: n-grams of punctuation_tokens(), like datatrove's spaCy tokens, instead of whitespace words
        "punctuation_as_words": False,
    }

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        for key in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"):
            check_number(key, self.cfg[key])
        if not isinstance(self.cfg["punctuation_as_words"], bool):
            raise ValueError(f"parameter 'punctuation_as_words' must be true or false, got {self.cfg['punctuation_as_words']!r}")
        self._top = _pairs("top_n_grams", self.cfg["top_n_grams"] or [])
        self._dup = _pairs("dup_n_grams", self.cfg["dup_n_grams"] or [])

    def apply(self, batch: Batch) -> FilterResult:
        c = self.cfg
        n = len(batch)
        texts, lines = batch.texts, batch.lines
        n_chars = batch.n_chars
        empty = np.fromiter((not t or t.isspace() for t in texts), dtype=bool, count=n)
        stats = np.zeros((n, 6), dtype=np.int64)  # paras, dup paras, dup para chars, lines, dup lines, dup line chars
        for i in np.flatnonzero(~empty):
            paras = _PARA_RE.split(texts[i].strip())
            ls = [s for s in lines[i] if s]
            stats[i, :3] = (len(paras), *_dups(paras))
            stats[i, 3:] = (len(ls), *_dups(ls))
        checks: list[tuple[str, np.ndarray]] = [("gopher:empty", empty)]
        for key, num, den in (
            ("dup_para_frac", stats[:, 1], stats[:, 0]),
            ("dup_para_char_frac", stats[:, 2], n_chars),
            ("dup_line_frac", stats[:, 4], stats[:, 3]),
            ("dup_line_char_frac", stats[:, 5], n_chars),
        ):
            if c[key] is not None:
                checks.append((f"gopher:{key}", safe_ratio(num, den) > c[key]))

        if self._top or self._dup:
            pending = np.ones(n, dtype=bool)
            for _, fails in checks:
                pending &= ~fails
            docs = np.flatnonzero(pending)
            if len(docs):
                checks.extend(self._ngram_checks(batch, docs))
        return FilterResult(first_failing(n, checks))

    def _ngram_checks(self, batch: Batch, docs: np.ndarray) -> list[tuple[str, np.ndarray]]:
        n, nd = len(batch), len(docs)
        words = batch.words
        if self.cfg["punctuation_as_words"]:
            words = batch_punctuation_tokens(batch, docs)
        ng = _NGrams(words, docs)
        text_chars = np.maximum(batch.n_chars[docs], 1).astype(np.float64)
        n_min = min((k for k, _ in self._dup), default=None)

        # Sorting n-grams is the main cost. A repeated n-gram starts with a repeated shorter one, so
        # each level only sorts the positions whose previous-level n-gram is repeated: all positions
        # for the first level, a small share of them after that.
        levels = sorted({k for k, _ in self._top} | ({n_min} if n_min else set()))
        grouped = {}
        cand = np.arange(len(ng.whash))
        for k in levels:
            cand = cand[ng.room[cand] >= k]
            grouped[k] = ng.groups(k, cand)
            cand = grouped[k][3]

        out: list[tuple[str, np.ndarray]] = []
        for k, frac in self._top:
            count, first, _, _ = grouped[k]
            rep = count > 1
            count, first = count[rep], first[rep]
            # Per document: the group with the largest count, ties to the smallest first position
            # (Counter.most_common keeps insertion order). Without a repeated n-gram that is the
            # document's first n-gram, with count 1.
            key = (count.astype(np.int64) << 40) + ((1 << 40) - 1 - first)
            best = np.full(nd, -1, dtype=np.int64)
            np.maximum.at(best, ng.doc[first], key)
            top_count = np.where(best >= 0, best >> 40, 1)
            top_first = np.where(best >= 0, (1 << 40) - 1 - (best & ((1 << 40) - 1)), ng.start[:-1])
            has = np.diff(ng.start) >= k  # datatrove skips the rule for documents shorter than n
            top_chars = np.zeros(nd, dtype=np.int64)
            top_chars[has] = top_count[has] * (ng.chars(top_first[has], k) + (k - 1))
            fails = np.zeros(n, dtype=bool)
            fails[docs] = top_chars / text_chars > frac
            out.append((f"gopher:top_{k}_gram", fails))

        if self._dup:
            # Upper bound for every n >= n_min: characters of words covered by a non-first occurrence
            # of an n_min-gram (a repeated longer n-gram repeats all its n_min-grams). The greedy count
            # is a set of non-overlapping non-first occurrences, so it is below this bound.
            frac_min = min(f for _, f in self._dup)
            rep = grouped[n_min][2]
            total = len(ng.whash)
            cover = np.cumsum(np.bincount(rep, minlength=total + 1) - np.bincount(rep + n_min, minlength=total + 1))
            covered_chars = np.bincount(ng.doc, weights=ng.wlen * (cover[:total] > 0), minlength=nd)
            bound = covered_chars / text_chars
            dup_chars = {k: np.zeros(nd, dtype=np.int64) for k, _ in self._dup}
            for d in np.flatnonzero(bound > frac_min):
                lo, hi = int(ng.start[d]), int(ng.start[d + 1])
                for k, frac in self._dup:
                    if hi - lo < k or bound[d] <= frac:
                        continue
                    keys = ng.hashes(k)[lo : hi - k + 1].tolist()
                    chars = ng.chars(np.arange(lo, hi - k + 1), k).tolist()
                    dup_chars[k][d] = _greedy_dup_chars(keys, chars, k)
            for k, frac in self._dup:
                fails = np.zeros(n, dtype=bool)
                fails[docs] = dup_chars[k] / text_chars > frac
                out.append((f"gopher:dup_{k}_gram", fails))
        return out


def _greedy_dup_chars(keys: list[int], chars: list[int], n: int) -> int:
    """datatrove's find_all_duplicate: scan left to right; an n-gram seen before counts its
    characters and the scan jumps past it, otherwise it is remembered and the scan moves one word."""
    seen: set[int] = set()
    idx, repeated, end = 0, 0, len(keys)
    while idx < end:
        key = keys[idx]
        if key in seen:
            repeated += chars[idx]
            idx += n
        else:
            seen.add(key)
            idx += 1
    return repeated
