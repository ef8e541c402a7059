"""Quality curriculum vs shuffle, under several LR schedules, with `curate evaluate` (3 seeds, paired 95 %).

    python bench/curriculum.py [--out runs/bench_curriculum] [--docs 1600] [--tokens 0] [--seeds 3]
                               [--schedules cosine,moderate,constant,constant_avg,cosine_random]

Seed paper: "How Learning Rate Decay Wastes Your Best Data in Curriculum-Based LLM Pretraining"
(ascending-quality order helps under a constant or moderately decaying LR or with averaging of the
last checkpoints; under a full cosine decay the best data arrives when the LR is small).

Corpus (synthetic, written here, seeded): documents mix words of a target vocabulary and of a noise
vocabulary; a document's true quality q ~ U(0, 1) is the share of target words; its `quality` score
column is q plus N(0, 0.1) noise (an imperfect scorer). The target set is fresh pure-target text.
Pipeline, all through the CLI: `curate mix` (method proportional: trains the tokenizer, the target
splits and the domain streams), `curate remix` twice at one epoch of every document (remix.order
{by: quality, direction: ascending} vs the default shuffle: the same samples, another order), then
per schedule one `curate evaluate` with arms curriculum and shuffled, evaluate.proxy {lr_schedule,
average_last, data_order: sequential} and compare [[curriculum, shuffled]] (the control
`cosine_random` reads random windows, as the proxy does by default: the order is then lost). Prints one table row per
schedule: mean target loss of each arm over seeds and the paired relative difference with its 95 %
interval ("n.s." when it crosses 0). Results also in <out>/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import yaml  # noqa: E402

SCHEDULES = {  # name -> evaluate.proxy
    "cosine": {"lr_schedule": "cosine", "average_last": 0, "data_order": "sequential"},
    "moderate": {"lr_schedule": "moderate", "average_last": 0, "data_order": "sequential"},
    "constant": {"lr_schedule": "constant", "average_last": 0, "data_order": "sequential"},
    "constant_avg": {"lr_schedule": "constant", "average_last": 8, "data_order": "sequential"},
    # control: random windows (the proxy's default sampling) destroy the written order
    "cosine_random": {"lr_schedule": "cosine", "average_last": 0, "data_order": "random"},
}
PROXY = {"n_layer": 2, "n_head": 2, "d_model": 64, "ctx": 64, "sequences_per_step": 8, "train_tokens": 12_000,
         "lr": 0.004, "eval_tokens": 20_000}


def words(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=rng.integers(3, 8))) for _ in range(n)]


def make_corpus(root: Path, n_docs: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(11)
    target, noise = words(np.random.default_rng(1), 80), words(np.random.default_rng(2), 80)
    zipf = 1.0 / np.arange(1, 81) ** 1.1
    zipf /= zipf.sum()

    def text(q: float, n: int, r: np.random.Generator) -> str:
        pick_t = r.random(n) < q
        ws = np.where(pick_t, r.choice(target, n, p=zipf), r.choice(noise, n, p=zipf))
        return " ".join(ws.tolist()) + "."

    q = rng.random(n_docs)
    rows = {"id": [f"d{i}" for i in range(n_docs)], "text": [], "source": [], "quality": []}
    for i in range(n_docs):
        rows["text"].append(text(float(q[i]), int(rng.integers(40, 120)), rng))
        rows["source"].append("web" if rng.random() < 0.6 else "forum")
        rows["quality"].append(float(np.clip(q[i] + rng.normal(0, 0.1), 0, 1)))
    rows["n_tokens"] = [len(t.split()) for t in rows["text"]]
    inp, tgt = root / "in", root / "target.jsonl"
    if (inp / "part-00001.parquet").exists() and tgt.exists():  # written before (same seed): reuse, so the stages resume
        return inp, tgt
    inp.mkdir(parents=True, exist_ok=True)
    t = pa.table(rows)
    half = t.num_rows // 2
    pq.write_table(t.slice(0, half), inp / "part-00000.parquet")
    pq.write_table(t.slice(half), inp / "part-00001.parquet")
    trng = np.random.default_rng(999)
    with open(tgt, "w") as fh:
        for j in range(200):
            fh.write(json.dumps({"id": f"t{j}", "text": text(1.0, 80, trng)}) + "\n")
    return inp, tgt


def curate(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", *args, "--no-ray", "-q"], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(f"curate {args[0]} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_curriculum")
    ap.add_argument("--docs", type=int, default=1600)
    ap.add_argument("--tokens", type=int, default=0, help="proxy training tokens per run; 0 = the remix's tokens (one epoch)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--schedules", default=",".join(SCHEDULES))
    a = ap.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inp, tgt = make_corpus(out, a.docs)
    base = {"run": {"output": str(out / "run"), "seed": 0, "tokenizer": {"vocab_size": 512, "train_docs": 400}},
            "mix": {"method": "proportional", "domain_column": "source", "targets": [{"name": "target", "path": str(tgt)}],
                    "proxy": PROXY, "search": {"verify_seeds": 1}}}
    cfg = out / "mix.yaml"
    cfg.write_text(yaml.safe_dump(base))
    mixd = out / "mix"
    curate("mix", "--input", str(inp), "--output", str(mixd), "--config", str(cfg))
    remixes = {}
    for name, order in (("curriculum", {"by": "quality", "direction": "ascending"}), ("shuffled", None)):
        rc = out / f"remix-{name}.yaml"
        rc.write_text(yaml.safe_dump({**base, "remix": {"order": order, "formats": ["parquet"]}}))
        curate("remix", "--weights", str(mixd / "weights.json"), "--input", str(inp), "--output", str(out / name), "--config", str(rc))
        remixes[name] = str(out / name)
    rep = json.loads((out / "curriculum" / "_remix.json").read_text())
    tokens = a.tokens or int(rep["tokens"])
    print(f"corpus {a.docs} docs; remix {rep['samples']} samples, {rep['tokens']} tokens; proxy {PROXY['n_layer']}x{PROXY['d_model']} "
          f"ctx {PROXY['ctx']}, {tokens} training tokens per run, {a.seeds} seeds; setup {time.perf_counter() - t0:.0f}s")
    rows = []
    print(f"| schedule | curriculum loss | shuffled loss | curriculum vs shuffled (paired, 95 %) | wall s |")
    print("|---|---:|---:|---|---:|")
    for s in a.schedules.split(","):
        t1 = time.perf_counter()
        ec = out / f"evaluate-{s}.yaml"
        ec.write_text(yaml.safe_dump({**base, "evaluate": {"remixes": remixes, "proxy": SCHEDULES[s],
                                                           "compare": [["curriculum", "shuffled"]]}}))
        ev = out / f"evaluate-{s}"
        curate("evaluate", "--mix", str(mixd), "--output", str(ev), "--config", str(ec), "--arms", "curriculum,shuffled",
               "--tokens", str(tokens), "--seeds", str(a.seeds))
        e = json.loads((ev / "evaluate.json").read_text())
        arms = {r["arm"]: r for r in e["arms"]}
        c = e["comparisons"][0]
        row = {"schedule": s, "proxy": e["proxy"], "curriculum": arms["curriculum"]["seed_losses"], "shuffled": arms["shuffled"]["seed_losses"],
               "paired": c, "seconds": round(time.perf_counter() - t1, 1)}
        rows.append(row)
        print(f"| {s} | {arms['curriculum']['loss']:.4f} | {arms['shuffled']['loss']:.4f} | {c['text']} | {row['seconds']:.0f} |", flush=True)
    (out / "results.json").write_text(json.dumps({"docs": a.docs, "tokens": tokens, "seeds": a.seeds, "rows": rows,
                                                  "wall_seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    print(f"total {time.perf_counter() - t0:.0f}s; results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
