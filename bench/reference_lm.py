"""The bundled reference LM (data/reference_lm) vs the LM the default config used to train on its own
input: real text vs its word-shuffled twin, how much a training document is favoured, and speed.

    python bench/reference_lm.py [--n 2000] [--repeat 3]

- shuffle test: the held-out documents of tests/test_reference_lm.py (every held-out file of the
  three training domains + 100 seeded documents of each other English domain), each against its
  twin with the same words in a seeded order on lines of the same lengths; the share of pairs where
  the real text gets the lower perplexity. The old LM is trained the way the default config trained
  it: order 3 on 2,000 documents of the input, here all of data/sample (seed 0), so it has seen
  the documents it scores, the held-out ones included.
- noise: the injected web-like noise of data/sample (data/injected.jsonl: boilerplate, lorem ipsum,
  symbol-heavy, bullet lists, no punctuation, ASCII art) scored among 1,400 real English documents
  (200 per domain, seeded): the share of noise documents above the real documents' 2/3 perplexity
  quantile (CCNet's tail bucket), and their mean percentile.
- membership: P(perplexity of a training document < that of a held-out one), same domain
  (0.5 = the LM cannot tell; 1 = it ranks every document it was trained on first).
- speed: PerplexityScorer docs/s (CPU seconds of this process, one core, best of --repeat) on `--n`
  documents of data/sample, backend auto (kenlm when it imports) and numpy; "routed" = the default
  config now: English documents to the reference, the rest to the in-run LM (lang taken from the
  domain here, as langid would give it).
Results also go to runs/bench_score/reference_lm.json.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.models.lm import kenlm_available
from scorers.perplexity import PerplexityScorer  # noqa: E402
from pipeline.models import train  # noqa: E402

REF = ROOT / "data" / "reference_lm"


def build_module():
    spec = importlib.util.spec_from_file_location("reference_lm_build", REF / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shuffle_rates(B, score, docs: list[dict]) -> dict:
    real = score([d["text"] for d in docs])["perplexity"]
    shuf = score([B.shuffled_twin(d["text"], i) for i, d in enumerate(docs)])["perplexity"]
    win = real < shuf
    out = {"all": float(win.mean()), "pairs": len(docs)}
    for dom in sorted({d["domain"] for d in docs}):
        m = np.array([d["domain"] == dom for d in docs])
        out[dom] = float(win[m].mean())
    return out


def membership(B, score, docs: list[dict]) -> dict:
    out = {}
    for dom in B.DOMAINS:
        tr = score([d["text"] for d in docs if d["domain"] == dom and not B.held_out(d)][:300])["perplexity"]
        ho = score([d["text"] for d in docs if d["domain"] == dom and B.held_out(d)][:300])["perplexity"]
        out[dom] = {"auc": float((tr[:, None] < ho[None, :]).mean()), "median_ratio": float(np.median(tr) / np.median(ho))}
    return out


NOISE = ("boilerplate", "lorem", "symbol_heavy", "bullet_list", "no_punct", "ascii_art")


def noise_in_tail(B, score, real: list[dict]) -> dict:
    import random

    kinds = {}
    for line in (ROOT / "data" / "injected.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] in NOISE:
            kinds[r["id"]] = r["kind"]
    rng = random.Random(0)
    base = [d for dom in B.ENGLISH for d in rng.sample([d for d in real if d["domain"] == dom], 200)]
    noise = [d for d in train.iter_docs(ROOT / "data" / "sample", source_field="domain") if d.id in kinds]
    pr = np.sort(score([d["text"] for d in base])["perplexity"])
    pn = score([d.text for d in noise])["perplexity"]
    pct = np.searchsorted(pr, pn) / len(pr)
    cut = np.quantile(pr, 2 / 3)
    out = {"all": {"docs": len(noise), "in_tail": float((pn > cut).mean()), "mean_percentile": float(pct.mean())}}
    for k in NOISE:
        m = np.array([kinds[d.id] == k for d in noise])
        out[k] = {"docs": int(m.sum()), "in_tail": float((pn[m] > cut).mean()), "mean_percentile": float(pct[m].mean())}
    return out


def docs_per_s(fn, n: int, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="documents for the speed test")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    B = build_module()
    real = B.real_docs()
    tmp = Path(tempfile.mkdtemp())
    sample = train.sample_docs(train.iter_docs(ROOT / "data" / "sample", source_field="domain"), 100_000, seed=0)
    t0 = time.process_time()
    train.train_lm(sample[:2000], tmp / "old", order=3, arpa=kenlm_available())  # = sample_docs(..., 2000, seed 0)
    res: dict = {"old_train_s": time.process_time() - t0}
    ref, old = PerplexityScorer(REF / "en"), PerplexityScorer(tmp / "old")
    ev = B.eval_docs(real)
    res["shuffle"] = {"reference": shuffle_rates(B, ref, ev), "old_input_lm": shuffle_rates(B, old, ev)}
    res["membership"] = {"reference": membership(B, ref, real)}
    res["noise"] = {"reference": noise_in_tail(B, ref, real), "old_input_lm": noise_in_tail(B, old, real)}

    texts = [d.text for d in sample[4000:4000 + args.n]]
    english = set(B.ENGLISH)
    langs = ["en" if d.source in english else None for d in sample[4000:4000 + args.n]]
    speed = {}
    for backend in (["auto"] if kenlm_available() else []) + ["numpy"]:
        o = PerplexityScorer(tmp / "old", backend)
        r = PerplexityScorer(REF / "en", backend)
        routed = PerplexityScorer(REF / "en", backend, fallback=(tmp / "old", backend), lang="en")
        speed[backend] = {"old_input_lm": docs_per_s(lambda: o(texts), len(texts), args.repeat),
                          "reference": docs_per_s(lambda: r(texts), len(texts), args.repeat),
                          "routed": docs_per_s(lambda: routed(texts, lang=langs), len(texts), args.repeat),
                          "backend": o.backend if backend != "auto" else ("kenlm" if kenlm_available() else "numpy")}
    res["speed_docs_per_s"] = speed
    res["english_share_of_speed_docs"] = sum(x == "en" for x in langs) / len(langs)
    out = ROOT / "runs" / "bench_score" / "reference_lm.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    for k, v in res["shuffle"].items():
        print(f"real < shuffled, {k}: {v['all']:.1%} of {v['pairs']} pairs; " + ", ".join(f"{d} {x:.1%}" for d, x in v.items() if d not in ("all", "pairs")))
    for k, v in res["noise"].items():
        print(f"noise in the tail third, {k}: {v['all']['in_tail']:.0%} of {v['all']['docs']} (mean percentile {v['all']['mean_percentile']:.2f}); "
              + ", ".join(f"{n} {x['in_tail']:.0%}" for n, x in v.items() if n != "all"))
    print("membership (reference): " + ", ".join(f"{d} AUC {m['auc']:.2f} (median ppl ratio {m['median_ratio']:.2f})" for d, m in res["membership"]["reference"].items()))
    for b, s in speed.items():
        print(f"speed {b} ({s['backend']}): old {s['old_input_lm']:.0f} docs/s, reference {s['reference']:.0f}, routed {s['routed']:.0f} "
              f"({s['routed'] / s['old_input_lm'] - 1:+.0%} vs old)")


if __name__ == "__main__":
    main()
