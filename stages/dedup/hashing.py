"""Hashes for dedup: xxh32 of many byte ranges at once (compiled), sha1_hash32, exact-text xxh3-128.

`xxh32_ranges` is the XXH32 algorithm compiled with numba (`jit.njit`): all shingles of a batch are
hashed in one call, no Python object per shingle. It equals `xxhash.xxh32_intdigest(bytes)` bit
for bit (tested), so a user can pass `hashfunc=xxhash.xxh32_intdigest` to `datasketch.MinHash`
and get our signatures.
"""
from __future__ import annotations

import hashlib

import numpy as np

from stages.dedup.jit import njit, vectorize

P1, P2, P3, P4, P5 = (np.uint32(x) for x in (0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1))
M64_1, M64_2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)

# numba types uint32 (op) uint32 as uint64, so every step below is truncated back with np.uint32(...):
# the low 32 bits of the wide result are the wrapping 32-bit result XXH32 specifies.


@njit(inline="always")
def _rotl(x, r):
    return np.uint32((x << np.uint32(r)) | (x >> np.uint32(32 - r)))


@njit(inline="always")
def _read32(buf, p):
    """Little-endian uint32 at byte offset p (any alignment). Unsigned indices: numba then skips
    its negative-index fix-up and LLVM merges the four byte loads into one (1.7x on xxh32)."""
    q = np.uint64(p)
    return np.uint32(np.uint32(buf[q]) | (np.uint32(buf[q + np.uint64(1)]) << np.uint32(8))
                     | (np.uint32(buf[q + np.uint64(2)]) << np.uint32(16)) | (np.uint32(buf[q + np.uint64(3)]) << np.uint32(24)))


@njit(inline="always")
def _round(acc, word):
    return np.uint32(_rotl(np.uint32(acc + np.uint32(word * P2)), 13) * P1)


@njit(inline="always")
def xxh32_one(buf, s, e, seed):
    """XXH32 of buf[s:e] (the reference algorithm, one range)."""
    p = s
    if e - s >= 16:
        v1 = np.uint32(seed + P1 + P2)
        v2 = np.uint32(seed + P2)
        v3 = np.uint32(seed)
        v4 = np.uint32(seed - P1)
        while p + 16 <= e:
            v1 = _round(v1, _read32(buf, p))
            v2 = _round(v2, _read32(buf, p + 4))
            v3 = _round(v3, _read32(buf, p + 8))
            v4 = _round(v4, _read32(buf, p + 12))
            p += 16
        h = np.uint32(_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18))
    else:
        h = np.uint32(seed + P5)
    h = np.uint32(h + np.uint32(e - s))
    while p + 4 <= e:
        h = np.uint32(_rotl(np.uint32(h + np.uint32(_read32(buf, p) * P3)), 17) * P4)
        p += 4
    while p < e:
        h = np.uint32(_rotl(np.uint32(h + np.uint32(np.uint32(buf[np.uint64(p)]) * P5)), 11) * P1)
        p += 1
    h = np.uint32(np.uint32(h ^ (h >> np.uint32(15))) * P2)
    h = np.uint32(np.uint32(h ^ (h >> np.uint32(13))) * P3)
    return np.uint32(h ^ (h >> np.uint32(16)))


@njit
def _xxh32_kernel(buf, start, end, seed):
    out = np.empty(len(start), dtype=np.uint32)
    for i in range(len(start)):
        out[i] = xxh32_one(buf, start[i], end[i], seed)
    return out


