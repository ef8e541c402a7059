"""Toxicity filter trade-off on the bundled corpus: what a `score.toxicity.threshold` removes and
what it costs a proxy LM (after "A Pretrainer's Guide to Training Data": toxicity filters trade
benchmark performance against toxic generation).

    python bench/toxicity.py [--thresholds 0.9,0.5,0.2] [--tokens 80000] [--seeds 3] [--unit document]

1. Scores every document of data/sample (17,264 docs) with scorers/toxicity.py, side by side with the
   package's own API (`profanity_check.predict_prob`): same numbers, docs per CPU-second of each.
2. Classification sanity. The corpus has no toxicity labels, so: 300 clean bundled documents
   (technical, news, code, legal) with one planted offensive comment each vs 300 other clean ones,
   precision/recall per threshold for unit document and unit line; plus the planted comments alone.
   And the share of each domain of the real corpus scored above each threshold.
3. Trade-off. 10 % of the documents (by a hash of the id) are held out. Arms: no filter, then each
   threshold (training documents scoring <= it). Per arm and seed the same proxy LM
   (pipeline/models/proxy_lm, the `evaluate` stage's model: 2 layers, d 128, ctx 64, 4 sequences/step,
   lr 2e-3; byte-level BPE of `--vocab` 2048 trained on 3,000 training documents) trains on `--tokens`
   tokens drawn from the arm's kept documents of a seeded pool of training documents (~30x the
   tokens of a run; equal tokens for every arm), then is scored on: the held-out `eval` half of the four
   bundled target sets (the `evaluate` stage's target loss), the held-out documents scoring > 0.5
   (toxic-scored text: a higher loss = the model is less likely to produce such text), and all
   held-out documents (at most 20k tokens of each). Seed s is shared by every arm (paired); the
   difference to no filter is reported with its 95 % t interval (pipeline/intervals.py). Shares of
   text kept are by characters over all training documents.
Results go to runs/bench_toxicity/results.json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline import intervals  # noqa: E402
from pipeline.config import bundled_targets  # noqa: E402
from pipeline.models import bpe, proxy_lm, train  # noqa: E402
from pipeline.models.tokenstreams import split_targets  # noqa: E402
from scorers.toxicity import ToxicityScorer  # noqa: E402

# Planted offensive comments (the classifier's genre: short abusive comments). Not bundled text.
OFFENSIVE = ["You are a stupid fucking idiot and everyone hates you.", "Shut up, you worthless piece of shit.",
             "Go to hell, you dumb bitch.", "What an ugly, pathetic loser, fuck off and die.",
             "This asshole is the biggest moron I have ever met.", "Nobody cares about your crap, you retarded bastard.",
             "Get lost, you filthy scumbag.", "You're a disgusting pig and a total jackass.",
             "Only a brainless twat would write this garbage.", "Kill yourself, nobody wants you here, dickhead.",
             "Screw you and your whole damn family, you prick.", "Suck it, you lying sack of shit."]
CLEAN = ("technical", "news", "code", "legal")
TOXIC_AT = 0.5  # "toxic-scored": above the classifier's decision threshold
POOL = 30  # training pool: ~30x the tokens of one proxy run
EVAL_TOKENS = 20_000  # per evaluation set


def _held_out(doc_id: str, frac: float = 0.1) -> bool:
    return int(hashlib.sha256(doc_id.encode()).hexdigest()[:8], 16) / 2**32 < frac


def _plant(texts: list[str], rng: random.Random) -> list[str]:
    out = []
    for i, t in enumerate(texts):
        lines = t.splitlines()
        at = rng.randrange(len(lines) + 1)
        out.append("\n".join(lines[:at] + [OFFENSIVE[i % len(OFFENSIVE)]] + lines[at:]))
    return out


def peer_check(texts: list[str], ours: np.ndarray) -> dict:
    """The package's own API on the same texts: same numbers? docs per CPU-second of each (best of
    three, interleaved: the VM is shared, CPU time is the load-independent figure)."""
    import profanity_check  # loads its model at import

    sc = ToxicityScorer(None)
    best = {"ours": 0.0, "peer": 0.0}
    for _ in range(3):
        for k, f in (("peer", lambda: profanity_check.predict_prob(texts)), ("ours", lambda: sc(texts)["toxicity"])):
            t0 = time.process_time()
            v = f()
            best[k] = max(best[k], len(texts) / (time.process_time() - t0))
            if k == "peer":
                peer = np.asarray(v, np.float32)
    return {"docs": len(texts), "max_abs_diff": float(np.abs(peer - ours).max()), "ours_docs_cpu_s": round(best["ours"]),
            "peer_docs_cpu_s": round(best["peer"]), "ratio": round(best["ours"] / best["peer"], 3)}


def sanity(docs, thresholds: list[float]) -> dict:
    """Precision/recall on planted offensive comments in clean bundled documents, per unit."""
    rng = random.Random(0)
    clean = [d.text for d in docs if d.source in CLEAN]
    pick = rng.sample(clean, 600)
    pos, neg = _plant(pick[:300], rng), pick[300:]
    out = {}
    for unit in ("document", "line"):
        sc = ToxicityScorer(None, unit=unit)
        p, n = sc(pos)["toxicity"], sc(neg)["toxicity"]
        rows = []
        for t in thresholds:
            tp, fp = int((p > t).sum()), int((n > t).sum())
            rows.append({"threshold": t, "precision": tp / (tp + fp) if tp + fp else None, "recall": tp / len(p), "false_positive_rate": fp / len(n)})
        out[unit] = rows
    alone = ToxicityScorer(None)(OFFENSIVE)["toxicity"]
    out["comments_alone"] = {"n": len(OFFENSIVE), "min": float(alone.min()), "recall": {t: float((alone > t).mean()) for t in thresholds}}
    return out


def per_domain(docs, p: np.ndarray, thresholds: list[float]) -> dict:
    by = defaultdict(list)
    for d, v in zip(docs, p):
        by[d.source].append(v)
    return {dom: {"docs": len(v), **{f"above_{t:g}": float((np.array(v) > t).mean()) for t in thresholds}} for dom, v in sorted(by.items())}


def tradeoff(docs, p: np.ndarray, thresholds: list[float], tokens: int, seeds: int, vocab: int, work: Path) -> dict:
    held = np.array([_held_out(d.id) for d in docs])
    texts = [d.text for d in docs]
    chars = np.array([len(t) for t in texts], np.float64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(texts))  # one document order for every arm
    # The proxies read only `tokens` tokens each: they draw from a pool of training documents (the
    # first of the seeded order, ~POOL x tokens tokens at ~3 chars a token), filtered per arm.
    pool = np.zeros(len(texts), bool)
    train_order = order[~held[order]]
    pool[train_order[:int(np.searchsorted(np.cumsum(chars[train_order]), POOL * tokens * 3)) + 1]] = True
    tok_path = bpe.train_bpe([texts[i] for i in train_order[:3000]], vocab, work / "bpe.json")
    tok = bpe.load(tok_path)
    t0 = time.perf_counter()
    need = np.flatnonzero(pool | held)
    enc, lens = bpe.encode_docs(tok, [texts[i] for i in need])
    ids, lengths, starts = {}, np.zeros(len(texts), np.int64), np.concatenate([[0], np.cumsum(lens + 1)[:-1]])
    for j, i in enumerate(need):
        ids[i] = enc[starts[j]:starts[j] + lens[j] + 1]
        lengths[i] = lens[j]
    print(f"tokenized {len(need):,} docs (pool {int(pool.sum()):,}, held out {int(held.sum()):,}): {int(lens.sum()):,} tokens "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)

    def stream(mask: np.ndarray) -> np.ndarray:
        return np.concatenate([ids[i] for i in order[mask[order]]])

    targets = split_targets(train.load_targets(bundled_targets()), str(tok_path), 0.5, work / "targets")
    evals = {n: np.load(work / "targets" / v["eval"]["file"]) for n, v in targets.items()}
    evals["heldout_toxic"] = stream(held & (p > TOXIC_AT))
    evals["heldout_all"] = stream(held)
    names = list(targets)
    spec = proxy_lm.ProxySpec(vocab_size=tok.get_vocab_size(), ctx=64, batch_size=4, lr=2e-3, tokens=tokens,
                              eval_tokens=EVAL_TOKENS, device="cpu", threads=1)
    train_mask = ~held
    arms = [("none", None)] + [(f"<= {t:g}", t) for t in thresholds]
    rows = []
    for name, t in arms:
        keep = train_mask & ((p <= t) if t is not None else True)
        st = stream(keep & pool)
        row = {"arm": name, "threshold": t, "docs_kept": float(keep.sum() / train_mask.sum()),
               "text_kept": float(chars[keep].sum() / chars[train_mask].sum()),
               "toxic_docs_kept": float((keep & (p > TOXIC_AT)).sum() / (train_mask & (p > TOXIC_AT)).sum()),
               "toxic_mass_kept": float((p * chars)[keep].sum() / (p * chars)[train_mask].sum()),
               "stream_tokens": int(len(st)), "runs": []}
        for s in range(seeds):
            r = proxy_lm.train_proxy([st], [1.0], evals, spec, seed=s)
            row["runs"].append({"seed": s, "target": float(np.mean([r["losses"][n] for n in names])), **r["losses"], "seconds": round(r["seconds"], 1)})
            print(f"  {name:8s} seed {s}: target {row['runs'][-1]['target']:.4f}  toxic {r['losses']['heldout_toxic']:.4f}  "
                  f"all {r['losses']['heldout_all']:.4f}  ({r['seconds']:.0f} s)", flush=True)
        rows.append(row)
    base = rows[0]
    for row in rows:
        for k in ("target", "heldout_toxic", "heldout_all"):
            v = [x[k] for x in row["runs"]]
            row[k] = {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else None}
            if row is not base:
                row[k]["vs_none"] = intervals.paired(v, [x[k] for x in base["runs"]])
    return {"spec": {k: getattr(spec, k) for k in ("vocab_size", "n_layer", "d_model", "ctx", "batch_size", "lr", "tokens")},
            "targets": {n: v["eval"]["tokens"] for n, v in targets.items()},
            "heldout": {"docs": int(held.sum()), "toxic_docs": int((held & (p > TOXIC_AT)).sum()),
                        "toxic_tokens": int(len(evals["heldout_toxic"])), "tokens": int(len(evals["heldout_all"]))},
            "pool": {"docs": int(pool.sum()), "tokens": int(lengths[pool].sum())},
            "arms": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(ROOT / "data" / "sample"))
    ap.add_argument("--thresholds", default="0.9,0.5,0.2")
    ap.add_argument("--tokens", type=int, default=80_000, help="training tokens per proxy run")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--unit", default="document", choices=["document", "line"])
    ap.add_argument("--out", default="runs/bench_toxicity")
    a = ap.parse_args(argv)
    ths = [float(x) for x in a.thresholds.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}", flush=True)
    docs = list(train.iter_docs(a.corpus, source_field="domain"))
    p = ToxicityScorer(None, unit=a.unit)([d.text for d in docs])["toxicity"].astype(np.float64)
    res = {"unit": a.unit, "docs": len(docs), "thresholds": ths}
    res["peer"] = peer_check([d.text for d in docs], p.astype(np.float32)) if a.unit == "document" else None
    if res["peer"]:
        pc = res["peer"]
        print(f"scorer vs profanity_check.predict_prob on {pc['docs']:,} docs: max |diff| {pc['max_abs_diff']:.2g}, "
              f"{pc['ours_docs_cpu_s']:,} vs {pc['peer_docs_cpu_s']:,} docs/CPU-s = {pc['ratio']:.2f}x", flush=True)
    res["sanity"] = sanity(docs, ths)
    for unit in ("document", "line"):
        for r in res["sanity"][unit]:
            print(f"planted, unit {unit:8s} > {r['threshold']:g}: precision {r['precision'] or 0:.3f}  recall {r['recall']:.3f}  "
                  f"FPR {r['false_positive_rate']:.3f}", flush=True)
    res["domains"] = per_domain(docs, p, ths)
    for dom, v in res["domains"].items():
        print(f"  {dom:12s} {v['docs']:5d} docs  " + "  ".join(f"> {t:g}: {100 * v[f'above_{t:g}']:5.1f} %" for t in ths))
    res["tradeoff"] = tradeoff(docs, p, ths, a.tokens, a.seeds, a.vocab, out / "_work")
    print(f"\n{'arm':8s} {'docs':>6s} {'text':>7s} {'toxic docs':>10s} {'toxic mass':>10s}  target loss (vs none)   toxic held-out loss (vs none)")
    for r in res["tradeoff"]["arms"]:
        print(f"{r['arm']:8s} {100 * r['docs_kept']:5.1f}% {100 * r['text_kept']:6.1f}% {100 * r['toxic_docs_kept']:9.1f}% {100 * r['toxic_mass_kept']:9.1f}%  "
              f"{r['target']['mean']:.4f} ± {r['target']['std'] or 0:.4f} {intervals.describe(r['target'].get('vs_none')):28s} "
              f"{r['heldout_toxic']['mean']:.4f} {intervals.describe(r['heldout_toxic'].get('vs_none'))}")
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"total {res['seconds']} s, load {os.getloadavg()[0]:.1f}")
    (out / "results.json").write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
