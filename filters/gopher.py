"""Gopher quality and repetition heuristics (Rae et al. 2021, arXiv:2112.11446, appendix A.1.1, table A1).

Defaults are the paper's thresholds, as datatrove ships them (GopherQualityFilter,
GopherRepetitionFilter); datatrove's `max_non_alpha_words_ratio` is called `min_alpha_words_ratio`
here, which is what it is. What differs from datatrove, and why:

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
- Repetition lines are the non-empty lines, so a leading/trailing newline or the blank line of a CRLF
  text is not a "duplicate line" (datatrove's `re.split("\\n+")` yields '' at both ends and '\\r'
  for every CRLF blank line; "\\nfoo\\n" had 1/3 duplicate lines). An empty or whitespace-only text
  is dropped as gopher:empty (datatrove: only "").
- N-grams are of whitespace words, so "= = = =" reST underlines or "# # #" comment rulers, which
  spaCy cuts into one token per character, are not the repeated n-grams they are for datatrove.
  Duplicate n-grams are compared as word sequences; datatrove compares "".join(words) strings.

`punctuation_as_words: true` (here, and in fineweb_quality) uses `punctuation_tokens()`, an imitation of spaCy's
English tokenizer, wherever datatrove counts or n-grams words: on 5000 sample documents it makes the
same decision as datatrove on 98.8% (quality) and 98.4% (repetition) of them, vs 47% and 93% with
whitespace words (bench/README_filters.md). Use it to reproduce FineWeb-style filtering.

Costs: the quality rules do one `str.isalnum` per word and a `str.strip` only for words that are not
alphanumeric. The repetition n-gram statistics hash every word once (`hash`), build n-gram keys for
the whole batch with numpy (a polynomial rolling hash over the 64-bit word hashes, salted per
document) and sort them; a repeated n-gram starts with a repeated (n-1)-gram, so after the first
level only positions whose shorter n-gram repeats are sorted. The greedy duplicate-n-gram count of
the paper/datatrove is sequential: it runs in Python only for documents whose upper bound (characters
covered by non-first occurrences of the smallest-n n-grams) exceeds a threshold.
"""
from __future__ import annotations

import re
from itertools import chain, compress
from operator import not_
from typing import Any, ClassVar, Sequence

import numpy as np

from . import register
from .base import Batch, Filter, FilterResult, first_failing

# Punctuation as datatrove defines it (datatrove/utils/text.py, Apache-2.0): ASCII and CJK/fullwidth
# punctuation plus C0/C1 control characters, united with the terminal punctuation of all scripts.
PUNCTUATION = (
    "!/\u2014\u201d:\uff05\uff11\u3008&(\u3001\u2501\\\u3010#%\u300c\u300d\uff0c\u3011\uff1b+^]~\u201c\u300a"
    "\u201e';\u2019{|\u2236\xb4[=-`*\uff0e\uff08\u2013\uff1f\uff01\uff1a$\uff5e\xab\u3009,><\u300b)?\uff09"
    "\u3002\u2026@_.\"}\u25ba\xbb"
    + "".join(chr(c) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for c in range(a, b))
)
TERMINAL_PUNCTUATION = frozenset(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965"
    "\u104a\u104b\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944"
    "\u1945\u1aa8\u1aa9\u1aaa\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c"
    "\u203d\u2047\u2048\u2049\u2e2e\u2e3c\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877"
    "\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e"
    "\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56\U00010f57\U00010f58\U00010f59\U00010f86"
    "\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be\U000110bf\U000110c0\U000110c1"
    "\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de\U000111df\U00011238"
    "\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3\U000115c9"
    "\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2"
    "\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d"
    "\U0001173e\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42"
    "\U00011ef7\U00011ef8\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38"
    "\U00016b44\U00016e98\U0001bc9f\U0001da88"
)
# All punctuation as one string, the form str.strip() takes.
PUNCT_CHARS = "".join(sorted(set(PUNCTUATION) | TERMINAL_PUNCTUATION))

STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num/den with NaN where den == 0, so that `ratio > thr` and `ratio < thr` are both False."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


