"""MinHash signatures of a batch of documents, equal to `datasketch.MinHash` for the same shingles.

datasketch 2.x ("affine32", its default): each shingle hash h (32-bit) is mixed with MurmurHash3's
fmix32, then permuted as a*h + b mod 2^32 with (a odd, b) drawn from `np.random.RandomState(seed)`.
datasketch < 2.0 ("legacy"): (a*h + b) mod (2^61 - 1), truncated to 32 bits, where the product is
taken in wrapping uint64 arithmetic as datasketch does. The signature is the per-permutation min.

The batch kernels are compiled with numba (`jit.njit`, integer arithmetic only, so the same bits on
every CPU): every shingle of the batch is hashed in one call (`hashing.xxh32_ranges`), then each
document's row of minima is updated 12 shingles at a time by a vectorized loop over the
permutations. Cost: num_perm multiply-add-min per shingle, the work of any exact MinHash, with no
Python per token (bench/README_dedup.md: about 90% of the vector multiply-add-min bound).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.dedup import hashing
from stages.dedup.jit import njit, vectorize
from stages.dedup.text import Normalization, compact, shingle

MERSENNE = np.uint64((1 << 61) - 1)
MAX32 = np.uint32(0xFFFFFFFF)
LOW32 = np.uint64(0xFFFFFFFF)
SCHEMES = ("affine32", "legacy")


def permutations(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) exactly as `datasketch.MinHash(num_perm, seed, scheme=...)` draws them."""
    gen = np.random.RandomState(seed)
    if scheme == "legacy":
        ab = np.array([(gen.randint(1, MERSENNE, dtype=np.uint64), gen.randint(0, MERSENNE, dtype=np.uint64))
                       for _ in range(num_perm)], dtype=np.uint64)
        return ab[:, 0].copy(), ab[:, 1].copy()
    if scheme == "affine32":
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        return a, b
    raise ValueError(f"unknown MinHash scheme {scheme!r}; use one of {SCHEMES}")


@njit(inline="always")
def _fmix32(h):
    h = np.uint32(np.uint32(h ^ (h >> np.uint32(16))) * np.uint32(0x85EBCA6B))
    h = np.uint32(np.uint32(h ^ (h >> np.uint32(13))) * np.uint32(0xC2B2AE35))
    return np.uint32(h ^ (h >> np.uint32(16)))


@njit
def _affine32_kernel(hv, offsets, a, b, sig):
    """sig[d, p] = min over the shingles i of document d of a[p] * fmix32(hv[i]) + b[p] (mod 2^32);
    every row is set here (0xFFFFFFFF for a document without shingles).

    Shingles go 12 at a time through the loop over permutations: the row of minima is loaded and
    stored once per 12 shingles, and the loop over p (contiguous a, b, row) is vectorized by LLVM,
    so the cost is one vector multiply, add and min per 16 (shingle, permutation) pairs (8 or 16
    shingles per block: 3-4% slower). The fmix32 of the block's shingles is taken on the way in
    (scalar, beside the vector work; no array of mixed hashes is written), and a last block of
    fewer than 12 repeats the document's last shingle, which cannot change a minimum."""
    num_perm = len(a)
    for d in range(len(offsets) - 1):
        row = sig[d]
        for p in range(num_perm):
            row[p] = MAX32
        i, e = offsets[d], offsets[d + 1]
        last = e - 1
        while i < e:
            h0, h1 = _fmix32(hv[i]), _fmix32(hv[min(i + 1, last)])
            h2, h3 = _fmix32(hv[min(i + 2, last)]), _fmix32(hv[min(i + 3, last)])
            h4, h5 = _fmix32(hv[min(i + 4, last)]), _fmix32(hv[min(i + 5, last)])
            h6, h7 = _fmix32(hv[min(i + 6, last)]), _fmix32(hv[min(i + 7, last)])
            h8, h9 = _fmix32(hv[min(i + 8, last)]), _fmix32(hv[min(i + 9, last)])
            h10, h11 = _fmix32(hv[min(i + 10, last)]), _fmix32(hv[min(i + 11, last)])
            for p in range(num_perm):
                ap, bp = a[p], b[p]
                m01 = min(np.uint32(ap * h0 + bp), np.uint32(ap * h1 + bp))
                m23 = min(np.uint32(ap * h2 + bp), np.uint32(ap * h3 + bp))
                m45 = min(np.uint32(ap * h4 + bp), np.uint32(ap * h5 + bp))
                m67 = min(np.uint32(ap * h6 + bp), np.uint32(ap * h7 + bp))
                m89 = min(np.uint32(ap * h8 + bp), np.uint32(ap * h9 + bp))
                m1011 = min(np.uint32(ap * h10 + bp), np.uint32(ap * h11 + bp))
                row[p] = min(row[p], min(min(min(m01, m23), min(m45, m67)), min(m89, m1011)))
            i += 12


