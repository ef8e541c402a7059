"""Decontamination against the 24 bundled benchmarks: catch rate of planted passages per benchmark,
false hits on clean text, and speed against the previous implementation (git rev `--prev`).

    python bench/decontam.py [--per-benchmark 200] [--repeat 3] [--prev e6d35a3]

Planted: per benchmark, `--per-benchmark` random examples (seeded; short ones included) copied whole
into a random clean document of data/sample (any domain but `code`) with one of four light edits
(upper case + lines joined, whitespace collapsed, punctuation stripped, tabs + title case), and as
many random 13-word spans of examples (spans of numbers only are not indexed by design and are not
drawn). Caught = the benchmark is in `contaminated`; named = the planted example's id is in
`contam_examples`. False hits: every clean document of data/sample (15,250: all domains but `code`,
whose HumanEval copies are real contamination) scored as is; each hit is listed with the n-gram it
shares. Speed: CPU seconds of this process pinned to one core, best of `--repeat`, batches of 1,000,
all 17,264 documents of data/sample; the previous implementation is loaded from git. Results also go
to runs/bench_decontam/results.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scorers.decontam import DecontamScorer, random_span  # noqa: E402
from pipeline.models import train  # noqa: E402
from pipeline.config import bundled_benchmarks, bundled_targets  # noqa: E402

OUT = ROOT / "runs" / "bench_decontam"
EDITS = [lambda t: t.upper().replace("\n", "  ") + " ...", lambda t: re.sub(r"\s+", " ", t.lower()),
         lambda t: re.sub(r"[^\w\s]+", " ", t), lambda t: "\t".join(t.split()).title()]


def previous(rev: str):
    """scorers/decontam.py as of `rev`, imported as filters._decontam_prev (None without git)."""
    try:
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:scorers/decontam.py"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    spec = importlib.util.spec_from_loader("filters._decontam_prev", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "filters"
    sys.modules[spec.name] = mod
    exec(compile(src, f"{rev}:scorers/decontam.py", "exec"), mod.__dict__)
    return mod


def speed(mod, targets: dict, texts: list[str], repeat: int, path: Path) -> dict:
    t0 = time.process_time()
    idx = mod.NgramIndex.build(targets, 13, 8)
    build = time.process_time() - t0
    idx.save(path)
    sc = mod.DecontamScorer(str(path))
    sc(texts[:10])
    best, res = None, None
    for _ in range(repeat):
        t0 = time.process_time()
        res = [sc(texts[i:i + 1000]) for i in range(0, len(texts), 1000)]
        dt = time.process_time() - t0
        best = dt if best is None else min(best, dt)
    flagged = [c for r in res for c in r["contaminated"]]
    examples = [e for r in res for e in r["contam_examples"]]
    return {"index_build_s": round(build, 2), "docs_per_s": round(len(texts) / best), "docs_hit": sum(1 for c in flagged if c),
            "_flagged": flagged, "_examples": examples, "index_file_mb": round(path.stat().st_size / 1e6, 1)}


def catch_rates(index: str, targets: dict, clean: list[str], per: int) -> dict:
    rng = random.Random(0)
    hosts = [t.split() for t in clean]
    planted, expect = [], []
    for name, rows in targets.items():
        for j, (ex_id, text) in enumerate(rng.sample(rows, min(per, len(rows)))):
            for kind, passage in (("whole", text), ("span", random_span(text, rng))):
                if passage is None:
                    continue
                host = rng.choice(hosts)
                at = rng.randrange(len(host) + 1)
                planted.append(" ".join(host[:at]) + "\n" + EDITS[j % 4](passage) + "\n" + " ".join(host[at:]))
                expect.append((name, kind, f"{name}/{ex_id}"))
    sc = DecontamScorer(index)
    out: dict[str, dict] = {}
    for i in range(0, len(planted), 1000):
        res = sc(planted[i:i + 1000])
        for (name, kind, ex), found, exs in zip(expect[i:i + 1000], res["contaminated"], res["contam_examples"]):
            r = out.setdefault(name, {"whole": [], "span": [], "named": []})
            r[kind].append(found is not None and name in found.split(","))
            if kind == "whole":
                r["named"].append(ex in exs)
    return {name: {"planted": len(r["whole"]), "whole_caught": float(np.mean(r["whole"])), "spans": len(r["span"]),
                   "span_caught": float(np.mean(r["span"])) if r["span"] else None, "named": float(np.mean(r["named"]))}
            for name, r in out.items()}


def every_example(index: str, targets: dict) -> dict:
    """Each example of each benchmark planted whole (an edit each, between two short clean lines):
    the share caught, and the number of examples under 8 words (not indexed, by design)."""
    from scorers.decontam import words

    sc = DecontamScorer(index)
    out = {}
    for name, rows in targets.items():
        texts = ["as seen before\n" + EDITS[j % 4](t) + "\nand so on" for j, (_, t) in enumerate(rows)]
        found = [c for i in range(0, len(texts), 1000) for c in sc(texts[i:i + 1000])["contaminated"]]
        ok = [c is not None and name in c.split(",") for c in found]
        out[name] = {"examples": len(rows), "caught": sum(ok), "under_8_words": sum(1 for _, t in rows if len(words(t)) < 8),
                     "missed_8_words_or_more": sum(1 for (_, t), k in zip(rows, ok) if not k and len(words(t)) >= 8)}
    return out


def false_hits(index: str, docs: list) -> dict:
    from scorers.decontam import Tokens, load_index, words

    idx = load_index(index)
    sc = DecontamScorer(index)
    hits = []
    for i in range(0, len(docs), 1000):
        batch = docs[i:i + 1000]
        res = sc([d.text for d in batch])
        for d, c, ex in zip(batch, res["contaminated"], res["contam_examples"]):
            if c:
                ws = words(d.text)
                tok = Tokens([ws])
                shared = None
                for k in idx.lengths:  # the first shared n-gram, for the listing
                    q, at = tok.windows(k)
                    pos = np.minimum(np.searchsorted(idx.keys, q), len(idx.keys) - 1)
                    ok = np.flatnonzero(idx.keys[pos] == q)
                    if len(ok):
                        shared = " ".join(ws[at[ok[0]]:at[ok[0]] + k])
                        break
                hits.append({"id": d.id, "source": d.source, "benchmarks": c, "examples": ex[:3], "ngram": shared})
    return {"docs": len(docs), "docs_hit": len(hits), "rate": len(hits) / len(docs), "hits": hits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-benchmark", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--prev", default="e6d35a3", help="git rev of the previous implementation (per-benchmark hash_cols keys + KeyIndex)")
    args = ap.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    docs = list(train.iter_docs(ROOT / "data" / "sample", source_field="domain"))
    texts = [d.text for d in docs]
    four, every = train.load_targets(bundled_targets()), train.load_targets(bundled_benchmarks())
    OUT.mkdir(parents=True, exist_ok=True)
    results: dict = {"docs": len(texts), "benchmarks": {n: len(r) for n, r in every.items()}}
    import scorers.decontam as now

    prev = previous(args.prev)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {}
        for label, mod in (("previous", prev), ("current", now)):
            if mod is None:
                print(f"previous implementation: git rev {args.prev} not readable, skipped")
                continue
            for k, targets in (("4", four), ("24", every)):
                runs[f"{label}_{k}"] = speed(mod, targets, texts, args.repeat, tmp / f"{label}-{k}.npz")
                r = runs[f"{label}_{k}"]
                print(f"{label:8s} {k:>2s} benchmarks: index {r['index_build_s']:.2f} s ({r['index_file_mb']} MB), "
                      f"{r['docs_per_s']:,} docs/s, {r['docs_hit']} docs hit")
        if "previous_24" in runs:
            same = runs["previous_24"]["_flagged"] == runs["current_24"]["_flagged"] and \
                runs["previous_24"]["_examples"] == runs["current_24"]["_examples"]
            print(f"same flags and examples as the previous implementation (24 benchmarks): {same}")
            results["same_as_previous"] = same
        results["speed"] = {k: {x: y for x, y in v.items() if not x.startswith("_")} for k, v in runs.items()}
        index = str(tmp / "current-24.npz")
        clean = [d for d in docs if d.source != "code"]
        results["catch"] = catch_rates(index, every, [d.text for d in clean], args.per_benchmark)
        results["every_example"] = every_example(index, every)
        results["false_hits"] = false_hits(index, clean)
    print("\n| benchmark | bundled | planted whole in clean docs: caught | 13-word spans: caught | example named | every example: caught (under 8 words) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results["catch"].items():
        sp = "-" if r["span_caught"] is None else f"{100 * r['span_caught']:.1f} % of {r['spans']}"
        e = results["every_example"][name]
        print(f"| {name} | {len(every[name]):,} | {100 * r['whole_caught']:.1f} % of {r['planted']} | {sp} | {100 * r['named']:.1f} % "
              f"| {100 * e['caught'] / e['examples']:.1f} % ({e['under_8_words']}) |")
    missed = sum(e["missed_8_words_or_more"] for e in results["every_example"].values())
    print(f"\nexamples of 8 words or more not caught: {missed}")
    fh = results["false_hits"]
    print(f"\nclean documents hit: {fh['docs_hit']} of {fh['docs']:,} ({100 * fh['rate']:.3f} %)")
    for h in fh["hits"]:
        print(f"  {h['id']} ({h['source']}): {h['benchmarks']} {h['examples']} - \"{h['ngram']}\"")
    (OUT / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
