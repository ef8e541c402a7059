"""Dedup benchmarks: ours vs datasketch, rensa and datatrove, same documents, one core.

    python bench/dedup.py sig      [--n 4000] [--repeats 5]       signature throughput (text -> MinHash), kernel vs rensa
    python bench/dedup.py e2e      [--docs 200000] [--skip-datatrove]  end-to-end fuzzy dedup vs datatrove's 4 steps
    python bench/dedup.py quality  [--originals 3000]             planted near duplicates: precision / recall / F1
    python bench/dedup.py all

Every timed run is pinned to one core with BLAS/OpenMP threads at 1 (Ray, started inside the
pinned process, inherits the affinity). Documents come from the bundled corpus (data/sample).
Requires the `bench` extra (datatrove, spacy, rensa). Results: bench/README_dedup.md.

sig: the same 5-gram shingles of the same normalized text for everyone (our `text.shingles`
reference), num_perm=112, seed 1. Ours goes text -> signature in batches of 1000 through the
compiled (numba) kernels; "ours kernel" and "rensa kernel" are given the same flat shingle hashes
(ours applies datasketch's permutations, rensa its own R-MinHash). The timed methods run once per
repeat, interleaved, in CPU time of the process (time.process_time: the shared VM's other processes
are not counted); best-of and median are printed with the ratios ours / rensa. bench/dedup_kernel.py
compares the two kernels alone in more detail (21 alternations, documents of 35-2,000 shingles). datasketch
uses its fastest batch API (`MinHash.bulk`) with its default sha1 hash and with xxh32; rensa its
fastest (`digest_matrix_from_token_sets`), both fed Python-built shingles, which is what a user of
either has to do; "rensa kernel" feeds rensa our vectorized shingle hashes to isolate its Rust
permutation kernel. datatrove: `MinhashDedupSignature.get_shingles` + `get_signature` per
document (its signature step without file IO; spaCy word tokenizer as configured for English).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "RAYON_NUM_THREADS",
             "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import glob
import io
import itertools
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from stages.dedup import hashing, minhash, text  # noqa: E402

NUM_PERM, BANDS, ROWS, SEED = 112, 14, 8, 1
KERNEL_CALLS = 5  # each kernel timing covers 5 calls on all documents (one call is only ~10-30 ms)


def pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def load_sample() -> list[dict]:
    import zstandard

    docs = []
    for path in sorted(glob.glob(str(ROOT / "data" / "sample" / "*.jsonl.zst"))):
        with open(path, "rb") as fh:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8"):
                docs.append(json.loads(line))
    if not docs:
        sys.exit("data/sample is missing (bash data/build_corpus.sh)")
    return docs


def patch_datatrove_xxhash() -> None:
    """datatrove 0.10 passes str to xxhash.xxh64_intdigest, which xxhash >= 4 refuses; encode first
    (what older xxhash did internally), so its default FineWeb config runs."""
    import xxhash

    import datatrove.utils.hashes.xxhash as dx

    dx.xxhash64 = lambda d: xxhash.xxh64_intdigest(d.encode() if isinstance(d, str) else d)
    dx.xxhash32 = lambda d: xxhash.xxh32_intdigest(d.encode() if isinstance(d, str) else d)


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def cpu_timed(fn, *args):
    """CPU seconds of this process (all its threads): on the shared VM, time the core spends on
    other people's processes is not counted, which wall time on a pinned core would include."""
    t0 = time.process_time()
    out = fn(*args)
    return time.process_time() - t0, out


# ---------------------------------------------------------------------------- signature throughput


def _stats(xs: list[float]) -> str:
    return f"{max(xs):10.0f} {float(np.median(xs)):10.0f}"