def check_ranges(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """start/end as int64, checked to lie in buf (compiled kernels do not check bounds)."""
    start = np.ascontiguousarray(start, dtype=np.int64)
    end = np.ascontiguousarray(end, dtype=np.int64)
    if len(start) != len(end):
        raise ValueError(f"{len(start)} range starts but {len(end)} ends")
    if len(start) and (start.min() < 0 or end.max() > len(buf) or (end < start).any()):
        raise ValueError(f"byte ranges outside the buffer of {len(buf)} bytes (or end < start)")
    return start, end


def xxh32_ranges(buf: np.ndarray, start: np.ndarray, end: np.ndarray, seed: int = 0) -> np.ndarray:
    """XXH32 of buf[start[i]:end[i]] for every i, as uint32 (compiled, ~15 ns per 30-byte range)."""
    start, end = check_ranges(buf, start, end)
    return _xxh32_kernel(np.ascontiguousarray(buf, dtype=np.uint8), start, end, np.uint32(seed & 0xFFFFFFFF))


def sha1_ranges(buf: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """datasketch's default `sha1_hash32` (first 4 digest bytes, little-endian) of every range.
    One hashlib call per shingle: the exact-compatibility path, ~10x slower than xxh32."""
    b = buf.tobytes()
    sha1 = hashlib.sha1
    return np.fromiter((int.from_bytes(sha1(b[s:e]).digest()[:4], "little") for s, e in zip(start.tolist(), end.tolist())),
                       dtype=np.uint32, count=len(start))


HASHES = {"xxh32": xxh32_ranges, "sha1": sha1_ranges}


def python_hashfunc(name: str):
    """The per-shingle function equal to a batch hash, for `datasketch.MinHash(hashfunc=...)`."""
    if name == "xxh32":
        import xxhash

        return xxhash.xxh32_intdigest
    if name == "sha1":
        from datasketch.hashfunc import sha1_hash32

        return sha1_hash32
    raise ValueError(f"unknown hash {name!r}; use one of {sorted(HASHES)}")


@njit(inline="always")
def fmix64_scalar(x):
    """MurmurHash3's 64-bit finalizer on one uint64 (inlined into kernels, so loops over it vectorize)."""
    x = x ^ (x >> np.uint64(33))
    x = x * M64_1
    x = x ^ (x >> np.uint64(33))
    x = x * M64_2
    return x ^ (x >> np.uint64(33))


@vectorize(["uint64(uint64)"], cache=True)
def fmix64(x):
    """MurmurHash3's 64-bit finalizer: a bijective avalanche mix of uint64 values (a compiled ufunc)."""
    return fmix64_scalar(x)


BAND_BLOCK = 64  # documents per block of the band-key kernel


@njit
def band_keys_kernel(sig, bands, rows, out):
    """out[d, band] = the fmix64 fold of a band's values (see `minhash.band_keys`). Here, beside
    fmix64, because numba's cache does not notice changes to a compiled function in another module.

    Vectorized over documents: each block of 64 signatures is transposed into `t` (one contiguous
    row of 64 values per permutation), then every band folds its rows into 64 keys at once, so LLVM
    runs fmix64 on vectors of documents (2.1x over one document's dependent chain at a time)."""
    n = sig.shape[0]
    t = np.empty((bands * rows, BAND_BLOCK), dtype=np.uint32)
    h = np.empty(BAND_BLOCK, dtype=np.uint64)
    for d0 in range(0, n, BAND_BLOCK):
        m = min(BAND_BLOCK, n - d0)
        for j in range(m):
            for c in range(bands * rows):
                t[c, j] = sig[d0 + j, c]
        for band in range(bands):
            start = np.uint64(0x9E3779B97F4A7C15) * np.uint64(band + 1)
            for j in range(m):
                h[j] = start
            for r in range(rows):
                col = t[band * rows + r]
                for j in range(m):
                    h[j] = fmix64_scalar(h[j] ^ np.uint64(col[j]))
            for j in range(m):
                out[d0 + j, band] = h[j]


def exact_hashes(buf: np.ndarray, doc_start: np.ndarray, doc_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """xxh3-128 of every normalized document, as (high, low) uint64 halves."""
    import xxhash

    b = buf.tobytes()
    f = xxhash.xxh3_128_intdigest
    digests = [f(b[s:e]) for s, e in zip(doc_start.tolist(), doc_end.tolist())]
    mask = (1 << 64) - 1
    hi = np.fromiter((d >> 64 for d in digests), dtype=np.uint64, count=len(digests))
    lo = np.fromiter((d & mask for d in digests), dtype=np.uint64, count=len(digests))
    return hi, lo
