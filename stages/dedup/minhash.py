"""MinHash signatures of a batch of documents, equal to `datasketch.MinHash` for the same shingles.

datasketch 2.x ("affine32", its default): each shingle hash h (32-bit) is mixed with MurmurHash3's
fmix32, then permuted as a*h + b mod 2^32 with (a odd, b) drawn from `np.random.RandomState(seed)`.
datasketch < 2.0 ("legacy"): (a*h + b) mod (2^61 - 1), truncated to 32 bits, where the product is
taken in wrapping uint64 arithmetic as datasketch does. The signature is the per-permutation min.

The batch kernel hashes every shingle of the batch at once (`hashing.xxh32_ranges`), then applies
all permutations to blocks of 8k shingles (a (num_perm, 8192) uint32 block, a few MB, stays in cache) and
reduces per document with `np.minimum.reduceat`. Cost: num_perm multiply-add-min per shingle, the
same work as any exact MinHash, with no Python per token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stages.dedup import hashing
from stages.dedup.text import Normalization, compact, shingle

MERSENNE = np.uint64((1 << 61) - 1)
MAX32 = np.uint32(0xFFFFFFFF)
SCHEMES = ("affine32", "legacy")
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))


def fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2, s3 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s3)


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


def _mod_mersenne(x: np.ndarray) -> np.ndarray:
    """x mod (2^61 - 1) for uint64 x without a division: 2^61 = 1 (mod p), so x = hi + lo."""
    y = (x & MERSENNE) + (x >> np.uint64(61))
    return np.where(y >= MERSENNE, y - MERSENNE, y)


def signatures_from_hashes(hv: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, scheme: str,
                           block: int = 8192) -> np.ndarray:
    """(n_docs, num_perm) uint32 minima; documents without shingles keep all-0xFFFFFFFF rows.

    Layout matters more than anything here: a (num_perm, block) block makes every numpy inner loop
    a long contiguous run with a scalar operand (SIMD), and `minimum.reduceat` along axis 1 reduces
    long contiguous segments; the (block, num_perm) layout is ~5x slower for the same arithmetic."""
    n_docs, num_perm = len(offsets) - 1, len(a)
    sig = np.full((n_docs, num_perm), MAX32, dtype=np.uint32)
    if scheme == "affine32":
        hv = fmix32(hv.astype(np.uint32, copy=False))
    else:
        hv = hv.astype(np.uint64)
    a_col, b_col = a[:, None], b[:, None]
    counts = np.diff(offsets)
    total = int(offsets[-1])
    tmp = np.empty((num_perm, block), dtype=hv.dtype)
    for c0 in range(0, total, block):
        c1 = min(total, c0 + block)
        d0 = int(np.searchsorted(offsets, c0, side="right")) - 1
        d1 = int(np.searchsorted(offsets, c1 - 1, side="right")) - 1
        docs = np.arange(d0, d1 + 1)
        docs = docs[counts[docs] > 0]
        starts = np.maximum(offsets[docs], c0) - c0
        t = tmp[:, : c1 - c0]
        np.multiply(a_col, hv[None, c0:c1], out=t)
        np.add(t, b_col, out=t)
        if scheme == "legacy":
            t = (_mod_mersenne(t) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        mins = np.minimum.reduceat(t, starts, axis=1)
        sig[docs] = np.minimum(sig[docs], mins.T)
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
    datasketch.MinHashLSH's rule with params=(bands, rows)."""
    n = sig.shape[0]
    out = np.empty((n, bands), dtype=np.uint64)
    s = sig.astype(np.uint64)
    for band in range(bands):
        h = np.full(n, (0x9E3779B97F4A7C15 * (band + 1)) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
        for r in range(rows):
            h = hashing.fmix64(h ^ s[:, band * rows + r])
        out[:, band] = h
    return out
