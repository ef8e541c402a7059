"""Skill-it schedule vs the static CLIMB mix at equal tokens, on the bundled corpus.

    python bench/skillit.py [--work DIR] [--seeds 3] [--search-tokens 30000] [--eval-tokens 120000] [--rounds 8,4]

1. `ingest` data/sample_small (11 domains, `source` = the corpus's domain) with the real stage.
2. `mix` twice with the same tokenizer, proxy shape and seed: method climb (rounds --rounds, 2,000
   candidates, one verification seed) and method skillit (graph from one proxy per domain, the
   online schedule over --phases phases, eta --eta). Both optimise the four bundled targets'
   `search` split.
3. Arms, each trained --seeds times (seed s of every arm shares init and data-order seed) on
   --eval-tokens tokens of the same domain streams and scored on the targets' held-out `eval` split:
     climb           the CLIMB weights, one phase
     skillit         the Skill-it schedule, phase by phase (proxy_lm.train_phased)
     skillit_static  the schedule's token-weighted mean as one phase (same domain totals, no order)
     uniform         1/K, one phase
   Printed: mean loss and std per arm, and the paired relative difference with its 95 % t interval
   (pipeline.intervals.paired); "n.s." when the interval crosses 0. Results also go to
   <work>/skillit_bench.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from pipeline import config as pc  # noqa: E402
from pipeline import driver, intervals  # noqa: E402
from pipeline.models import proxy_lm  # noqa: E402


def run_mix(work: Path, method: str, a) -> Path:
    cfg = {"run": {"output": str(work / "run"), "seed": 0, "tokenizer": {"vocab_size": 1024, "train_docs": 800}},
           "ingest": {"inputs": [{"path": str(ROOT / "data" / "sample_small"), "pattern": "*.jsonl.zst", "text_field": "text",
                                  "id_field": "id", "source_field": "domain"}]},
           "mix": {"method": method, "domain_column": "source",
                   "proxy": {"n_layer": 2, "n_head": 4, "d_model": 64, "ctx": 64, "sequences_per_step": 4,
                             "train_tokens": a.search_tokens, "lr": 3e-3, "eval_tokens": 20_000},
                   "search": {"rounds": [int(x) for x in a.rounds.split(",")], "candidates": 2000, "top_k": 16, "verify_seeds": 1},
                   "skillit": {"phases": a.phases, "eta": a.eta, "val_tokens": 3000}}}
    p = work / f"{method}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    c = pc.load(p)
    ingest = work / "run" / "ingest"
    if not (ingest / "_manifest.json").exists():
        res = driver.run(c, driver.plan(c, only=["ingest"]), use_ray=False, show_progress=False)
        if not all(r.ok for r in res):
            raise SystemExit(f"ingest failed: {[r.failed for r in res]}")
    out = work / f"mix-{method}"
    plans = driver.plan(c, only=["mix"], inp=ingest, out=out)
    res = driver.run(c, plans, use_ray=False, show_progress=False)
    if not all(r.ok for r in res):
        raise SystemExit(f"mix {method} failed: {[r.failed for r in res]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--search-tokens", type=int, default=30_000)
    ap.add_argument("--eval-tokens", type=int, default=120_000)
    ap.add_argument("--phases", type=int, default=4)
    ap.add_argument("--rounds", default="8,4", help="CLIMB rounds (proxy runs per round)")
    ap.add_argument("--eta", type=float, default=0.5)
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="skillit-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    climb_dir = run_mix(work, "climb", a)
    t_climb = time.perf_counter() - t0
    sk_dir = run_mix(work, "skillit", a)
    t_sk = time.perf_counter() - t0 - t_climb
    wc = json.loads((climb_dir / "weights.json").read_text())
    ws = json.loads((sk_dir / "weights.json").read_text())
    names = [d["name"] for d in wc["domains"]]
    assert names == [d["name"] for d in ws["domains"]]
    # same tokenizer and seed: the two mix outputs hold the same streams and target splits
    streams = [np.load(climb_dir / "domains" / f"{i:04d}.npy") for i in range(len(names))]
    evals = {t: np.load(climb_dir / "targets" / f"{t}.eval.npy") for t in wc["targets"]}
    phases = [[p["weights"][n] for n in names] for p in ws["phases"]]
    fracs = [p["fraction"] for p in ws["phases"]]
    arms = {"climb": ([1.0], [[d["weight"] for d in wc["domains"]]]),
            "skillit": (fracs, phases),
            "skillit_static": ([1.0], [[d["weight"] for d in ws["domains"]]]),
            "uniform": ([1.0], [[1.0 / len(names)] * len(names)])}
    spec = proxy_lm.ProxySpec(**{**wc["proxy"], "tokens": a.eval_tokens, "eval_tokens": 50_000, "threads": 1})
    losses: dict[str, list[float]] = {k: [] for k in arms}
    per_target: dict[str, list[dict]] = {k: [] for k in arms}
    t1 = time.perf_counter()
    for s in range(a.seeds):
        for arm, (fr, W) in arms.items():
            r = proxy_lm.train_phased(streams, fr, W, evals, spec, seed=1000 + s)
            losses[arm].append(r["loss"])
            per_target[arm].append(r["losses"])
            print(f"seed {s} {arm:15s} {r['loss']:.4f}", flush=True)
    t_eval = time.perf_counter() - t1
    cmp = {f"{x}_vs_{y}": intervals.paired(losses[x], losses[y])
           for x, y in (("skillit", "climb"), ("skillit", "skillit_static"), ("climb", "uniform"), ("skillit", "uniform"))}
    print(f"\ncorpus data/sample_small, {len(names)} domains; search proxies {a.search_tokens} tokens; eval proxies "
          f"{a.eval_tokens} tokens x {a.seeds} seeds; skillit phases {a.phases}, eta {a.eta}")
    print(f"wall: mix climb {t_climb:.0f}s ({len(wc.get('verify', {}).get('losses', {}))} verify + search runs), "
          f"mix skillit {t_sk:.0f}s ({len(names) + 2} proxies), eval {t_eval:.0f}s")
    print("\n| arm | mean target loss | std |")
    print("|---|---:|---:|")
    for arm, v in losses.items():
        print(f"| {arm} | {np.mean(v):.4f} | {np.std(v, ddof=1) if len(v) > 1 else float('nan'):.4f} |")
    tnames = list(evals)
    print("\n| arm | " + " | ".join(tnames) + " |")
    print("|---|" + "---:|" * len(tnames))
    for arm, rows in per_target.items():
        print(f"| {arm} | " + " | ".join(f"{np.mean([r[t] for r in rows]):.4f}" for t in tnames) + " |")
    print("\n| comparison | paired relative difference [95 % CI] |")
    print("|---|---|")
    for k, v in cmp.items():
        print(f"| {k} | {intervals.describe(v)} |")
    print("\nweights (climb | skillit phases):")
    for i, n in enumerate(names):
        print(f"  {n:13s} {arms['climb'][1][0][i]:.3f} | " + " ".join(f"{W[i]:.3f}" for W in phases))
    doc = {"args": {k: str(v) for k, v in vars(a).items()}, "domains": names, "losses": losses, "per_target": per_target,
           "compare": cmp, "climb_weights": arms["climb"][1][0], "skillit_phases": phases,
           "wall_seconds": {"mix_climb": t_climb, "mix_skillit": t_sk, "eval": t_eval}}
    (work / "skillit_bench.json").write_text(json.dumps(doc, indent=2))
    print(f"\nwrote {work / 'skillit_bench.json'}")


if __name__ == "__main__":
    main()
