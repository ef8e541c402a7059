"""Text helpers shared by the filter families (gopher, c4, fineweb, length, langid): datatrove's
punctuation sets, a spaCy-like punctuation tokenizer cached per batch, a ratio that is NaN where its
denominator is zero. This module registers no filter.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np

from .base import Batch

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


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
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
