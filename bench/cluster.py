"""Clustering: our embedder vs plain `SentenceTransformer.encode`, and k-means backends.

    python bench/cluster.py [--docs 1000] [--max-tokens 128] [--rounds 3]        # CPU, this machine
    python bench/cluster.py --device cuda --docs 200000 --max-tokens 256 \\
        --kmeans-n 1000000 --kmeans-k 1024 --kmeans-backends faiss,torch           # GPU machine

Embedding: the same documents (a seeded sample of data/sample; `--docs` above its 17k repeats it
with a distinct "[copy i]" prefix per copy, so no text is an exact duplicate of another) through
  - `st`       plain SentenceTransformer.encode with its defaults (batch 32), max_seq_length =
               --max-tokens (fp16 via .half() on GPU)
  - `st-half`  the same call under torch.autocast (bf16 on CPU, fp16 on GPU): the precision alone
  - `ours-fp32` pipeline.models.embedder.Embedder(precision="fp32"): identical vectors to `st`
  - `ours`     Embedder(precision="auto"): fp16 on GPU, bf16 on CPUs with native bf16, else fp32
Variants run interleaved, --rounds times after one warm-up each. Printed: docs/s of the best
round, the ratio to `st` of best and of median wall times, and of median process CPU seconds (on a
shared machine the CPU time is the steadier measure of the work done).

k-means: --kmeans-n unit vectors around --kmeans-true-k random directions (dim --kmeans-dim),
fit to --kmeans-k centroids (25 Lloyd iterations, greedy k-means++ seeds) on every backend asked
for, then every row assigned; fit and assign times.
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402


def load_docs(n: int, seed: int = 0) -> list[str]:
    import zstandard

    texts = []
    for f in sorted(glob.glob(str(ROOT / "data" / "sample" / "*.jsonl.zst"))):
        with open(f, "rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
        texts += [json.loads(line)["text"] for line in io.StringIO(raw) if line.strip()]
    if not texts:
        raise SystemExit("data/sample is missing")
    rng = np.random.default_rng(seed)
    if n <= len(texts):
        return [texts[i] for i in rng.choice(len(texts), n, replace=False)]
    out = []
    for copy in range(-(-n // len(texts))):
        out += [t if copy == 0 else f"[copy {copy}] {t}" for t in texts]
    return [out[i] for i in rng.permutation(len(out))[:n]]


def bench_embed(args) -> dict:
    import torch

    from pipeline.models.embedder import Embedder

    docs = load_docs(args.docs)
    device = args.device
    half = torch.float16 if device.startswith("cuda") else torch.bfloat16
    ours = Embedder(max_tokens=args.max_tokens, batch_size=args.batch_size, device=device)
    exact = Embedder(max_tokens=args.max_tokens, batch_size=args.batch_size, device=device, precision="fp32")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(exact.model_path, device=device)
    st.max_seq_length = args.max_tokens
    st_gpu_half = st.half() if device.startswith("cuda") else None

    st_kw = {"batch_size": args.st_batch_size} if args.st_batch_size else {}  # default: ST's own (32)

    def plain():
        return (st_gpu_half or st).encode(docs, normalize_embeddings=True, convert_to_numpy=True, **st_kw)

    def plain_autocast():
        with torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=half):
            return st.encode(docs, normalize_embeddings=True, convert_to_numpy=True, **st_kw)

    variants = {"st": plain, "ours-fp32": lambda: exact.encode(docs), "ours": lambda: ours.encode(docs)}
    if not device.startswith("cuda"):  # on GPU `st` already is fp16
        variants["st-half"] = plain_autocast
    if device.startswith("cuda"):
        variants.pop("ours-fp32")  # fp32 on a GPU is nobody's choice
    times = {k: [] for k in variants}
    cpu = {k: [] for k in variants}  # process CPU seconds: what the work costs, whatever else runs on the machine
    vecs = {}
    for k, f in variants.items():  # warm-up: model load, kernels, allocator
        vecs[k] = np.asarray(f()[: min(len(docs), 2000)], dtype=np.float32)
    for _ in range(args.rounds):
        for k, f in variants.items():
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    tok_st, tok_ours = [], []  # the tokenization alone: what the prefix cut saves (most of a GPU's wait)
    for _ in range(args.rounds):
        t0 = time.process_time()
        st.tokenizer(docs, truncation=True, max_length=args.max_tokens)
        tok_st.append(time.process_time() - t0)
        t0 = time.process_time()
        exact.tokenize(docs)
        tok_ours.append(time.process_time() - t0)
    ref = vecs["st"]
    res = {"tokenize_cpu_s": {"st": round(min(tok_st), 3), "ours": round(min(tok_ours), 3),
                              "ratio": round(min(tok_st) / max(min(tok_ours), 1e-9), 2)},"docs": len(docs), "unique_docs": len(set(docs)), "max_tokens": args.max_tokens, "device": device,
           "threads": torch.get_num_threads(), "precision_ours": ours.precision, "variants": {}}
    for k in variants:
        best, med = min(times[k]), statistics.median(times[k])
        res["variants"][k] = {"docs_per_s": round(len(docs) / best, 1), "best_s": round(best, 3), "median_s": round(med, 3),
                              "ratio_vs_st_best": round(min(times["st"]) / best, 3),
                              "ratio_vs_st_median": round(statistics.median(times["st"]) / med, 3),
                              "cpu_s_median": round(statistics.median(cpu[k]), 3),
                              "ratio_vs_st_cpu": round(statistics.median(cpu["st"]) / statistics.median(cpu[k]), 3),
                              "min_cosine_vs_st": round(float(np.min((vecs[k] * ref).sum(1))), 6),
                              "max_abs_diff_vs_st": float(np.abs(vecs[k] - ref).max())}
    return res


def bench_kmeans(args) -> dict:
    from pipeline.models import kmeans

    rng = np.random.default_rng(0)
    centers = kmeans.normalize(rng.standard_normal((args.kmeans_true_k, args.kmeans_dim)))
    lab = rng.integers(args.kmeans_true_k, size=args.kmeans_n)
    noise = 2.4 / np.sqrt(args.kmeans_dim)  # cosine to the own center ~0.4, as for real sentence embeddings
    x = kmeans.normalize(centers[lab] + noise * rng.standard_normal((args.kmeans_n, args.kmeans_dim)).astype(np.float32))
    out = {"n": args.kmeans_n, "dim": args.kmeans_dim, "k": args.kmeans_k, "niter": 25, "backends": {}}
    for b in args.kmeans_backends.split(","):
        try:
            t0 = time.perf_counter()
            r = kmeans.fit(x, args.kmeans_k, niter=25, seed=0, backend=b)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            kmeans.assign(x, r.centroids)
            out["backends"][b] = {"fit_s": round(fit_s, 2), "assign_s": round(time.perf_counter() - t0, 2),
                                  "objective": round(r.objective, 5)}
        except Exception as e:  # a backend missing on this machine is reported, not fatal
            out["backends"][b] = {"error": f"{type(e).__name__}: {e}"[:200]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128, help="ours: documents per batch at max tokens (embed.batch_size)")
    ap.add_argument("--st-batch-size", type=int, default=None, help="plain encode's batch_size (default: its own, 32)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    ap.add_argument("--kmeans-n", type=int, default=100_000)
    ap.add_argument("--kmeans-k", type=int, default=256)
    ap.add_argument("--kmeans-dim", type=int, default=384)
    ap.add_argument("--kmeans-true-k", type=int, default=64)
    ap.add_argument("--kmeans-backends", default="faiss,torch,sklearn")
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--skip-kmeans", action="store_true")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    res = {"machine": {"cpus": os.cpu_count(), "device": args.device}}
    if not args.skip_embed:
        e = res["embed"] = bench_embed(args)
        print(f"embedding {e['docs']} docs ({e['unique_docs']} distinct) at {e['max_tokens']} tokens on {e['device']} "
              f"({e['threads']} threads), ours = {e['precision_ours']}")
        print(f"{'variant':>10} {'docs/s':>9} {'best s':>8} {'ratio best':>10} {'ratio med':>9} {'ratio cpu':>9} {'min cos':>8}")
        for k, v in e["variants"].items():
            print(f"{k:>10} {v['docs_per_s']:>9} {v['best_s']:>8} {v['ratio_vs_st_best']:>10} {v['ratio_vs_st_median']:>9} "
                  f"{v['ratio_vs_st_cpu']:>9} {v['min_cosine_vs_st']:>8}")
        tk = e["tokenize_cpu_s"]
        print(f"tokenizing alone (CPU s): st {tk['st']}, ours {tk['ours']} -> {tk['ratio']}x")
    if not args.skip_kmeans:
        km = res["kmeans"] = bench_kmeans(args)
        print(f"k-means {km['n']} x {km['dim']} -> {km['k']} centroids, {km['niter']} iterations")
        for b, v in km["backends"].items():
            print(f"{b:>10} " + (v["error"] if "error" in v else f"fit {v['fit_s']} s, assign {v['assign_s']} s, objective {v['objective']}"))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