def bench_sig(n: int, repeats: int) -> dict:
    """Every timed method once per repeat, in turn (interleaved, so a busy neighbour slows all of
    them alike), in CPU time of this process (`cpu_timed`); best-of and median docs/s over the
    repeats, and the ratios taken per repeat."""
    docs = load_sample()
    texts = [d["text"] for d in docs[:n]]
    words = sum(len(t.split()) for t in texts)
    print(f"signatures: {len(texts)} docs of data/sample, {words / len(texts):.0f} words/doc, num_perm={NUM_PERM}, one core, "
          f"{repeats} interleaved repeats")
    mh = minhash.MinHasher(num_perm=NUM_PERM, seed=SEED)
    mh.signatures(texts[:50])  # load the compiled kernels and build the normalization tables (once per process)
    batches = [texts[i:i + 1000] for i in range(0, len(texts), 1000)]

    def ours():
        return np.concatenate([mh.signatures(b) for b in batches])

    # the same flat shingle hashes for both kernels
    hv_parts, offs = [], [0]
    for b in batches:
        hv, o, _ = mh.shingle_hashes(b)
        hv_parts.append(hv)
        offs.extend((o[1:] + offs[-1]).tolist())
    flat32, offsets = np.concatenate(hv_parts), np.array(offs, dtype=np.int64)
    flat64, offsets64 = flat32.astype(np.uint64), offsets.astype(np.uint64)
    print(f"  {len(flat32) / len(texts):.0f} shingles/doc")

    def ours_kernel():
        return minhash.signatures_from_hashes(flat32, offsets, mh.a, mh.b, mh.scheme)

    # where our time goes (one pass over the batches)
    parts = {"normalize (text.compact)": 0.0, "shingle ranges": 0.0, "xxh32 of shingles": 0.0, "permutations + min": 0.0}
    for b in batches:
        t, c = cpu_timed(text.compact, b, mh.norm)
        parts["normalize (text.compact)"] += t
        t, sh = cpu_timed(text.shingle, c, mh.ngram, mh.unit)
        parts["shingle ranges"] += t
        t, hv = cpu_timed(hashing.xxh32_ranges, sh.buf, sh.start, sh.end)
        parts["xxh32 of shingles"] += t
        t, _ = cpu_timed(minhash.signatures_from_hashes, hv, sh.offsets, mh.a, mh.b, mh.scheme)
        parts["permutations + min"] += t
    total = sum(parts.values())
    print("  ours, where the time goes: " + ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items()))

    sig = ours()
    t, shingle_lists = cpu_timed(lambda: [text.shingles(x) for x in texts])
    from datasketch import MinHash

    t, ms = cpu_timed(lambda: MinHash.bulk(shingle_lists, num_perm=NUM_PERM, seed=SEED, hashfunc=hashing.python_hashfunc("xxh32")))
    ref = np.array([m.digest() for m in ms])
    assert np.array_equal(ref, sig), "our signatures differ from datasketch's"
    assert np.array_equal(ours_kernel(), sig)
    print("  our signatures equal datasketch's (xxh32 hash) for every document")
    runs: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {"kernel: ours / rensa": [], "text -> signature: ours / rensa": []}
    try:
        import rensa
    except ImportError:
        rensa = None
        print("rensa not installed (pip install rensa): skipped")
    strs = [[x.decode("utf-8", "surrogatepass") for x in sh] for sh in shingle_lists]
    if rensa is not None:
        rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat64[:1000], np.array([0, 1000], dtype=np.uint64), NUM_PERM, SEED)
        rensa.RMinHash.digest_matrix_from_token_sets(strs[:50], NUM_PERM, SEED)  # its lazy set-up, not timed
    for r in range(repeats):
        res = {}
        t, _ = cpu_timed(ours)
        res["ours: text -> signature (numba)"] = len(texts) / t
        t, _ = cpu_timed(lambda: [ours_kernel() for _ in range(KERNEL_CALLS)])
        res["ours kernel only (our shingle hashes)"] = KERNEL_CALLS * len(texts) / t
        t_sh, shingle_lists = cpu_timed(lambda: [text.shingles(x) for x in texts])
        res["python shingling alone"] = len(texts) / t_sh
        if rensa is not None:
            t, _ = cpu_timed(lambda: [rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat64, offsets64, NUM_PERM, SEED)
                                  for _ in range(KERNEL_CALLS)])
            res["rensa kernel only (fed our shingle hashes)"] = KERNEL_CALLS * len(texts) / t
            t, _ = cpu_timed(lambda: rensa.RMinHash.digest_matrix_from_token_sets(strs, NUM_PERM, SEED))
            res["rensa RMinHash (python shingles + token sets)"] = len(texts) / (t + t_sh)
            ratios["kernel: ours / rensa"].append(res["ours kernel only (our shingle hashes)"] / res["rensa kernel only (fed our shingle hashes)"])
            ratios["text -> signature: ours / rensa"].append(res["ours: text -> signature (numba)"] / res["rensa RMinHash (python shingles + token sets)"])
        if r == 0:  # the slow peers once: they are 10-1000x off
            t, _ = cpu_timed(lambda: MinHash.bulk(shingle_lists, num_perm=NUM_PERM, seed=SEED))
            res["datasketch bulk, sha1 (default)"] = len(texts) / (t + t_sh)
            t, _ = cpu_timed(lambda: MinHash.bulk(shingle_lists, num_perm=NUM_PERM, seed=SEED, hashfunc=hashing.python_hashfunc("xxh32")))
            res["datasketch bulk, xxh32"] = len(texts) / (t + t_sh)
            try:
                from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

                patch_datatrove_xxhash()
                step = MinhashDedupSignature(output_folder=tempfile.mkdtemp(), config=MinhashConfig())
                step.get_signature(step.get_shingles(texts[0]))  # load spaCy before timing
                m = min(len(texts), 1000)
                t, _ = cpu_timed(lambda: [step.get_signature(x) for x in (step.get_shingles(y) for y in texts[:m]) if x.size])
                res["datatrove signature step"] = m / t
            except ImportError:
                print("datatrove not installed (pip install -e '.[bench]'): skipped")
        for k, v in res.items():
            runs.setdefault(k, []).append(v)
    print(f"{'method':48s} {'best docs/s':>11s} {'median':>10s} {'ours is (median)':>17s}")
    for k, v in runs.items():
        ours_k = "ours kernel only (our shingle hashes)" if "kernel" in k else "ours: text -> signature (numba)"
        print(f"{k:48s} {_stats(v)} {float(np.median(runs[ours_k])) / float(np.median(v)):16.2f}x")
    out = {k: {"best": max(v), "median": float(np.median(v))} for k, v in runs.items()}
    for k, v in ratios.items():
        if v:
            print(f"ratio {k}: median {np.median(v):.2f}x, per repeat {' '.join(f'{x:.2f}' for x in v)}; "
                  f"best-of ours / best-of rensa {_best_ratio(runs, k):.2f}x")
            out[k] = {"median": float(np.median(v)), "all": v}
    return out


