"""Dedup algorithms without Ray: normalization and shingles, xxh32, MinHash vs datasketch, LSH
candidates vs datasketch.MinHashLSH, connected components vs union-find."""
from __future__ import annotations

import random

import numpy as np
import pytest
import xxhash

from stages.dedup import cc, hashing, lsh, minhash, text
from tests.conftest import SAMPLE_SMALL


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    import json

    import zstandard

    with open(SAMPLE_SMALL / "shard-00000.jsonl.zst", "rb") as fh:
        lines = zstandard.ZstdDecompressor().stream_reader(fh).read().decode().splitlines()
    return [json.loads(x)["text"] for x in lines[:400]]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "ab cdéf\tGH,.12€ßİ\u00a0\u200b\u0301 xyzΣς\n\r\x00\x1fＡ①ﬁ\u3000日本"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(n)]


EDGE_TEXTS = ["", " ", "\n\t ", "one", "a b c d", "a b c d e", "a b c d e f", "  lead and trail  ", "x" * 300 + " y" * 3]


@pytest.mark.parametrize("norm", [text.Normalization(), text.Normalization(False, False, False, False),
                                  text.Normalization(lowercase=True, punctuation=False, digits=False, unicode=False)])
def test_batch_normalization_equals_reference(norm, real_texts):
    texts = real_texts[:80] + _random_texts(200) + EDGE_TEXTS
    c = text.compact(texts, norm)
    for i, t in enumerate(texts):
        assert c.doc_bytes(i) == text.normalize(t, norm).encode("utf-8", "surrogatepass"), repr(t)


def test_normalization_examples():
    assert text.normalize("Hello,  WORLD!\n2024 — Café") == "hello world 0000 cafe"
    assert text.normalize("Hello,  WORLD!", text.Normalization(punctuation=False)) == "hello, world!"
    assert text.normalize("ﬁne Ａ①") == "fine a0"  # NFKD folds compatibility forms


@pytest.mark.parametrize("unit,n", [("word", 5), ("word", 1), ("word", 3), ("char", 5), ("char", 1)])
def test_batch_shingles_equal_reference(unit, n, real_texts):
    texts = real_texts[:50] + _random_texts(150, seed=1) + EDGE_TEXTS
    sh = text.shingle(text.compact(texts), n, unit)
    for i, t in enumerate(texts):
        assert sh.to_bytes(i) == text.shingles(t, n=n, unit=unit), repr(t)
    assert text.shingles("a b c", n=5) == [b"a b c"]  # short document: one shingle of everything
    assert text.shingles("  ,, ", n=5) == []


def test_xxh32_and_sha1_ranges_equal_the_libraries():
    from datasketch.hashfunc import sha1_hash32

    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, 6000, dtype=np.uint8)
    start = rng.integers(0, 3000, 800)
    end = start + np.concatenate([np.arange(0, 70), rng.integers(0, 2500, 730)])
    raw = buf.tobytes()
    want = np.array([xxhash.xxh32_intdigest(raw[s:e]) for s, e in zip(start, end)], dtype=np.uint32)
    assert np.array_equal(hashing.xxh32_ranges(buf, start, end), want)
    s1 = hashing.sha1_ranges(buf, start[:100], end[:100])
    assert [int(x) for x in s1] == [sha1_hash32(raw[s:e]) for s, e in zip(start[:100], end[:100])]


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
@pytest.mark.parametrize("hash_name", ["xxh32", "sha1"])
def test_signatures_equal_datasketch(scheme, hash_name, real_texts):
    from datasketch import MinHash

    texts = real_texts[:60] + EDGE_TEXTS
    mh = minhash.MinHasher(num_perm=64, seed=7, scheme=scheme, hash=hash_name)
    sig = mh.signatures(texts)
    for i, t in enumerate(texts):
        m = MinHash(num_perm=64, seed=7, scheme=scheme, hashfunc=hashing.python_hashfunc(hash_name))
        m.update_batch(text.shingles(t))
        assert np.array_equal(m.digest().astype(np.uint64), sig[i].astype(np.uint64)), (scheme, hash_name, i)
        if i < 3:
            assert mh.datasketch(sig[i]) == m  # our signature loads back as the same datasketch object


def test_default_signature_equals_datasketch_defaults(real_texts):
    """datasketch 2.x defaults (num_perm=128, seed=1, affine32, sha1) with hash: sha1."""
    from datasketch import MinHash

    mh = minhash.MinHasher(num_perm=128, seed=1, hash="sha1")
    sig = mh.signatures(real_texts[:10])
    for i, t in enumerate(real_texts[:10]):
        m = MinHash()
        m.update_batch(text.shingles(t))
        assert np.array_equal(m.digest(), sig[i])


