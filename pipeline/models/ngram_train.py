"""Training of n-gram LMs: interpolated modified Kneser-Ney, as KenLM's `lmplz` (Heafield et al. 2013).

Adjusted counts (raw counts for the highest order and for n-grams that start with <s>, else the
number of distinct left extensions), three discounts per order from the count-of-counts
(Chen & Goodman), unigrams interpolated with the uniform distribution, <unk> getting the
interpolation mass, and no pruning unless asked. The result is an `NGramLM`
(`pipeline.models.ngram`), which writes the ARPA file that `kenlm.Model` loads and its `.npz` twin.
"""
from __future__ import annotations

import numpy as np

from pipeline.models.keyindex import hash_cols, window_keys
from pipeline.models.ngram import BOS, BOS_ID, EOS, UNK, NGramLM, Order


def _lookup(keys: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, index into keys) of the queries `q` in the sorted array `keys` (binary search)."""
    if len(keys) == 0:
        return np.zeros(len(q), dtype=bool), np.zeros(len(q), dtype=np.int64)
    pos = np.searchsorted(keys, q)
    pos[pos == len(keys)] = 0
    return keys[pos] == q, pos


def _discounts(adjusted: np.ndarray, order: int) -> tuple[np.ndarray, bool]:
    """Modified KN discounts D(1), D(2), D(3+) from the count-of-counts (lmplz's formula). Falls back
    to lmplz's --discount_fallback values (0.5, 1, 1.5) when the statistics are degenerate (tiny data)."""
    t = np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5].astype(np.float64)
    try:
        if t[0] == 0 or t[1] == 0 or t[2] == 0:
            raise ZeroDivisionError
        y = t[0] / (t[0] + 2 * t[1])
        d = np.array([1 - 2 * y * t[1] / t[0], 2 - 3 * y * t[2] / t[1], 3 - 4 * y * t[3] / t[2]])
        if not all(0 < d[i] < i + 1 for i in range(3)):
            raise ValueError
        return d, False
    except (ZeroDivisionError, ValueError):
        return np.array([0.5, 1.0, 1.5]), True


def build_vocab(sentences: list[list[str]], min_count: int = 1) -> list[str]:
    """<unk>, <s>, </s>, then words by descending count (ties by string): deterministic."""
    from collections import Counter

    c = Counter(w for s in sentences for w in s)
    words = sorted((w for w, n in c.items() if n >= min_count and w not in (UNK, BOS, EOS)), key=lambda w: (-c[w], w))
    return [UNK, BOS, EOS] + words