def _best_ratio(runs: dict, which: str) -> float:
    if which.startswith("kernel"):
        return max(runs["ours kernel only (our shingle hashes)"]) / max(runs["rensa kernel only (fed our shingle hashes)"])
    return max(runs["ours: text -> signature (numba)"]) / max(runs["rensa RMinHash (python shingles + token sets)"])


def bench_jit() -> dict:
    """First-call cost in a fresh process (after imports): compiling the kernels into an empty numba
    cache, then loading them from that cache (what every later process, e.g. a Ray worker, pays)."""
    code = ("import time; from stages.dedup import minhash; t0 = time.perf_counter(); "
            "minhash.MinHasher(num_perm=112).signatures(['a b c d e f', 'x y']); print(time.perf_counter() - t0)")
    res = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        import subprocess

        for name in ("cold (compile)", "warm (cached)"):
            out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
            res[name] = float(out.stdout.strip().splitlines()[-1])
    print("JIT: first signatures call in a new process: " + ", ".join(f"{k} {v:.2f} s" for k, v in res.items()))
    return res


# ---------------------------------------------------------------------------- planted corpora


def _edit(words: list[str], k: int, rng: random.Random, pool: list[str]) -> list[str]:
    w = list(words)
    for _ in range(k):
        op = rng.random()
        i = rng.randrange(len(w)) if w else 0
        if op < 0.4 and w:
            w[i] = rng.choice(pool)
        elif op < 0.7:
            w.insert(i, rng.choice(pool))
        elif len(w) > 1:
            del w[i]
    return w


def jaccard(a: str, b: str) -> float:
    x, y = set(text.shingles(a)), set(text.shingles(b))
    return len(x & y) / len(x | y) if x | y else 1.0


def real_docs(min_words: int) -> list[dict]:
    injected = {json.loads(x)["id"] for x in (ROOT / "data" / "injected.jsonl").read_text().splitlines()}
    return [d for d in load_sample() if d["id"] not in injected and len(d["text"].split()) >= min_words]


def write_dataset(rows: list[dict], out: Path, shard_rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.tokens import count_tokens

    out.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(rows), shard_rows):
        part = rows[s:s + shard_rows]
        t = [r["text"] for r in part]
        pq.write_table(pa.table({"id": [r["id"] for r in part], "text": pa.array(t, pa.large_string()),
                                 "source": [r.get("source", "bench") for r in part], "meta": ["{}"] * len(part),
                                 "n_tokens": count_tokens(t)}), out / f"part-{s // shard_rows:05d}.parquet")


def run_ours(inp: Path, out: Path, num_cpus: int = 1, **dedup) -> float:
    from pipeline import config, driver, runner

    runner.init_ray(num_cpus=num_cpus)
    cfg = config.parse({"run": {"output": str(out.parent / "run"), "ray": {"num_cpus": num_cpus}, "docs_per_batch": 2000},
                        "dedup": {"method": ["fuzzy"], **dedup}})
    t0 = time.perf_counter()
    res = driver.run(cfg, [driver.StagePlan("dedup", inp, out)], show_progress=False)
    assert all(r.ok for r in res)
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- end to end


