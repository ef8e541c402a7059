"""The compiled (numba) dedup kernels: MinHash signatures bit-equal to datasketch over a grid of
num_perm / seed / shingle size / unit / scheme, the same bits when numba compiles for a generic
x86-64 CPU (no SIMD beyond SSE2), and the bounds checks the kernels rely on."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xxhash
import zstandard

from stages.dedup import hashing, minhash, text
from tests.conftest import SAMPLE_SMALL

ROOT = Path(__file__).resolve().parents[1]


def _bundled_texts(n: int = 120) -> list[str]:
    with open(SAMPLE_SMALL / "shard-00000.jsonl.zst", "rb") as fh:
        lines = zstandard.ZstdDecompressor().stream_reader(fh).read().decode().splitlines()
    texts = [json.loads(x)["text"] for x in lines[:n]]
    # short, empty, one-word, non-ASCII and 16+-byte-word documents exercise every kernel branch
    return texts + ["", "  ", "one", "a b c d", "Ünïcödé — ΣΊΣΥΦΟΣ ﬁne ①", "x" * 40 + " " + "y" * 17, "a b c d e f g h i j"]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _bundled_texts()


@pytest.mark.parametrize("num_perm,seed,ngram,unit,scheme", [
    (1, 0, 5, "word", "affine32"),
    (7, 3, 1, "word", "affine32"),
    (112, 1, 5, "word", "affine32"),
    (256, 42, 3, "word", "affine32"),
    (130, 9, 5, "char", "affine32"),
    (33, 5, 2, "word", "legacy"),
])
def test_signatures_equal_datasketch_grid(num_perm, seed, ngram, unit, scheme, texts):
    from datasketch import MinHash

    mh = minhash.MinHasher(num_perm=num_perm, seed=seed, scheme=scheme, ngram=ngram, unit=unit)
    sig = mh.signatures(texts)
    assert sig.shape == (len(texts), num_perm) and sig.dtype == np.uint32
    for i, t in enumerate(texts):
        m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme, hashfunc=hashing.python_hashfunc("xxh32"))
        sh = text.shingles(t, n=ngram, unit=unit)
        m.update_batch(sh)
        want = m.digest().astype(np.uint64)
        if not sh:  # datasketch's empty MinHash holds its max value; ours keeps 0xFFFFFFFF
            assert (sig[i] == np.uint32(0xFFFFFFFF)).all()
            continue
        assert np.array_equal(want, sig[i].astype(np.uint64)), (num_perm, seed, ngram, unit, scheme, i)


def test_batch_split_does_not_change_signatures(texts):
    mh = minhash.MinHasher(num_perm=64, seed=2)
    whole = mh.signatures(texts)
    parts = np.concatenate([mh.signatures(texts[i:i + 17]) for i in range(0, len(texts), 17)])
    assert np.array_equal(whole, parts)
    assert mh.signatures([]).shape == (0, 64)


_DIGEST = """
import hashlib, json, sys
import numpy as np
from numba.core import config
from stages.dedup import hashing, minhash, text
from tests.test_dedup_kernels import _bundled_texts
texts = _bundled_texts()
h = hashlib.sha256()
for scheme, unit in (("affine32", "word"), ("legacy", "word"), ("affine32", "char")):
    mh = minhash.MinHasher(num_perm=112, seed=1, scheme=scheme, unit=unit)
    hv, offsets, c = mh.shingle_hashes(texts)
    sig = mh.signatures(texts)
    for arr in (c.buf, c.word_start, c.word_end, hv, offsets, sig, minhash.band_keys(sig, 14, 8)):
        h.update(np.ascontiguousarray(arr).tobytes())