@vectorize(["uint64(uint64)"], cache=True)
def mod_mersenne(x):
    """x mod (2^61 - 1) for any uint64 x, without a division (a compiled ufunc: arrays from Python,
    scalars inside kernels). x = hi * 2^61 + lo with hi <= 7 and 2^61 = 1 (mod p), so
    lo + hi = x (mod p) and lo + hi <= p + 7: one conditional subtract finishes it."""
    y = (x & MERSENNE) + (x >> np.uint64(61))
    if y >= MERSENNE:
        y -= MERSENNE
    return y


@njit(inline="always")
def _legacy_value(a, h, b):
    """datasketch < 2.0: ((a * h + b) wrapping in uint64) mod (2^61 - 1), low 32 bits."""
    return np.uint32(mod_mersenne(a * h + b) & LOW32)


@njit
def _legacy_kernel(hv, offsets, a, b, sig):
    """sig[d, p] = min over the shingles of document d of `_legacy_value(a[p], h, b[p])` (0xFFFFFFFF
    for a document without shingles). Shingles go 4 at a time through the loop over permutations
    (1.05-1.1x over one at a time); a last block of fewer than 4 repeats the document's last
    shingle, which cannot change a minimum."""
    for d in range(len(offsets) - 1):
        row = sig[d]
        for p in range(len(a)):
            row[p] = MAX32
        i, e = offsets[d], offsets[d + 1]
        last = e - 1
        while i < e:
            h0, h1 = np.uint64(hv[i]), np.uint64(hv[min(i + 1, last)])
            h2, h3 = np.uint64(hv[min(i + 2, last)]), np.uint64(hv[min(i + 3, last)])
            for p in range(len(a)):
                ap, bp = a[p], b[p]
                m01 = min(_legacy_value(ap, h0, bp), _legacy_value(ap, h1, bp))
                m23 = min(_legacy_value(ap, h2, bp), _legacy_value(ap, h3, bp))
                row[p] = min(row[p], min(m01, m23))
            i += 4


def signatures_from_hashes(hv: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, scheme: str) -> np.ndarray:
    """(n_docs, num_perm) uint32 minima of the shingle hashes hv[offsets[d]:offsets[d+1]] of each
    document; documents without shingles keep all-0xFFFFFFFF rows. Compiled (numba)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(hv) or (np.diff(offsets) < 0).any():
        raise ValueError(f"offsets must rise from 0 to the {len(hv)} shingle hashes")
    hv = np.ascontiguousarray(hv, dtype=np.uint32)
    sig = np.empty((len(offsets) - 1, len(a)), dtype=np.uint32)  # every row is set by the kernel
    if scheme == "affine32":
        _affine32_kernel(hv, offsets, np.ascontiguousarray(a, dtype=np.uint32), np.ascontiguousarray(b, dtype=np.uint32), sig)
    elif scheme == "legacy":
        _legacy_kernel(hv, offsets, np.ascontiguousarray(a, dtype=np.uint64), np.ascontiguousarray(b, dtype=np.uint64), sig)
    else:
        raise ValueError(f"unknown MinHash scheme {scheme!r}; use one of {SCHEMES}")
    return sig


@dataclass
class MinHasher:
    """Signatures of raw texts: normalize -> shingle -> hash -> permute. Picklable, cheap to build."""

    num_perm: int = 112
    seed: int = 1
    scheme: str = "affine32"
    hash: str = "xxh32"
    ngram: int = 5
    unit: str = "word"
    norm: Normalization = field(default_factory=Normalization)

    def __post_init__(self):
        if self.hash not in hashing.HASHES:
            raise ValueError(f"unknown hash {self.hash!r}; use one of {sorted(hashing.HASHES)}")
        self.a, self.b = permutations(self.num_perm, self.seed, self.scheme)

    def shingle_hashes(self, texts: list[str]):
        """(hashes uint32, offsets, Compact): all shingle hashes of the batch, grouped by document."""
        c = compact(texts, self.norm)
        sh = shingle(c, self.ngram, self.unit)
        hv = hashing.HASHES[self.hash](sh.buf, sh.start, sh.end)
        return hv, sh.offsets, c

    def signatures(self, texts: list[str]) -> np.ndarray:
        hv, offsets, _ = self.shingle_hashes(texts)
        return signatures_from_hashes(hv, offsets, self.a, self.b, self.scheme)

    def datasketch(self, sig_row: np.ndarray):
        """A `datasketch.MinHash` holding one of our signatures (for MinHashLSH, jaccard, ...)."""
        from datasketch import MinHash

        values = sig_row.astype(np.uint64) if self.scheme == "legacy" else sig_row.astype(np.uint32)
        return MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=hashing.python_hashfunc(self.hash),
                       hashvalues=values, scheme=self.scheme)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64 keys: a 64-bit mix of the `rows` values of each band and its index.
    Two documents share a key iff their band values are equal (up to 2^-64 collisions), which is
    datasketch.MinHashLSH's rule with params=(bands, rows). Key of a band: h = 0x9E3779B97F4A7C15 *
    (band + 1) mod 2^64, then h = fmix64(h ^ value) over its `rows` values in order."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows need {bands * rows} permutations, the signatures have {sig.shape[1]}")
    out = np.empty((sig.shape[0], bands), dtype=np.uint64)
    hashing.band_keys_kernel(np.ascontiguousarray(sig, dtype=np.uint32), bands, rows, out)
    return out