def build_e2e(n_docs: int, seed: int = 0) -> list[dict]:
    """Real text cut into 20-60-word documents, plus ~5% exact and ~5% near copies (2-8% of words
    edited), shuffled: n_docs documents."""
    rng = random.Random(seed)
    docs = real_docs(min_words=20)
    chunks = []
    for d in docs:
        w = d["text"].split()
        i = 0
        while i + 20 <= len(w):
            k = rng.randint(20, 60)
            chunks.append(" ".join(w[i:i + k]))
            i += k
    rng.shuffle(chunks)
    n_orig = int(n_docs / 1.1)
    base = chunks[:n_orig]
    pool = " ".join(base[:2000]).split()
    rows = [{"id": f"c{i:07d}", "text": t} for i, t in enumerate(base)]
    while len(rows) < n_docs:
        src = rng.randrange(len(base))
        if rng.random() < 0.5:
            rows.append({"id": f"x{len(rows):07d}", "text": base[src]})
        else:
            w = base[src].split()
            rows.append({"id": f"n{len(rows):07d}", "text": " ".join(_edit(w, max(1, int(len(w) * rng.uniform(0.02, 0.08))), rng, pool))})
    rng.shuffle(rows)
    return rows


def run_datatrove(inp: Path, work: Path) -> tuple[float, dict]:
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    patch_datatrove_xxhash()
    cfg = MinhashConfig()  # 5-grams, 14 x 8, xxhash 64-bit, spaCy words: FineWeb's settings
    reader = lambda: ParquetReader(str(inp), text_key="text", id_key="id")  # noqa: E731
    steps = [
        ("signatures", [reader(), MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg)], 1),
        ("buckets", [MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=cfg)], cfg.num_buckets),
        ("cluster", [MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove_ids"), config=cfg)], 1),
        ("filter", [reader(), MinhashDedupFilter(input_folder=str(work / "remove_ids"),
                                                  exclusion_writer=ParquetWriter(str(work / "removed"))),
                    ParquetWriter(str(work / "out"))], 1),
    ]
    times = {}
    for name, pipeline, tasks in steps:
        t0 = time.perf_counter()
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1, logging_dir=str(work / f"logs_{name}")).run()
        times[name] = time.perf_counter() - t0
    return sum(times.values()), times


def bench_e2e(n_docs: int, skip_datatrove: bool) -> dict:
    import pyarrow.parquet as pq

    rows = build_e2e(n_docs)
    words = sum(len(r["text"].split()) for r in rows)
    print(f"end to end: {len(rows)} docs, {words / len(rows):.0f} words/doc, one core")
    tmp = Path(tempfile.mkdtemp(prefix="dedup_e2e_"))
    try:
        inp = tmp / "in"
        write_dataset(rows, inp, 25_000)
        import ray

        from pipeline import runner

        runner.init_ray(num_cpus=1)
        t_ours = run_ours(inp, tmp / "ours" / "dedup")
        kept = sum(pq.ParquetFile(p).metadata.num_rows for p in (tmp / "ours" / "dedup").glob("part-*.parquet"))
        stats = json.loads((tmp / "ours" / "dedup" / "_stats.json").read_text())["dedup"]
        print(f"ours: {t_ours:.1f} s ({len(rows) / t_ours:.0f} docs/s), kept {kept}, removed {stats['docs_removed']}")
        print("  passes:", {k: round(v, 1) for k, v in stats["pass_seconds"].items()})
        ray.shutdown()
        res = {"docs": len(rows), "ours_s": t_ours, "ours_kept": kept}
        if not skip_datatrove:
            t_dt, steps = run_datatrove(inp, tmp / "dt")
            dt_kept = sum(pq.ParquetFile(p).metadata.num_rows for p in (tmp / "dt" / "out").rglob("*.parquet"))
            print(f"datatrove: {t_dt:.1f} s ({len(rows) / t_dt:.0f} docs/s), kept {dt_kept}; steps {({k: round(v, 1) for k, v in steps.items()})}")
            print(f"ratio: ours is {t_dt / t_ours:.1f}x faster")
            res.update(datatrove_s=t_dt, datatrove_kept=dt_kept, ratio=t_dt / t_ours)
        return res
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- quality