def test_lsh_candidates_equal_datasketch_minhashlsh(real_texts):
    from datasketch import MinHashLSH

    rng = random.Random(3)
    texts = list(real_texts[:150])
    for t in real_texts[:60]:  # near duplicates at many edit rates, so some are candidates and some not
        words = t.split()
        for _ in range(max(1, int(len(words) * rng.uniform(0.0, 0.06)))):
            words[rng.randrange(len(words))] = rng.choice(words)
        texts.append(" ".join(words))
    bands, rows = 14, 8
    mh = minhash.MinHasher(num_perm=bands * rows)
    sig = mh.signatures(texts)
    has = [i for i in range(len(texts)) if text.shingles(texts[i])]
    keys = minhash.band_keys(sig[has], bands, rows)
    uid = np.repeat(np.array(has, dtype=np.uint64), bands)
    band = np.tile(np.arange(bands, dtype=np.int16), len(has))
    pairs = lsh.bucket_pairs(band, keys.ravel(), np.zeros(len(uid), np.uint64), uid, collapse_exact=False,
                             all_pairs=True, max_pairs_bucket=10_000)["fuzzy"]
    ours = set(zip(pairs[0].tolist(), pairs[1].tolist()))
    index = MinHashLSH(num_perm=bands * rows, params=(bands, rows))
    for i in has:
        index.insert(i, mh.datasketch(sig[i]))
    theirs = {(min(i, j), max(i, j)) for i in has for j in index.query(mh.datasketch(sig[i])) if i != j}
    assert len(theirs) > 20 and ours == theirs


def test_lsh_collapses_identical_texts_and_stars_big_buckets():
    u = np.arange(10, dtype=np.uint64)
    band = np.zeros(10, np.int16)
    key = np.full(10, 5, np.uint64)
    ekey = np.array([1, 1, 1, 2, 3, 4, 5, 6, 7, 8], np.uint64)
    p = lsh.bucket_pairs(band, key, ekey, u, collapse_exact=True, all_pairs=True, max_pairs_bucket=100)["fuzzy"]
    assert len(p[0]) == 8 * 7 // 2 and 1 not in p[0].tolist() + p[1].tolist()  # one representative of {0,1,2}
    p = lsh.bucket_pairs(band, key, ekey, u, collapse_exact=True, all_pairs=True, max_pairs_bucket=4)["fuzzy"]
    assert len(p[0]) == 7 and set(p[0].tolist()) == {0}  # star around the smallest exact hash (ekey 1)
    # The center follows the texts (ekey), not the uids (which follow the sharding): uid 9 here;
    # an --against document (top bit) is the center only of a bucket without documents of this run.
    down = np.arange(10, 0, -1, dtype=np.uint64)
    p = lsh.bucket_pairs(band, key, down, u, collapse_exact=True, all_pairs=True, max_pairs_bucket=4)["fuzzy"]
    assert set(p[1].tolist()) == {9} and len(p[0]) == 9
    mixed = np.r_[u[:5], u[5:] | np.uint64(1 << 63)]
    p = lsh.bucket_pairs(band, key, down, mixed, collapse_exact=True, all_pairs=True, max_pairs_bucket=4)["fuzzy"]
    assert all(4 in ab for ab in zip(p[0].tolist(), p[1].tolist())) and len(p[0]) == 9  # the new document of the smallest ekey (6), not an old one (1-5)
    assert lsh.candidate_probability(0.8, 14, 8) == pytest.approx(0.924, abs=1e-3)


def test_lsh_all_pairs_of_many_buckets_equal_a_plain_loop():
    """Buckets of sizes 1..12 in two bands (the vectorized pair step, one per distinct size) give
    exactly the pairs of itertools.combinations per bucket, plus stars around the smallest exact
    hash for buckets over the cap."""
    from itertools import combinations

    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 13, 60)
    key = np.repeat(np.arange(len(sizes), dtype=np.uint64), sizes)
    band = (key % 2).astype(np.int16)
    u = rng.permutation(len(key)).astype(np.uint64) + np.uint64(7)
    ekey = np.arange(len(key), dtype=np.uint64)  # every text distinct: nothing collapses
    got = lsh.bucket_pairs(band, key, ekey, u, collapse_exact=True, all_pairs=True, max_pairs_bucket=9)["fuzzy"]
    want = set()
    for k in range(len(sizes)):
        members = sorted(u[key == k].tolist())
        center = int(u[key == k][np.argmin(ekey[key == k])])  # a big bucket's star: around the smallest exact hash
        want |= (set(combinations(members, 2)) if len(members) <= 9
                 else {(min(center, m), max(center, m)) for m in members if m != center})
    assert set(zip(got[0].tolist(), got[1].tolist())) == want and len(got[0]) == len(want)


