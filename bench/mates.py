"""Does selecting by MATES influence lower target loss? Top half by `mates_influence` vs a random half.

    python bench/mates.py [--corpus data/sample_small] [--train-tokens 100000] [--seeds 0,1,2]

1. Train the MATES scorer on the corpus exactly as the score stage does (pipeline/models/mates.py:
   BPE, proxy warm-up on a sample, first-order influence of another sample on the bundled targets'
   search halves, fastText distillation) and score every document with it.
2. Tokenize every document with the scorer's BPE. Arms, each a pool of whole documents holding half
   the corpus's tokens: `top` = highest score first; `random` = a seeded random order (a new one per
   seed); `bottom` = lowest score first (a sanity check: it should be worst).
3. Per seed, train the proxy LM (proxy_lm.train_proxy, same shape as the warm-up proxy) on each
   pool for --train-tokens tokens (equal tokens, same init and data-order seed across arms) and
   evaluate the mean token loss on the targets' *eval* halves (never seen by the scorer).
4. Report mean and std of the target loss per arm, and the paired relative difference top vs random
   (and bottom vs random) with its 95 % t interval over seeds (pipeline/intervals.py).
Results also go to runs/bench_mates/results.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import intervals  # noqa: E402
from pipeline.config import MatesConfig  # noqa: E402
from pipeline.models import betr, bpe, mates, train  # noqa: E402
from pipeline.models import proxy_lm as P  # noqa: E402

SCORER = dict(sample_docs=600, warmup_docs=400, warmup_tokens=30_000, doc_tokens=256, target_tokens=1024, check_docs=50,
              eval_fraction=0.5, params={"epoch": 25, "lr": 0.5, "wordNgrams": 2, "dim": 32, "minCount": 1})


def pool(order: np.ndarray, lengths: np.ndarray, budget: int) -> np.ndarray:
    """Documents taken in `order` until their tokens reach `budget`."""
    cum = np.cumsum(lengths[order])
    return order[: int(np.searchsorted(cum, budget)) + 1]


def stream(ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """The chosen documents' tokens (EOS included), concatenated in corpus order."""
    docs = np.sort(docs)
    return np.concatenate([ids[offsets[i]:offsets[i] + lengths[i]] for i in docs])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=str(ROOT / "data" / "sample_small"))
    ap.add_argument("--train-tokens", type=int, default=100_000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bench_mates"))
    ap.add_argument("--target-weighting", default="balanced", choices=["balanced", "mean"])
    a = ap.parse_args(argv)
    SCORER["target_weighting"] = a.target_weighting
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    s = MatesConfig(**SCORER)
    targets = train.load_targets([])

    t0 = time.perf_counter()
    meta = mates.train_mates(a.corpus, targets, out / "model", s, seed=0)
    t_train = time.perf_counter() - t0
    from scorers.fasttext import FastTextScorer

    docs = list(train.iter_docs(a.corpus))
    score = FastTextScorer(str(out / "model" / "model.bin"), "pos", "m")([d.text for d in docs])["m"].astype(np.float64)
    tok = bpe.load(out / "model" / "tokenizer.json")
    ids, lens = bpe.encode_docs(tok, [d.text for d in docs])
    lengths = lens + 1  # with EOS
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    half = int(lengths.sum()) // 2
    tie = np.random.default_rng(0).permutation(len(docs))  # ties in a seeded order, not file order
    top = pool(np.lexsort((tie, -score)), lengths, half)
    bottom = pool(np.lexsort((tie, score)), lengths, half)
    held = {n: [t for (_, t), h in zip(rows, betr.split_mask(n, [i for i, _ in rows], s.eval_fraction)) if h]
            for n, rows in targets.items()}  # the eval halves: the scorer saw only the search halves
    evals = {n: bpe.encode_docs(tok, v)[0] for n, v in held.items()}
    spec = P.ProxySpec(vocab_size=tok.get_vocab_size(with_added_tokens=True), n_layer=s.n_layer, n_head=s.n_head,
                       d_model=s.d_model, ctx=s.ctx, batch_size=s.sequences_per_step, lr=s.lr, tokens=a.train_tokens,
                       eval_tokens=max(len(v) for v in evals.values()), device="cpu", threads=1)
    print(f"corpus {a.corpus}: {len(docs)} docs, {int(lengths.sum())} tokens; scorer trained in {t_train:.1f} s, "
          f"held-out Spearman {meta['spearman_vs_influence_held_out']}, first-order vs probe {meta['influence']['check']}")
    res: dict[str, list[float]] = {"top": [], "random": [], "bottom": []}
    per_target: dict[str, list[dict]] = {k: [] for k in res}
    sizes: dict[str, list[tuple[int, int]]] = {k: [] for k in res}
    for seed in seeds:
        rnd = pool(np.random.default_rng(seed).permutation(len(docs)), lengths, half)
        for arm, chosen in (("top", top), ("random", rnd), ("bottom", bottom)):
            st = stream(ids, offsets, lengths, chosen)
            r = P.train_proxy([st], [1.0], evals, spec, seed)
            res[arm].append(r["loss"])
            per_target[arm].append(r["losses"])
            sizes[arm].append((len(chosen), int(len(st))))
            print(f"seed {seed} {arm:6s}: {len(chosen)} docs, {len(st)} tokens in pool, target loss {r['loss']:.4f} "
                  f"({r['seconds']:.1f} s)", flush=True)
    table = {arm: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None, "losses": v}
             for arm, v in res.items()}
    cmp = {f"{arm}_vs_random": intervals.paired(res[arm], res["random"]) for arm in ("top", "bottom")}
    print("\n| arm | pool docs | target loss (mean ± std over seeds) |\n|---|---:|---:|")
    for arm, t in table.items():
        print(f"| {arm} | {sizes[arm][0][0]} | {t['mean']:.4f} ± {t['std'] or 0:.4f} |")
    for k, v in cmp.items():
        print(f"{k}: {intervals.describe(v)} (relative difference of target loss, paired by seed, 95 % t interval)")
    per_set = {arm: {n: float(np.mean([d[n] for d in per_target[arm]])) for n in evals} for arm in res}
    print("per target set (mean loss):", json.dumps(per_set))
    doc = {"corpus": a.corpus, "docs": len(docs), "tokens": int(lengths.sum()), "train_tokens": a.train_tokens, "seeds": seeds,
           "scorer": {"config": SCORER, "seconds": round(t_train, 1), "spearman_vs_influence_held_out": meta["spearman_vs_influence_held_out"],
                      "influence": meta["influence"]},
           "arms": table, "pool_sizes": sizes, "compare": cmp, "per_target": per_set}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
