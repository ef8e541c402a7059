"""MinHash kernel vs rensa's kernel: the same flat shingle hashes, one core, CPU time, alternated.

    python bench/dedup_kernel.py [--alternations 21] [--n 4000] [--calls 3]

Both kernels get the same uint32 shingle hashes and row offsets (ours as uint32/int64, rensa's
`RMinHash.digest_matrix_from_flat_token_hashes` as the uint64 arrays it takes), num_perm=112, seed 1.
Ours applies datasketch's affine32 permutations (bit-equal to `datasketch.MinHash`, asserted here
against datasketch for the first 200 documents); rensa its own R-MinHash. Each alternation times
`--calls` calls of ours, then of rensa, in CPU time of this process (`time.process_time`), so time
the shared VM gives to other processes is not counted; the ratio is taken per alternation and the
median printed. Workloads: the shingle hashes of `--n` documents of data/sample (what
`bench/dedup.py sig` uses), then random hashes at fixed lengths of 35, 100, 470 and 2,000 shingles
per document (~1.9M shingles each), because the two kernels scale differently with length.

Last, a probe of what rensa computes: 10,000 one-shingle documents. For an exact MinHash (each
coordinate a full permutation of the token's hash) every coordinate of a one-token digest is
uniform on [0, 2^32), so ~75% of them lie below 0.75 * 2^32; the count per token is printed for
both. Results: bench/README_dedup.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dedup import NUM_PERM, SEED, load_sample, pin_one_core  # noqa: E402  (sets the thread variables to 1)

import numpy as np  # noqa: E402

from stages.dedup import hashing, minhash, text  # noqa: E402


def sample_hashes(n: int, mh: minhash.MinHasher) -> tuple[list[str], np.ndarray, np.ndarray]:
    texts = [d["text"] for d in load_sample()[:n]]
    parts, offs = [], [0]
    for i in range(0, len(texts), 1000):
        hv, o, _ = mh.shingle_hashes(texts[i:i + 1000])
        parts.append(hv)
        offs.extend((o[1:] + offs[-1]).tolist())
    return texts, np.concatenate(parts), np.array(offs, dtype=np.int64)


def random_hashes(per_doc: int, total: int = 1_880_000) -> tuple[np.ndarray, np.ndarray]:
    docs = total // per_doc
    hv = np.random.default_rng(per_doc).integers(0, 1 << 32, docs * per_doc, dtype=np.uint64).astype(np.uint32)
    return hv, np.arange(0, docs * per_doc + 1, per_doc, dtype=np.int64)


def alternate(hv: np.ndarray, offsets: np.ndarray, mh: minhash.MinHasher, rensa, alternations: int, calls: int) -> dict:
    hv64, off64 = hv.astype(np.uint64), offsets.astype(np.uint64)

    def ours():
        return minhash.signatures_from_hashes(hv, offsets, mh.a, mh.b, mh.scheme)

    def theirs():
        return rensa.RMinHash.digest_matrix_from_flat_token_hashes(hv64, off64, NUM_PERM, SEED)

    ours(), theirs()  # warm-up (compiled kernels loaded, buffers touched), not timed
    t_ours, t_rensa = [], []
    for _ in range(alternations):
        for fn, acc in ((ours, t_ours), (theirs, t_rensa)):
            t0 = time.process_time()
            for _ in range(calls):
                fn()
            acc.append((time.process_time() - t0) / calls)
    ratios = [r / o for o, r in zip(t_ours, t_rensa)]
    docs = len(offsets) - 1
    return {"docs": docs, "shingles_per_doc": len(hv) / docs,
            "ours_docs_s": docs / float(np.median(t_ours)), "rensa_docs_s": docs / float(np.median(t_rensa)),
            "ours_pairs_s": len(hv) * NUM_PERM / float(np.median(t_ours)),
            "rensa_pairs_s": len(hv) * NUM_PERM / float(np.median(t_rensa)),
            "ratio_median": float(np.median(ratios)), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def rensa_probe(mh: minhash.MinHasher, rensa) -> tuple[float, float]:
    """Mean number of coordinates below 0.75 * 2^32 in one-token digests: ours, rensa's."""
    hv = np.random.default_rng(1).integers(0, 1 << 32, 10_000, dtype=np.uint64)
    offsets = np.arange(len(hv) + 1, dtype=np.uint64)
    ours = minhash.signatures_from_hashes(hv.astype(np.uint32), offsets.astype(np.int64), mh.a, mh.b, mh.scheme)
    theirs = np.array(rensa.RMinHash.digest_matrix_from_flat_token_hashes(hv, offsets, NUM_PERM, SEED).to_rows(), dtype=np.uint64)
    cut = 3 << 30
    return float((ours < cut).sum(1).mean()), float((theirs < cut).sum(1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alternations", type=int, default=21)
    ap.add_argument("--n", type=int, default=4000, help="documents of data/sample")
    ap.add_argument("--calls", type=int, default=3, help="kernel calls per timing")
    args = ap.parse_args()
    import rensa
    from datasketch import MinHash

    print(f"pinned to core {pin_one_core()}; rensa {rensa.__version__ if hasattr(rensa, '__version__') else ''}; "
          f"{args.alternations} alternations x {args.calls} calls, CPU time, num_perm={NUM_PERM}")
    mh = minhash.MinHasher(num_perm=NUM_PERM, seed=SEED)
    texts, hv, offsets = sample_hashes(args.n, mh)
    sig = minhash.signatures_from_hashes(hv, offsets, mh.a, mh.b, mh.scheme)
    for i in range(200):
        m = MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=hashing.python_hashfunc("xxh32"))
        m.update_batch(text.shingles(texts[i]))
        assert np.array_equal(m.digest(), sig[i]), f"document {i}: our kernel differs from datasketch"
    print("ours equals datasketch.MinHash on the first 200 documents")
    workloads = [(f"data/sample, {args.n} docs", hv, offsets)]
    workloads += [(f"random, {k} shingles/doc", *random_hashes(k)) for k in (35, 100, 470, 2000)]
    print(f"{'workload':28s} {'shingles/doc':>12s} {'ours docs/s':>12s} {'rensa docs/s':>12s} "
          f"{'ours Gpair/s':>12s} {'rensa Gpair/s':>13s} {'ours/rensa median':>17s} {'min-max':>11s}")
    for name, h, o in workloads:
        r = alternate(h, o, mh, rensa, args.alternations, args.calls)
        print(f"{name:28s} {r['shingles_per_doc']:12.0f} {r['ours_docs_s']:12,.0f} {r['rensa_docs_s']:12,.0f} "
              f"{r['ours_pairs_s'] / 1e9:12.1f} {r['rensa_pairs_s'] / 1e9:13.1f} {r['ratio_median']:16.2f}x "
              f"{r['ratio_min']:5.2f}-{r['ratio_max']:.2f}")
    ours_low, rensa_low = rensa_probe(mh, rensa)
    print(f"one-token digests, coordinates below 0.75 * 2^32 (of {NUM_PERM}; an exact MinHash has ~{0.75 * NUM_PERM:.0f}): "
          f"ours {ours_low:.1f}, rensa {rensa_low:.1f}")


if __name__ == "__main__":
    main()