def _partitioned_cc(a: np.ndarray, b: np.ndarray, parts: int) -> dict[int, int]:
    key, nbr = np.concatenate([a, b]), np.concatenate([b, a])
    for _ in range(60):
        outs = [cc.large_star(key[key % parts == p], nbr[key % parts == p]) for p in range(parts)]
        v, m = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        changed = sum(o[2] for o in outs)
        outs = [cc.small_star(v[v % parts == p], m[v % parts == p]) for p in range(parts)]
        x, r = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])
        changed += sum(o[2] for o in outs)
        key, nbr = np.concatenate([x, r]), np.concatenate([r, x])
        if not changed:
            node, root = cc.labels(key, nbr)
            return dict(zip(node.tolist(), root.tolist()))
    raise AssertionError("did not converge")


@pytest.mark.parametrize("seed", range(6))
def test_large_small_star_equals_union_find(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    e = int(rng.integers(1, 500))
    a = (rng.integers(0, n, e) * 7919 + (1 << 40)).astype(np.uint64)
    b = (rng.integers(0, n, e) * 7919 + (1 << 40)).astype(np.uint64)
    keep = a != b
    a, b = a[keep], b[keep]
    # a long path (worst case for label propagation) on top of the random graph
    path = np.arange(1000, 1200, dtype=np.uint64)
    a, b = np.concatenate([a, path[:-1]]), np.concatenate([b, path[1:]])
    assert _partitioned_cc(a, b, int(rng.integers(1, 5))) == cc.reference_components(a, b)


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_semantic_kmeans_sample_does_not_depend_on_the_sharding(tmp_path, fraction):
    """The k-means pass reads the same sample in the same order (picked and ordered by a hash of
    each text) from one signature file and from the same documents shuffled over five, one empty:
    the same centroids. It used to take rows evenly spaced in each shard, in shard order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.dedup import passes_semantic

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(6, 16))
    emb = (centers[rng.integers(0, 6, 600)] + 0.3 * rng.normal(size=(600, 16))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    elo = rng.integers(0, 2**63, 600, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

    def write(path, rows):
        pq.write_table(pa.table({"elo": pa.array(elo[rows], pa.uint64()), "embedding": pa.FixedSizeListArray.from_arrays(
            pa.array(emb[rows].ravel()), 16)}), path)
        return str(path)

    perm = rng.permutation(600)
    layouts = {"one": [write(tmp_path / "one.parquet", np.arange(600))],
               "five": [write(tmp_path / f"s{i}.parquet", perm[a:b]) for i, (a, b) in enumerate([(0, 50), (50, 50), (50, 400), (400, 401), (401, 600)])]}
    got = {}
    for name, paths in layouts.items():
        (tmp_path / name).mkdir()
        m = passes_semantic.kmeans_task(str(tmp_path / name), "kmeans", paths, fraction, k=6, seed=0, iters=10)
        assert 0.2 * 600 < m["sample"] <= 600 and (m["sample"] == 600) == (fraction == 1.0)
        got[name] = pq.read_table(tmp_path / name / "centroids.parquet").column("centroid").to_pylist()
    assert got["one"] == got["five"]


@pytest.mark.parametrize("carrier", [1, 2])
def test_exact_copies_get_the_reason_of_their_text_whichever_copy_has_the_edges(tmp_path, carrier):
    """A group of keeper k (text A), x and y (text B: only the copy of the smallest uid, which
    follows the sharding, gets the semantic edge) and z (text C, fuzzy): x and y are both
    dup:semantic whichever of them carries the edge (y was dup:fuzzy, from the group's kinds)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from stages.dedup import passes_groups, shuffle
    from stages.dedup.tables import EXACT, FUZZY, MEMBER_SCHEMA, SEMANTIC

    kinds = [FUZZY | SEMANTIC, EXACT, EXACT, FUZZY]
    kinds[carrier] |= SEMANTIC
    t = pa.table({"root": np.zeros(4, np.uint64), "uid": np.arange(4, dtype=np.uint64), "id": ["k", "x", "y", "z"],
                  "score": [1.0, 0.0, 0.0, 0.0], "length": np.full(4, 10), "ehi": np.array([1, 2, 2, 3], np.uint64),
                  "elo": np.array([1, 2, 2, 3], np.uint64), "kinds": np.array(kinds, np.uint8),
                  "old_id": pa.nulls(4, pa.string()), "old_ehi": pa.nulls(4, pa.uint64()), "old_elo": pa.nulls(4, pa.uint64())},
                 schema=MEMBER_SCHEMA)
    f = shuffle.write(tmp_path / "members.parquet", t, np.zeros(4, np.int64), 1)
    passes_groups.elect_task(str(tmp_path), "p00000", 0, [(str(tmp_path / f["name"]), f["parts"])], n_homes=1, per_home=1, keep="best")
    d = pq.read_table(tmp_path / "decisions-p00000.parquet")
    assert dict(zip(d.column("uid").to_pylist(), d.column("reason").to_pylist())) == {0: None, 1: "dup:semantic", 2: "dup:semantic", 3: "dup:fuzzy"}