def build_planted(n_orig: int, seed: int = 0) -> tuple[list[dict], list[tuple[str, str, float]]]:
    """n_orig real documents (>= 50 words); 2/3 of them get one near copy made by random word
    edits (substitute / insert / delete, words drawn from the corpus), the edit count aimed at a
    Jaccard drawn uniformly from [0.5, 1.0]; a third of the copies also get a web boilerplate line
    added. Returns rows and (original, copy, true Jaccard) for every planted pair."""
    rng = random.Random(seed)
    docs = real_docs(min_words=50)
    rng.shuffle(docs)
    docs = docs[:n_orig]
    pool = " ".join(d["text"] for d in docs[:300]).split()
    boiler = ["Share this article on Facebook Twitter LinkedIn", "Subscribe to our newsletter for updates",
              "All rights reserved. Privacy policy | Terms of use", "Read more stories like this one"]
    rows = [{"id": f"o{i:05d}", "text": d["text"]} for i, d in enumerate(docs)]
    planted = []
    for i, d in enumerate(docs[: 2 * n_orig // 3]):
        w = d["text"].split()
        target = rng.uniform(0.5, 1.0)
        k = max(1, round(len(w) * (1 - target) / (5 * (1 + target))))
        copy = " ".join(_edit(w, k, rng, pool))
        if rng.random() < 0.33:
            copy = rng.choice(boiler) + "\n" + copy if rng.random() < 0.5 else copy + "\n" + rng.choice(boiler)
        rows.append({"id": f"p{i:05d}", "text": copy})
        planted.append((f"o{i:05d}", f"p{i:05d}", jaccard(d["text"], copy)))
    rng.shuffle(rows)
    return rows, planted


def bench_quality(n_orig: int, threshold: float = 0.8) -> dict:
    import pyarrow.parquet as pq

    rows, planted = build_planted(n_orig)
    texts = {r["id"]: r["text"] for r in rows}
    print(f"quality: {len(rows)} docs, {len(planted)} planted copies (true word-5-gram Jaccard "
          f"{min(j for *_, j in planted):.2f}-{max(j for *_, j in planted):.2f}), threshold {threshold}")
    tmp = Path(tempfile.mkdtemp(prefix="dedup_quality_"))
    results = {}
    try:
        write_dataset(rows, tmp / "in", 2500)
        for name, extra in (("verify (default)", {}), ("no verify", {"fuzzy": {"verify": False}})):
            out = tmp / name.split()[0] / "dedup"
            run_ours(tmp / "in", out, num_cpus=2, **extra)
            groups: dict[int, list[str]] = {}
            for sub in ("", "_rejected"):
                for p in (out / sub).glob("part-*.parquet"):
                    t = pq.read_table(p, columns=["id", "dup_group"])
                    for i, g in zip(t.column("id").to_pylist(), t.column("dup_group").to_pylist()):
                        if g is not None:
                            groups.setdefault(g, []).append(i)
            found = {tuple(sorted(p)) for m in groups.values() for p in itertools.combinations(m, 2)}
            truth = {tuple(sorted((a, b))) for a, b, j in planted if j >= threshold}
            correct = {p for p in found if p in truth or jaccard(texts[p[0]], texts[p[1]]) >= threshold}
            tp = len(found & truth)
            precision = len(correct) / len(found) if found else 1.0
            recall = tp / len(truth)
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            by_bucket = {}
            for lo in (0.8, 0.85, 0.9, 0.95):
                sel = [tuple(sorted((a, b))) for a, b, j in planted if lo <= j < lo + 0.05 + (lo == 0.95) * 0.01]
                by_bucket[f"{lo:.2f}-{lo + 0.05:.2f}"] = f"{sum(p in found for p in sel)}/{len(sel)}"
            below = sum(1 for a, b, j in planted if j < threshold and tuple(sorted((a, b))) in found)
            print(f"  {name:16s} pairs found {len(found)}, true pairs {len(truth)}: precision {precision:.4f} recall {recall:.4f} F1 {f1:.4f}; "
                  f"recall by Jaccard {by_bucket}; planted pairs below threshold grouped: {below}")
            results[name] = {"precision": precision, "recall": recall, "f1": f1, "found": len(found), "truth": len(truth)}
        return results
    finally:
        import ray

        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sig", "e2e", "quality", "all"])
    ap.add_argument("--n", type=int, default=4000, help="documents for the signature benchmark")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats of the signature benchmark")
    ap.add_argument("--docs", type=int, default=200_000, help="documents for the end-to-end benchmark")
    ap.add_argument("--originals", type=int, default=3000, help="real documents of the planted quality set")
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args()
    if args.what in ("sig", "e2e", "all"):
        print(f"pinned to core {pin_one_core()}")
    if args.what in ("sig", "all"):
        bench_jit()
        bench_sig(args.n, args.repeats)
    if args.what in ("quality", "all"):
        bench_quality(args.originals)
    if args.what in ("e2e", "all"):
        bench_e2e(args.docs, args.skip_datatrove)


if __name__ == "__main__":
    main()
