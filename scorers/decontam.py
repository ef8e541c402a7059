"""Benchmark decontamination by n-gram overlap (GPT-3 / OLMo style), vectorized over a batch.

Text is normalized to lowercase `\\w+` words (case, punctuation and whitespace do not matter).
Every benchmark example contributes its word n-grams (default 13) to the index; an example shorter
than n words but at least `min_ngram` words long contributes itself as one shorter n-gram (the docs
are then also checked for n-grams of that length); shorter examples are skipped (counted in the
index). N-grams made only of numbers are left out (an MBPP test table "0 1 2 3 4 ..." otherwise
matches CPython's ipaddress module). A document is contaminated by a benchmark when at least
`min_matches` of its n-gram windows are in that benchmark's n-grams.

Hashing. A word is its xxh3-64; a window of k words starting at position i of a document is
`mix(B^i * (P[i+k] - P[i]) + k*C)` with P the prefix sum of `h[t] * B^-t` (t: the position in the
document), all mod 2^64 in uint64 numpy arithmetic: a polynomial hash, so every window of every
length costs a few array operations whatever k is (no loop over the k words, none over
characters), and the same words give the same key anywhere. Two different word sequences collide
with probability ~2^-64 (B is odd, so B^-t is invertible and a word change moves the sum by a
uniformly random amount).

Index. One table for all benchmarks: the sorted distinct keys, and per key the (benchmark, first
example) pairs that have it (CSR). Matching keys the windows of the shortest indexed length at every
position, keeps the ~0.5 % that pass a 2-bit filter of the first-words keys of all indexed n-grams
(a bitmap of 16-32 bits per key), and keys and looks up (`searchsorted`) every length only there.
The 24 bundled benchmarks (31,879 examples, 1.27M distinct n-grams) build in ~1.5 s into a 28 MB
file; matching runs at ~4,800 docs/s per core with 24 benchmarks as with 4 (bench/README_decontam.md).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import io
from pipeline.errors import ModelError, describe
from scorers import register
from scorers.base import Context, ScorerSpec

WORD_RE = re.compile(r"\w+")
FORMAT = 2  # of the saved index (1: per-benchmark arrays of hash_cols keys)
_WORD_HASH: dict[str, int] = {}
_INDEXES: dict[str, "NgramIndex"] = {}
_U = np.uint64
_B = 0x9E3779B97F4A7C15  # odd: invertible mod 2^64
_B_INV = pow(_B, -1, 1 << 64)
_LEN = _U(0xD6E8FEB86659FD93)  # mixes the window length into the key
_POW: dict[int, np.ndarray] = {}  # base -> powers 0.. (grown on demand)


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


def random_span(text: str, rng, n: int = 13) -> str | None:
    """The original characters of a random n-word window of `text` that the index would catch
    (windows of numbers only are not indexed); None when there is none. For planting contamination
    in tests and benchmarks. `rng`: a random.Random."""
    ms = list(WORD_RE.finditer(text.lower()))
    starts = [i for i in range(len(ms) - n + 1) if not all(m.group().isdigit() for m in ms[i:i + n])]
    if not starts:
        return None
    i = rng.choice(starts)
    return text[ms[i].start():ms[i + n - 1].end()]


def word_hashes(ws: list[str]) -> np.ndarray:
    """xxh3-64 of each word as uint64 (cached per process, bounded)."""
    import xxhash

    cache = _WORD_HASH
    if len(cache) > 5_000_000:
        cache.clear()
    out = np.fromiter(map(cache.get, ws, repeat(0)), dtype=np.uint64, count=len(ws))
    miss = np.flatnonzero(out == 0)  # (a word hashing to 0 is just recomputed)
    if len(miss):
        h = xxhash.xxh3_64_intdigest
        for i in miss.tolist():
            w = ws[i]
            v = cache.get(w) or h(w.encode("utf-8", "surrogatepass"))
            cache[w] = v
            out[i] = v
    return out


def _powers(base: int, n: int) -> np.ndarray:
    p = _POW.get(base)
    if p is None or len(p) < n:
        m = max(n, 1 << 16, 2 * len(p) if p is not None else 0)
        p = np.empty(m, dtype=np.uint64)
        p[0] = 1
        with np.errstate(over="ignore"):
            p[1:] = np.cumprod(np.full(m - 1, base, dtype=np.uint64))  # wraps mod 2^64
        _POW[base] = p
    return p[:n]


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (in place)."""
    with np.errstate(over="ignore"):
        x ^= x >> _U(30)
        x *= _U(0xBF58476D1CE4E5B9)
        x ^= x >> _U(27)
        x *= _U(0x94D049BB133111EB)
        x ^= x >> _U(31)
    return x


