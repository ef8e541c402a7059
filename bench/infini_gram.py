"""∞-gram index: build speed and query latency against the `infini-gram` package's engine (its Rust
indexer and C++ engine, PyPI wheel 2.6.0) on the same tokens, with every count and probability
checked equal.

    python bench/infini_gram.py [--docs 17264] [--shards 4] [--queries 1000] [--contam-limit 200]

Data: the first `--docs` documents of data/sample, a byte-level BPE (4,096 ids) trained on 5,000 of
them, written as a dataset dir of `--shards` Parquet shards; the index covers all shards but the
last, which is held out for the scorer. Build: ours = `curate ngram build --no-ray` in-process
(tokenize + suffix arrays + atomic writes + markers), and the suffix arrays alone (pydivsufsort);
peer = infini-gram's `indexing.build_sa` (rust_indexing make-part/merge/concat, all cores) on token
files holding exactly our tokens, in its own layout (\\xff\\xff before each document). Queries:
n-grams drawn from the corpus (1-10 tokens, seeded) and, for prob, contexts of 1-20 tokens with the
token that follows them: ours one query per call (latency; prob by binary search on the context
length, checked equal to the per-position path on 100) and all counts in one call (throughput); the
peer's `count` / `infgram_prob` one per call. Scorer: held-out documents per second. Contamination:
`--contam-limit` examples of each bundled benchmark. Results also go to runs/bench_infini_gram/.
Wall-clock seconds on a shared 2-core machine: `load` (1-min load average) is printed with them.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
# this file's folder comes first on sys.path and this file is named like the peer's package: drop it
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from pipeline import io  # noqa: E402
from pipeline.models import bpe, infini_contam, train  # noqa: E402
from pipeline.models import infini_gram as ig  # noqa: E402
from pipeline.models.suffix_array import build_sa  # noqa: E402

OUT = ROOT / "runs" / "bench_infini_gram"


def corpus(n_docs: int, shards: int) -> tuple[Path, Path, int]:
    ds, tok = OUT / "ds", OUT / "tokenizer.json"
    docs = list(train.iter_docs(ROOT / "data" / "sample", source_field="domain"))[:n_docs]
    if not tok.exists():
        bpe.train_bpe([d.text for d in train.sample_docs(iter(docs), 5000, seed=0)], 4096, tok)
    nbytes = 0
    for i in range(shards):
        part = docs[i * len(docs) // shards:(i + 1) * len(docs) // shards]
        nbytes += sum(len(d.text.encode()) for d in part) if i < shards - 1 else 0
        p = ds / f"part-{i:05d}.parquet"
        if not p.exists():
            io.write_parquet(pa.table({"id": [d.id for d in part], "text": pa.array([d.text for d in part], pa.large_string())}), p)
    return ds, tok, nbytes


def peer_build(ix: ig.InfiniGram, d: Path) -> float | str:
    """infini-gram's indexer on our tokens; seconds, or why it could not run."""
    try:
        import infini_gram  # noqa: F401
    except ImportError:
        return "infini-gram not installed (pip install infini-gram: a manylinux wheel with its Rust indexer)"
    d.mkdir(parents=True, exist_ok=True)
    for i, sh in enumerate(ix.shards):
        t, st = np.asarray(sh.tokens), sh.starts
        sep = np.array([0xFFFF], np.uint16)
        docs = [t[a:b - 1] for a, b in zip(st[:-1], st[1:])]
        (d / f"tokenized.{i}").write_bytes(np.concatenate([x for doc in docs for x in (sep, doc)]).astype("<u2").tobytes())
        (d / f"offset.{i}").write_bytes((np.concatenate([[0], np.cumsum([2 * (len(x) + 1) for x in docs])[:-1]])).astype("<u8").tobytes())
        (d / f"table.{i}").unlink(missing_ok=True)
    code = ("import types, time; from infini_gram import indexing\n"
            f"a = types.SimpleNamespace(save_dir={str(d)!r}, temp_dir={str(d)!r}, worker_id=0, shards={len(ix.shards)}, workers=1, "
            f"cpus={os.cpu_count()}, mem=8, token_width=2)\n"
            "t0 = time.perf_counter(); indexing.build_sa(a); print('SECONDS', time.perf_counter() - t0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    line = [x for x in r.stdout.splitlines() if x.startswith("SECONDS")]
    return float(line[0].split()[1]) if line else f"infini-gram indexer failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"


def lat(fn, items) -> tuple[np.ndarray, list]:
    times, res = [], []
    for x in items:
        t0 = time.perf_counter()
        res.append(fn(x))
        times.append(time.perf_counter() - t0)
    return np.array(times), res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=17264)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--contam-limit", type=int, default=200)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    ds, tok, nbytes = corpus(a.docs, a.shards)
    ref = OUT / "ref"  # every shard but the last
    ref.mkdir(exist_ok=True)
    for p in sorted(ds.glob("part-*.parquet"))[:-1]:
        if not (ref / p.name).exists():
            (ref / p.name).symlink_to(p)
    res = {"load_before": os.getloadavg()[0]}
    t0 = time.perf_counter()
    ig.build(ref, OUT / "idx", tok, force=True, use_ray=False)
    res["build_s"] = time.perf_counter() - t0
    ix = ig.InfiniGram(OUT / "idx")
    res["tokens"], res["text_mb"] = int(ix.meta["tokens"]), nbytes / 1e6
    t0 = time.perf_counter()
    for sh in ix.shards:
        build_sa(np.asarray(sh.tokens))
    res["sa_s"] = time.perf_counter() - t0
    peer = peer_build(ix, OUT / "peer")
    res["peer_sa_s"] = peer

    rng = np.random.default_rng(0)
    flat = [np.asarray(sh.tokens) for sh in ix.shards]

    def draw(lo: int, hi: int) -> np.ndarray:
        while True:
            s = flat[int(rng.integers(len(flat)))]
            n = int(rng.integers(lo, hi + 1))
            i = int(rng.integers(0, len(s) - n))
            q = s[i:i + n].astype(np.int64)
            if not (q == ix.sep).any():
                return q

    counts_q = [draw(1, 10) for _ in range(a.queries)]
    prob_q = [draw(2, 21) for _ in range(a.queries)]
    t_cnt, ours_cnt = lat(lambda q: int(ix.count([q])[0]), counts_q)
    t0 = time.perf_counter()
    batch_cnt = ix.count(counts_q)
    res["count_batch_us"] = (time.perf_counter() - t0) / a.queries * 1e6
    t_prob, ours_prob = lat(lambda q: float(ix.prob_next(q[:-1], int(q[-1]))["prob"]), prob_q)
    assert np.allclose(ours_prob, [ix.infgram([q])["prob"][-1] for q in prob_q[:100]] + ours_prob[100:], rtol=1e-12, atol=0)
    res["count_us"], res["prob_us"] = float(np.median(t_cnt) * 1e6), float(np.median(t_prob) * 1e6)
    assert list(batch_cnt) == ours_cnt
    if not isinstance(peer, str):
        from infini_gram.engine import InfiniGramEngine

        eng = InfiniGramEngine(index_dir=str(OUT / "peer"), eos_token_id=0)
        tp_cnt, peer_cnt = lat(lambda q: eng.count(q.tolist())["count"], counts_q)
        tp_prob, peer_prob = lat(lambda q: eng.infgram_prob(q[:-1].tolist(), int(q[-1]))["prob"], prob_q)
        res["peer_count_us"], res["peer_prob_us"] = float(np.median(tp_cnt) * 1e6), float(np.median(tp_prob) * 1e6)
        res["counts_equal"] = peer_cnt == ours_cnt
        res["probs_equal"] = bool(np.allclose(peer_prob, ours_prob, rtol=1e-12, atol=0))

    from scorers.infini_gram import InfiniGramScorer
    import pyarrow.parquet as pq

    held = pq.read_table(sorted(ds.glob("part-*.parquet"))[-1], columns=["text"]).column("text").to_pylist()[:300]
    sc = InfiniGramScorer(str(OUT / "idx"), max_tokens=1024)
    t0 = time.perf_counter()
    sc(held)
    res["scorer_docs_s"] = len(held) / (time.perf_counter() - t0)
    res["scorer_tokens"] = int(sum(min(len(s), 1024) for s in ix.encode(held)))
    from pipeline.config import bundled_benchmarks

    targets = {k: v[:a.contam_limit] for k, v in train.load_targets(bundled_benchmarks()).items()}
    t0 = time.perf_counter()
    rep = infini_contam.report(ix, targets, 20)
    res["contam_s"], res["contam_examples"] = time.perf_counter() - t0, sum(len(v) for v in targets.values())
    res["contam_top"] = {k: [v["max_longest"], v["span_at_least_20"]] for k, v in rep["benchmarks"].items()}
    res["load_after"] = os.getloadavg()[0]
    io.write_json(res, OUT / "results.json")

    tps = res["tokens"] / res["sa_s"]
    print(f"index: {res['tokens']:,} tokens ({res['text_mb']:.1f} MB text) in {a.shards - 1} shards; load {res['load_before']:.1f} -> {res['load_after']:.1f}")
    print(f"build, tokenize + suffix arrays + writes: {res['build_s']:.2f} s = {res['tokens'] / res['build_s'] / 1e6:.2f} M tokens/s, "
          f"{res['text_mb'] / res['build_s']:.2f} MB/s of text")
    print(f"suffix arrays only: ours (pydivsufsort) {res['sa_s']:.2f} s = {tps / 1e6:.2f} M tokens/s", end="")
    if isinstance(peer, str):
        print(f"; peer: not run ({peer})")
    else:
        print(f"; infini-gram rust_indexing ({os.cpu_count()} threads) {peer:.2f} s = {res['tokens'] / peer / 1e6:.2f} M tokens/s; "
              f"ratio ours/peer speed {peer / res['sa_s']:.2f}x")
    print(f"count latency (median, 1 query per call): ours {res['count_us']:.0f} us", end="")
    print(f"; peer {res['peer_count_us']:.0f} us; ratio {res['peer_count_us'] / res['count_us']:.3f}x" if "peer_count_us" in res else "")
    print(f"count throughput, {a.queries} queries in one call: {res['count_batch_us']:.1f} us/query", end="")
    print(f"; ratio vs peer one-by-one {res['peer_count_us'] / res['count_batch_us']:.2f}x" if "peer_count_us" in res else "")
    print(f"infgram prob latency (median): ours {res['prob_us']:.0f} us", end="")
    print(f"; peer {res['peer_prob_us']:.0f} us; ratio {res['peer_prob_us'] / res['prob_us']:.3f}x" if "peer_prob_us" in res else "")
    if "counts_equal" in res:
        print(f"equal to the peer: counts {res['counts_equal']}, probabilities {res['probs_equal']} ({a.queries} each)")
    print(f"scorer: {res['scorer_docs_s']:.1f} held-out docs/s ({res['scorer_tokens'] / len(held) * res['scorer_docs_s']:.0f} tokens/s)")
    print(f"contamination: {res['contam_examples']:,} benchmark examples in {res['contam_s']:.1f} s "
          f"({res['contam_examples'] / res['contam_s']:.0f} examples/s)")


if __name__ == "__main__":
    main()