def train(sentences: list[list[str]], order: int = 3, min_count: int = 1, vocab: list[str] | None = None,
          keep_rows: bool = True, prune: list[int] | None = None) -> NGramLM:
    """Interpolated modified Kneser-Ney LM of `order` on token lists (see `ngram.tokenize`). Words seen
    fewer than `min_count` times become <unk> (lmplz keeps all words: min_count=1).

    `prune[k-1]`: drop the k-grams (k >= 2) seen at most this many times (raw count), like lmplz's
    `--prune 0 1 1`; a k-gram that is the prefix or suffix of a kept (k+1)-gram stays (ARPA needs
    it). A dropped n-gram's whole adjusted count goes to its context's back-off mass, so every
    p(. | h) still sums to 1 (tests/test_score_ngram.py). Unigrams are never pruned."""
    if order < 1:
        raise ValueError("order must be >= 1")
    prune = list(prune or [0] * order)
    if len(prune) != order or prune[0] != 0 or min(prune) < 0:
        raise ValueError(f"prune: one threshold >= 0 per order, 0 for unigrams, got {prune}")
    vocab = vocab or build_vocab(sentences, min_count)
    lm = NGramLM(vocab, [])
    ids, sent = lm.encode(sentences)
    V = len(vocab)
    T = len(ids)
    start_of = np.maximum.accumulate(np.where(ids == BOS_ID, np.arange(T), 0)) if T else np.zeros(0, dtype=np.int64)

    uniq: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    raw: list[np.ndarray] = []
    for k in range(1, order + 1):
        m = max(T - k + 1, 0)
        keys = window_keys(ids, k)
        # window [s, s+k-1] stays inside one sentence iff the sentence of its end starts at or before s
        starts = np.flatnonzero(np.arange(m) >= start_of[k - 1:k - 1 + m])
        u, first, cnt = np.unique(keys[starts], return_index=True, return_counts=True)
        r = np.stack([ids[starts[first] + j] for j in range(k)], axis=1) if len(u) else np.zeros((0, k), dtype=np.int64)
        # Collision check: every window equals the representative of its key.
        inv = np.searchsorted(u, keys[starts])
        for j in range(k):
            if not np.array_equal(ids[starts + j], r[inv, j]):
                raise RuntimeError("64-bit n-gram hash collision; please report (corpus too large for HASH_VERSION 1)")
        uniq.append(u)
        rows.append(r)
        raw.append(cnt.astype(np.int64))

    # Every vocabulary word is a unigram, <unk> included (it never occurs: count 0, probability
    # from the interpolation mass alone).
    r1, c1 = rows[0], raw[0]
    all_ids = np.arange(V, dtype=np.int64)
    missing = np.setdiff1d(all_ids, r1[:, 0])
    if len(missing):
        r1 = np.concatenate([r1, missing[:, None]])
        c1 = np.concatenate([c1, np.zeros(len(missing), dtype=np.int64)])
        k1 = hash_cols([r1[:, 0]])
        o = np.argsort(k1)
        uniq[0], rows[0], raw[0] = k1[o], r1[o], c1[o]

    # Adjusted counts.
    adjusted = [None] * order
    adjusted[order - 1] = raw[order - 1]
    for k in range(order - 1, 0, -1):
        ext = rows[k]  # (k+1)-grams
        suffix = hash_cols([ext[:, j] for j in range(1, k + 1)])
        su, sc = np.unique(suffix, return_counts=True)
        found, pos = _lookup(su, uniq[k - 1])
        a = np.where(found, sc[pos], 0).astype(np.int64)
        starts_bos = rows[k - 1][:, 0] == BOS_ID
        a = np.where(starts_bos, raw[k - 1], a)
        adjusted[k - 1] = a
    # <s> as a unigram is never predicted.
    bos_uni = rows[0][:, 0] == BOS_ID
    adjusted[0] = np.where(bos_uni, 0, adjusted[0])
    keep = _pruned(uniq, rows, raw, prune)

    orders: list[Order] = []
    discounts, fallback = [], []
    prev_logp10 = None
    for k in range(1, order + 1):
        a = adjusted[k - 1]
        r = rows[k - 1]
        d, fb = _discounts(a[a > 0], k)
        discounts.append(d.tolist())
        fallback.append(fb)
        disc = np.where(a == 0, 0.0, d[np.clip(a, 1, 3) - 1])
        if k == 1:
            ctx = np.zeros(len(a), dtype=np.int64)
            nctx = 1
        else:
            ckeys = hash_cols([r[:, j] for j in range(k - 1)])
            cu, ctx = np.unique(ckeys, return_inverse=True)
            nctx = len(cu)
        kp = keep[k - 1]
        S = np.bincount(ctx, weights=a, minlength=nctx)
        mass = np.bincount(ctx, weights=np.where(kp, disc, a), minlength=nctx)  # pruned: all of its count backs off
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(S[ctx] > 0, (a - disc) / np.where(S[ctx] > 0, S[ctx], 1), 0.0)
            gamma = np.where(S > 0, mass / np.where(S > 0, S, 1), 1.0)
        if k == 1:
            p = u + gamma[0] / (V - 1)  # uniform over the words that can be predicted (not <s>), as lmplz
        else:
            a, r, u, ctx = a[kp], r[kp], u[kp], ctx[kp]
            skeys = hash_cols([r[:, j] for j in range(1, k)])
            found, pos = _lookup(orders[k - 2].keys, skeys)
            if not found.all():
                raise RuntimeError("internal: a suffix of an n-gram is missing from the lower order")
            p = u + gamma[ctx] * np.power(10.0, prev_logp10[pos])
            # back-off weight of each (k-1)-gram that is a context here
            cfound, cpos = _lookup(orders[k - 2].keys, cu)
            bo = orders[k - 2].bo
            bo[cpos[cfound]] = np.log10(gamma[cfound]).astype(np.float32)
        logp = np.log10(np.maximum(p, 1e-300)).astype(np.float32)
        if k == 1:
            logp[bos_uni] = -99.0
        orders.append(Order(uniq[k - 1][kp], logp, np.zeros(len(a), dtype=np.float32) if k < order else None,
                            r if keep_rows else None))
        prev_logp10 = logp.astype(np.float64)
    meta = {"order": order, "tokens": int(T), "sentences": len(sentences), "vocab": V,
            "ngrams": [len(o.keys) for o in orders], "discounts": discounts, "discount_fallback": fallback,
            "min_count": min_count, "tokenizer": "lower, digits->0, \\w+|[^\\w\\s] per line"}
    if any(prune):
        meta["prune"] = prune
    return NGramLM(vocab, orders, meta)


def _pruned(uniq: list[np.ndarray], rows: list[np.ndarray], raw: list[np.ndarray], prune: list[int]) -> list[np.ndarray]:
    """Keep mask per order: count above the order's threshold, or a prefix/suffix of a kept longer n-gram."""
    keep = [raw[k] > prune[k] for k in range(len(raw))]
    keep[0][:] = True
    for k in range(len(raw) - 1, 0, -1):  # k: index of the longer order; mark its sub-n-grams at k-1
        r = rows[k][keep[k]]
        for sub in (r[:, :k], r[:, 1:]):
            found, pos = _lookup(uniq[k - 1], hash_cols([sub[:, j] for j in range(k)]))
            keep[k - 1][pos[found]] = True
    return keep