class Tokens:
    """Word hashes of a list of texts (or of pre-split word lists), concatenated, with what the
    window keys need: the prefix sums of h[t] * B^-pos(t) and B^pos(t), pos = position in its text."""

    def __init__(self, ws: list[list[str]]):
        self.lens = np.fromiter((len(w) for w in ws), dtype=np.int64, count=len(ws))
        self.words = [x for w in ws for x in w]
        h = word_hashes(self.words)
        n = len(h)
        self.start = np.zeros(len(ws), dtype=np.int64)
        np.cumsum(self.lens[:-1], out=self.start[1:])
        self.doc = np.repeat(np.arange(len(ws)), self.lens)
        self.pos = np.arange(n, dtype=np.int64) - self.start[self.doc]
        self.end = (self.start + self.lens)[self.doc]  # end of each word's text
        top = int(self.lens.max()) if len(ws) else 0
        with np.errstate(over="ignore"):
            self.P = np.zeros(n + 1, dtype=np.uint64)
            np.cumsum(h * _powers(_B_INV, top)[self.pos], out=self.P[1:])
        self.Bpos = _powers(_B, top)[self.pos]

    def windows(self, k: int, at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(keys, start positions) of the k-word windows that stay inside one text (those starting
        at `at` only, when given)."""
        i = np.flatnonzero(np.arange(len(self.words)) + k <= self.end) if at is None else at
        with np.errstate(over="ignore"):
            x = (self.P[i + k] - self.P[i]) * self.Bpos[i] + _U(k) * _LEN
        return _mix(x), i


def prefix_filter(keys: np.ndarray) -> np.ndarray:
    """2-bit membership filter over uint64 keys: a packed bitmap of 16-32 bits per key (a power of 2),
    bits `key mod size` and `(key >> 32) mod size` set; ~0.5 % false positives."""
    size = max(1 << 16, 1 << int(np.ceil(np.log2(16 * len(keys) + 1))))
    on = np.zeros(size, dtype=bool)
    on[(keys & _U(size - 1)).astype(np.int64)] = True
    on[((keys >> _U(32)) & _U(size - 1)).astype(np.int64)] = True
    return np.packbits(on, bitorder="little")


def _maybe(bits: np.ndarray, q: np.ndarray) -> np.ndarray:
    mask = _U(8 * len(bits) - 1)
    a = (q & mask).astype(np.int64)
    b = ((q >> _U(32)) & mask).astype(np.int64)
    return ((bits[a >> 3] >> (a & 7).astype(np.uint8)) & (bits[b >> 3] >> (b & 7).astype(np.uint8)) & 1).astype(bool)


@dataclass
class NgramIndex:
    n: int
    min_ngram: int
    names: list[str]  # benchmark names, in config order
    keys: np.ndarray  # sorted distinct uint64 keys, all benchmarks and lengths
    ptr: np.ndarray  # int64, len(keys) + 1: the pairs of keys[i] are pair_*[ptr[i]:ptr[i+1]]
    pair_bench: np.ndarray  # int16 benchmark number
    pair_example: np.ndarray  # int32 first example of that benchmark with the key
    lengths: list[int]  # window lengths in the index
    prefix_bits: np.ndarray  # prefix_filter() of the keys of the first lengths[0] words of every indexed n-gram
    example_ids: dict[str, list[str]]
    info: dict[str, dict]

    @classmethod
    def build(cls, benchmarks: dict[str, list[tuple[str, str]]], n: int = 13, min_ngram: int = 8) -> "NgramIndex":
        """benchmarks: name -> [(example id, text)]."""
        names = list(benchmarks)
        rows = [(b, e, t) for b, name in enumerate(names) for e, (_, t) in enumerate(benchmarks[name])]
        tok = Tokens([words(t) for _, _, t in rows])
        bench = np.fromiter((b for b, _, _ in rows), dtype=np.int64, count=len(rows))
        example = np.fromiter((e for _, e, _ in rows), dtype=np.int64, count=len(rows))
        k_ex = np.minimum(tok.lens, n)  # window length of each example
        ok_ex = k_ex >= min_ngram
        # every window start of every indexed example: positions 0 .. len - k
        nwin = np.where(ok_ex, tok.lens - k_ex + 1, 0)
        ex_of = np.repeat(np.arange(len(rows)), nwin)
        at = tok.start[ex_of] + (np.arange(int(nwin.sum())) - np.repeat(np.cumsum(nwin) - nwin, nwin))
        k_of = k_ex[ex_of]
        # n-grams of numbers only carry no text and match unrelated code and data: leave them out
        num = np.zeros(len(tok.words) + 1, dtype=np.int64)
        np.cumsum(np.fromiter((w.isdigit() for w in tok.words), dtype=bool, count=len(tok.words)), out=num[1:])
        keep = (num[at + k_of] - num[at]) < k_of
        at, k_of, ex_of = at[keep], k_of[keep], ex_of[keep]
        key = np.empty(len(at), dtype=np.uint64)
        for k in np.unique(k_of).tolist():
            sel = k_of == k
            key[sel] = tok.windows(k, at[sel])[0]
        lengths = sorted(set(k_ex[ok_ex].tolist()))
        prefix = prefix_filter(tok.windows(lengths[0], at)[0] if lengths else np.zeros(0, dtype=np.uint64))
        # distinct (key, benchmark), the first example of that benchmark having it
        b_of, e_of = bench[ex_of], example[ex_of]
        order = np.lexsort((e_of, b_of, key))
        key, b_of, e_of = key[order], b_of[order], e_of[order]
        first = np.ones(len(key), dtype=bool)
        first[1:] = (key[1:] != key[:-1]) | (b_of[1:] != b_of[:-1])
        key, b_of, e_of = key[first], b_of[first], e_of[first]
        ukeys, starts = np.unique(key, return_index=True)
        ptr = np.append(starts, len(key)).astype(np.int32 if len(key) < 2**31 else np.int64)
        info = {}
        for b, name in enumerate(names):
            mine = bench == b
            info[name] = {"examples": int(mine.sum()), "skipped_short": int((mine & ~ok_ex).sum()),
                          "ngrams": int((b_of == b).sum()), "lengths": sorted(set(k_ex[mine & ok_ex].tolist()))}
        ids = {name: [str(i) for i, _ in benchmarks[name]] for name in names}
        return cls(n, min_ngram, names, ukeys, ptr, b_of.astype(np.int16), e_of.astype(np.int32), lengths, prefix, ids, info)

    def save(self, path: str | Path) -> None:
        meta = {"format": FORMAT, "n": self.n, "min_ngram": self.min_ngram, "names": self.names, "lengths": self.lengths,
                "example_ids": self.example_ids, "info": self.info}
        io.write_npz(Path(path), dict(keys=self.keys, ptr=self.ptr, pair_bench=self.pair_bench, pair_example=self.pair_example,
                                      prefix_bits=self.prefix_bits, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)))

    @classmethod
    def load(cls, path: str | Path) -> "NgramIndex":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            if meta.get("format") != FORMAT:
                raise ValueError(f"index format {meta.get('format', 1)}, this code reads {FORMAT}")
            return cls(meta["n"], meta["min_ngram"], meta["names"], z["keys"], z["ptr"], z["pair_bench"], z["pair_example"],
                       meta["lengths"], z["prefix_bits"], meta["example_ids"], meta["info"])

    def hits(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every matched (document, benchmark, example) window: three aligned int arrays (a window
        whose n-gram several benchmarks share appears once per benchmark)."""
        tok = Tokens([words(t) for t in texts])
        found_key, found_doc = [], []
        if self.lengths:
            # a window can only match if its first lengths[0] words start an indexed n-gram: one pass
            # over all positions finds the candidates (~0.5 % of them), the full lengths are keyed there only
            q, cand = tok.windows(self.lengths[0])
            cand = cand[_maybe(self.prefix_bits, q)]
            for k in self.lengths:
                at = cand[cand + k <= tok.end[cand]]
                q = tok.windows(k, at)[0]
                pos = np.minimum(np.searchsorted(self.keys, q), len(self.keys) - 1)
                ok = self.keys[pos] == q
                found_key.append(pos[ok])
                found_doc.append(tok.doc[at[ok]])
        kpos = np.concatenate(found_key) if found_key else np.zeros(0, dtype=np.int64)
        doc = np.concatenate(found_doc) if found_doc else np.zeros(0, dtype=np.int64)
        lo = self.ptr[kpos].astype(np.int64)
        cnt = self.ptr[kpos + 1] - lo  # pairs per matched key (usually 1)
        pair = np.repeat(lo, cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        return np.repeat(doc, cnt), self.pair_bench[pair].astype(np.int64), self.pair_example[pair].astype(np.int64)

    def match(self, texts: list[str]) -> dict[str, tuple[np.ndarray, list[set[int]]]]:
        """name -> (matched windows per document, set of example numbers hit per document)."""
        doc, bench, ex = self.hits(texts)
        out = {}
        for b, name in enumerate(self.names):
            sel = bench == b
            counts = np.bincount(doc[sel], minlength=len(texts))
            hit: list[set[int]] = [set() for _ in texts]
            for d, e in set(zip(doc[sel].tolist(), ex[sel].tolist())):
                hit[d].add(e)
            out[name] = (counts, hit)
        return out


def load_index(path: str) -> NgramIndex:
    idx = _INDEXES.get(path)
    if idx is None:
        idx = _INDEXES[path] = NgramIndex.load(path)
    return idx


class DecontamScorer:
    """Adds `contaminated` (benchmark names, comma-separated in index order, or null),
    `contam_ngrams` (matched n-gram windows, all benchmarks), `contam_ngrams_by` (matched windows
    per benchmark named in `contaminated`, same order) and `contam_examples` (ids of the benchmark
    examples hit, as `<benchmark>/<id>`)."""

    output_columns = {"contaminated": "string", "contam_ngrams": "int32", "contam_ngrams_by": "list<int32>",
                      "contam_examples": "list<string>"}

    name = "decontam"

    def __init__(self, index_path: str, min_matches: int = 1):
        self.index_path, self.min_matches = str(index_path), int(min_matches)
        try:  # loads now (the score stage's task set-up), before any document
            self._index = load_index(self.index_path)
        except Exception as e:
            raise ModelError(f"scorer 'decontam': cannot load the n-gram index {self.index_path} ({describe(e)}); "
                             "re-run the score stage to rebuild it (it lives in <score output>/_models)") from None

    def __call__(self, texts: list[str]) -> dict[str, Any]:
        idx = self._index
        n, nb = len(texts), len(idx.names)
        doc, bench, ex = idx.hits(texts)
        counts = np.bincount(doc * nb + bench, minlength=n * nb).reshape(n, nb)
        flagged = counts >= self.min_matches
        names: list[list[str]] = [[] for _ in range(n)]
        by: list[list[int]] = [[] for _ in range(n)]
        for d, b in zip(*np.nonzero(flagged)):  # row-major: per document, benchmarks in index order
            names[d].append(idx.names[b])
            by[d].append(int(counts[d, b]))
        examples: list[list[str]] = [[] for _ in range(n)]
        keep = flagged[doc, bench]
        for d, b, e in sorted(set(zip(doc[keep].tolist(), bench[keep].tolist(), ex[keep].tolist()))):
            examples[d].append(f"{idx.names[b]}/{idx.example_ids[idx.names[b]][e]}")
        return {"contaminated": [",".join(x) if x else None for x in names],
                "contam_ngrams": np.where(flagged, counts, 0).sum(axis=1).astype(np.int32),
                "contam_ngrams_by": by,
                "contam_examples": examples}


def prepare(dc, ctx: Context) -> dict:
    """The n-gram index of the benchmarks (default: every bundled one), built once per targets and n."""
    from pipeline.config import bundled_benchmarks
    from pipeline.models import train

    targets = train.load_targets(dc.targets or bundled_benchmarks())
    key = ctx.cache_key({"targets": train.targets_digest(targets), "n": dc.ngram, "min": dc.min_ngram, "v": ctx.version, "format": FORMAT})
    path = Path(ctx.models_dir) / f"decontam-{key}.npz"
    if not path.exists():
        NgramIndex.build(targets, dc.ngram, dc.min_ngram).save(path)
    idx = NgramIndex.load(path)
    return {"path": str(path), "names": idx.names, "sha256": io.sha256_file(path), "index": idx.info}


register(ScorerSpec("decontam", prepare, lambda dc, m: DecontamScorer(m["path"], dc.min_matches), position=10))
