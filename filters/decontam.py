"""Benchmark decontamination by n-gram overlap (GPT-3 / OLMo style), vectorized over a batch.

Text is normalized to lowercase `\\w+` words (punctuation and whitespace do not matter). Every
benchmark example contributes its word n-grams (default 13) to a hashed set; an example shorter than
n words but at least `min_ngram` words long contributes itself as one shorter n-gram (the docs are
then also checked for n-grams of that length); shorter examples are skipped (counted in the index).
N-grams made only of numbers are left out of the index (an MBPP test table "0 1 2 3 4 ..." otherwise
matches CPython's ipaddress module). A document is contaminated by a benchmark when at least
`min_matches` of its n-gram windows are in that benchmark's set.

Index = per benchmark a sorted array of 64-bit n-gram keys and, for each key, the example it came
from (for the report). Word hashes are xxh3-64 of the word; n-gram keys mix them as
`pipeline.models.ngram.hash_cols` does. A false match needs a 64-bit collision (~ n-grams in the
index / 2^64 per window). The index of the four bundled benchmarks (3,155 examples) has ~250k
13-grams and builds in ~1 s.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.models.ngram import KeyIndex, hash_cols

from .base import ModelError, describe

WORD_RE = re.compile(r"\w+")
_WORD_HASH: dict[str, int] = {}
_INDEXES: dict[str, "NgramIndex"] = {}


def words(text: str) -> list[str]:
    return WORD_RE.findall(text.lower())


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


def _windows(hashes: np.ndarray, doc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Keys of all n-word windows that stay inside one document, and the document of each."""
    m = len(hashes) - n + 1
    if m <= 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    ok = doc[:m] == doc[n - 1:]
    keys = hash_cols([hashes[j:j + m] for j in range(n)])
    return keys[ok], doc[:m][ok]


@dataclass
class NgramIndex:
    n: int
    min_ngram: int
    names: list[str]  # benchmark names, in config order
    keys: dict[str, dict[int, np.ndarray]]  # name -> length -> sorted unique keys
    example: dict[str, dict[int, np.ndarray]]  # name -> length -> example number of each key
    example_ids: dict[str, list[str]]
    info: dict[str, dict]
    _tables: dict = field(default_factory=dict, repr=False)  # (name, length) -> KeyIndex, built on first use

    @classmethod
    def build(cls, benchmarks: dict[str, list[tuple[str, str]]], n: int = 13, min_ngram: int = 8) -> "NgramIndex":
        """benchmarks: name -> [(example id, text)]."""
        keys, example, ids, info = {}, {}, {}, {}
        for name, rows in benchmarks.items():
            by_len: dict[int, tuple[list, list]] = {}
            skipped = 0
            for e, (_, text) in enumerate(rows):
                w = words(text)
                k = n if len(w) >= n else len(w)
                if k < min_ngram:
                    skipped += 1
                    continue
                h = word_hashes(w)
                kk, _ = _windows(h, np.zeros(len(h), dtype=np.int64), k)
                # n-grams of numbers only ("0 1 2 3 ...", tables of test values) carry no text and
                # match unrelated code and data: leave them out
                num = np.fromiter((x.isdigit() for x in w), dtype=bool, count=len(w))
                all_num = np.convolve(num.astype(np.int64), np.ones(k, dtype=np.int64), "valid") == k
                kk = kk[~all_num]
                ks, es = by_len.setdefault(k, ([], []))
                ks.append(kk)
                es.append(np.full(len(kk), e, dtype=np.int32))
            keys[name], example[name] = {}, {}
            for k, (ks, es) in sorted(by_len.items()):
                kk, ee = np.concatenate(ks), np.concatenate(es)
                u, first = np.unique(kk, return_index=True)  # first example that has the n-gram
                keys[name][k], example[name][k] = u, ee[first]
            ids[name] = [str(i) for i, _ in rows]
            info[name] = {"examples": len(rows), "skipped_short": skipped,
                          "ngrams": int(sum(len(v) for v in keys[name].values())),
                          "lengths": sorted(keys[name])}
        return cls(n, min_ngram, list(benchmarks), keys, example, ids, info)

    def save(self, path: str | Path) -> None:
        arrays = {}
        for name in self.names:
            for k in self.keys[name]:
                arrays[f"{name}.{k}.keys"] = self.keys[name][k]  # names are [a-z0-9_]
                arrays[f"{name}.{k}.example"] = self.example[name][k]
        meta = {"n": self.n, "min_ngram": self.min_ngram, "names": self.names, "example_ids": self.example_ids, "info": self.info}
        arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "NgramIndex":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            keys = {name: {} for name in meta["names"]}
            example = {name: {} for name in meta["names"]}
            for f in z.files:
                if f == "meta":
                    continue
                name, k, what = f.rsplit(".", 2)
                (keys if what == "keys" else example)[name][int(k)] = z[f]
        return cls(meta["n"], meta["min_ngram"], meta["names"], keys, example, meta["example_ids"], meta["info"])

    def match(self, texts: list[str]) -> dict[str, tuple[np.ndarray, list[set[int]]]]:
        """name -> (matched windows per document, set of example numbers hit per document)."""
        ws = [words(t) for t in texts]
        lens = np.fromiter((len(w) for w in ws), dtype=np.int64, count=len(ws))
        h = word_hashes([x for w in ws for x in w])
        doc = np.repeat(np.arange(len(texts)), lens)
        windows = {}
        out = {}
        for name in self.names:
            counts = np.zeros(len(texts), dtype=np.int64)
            hit_examples: list[set[int]] = [set() for _ in texts]
            for k, ukeys in self.keys[name].items():
                if k not in windows:
                    windows[k] = _windows(h, doc, k)
                wk, wd = windows[k]
                if len(wk) == 0 or len(ukeys) == 0:
                    continue
                table = self._tables.get((name, k))
                if table is None:
                    table = self._tables[(name, k)] = KeyIndex(ukeys)
                found, pos = table.find(wk)
                counts += np.bincount(wd[found], minlength=len(texts))
                for d, e in zip(wd[found].tolist(), self.example[name][k][pos[found]].tolist()):
                    hit_examples[d].add(e)
            out[name] = (counts, hit_examples)
        return out


def load_index(path: str) -> NgramIndex:
    idx = _INDEXES.get(path)
    if idx is None:
        idx = _INDEXES[path] = NgramIndex.load(path)
    return idx


class DecontamScorer:
    """Adds `contaminated` (benchmark names, comma-separated in index order, or null),
    `contam_ngrams` (matched n-gram windows, all benchmarks) and `contam_examples` (ids of the
    benchmark examples hit, as `<benchmark>/<id>`)."""

    output_columns = {"contaminated": "string", "contam_ngrams": "int32", "contam_examples": "list<string>"}

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
        res = idx.match(texts)
        n = len(texts)
        names: list[list[str]] = [[] for _ in range(n)]
        total = np.zeros(n, dtype=np.int64)
        examples: list[list[str]] = [[] for _ in range(n)]
        for name in idx.names:
            counts, hit = res[name]
            ids = idx.example_ids[name]
            for d in np.flatnonzero(counts >= self.min_matches).tolist():
                names[d].append(name)
                total[d] += counts[d]
                examples[d].extend(f"{name}/{ids[e]}" for e in sorted(hit[d]))
        return {"contaminated": [",".join(x) if x else None for x in names],
                "contam_ngrams": total.astype(np.int32),
                "contam_examples": examples}