print(json.dumps({"cpu": config.CPU_NAME, "features": config.CPU_FEATURES, "digest": h.hexdigest()}))
"""


def _digest(env_extra: dict, tmp: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "NUMBA_CACHE_DIR": str(tmp), **env_extra}
    out = subprocess.run([sys.executable, "-c", _DIGEST], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernels_give_the_same_bits_on_a_generic_cpu(tmp_path):
    """numba compiled for this CPU (AVX-512 / AVX2 vectors where present) and for a generic x86-64
    target give byte-identical normalized buffers, shingle hashes and signatures."""
    native = _digest({}, tmp_path / "native")
    generic = _digest({"NUMBA_CPU_NAME": "generic"}, tmp_path / "generic")
    assert generic["cpu"] == "generic" and generic["features"] == ""
    assert native["cpu"] is None
    assert native["digest"] == generic["digest"]


def test_kernel_inputs_are_checked():
    buf = np.frombuffer(b"hello world", dtype=np.uint8)
    want = [xxhash.xxh32_intdigest(b"hello"), xxhash.xxh32_intdigest(b"world"), xxhash.xxh32_intdigest(b"")]
    assert hashing.xxh32_ranges(buf, np.array([0, 6, 3]), np.array([5, 11, 3])).tolist() == want
    with pytest.raises(ValueError, match="outside the buffer"):
        hashing.xxh32_ranges(buf, np.array([0]), np.array([12]))
    with pytest.raises(ValueError, match="outside the buffer"):
        hashing.xxh32_ranges(buf, np.array([5]), np.array([4]))
    a, b = minhash.permutations(4, 1, "affine32")
    with pytest.raises(ValueError, match="offsets"):
        minhash.signatures_from_hashes(np.zeros(3, np.uint32), np.array([0, 2]), a, b, "affine32")
    with pytest.raises(ValueError, match="unknown MinHash scheme"):
        minhash.signatures_from_hashes(np.zeros(3, np.uint32), np.array([0, 3]), a, b, "nope")
    with pytest.raises(ValueError, match="shingle size"):
        text.shingle(text.compact(["a b"]), 0)


def _fmix64_py(x: int) -> int:
    m = (1 << 64) - 1
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & m
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & m
    return x ^ (x >> 33)


@pytest.mark.parametrize("bands,rows", [(14, 8), (20, 5), (1, 1)])
def test_band_keys_follow_their_definition(bands, rows):
    """The compiled band keys are the documented mix, in plain Python integers: they are stored in
    `_index/` files that later runs (--against) compare with, so they must never change."""
    rng = np.random.default_rng(bands)
    sig = rng.integers(0, 1 << 32, (137, bands * rows + 3), dtype=np.uint64).astype(np.uint32)  # 2 blocks of 64 + 9
    keys = minhash.band_keys(sig, bands, rows)
    for d in range(len(sig)):
        for band in range(bands):
            h = (0x9E3779B97F4A7C15 * (band + 1)) & ((1 << 64) - 1)
            for r in range(rows):
                h = _fmix64_py(h ^ int(sig[d, band * rows + r]))
            assert int(keys[d, band]) == h
    with pytest.raises(ValueError, match="need"):
        minhash.band_keys(sig, bands, rows + 4)
    x = rng.integers(0, 1 << 63, 50, dtype=np.uint64)
    assert [int(v) for v in hashing.fmix64(x)] == [_fmix64_py(int(v)) for v in x]


def test_mersenne_reduction_equals_modulo_on_edge_values():
    """`minhash.mod_mersenne` (mask, shift, add, one conditional subtract) is x % (2^61 - 1) for every
    uint64 x: the edges of each branch, wrapped products of the largest a, h and b datasketch can
    draw, and random values, against Python integers."""
    p, m64 = (1 << 61) - 1, (1 << 64) - 1
    a_max, h_max, b_max = p - 1, (1 << 32) - 1, p - 1  # randint(1, p) / xxh32 / randint(0, p)
    edges = [0, 1, p - 1, p, p + 1, 2 * p - 1, 2 * p, 2 * p + 1, 1 << 61, (1 << 61) + 6, (1 << 62) - 1, 1 << 62,
             1 << 63, 7 * p - 1, 7 * p, 7 * p + 7, m64 - 8, m64 - 1, m64,
             (a_max * h_max) & m64, (a_max * h_max + b_max) & m64, (a_max * (h_max - 1) + b_max) & m64]
    rng = np.random.default_rng(61)
    xs = edges + [int(v) for v in rng.integers(0, 1 << 64, 20_000, dtype=np.uint64, endpoint=False)]
    got = minhash.mod_mersenne(np.array(xs, dtype=np.uint64))
    assert [int(v) for v in got] == [x % p for x in xs]


def test_legacy_kernel_equals_datasketch_formula_on_extreme_permutations():
    """The legacy kernel against datasketch's own numpy expression, `(a * hv + b) % p & 0xFFFFFFFF` on
    uint64 arrays (the product wraps mod 2^64), for the extreme a, b and shingle hashes, and for
    documents of 1-9 shingles (the 4-shingle blocks and their padded tail)."""
    p = np.uint64((1 << 61) - 1)
    a = np.array([1, 2, 3, (1 << 32) - 1, 1 << 32, (1 << 61) - 2, (1 << 60) + 12345, 0x1F00_0000_0000_0001], dtype=np.uint64)
    b = np.array([0, (1 << 61) - 2, 1, (1 << 61) - 2, 0, (1 << 61) - 2, 7, 1 << 40], dtype=np.uint64)
    rng = np.random.default_rng(7)
    hv = np.concatenate([np.array([0, 1, 2, (1 << 32) - 1, (1 << 32) - 2, 1 << 31], dtype=np.uint32),
                         rng.integers(0, 1 << 32, 39, dtype=np.uint64).astype(np.uint32)])
    offsets = np.cumsum([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    sig = minhash.signatures_from_hashes(hv, offsets, a, b, "legacy")
    with np.errstate(over="ignore"):
        phv = (hv.astype(np.uint64)[:, None] * a[None, :] + b[None, :]) % p & np.uint64(0xFFFFFFFF)
    want = np.stack([phv[s:e].min(axis=0) for s, e in zip(offsets[:-1], offsets[1:])])
    assert np.array_equal(sig.astype(np.uint64), want)


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_every_block_tail_equals_datasketch(scheme):
    """Documents of 0-25 shingles (the kernels' 12- and 4-shingle blocks, their padded tails, empty
    rows), extreme shingle hashes included, against `datasketch.MinHash` fed the same hashes."""
    from datasketch import MinHash

    rng = np.random.default_rng(19)
    lengths = list(range(26))
    hv = rng.integers(0, 1 << 32, sum(lengths), dtype=np.uint64).astype(np.uint32)
    hv[:6] = [0, 1, (1 << 32) - 1, (1 << 31), 2, (1 << 32) - 2]
    offsets = np.cumsum([0] + lengths)
    a, b = minhash.permutations(40, 3, scheme)
    sig = minhash.signatures_from_hashes(hv, offsets, a, b, scheme)
    for d, (s, e) in enumerate(zip(offsets[:-1], offsets[1:])):
        if s == e:
            assert (sig[d] == np.uint32(0xFFFFFFFF)).all()
            continue
        m = MinHash(num_perm=40, seed=3, scheme=scheme, hashfunc=int)
        m.update_batch(hv[s:e].tolist())
        assert np.array_equal(m.digest().astype(np.uint64), sig[d].astype(np.uint64)), (scheme, d)
