"""Critical mixture ratio (mix.method: cmr) on the bundled corpus, with a check of the prediction.

    python bench/cmr.py [--out /tmp/bench_cmr] [--domain legal] [--tolerance 0.02] [--tokens 25000,50000,100000]
                        [--seeds 2] [--verify-seeds 2] [--cpus 2]

1. `curate ingest` data/sample (17,264 docs, 11 domains in column `source`);
2. `curate mix` with method cmr: the domain corpus `--domain`, the other ten domains (token shares)
   as the general corpus; a base proxy per seed trained on the general corpus, then the grid of
   6 domain shares x the token counts x seeds continuing it; the law fitted to general and domain
   validation loss, leave-one-point-out error, the critical ratio with a 95 % bootstrap interval;
3. the check (the peer of the law is the measurement): fresh continuations (new data seeds) of the
   same bases at r = 0 and at the predicted ratio r*, at the largest token count: the measured rise
   of general loss at r* over r = 0, to set beside the tolerance, and the domain loss gained.

Prints the grid, the fits, the held-out error, the ratio with its interval and the check.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402


def curate(*args: str) -> None:
    exe = str(Path(sys.executable).with_name("curate"))
    r = subprocess.run([exe, *args, "-q"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"curate {args[0]} failed: {r.stderr.strip()}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/bench_cmr")
    ap.add_argument("--domain", default="legal")
    ap.add_argument("--tolerance", type=float, default=0.02)
    ap.add_argument("--tokens", default="25000,50000,100000")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--verify-seeds", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    tokens = [int(x) for x in a.tokens.split(",")]
    cfg = {"run": {"output": str(out / "run"), "seed": 0, "ray": {"num_cpus": a.cpus}},
           "mix": {"method": "cmr", "domain_column": "source", "proxy": {"train_tokens": max(tokens), "eval_tokens": 20_000},
                   "cmr": {"domain": a.domain, "tokens": tokens, "seeds": a.seeds, "tolerance": a.tolerance, "bootstrap": 200}}}
    cpath = out / "cmr.yaml"
    cpath.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    if not (out / "ingest" / "_manifest.json").exists():
        curate("ingest", "--input", str(ROOT / "data" / "sample"), "--output", str(out / "ingest"), "--source-field", "domain",
               "--pattern", "*.jsonl.zst")
    t1 = time.perf_counter()
    mix = out / "mix"
    curate("mix", "--input", str(out / "ingest"), "--output", str(mix), "--config", str(cpath), "--force")
    t2 = time.perf_counter()
    c = json.loads((mix / "cmr.json").read_text())
    print(f"# CMR on data/sample: domain {c['domain']!r}, general = {len(c['general'])} domains by token share, tolerance {c['tolerance']}")
    print(f"ingest {t1 - t0:.0f} s, mix (BPE, tokenize, {len(c['base']['runs'])} base + {len(c['grid'])} grid proxies, fit) {t2 - t1:.0f} s")
    p = c["proxy"]
    print(f"proxy: {p['n_layer']} layers, d {p['d_model']}, ctx {p['ctx']}, batch {p['batch_size']}, lr {p['lr']}, vocab {p['vocab_size']}; "
          f"base {c['base']['tokens']} general tokens; validation {c['validation']['general']['tokens']} general / "
          f"{c['validation']['domain']['tokens']} domain tokens (held-out documents)")
    print("\n| tokens | ratio | general loss (seeds) | law | held out | domain loss | law | held out |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for cl in c["cells"]:
        seeds = ", ".join(f"{v:.4f}" for v in cl["general_seed_losses"])
        print(f"| {cl['tokens']} | {cl['ratio']:.1f} | {cl['general_loss']:.4f} ({seeds}) | {cl['general_fit']:.4f} | {cl['general_held_out']:.4f} "
              f"| {cl['domain_loss']:.4f} | {cl['domain_fit']:.4f} | {cl['domain_held_out']:.4f} |")
    print(f"\nlaw: {c['form']}")
    for n in ("general", "domain"):
        f, h = c["fit"][n], c["held_out"][n]
        print(f"{n:7s}: a {f['a']:.4f}  b {f['b']:.4f}  alpha {f['alpha']:.3f}  c {f['c']:+.4f}  beta {f['beta']:.3f}  gamma {f['gamma']:+.3f}  (T_ref {f['T_ref']});"
              f" leave-one-point-out RMSE {h['rmse']:.4f} nats, mean |rel| {100 * h['mean_rel']:.2f} %, max |err| {h['max_abs']:.4f}")
    r = c["ratio"]
    b = r["bootstrap"]
    print(f"\ncritical ratio r* = {r['value']:.3f}, 95 % interval [{r['interval'][0]:.3f}, {r['interval'][1]:.3f}] "
          f"({b['replicates']} bootstrap refits resampling {b['resample']}; median {b['median']:.3f}; at 1: {100 * b['share_at_1']:.0f} %)")
    print(f"model-free grid ratio at T_ref: {r['grid_ratio']:.2f}; weights.json domain weight {r['realized']:.3f} (projected: {r['projected']})")
    print(f"law at r*: general {r['general_loss_at_0']:.4f} -> {r['general_loss_at_ratio']:.4f}, domain {r['domain_loss_at_0']:.4f} -> "
          f"{r['domain_loss_at_ratio']:.4f} ({100 * (r['domain_gain'] or 0):.2f} % lower)")
    verify(mix, c, a.verify_seeds)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


def verify(mix: Path, c: dict, n: int) -> None:
    """Fresh continuations at r = 0 and r*: the measured general-loss rise against the tolerance."""
    from pipeline.models import tokenstreams as ts

    dom = json.loads((mix / "domains" / "index.json").read_text())["domains"]
    info = json.loads((mix / "cmr" / "index.json").read_text())
    names = [d["name"] for d in dom]
    streams = [str(mix / info["train"][str(i)]) if str(i) in info["train"] else str(mix / "domains" / d["file"]) for i, d in enumerate(dom)]
    evals = {k: str(mix / info[k]["file"]) for k in ("general", "domain")}
    shares = np.array([c["general"].get(nm, 0.0) for nm in names])
    di = names.index(c["domain"])
    spec = {**c["proxy"], "tokens": c["T_ref"], "eval_tokens": max(info["general"]["tokens"], info["domain"]["tokens"])}
    rs = c["ratio"]["value"]
    res = {0.0: [], rs: []}
    for s in range(n):
        base = mix / "_work" / "cmr_base" / f"base-t{c['base']['tokens']}-s{s % c['seeds']}.pt"
        for r in res:
            w = (1 - r) * shares
            w[di] += r
            m = ts.proxy_task(streams, w.tolist(), evals, spec, 1000 + s, init=str(base) if base.exists() else None)
            res[r].append((m["losses"]["general"], m["losses"]["domain"]))
    g0, gr = np.array([x[0] for x in res[0.0]]), np.array([x[0] for x in res[rs]])
    d0, dr = np.array([x[1] for x in res[0.0]]), np.array([x[1] for x in res[rs]])
    rise = (gr - g0) / g0
    print(f"\ncheck ({n} fresh data seeds at T_ref = {c['T_ref']}): general r=0 {g0.mean():.4f}, r*={rs:.3f} {gr.mean():.4f}: "
          f"measured rise {100 * rise.mean():+.2f} % (per seed {', '.join(f'{100 * x:+.2f}' for x in rise)}) vs tolerance "
          f"{100 * c['tolerance']:.1f} %; domain {d0.mean():.4f} -> {dr.mean():.4f} ({100 * (d0.mean() - dr.mean()) / d0.mean():.2f} % lower)")


if __name__ == "__main__":
    main()
