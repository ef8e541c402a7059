"""Seed spread of `curate evaluate` on the default corpus, per proxy setting (issue 14: seed std < 0.3 % of the loss).

    python bench/seedstd.py [--out runs/bench_seedstd] [--tokens 300000] [--seeds 3] [--settings base,avg8,...]

Setup, through the CLI (cached in --out, resumed on a second call): `curate ingest` of data/sample with
configs/default.yaml's ingest section (the raw arm's input, exactly as the default run ingests it),
then `curate mix --method proportional --domain-column source` with the default run's mix section
otherwise (run.tokenizer: the 4k byte-level BPE trained on the input; the four bundled targets split
search/eval; budget 2M tokens, max 4 epochs, max weight 0.6; the mix proxy {train_tokens 150k,
eval_tokens 20k} the default run's evaluate inherits). Differences to the default run: the domains
are the 11 ingest sources, not the clusters, and the tokenizer is trained on the ingested corpus,
not on the filtered/deduplicated one.

Per setting one `curate evaluate --arms raw,uniform --tokens N --seeds S` with `evaluate.proxy` = the
setting and `evaluate.compare: [[uniform, raw]]`: raw = the ingested corpus, uniform = the 11
source domains at equal weight (the cheapest curated arm). Prints per setting: each arm's mean loss
and seed std (absolute and % of the loss), the pooled seed std of the two arms (sqrt of the mean of
the two variances, 2(S-1) degrees of freedom), the paired relative difference uniform vs raw with its
95 % interval (pipeline/intervals.py), the training wall seconds per proxy run (1 torch thread; on a
loaded machine wall > CPU) and the CPU seconds of the whole evaluate call (2 x seeds runs, plus
tokenizing the raw arm's stream, the same for every setting). The eval set is the same for every seed (the first eval_tokens of each target's eval
half), so the spread is training noise: initialization and the sampled windows. Results per setting
in <out>/evaluate-<setting>-<tokens>-s<seeds>/bench_row.json (two invocations with disjoint
--settings may run side by side once the setup exists).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

# name -> evaluate.proxy (unset keys: the mix stage's proxy: lr 2e-3, ctx 64, 4 sequences/step,
# cosine to 0.1 lr, final weights, 20k eval tokens per target)
SETTINGS = {
    "base": {},
    "avg8": {"average_last": 8},
    "lr4e-3": {"lr": 4e-3},
    "lr8e-3": {"lr": 8e-3},
    "b8_lr4e-3": {"sequences_per_step": 8, "lr": 4e-3},
    "b16_lr8e-3": {"sequences_per_step": 16, "lr": 8e-3},
    "lr4e-3_avg8": {"lr": 4e-3, "average_last": 8},
    "const_avg8": {"lr_schedule": "constant", "average_last": 8},
    "eval50k": {"eval_tokens": 50_000},
    # windows evenly spaced over each stream (the stream itself is a run.seed-shuffled sample of
    # whole documents): no window sampling, a seed varies the initialization only
    "seq": {"data_order": "sequential"},
    "seq_avg8": {"data_order": "sequential", "average_last": 8},
    "seq_lr4e-3": {"data_order": "sequential", "lr": 4e-3},
    "seq_lr8e-3": {"data_order": "sequential", "lr": 8e-3},
    # a narrower proxy (~2.5x fewer FLOPs per token at vocab 4096): run it with --tokens 600000
    "seq_d64": {"data_order": "sequential", "d_model": 64},
    "d64": {"d_model": 64},
}


def curate(*args: str) -> float:
    """Run one CLI command in a child process; return its CPU seconds (user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--no-ray", "-q"], capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"curate {args[0]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def setup(out: Path) -> tuple[Path, Path, dict]:
    """The default run's ingest, and a proportional mix over the ingest sources (cached)."""
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    inp = default["ingest"]["inputs"][0]
    ingest, mixd = out / "ingest", out / "mix"
    curate("ingest", "-i", str(ROOT / inp["path"]), "-o", str(ingest), "--pattern", inp["pattern"],
           "--source-field", inp["source_field"], "--config", str(ROOT / "configs" / "default.yaml"))
    mix = {**default["mix"], "method": "proportional", "domain_column": "source", "search": {"verify_seeds": 1}}
    base = {"run": {**default["run"], "output": str(out / "run")}, "mix": mix}
    cfg = out / "mix.yaml"
    cfg.write_text(yaml.safe_dump(base))
    curate("mix", "-i", str(ingest), "-o", str(mixd), "-c", str(cfg))
    return ingest, mixd, base


def pooled(a: dict, b: dict) -> float:
    return math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_seedstd")
    ap.add_argument("--tokens", type=int, default=300_000, help="training tokens per proxy run (the default run's evaluate.train_tokens)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated, from {', '.join(SETTINGS)}")
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ingest, mixd, base = setup(out)
    proxy = json.loads((mixd / "weights.json").read_text())["proxy"]
    print(f"setup {time.perf_counter() - t0:.0f}s; mix proxy {proxy}; {a.tokens} tokens per run, {a.seeds} seeds, arms raw and uniform")
    print("| setting | evaluate.proxy | raw loss | raw std (%) | uniform loss | uniform std (%) | pooled std (% of raw loss) | uniform vs raw, paired [95 % CI] | train s/run | evaluate CPU s |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|")
    rows = []
    for name in a.settings.split(","):
        if name not in SETTINGS:
            raise SystemExit(f"--settings: unknown {name!r}; choose from {', '.join(SETTINGS)}")
        t1 = time.perf_counter()
        ec = out / f"evaluate-{name}.yaml"
        ec.write_text(yaml.safe_dump({**base, "evaluate": {"proxy": SETTINGS[name] or None, "compare": [["uniform", "raw"]]}}))
        ev = out / f"evaluate-{name}-{a.tokens}-s{a.seeds}"
        cpu = curate("evaluate", "--mix", str(mixd), "--raw", str(ingest), "--output", str(ev), "--config", str(ec),
               "--arms", "raw,uniform", "--tokens", str(a.tokens), "--seeds", str(a.seeds))
        e = json.loads((ev / "evaluate.json").read_text())
        arm = {r["arm"]: r for r in e["arms"]}
        raw, uni, c = arm["raw"], arm["uniform"], e["comparisons"][0]
        per_run = (raw["seconds"] + uni["seconds"]) / (2 * a.seeds)
        row = {"setting": name, "proxy": e["proxy"], "raw": {k: raw[k] for k in ("loss", "std", "seed_losses", "losses")},
               "uniform": {k: uni[k] for k in ("loss", "std", "seed_losses", "losses")}, "pooled_std": pooled(raw, uni),
               "paired": c, "train_seconds_per_run": round(per_run, 1), "evaluate_cpu_seconds": round(cpu, 1), "wall_seconds": round(time.perf_counter() - t1, 1)}
        rows.append(row)
        pct = lambda r: f"{r['std']:.4f} ({100 * r['std'] / r['loss']:.2f} %)"  # noqa: E731
        print(f"| {name} | {json.dumps(SETTINGS[name])} | {raw['loss']:.4f} | {pct(raw)} | {uni['loss']:.4f} | {pct(uni)} | "
              f"{row['pooled_std']:.4f} ({100 * row['pooled_std'] / raw['loss']:.2f} %) | {c['text']} | {per_run:.1f} | {cpu:.0f} |", flush=True)
        (ev / "bench_row.json").write_text(json.dumps({**row, "tokens": a.tokens, "seeds": a.seeds}, indent=1))
    print(f"total {time.perf_counter() - t0:.0f}s; per setting: {out}/evaluate-<setting>-{a.tokens}-s{a.seeds}/bench_row.json")


if __name__ == "__main__":
    main()