# Characters spaCy's English tokenizer leaves attached ("-----", "--word", "^^^", "a/b/"), and the
# remaining punctuation, which it cuts off a word's edges one character at a time.
_ATTACHED = "-^~/|@"
_CUT = "".join(ch for ch in PUNCT_CHARS if ch not in _ATTACHED)
_DOTS_RE = re.compile(r"\.\.+|.", re.S)


def punctuation_tokens(words: list[str]) -> list[str]:
    """Whitespace words with edge punctuation cut off, roughly as spaCy's English tokenizer does:
    "end." -> "end", "."; "(see" -> "(", "see"; "====" -> four "="; "wait...." -> "wait", "....";
    "-----" stays one token. Used only by the `punctuation_as_words` modes (datatrove compatibility)."""
    out: list[str] = []
    for w in words:
        if w.isalnum():
            out.append(w)
            continue
        core = w.strip(_CUT)
        if core == w:
            out.append(w)
            continue
        lead = len(w) - len(w.lstrip(_CUT))
        trail = len(w) - len(w.rstrip(_CUT)) if core else 0
        out.extend(_DOTS_RE.findall(w[:lead]))
        if core:
            out.append(core)
            out.extend(_DOTS_RE.findall(w[len(w) - trail :]))
    return out


def batch_punctuation_tokens(batch: Batch, docs: Any) -> list[list[str] | None]:
    """punctuation_tokens() of the documents `docs`, computed once per batch: cached in the batch's
    per-document views (a list, one entry per document, which `Batch.take` carries over)."""
    cache = batch.__dict__.get("punctuation_tokens")
    if cache is None:
        cache = batch.__dict__["punctuation_tokens"] = [None] * len(batch)
    words = batch.words
    for i in docs:
        if cache[i] is None:
            cache[i] = punctuation_tokens(words[i])
    return cache


def _check_number(name: str, value: Any, lo: float = 0.0) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo:
        raise ValueError(f"parameter '{name}' must be a number >= {lo} or null, got {value!r}")


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
                _check_number(key, value)
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
        mean_len = _ratio(sum_len, n_nonsym)
        if c["min_avg_word_length"] is not None:
            checks.append(("gopher:mean_word_length", mean_len < c["min_avg_word_length"]))
        if c["max_avg_word_length"] is not None:
            checks.append(("gopher:mean_word_length", mean_len > c["max_avg_word_length"]))
        if c["max_symbol_word_ratio"] is not None:
            hashes = np.fromiter((t.count("#") for t in texts), dtype=np.int64, count=n)
            ellipses = np.fromiter((t.count("...") + t.count("\u2026") for t in texts), dtype=np.int64, count=n)
            thr = c["max_symbol_word_ratio"]
            checks.append(("gopher:symbol_word_ratio", (_ratio(hashes, n_tokens) > thr) | (_ratio(ellipses, n_tokens) > thr)))
        n_lines = np.fromiter(map(len, lines), dtype=np.int64, count=n)
        if c["max_bullet_lines_ratio"] is not None:
            bullets = np.fromiter(
                (sum(1 for s in ls if s.lstrip().startswith(("\u2022", "-"))) for ls in lines), dtype=np.int64, count=n
            )
            checks.append(("gopher:bullet_lines_ratio", _ratio(bullets, n_lines) > c["max_bullet_lines_ratio"]))
        if c["max_ellipsis_lines_ratio"] is not None:
            ell = np.fromiter(
                (sum(1 for s in ls if s.rstrip().endswith(("...", "\u2026"))) for ls in lines), dtype=np.int64, count=n
            )
            checks.append(("gopher:ellipsis_lines_ratio", _ratio(ell, n_lines) > c["max_ellipsis_lines_ratio"]))
        if c["min_alpha_words_ratio"] is not None:
            checks.append(("gopher:alpha_words_ratio", _ratio(n_alpha, n_tokens) < c["min_alpha_words_ratio"]))
        if c["min_stop_words"] is not None:
            checks.append(("gopher:stop_words", n_stop < c["min_stop_words"]))
        return FilterResult(first_failing(n, checks))


# ---------------------------------------------------------------------------------------------
# Repetition

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
            _check_number(key, self.cfg[key])
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
                checks.append((f"gopher:{key}", _ratio(num, den) > c[key]))

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
