"""Scale curve: per-stage docs/s and peak RSS (driver and largest Ray task) at growing corpus sizes.

  python bench/scale.py --sizes 20000 80000 --words 64 --out /tmp/curate-scale

For each size it builds a synthetic corpus from the bundled sample (data/sample): document i is
sample document i mod n0, its text cut to the first --words words; copy c > 0 of a document is an
exact copy when c % 4 == 1 (exact dedup work) and otherwise has one word replaced by a marker at a
seeded position (a near duplicate: fuzzy dedup work), within groups of --cluster copies (default 8)
whose start has every 3rd word replaced by a token of the group: a duplicate cluster has --cluster
members at every size, so dedup's pair work grows linearly with the corpus (--cluster 1: all unique,
the later stages see ~all documents). It then runs `curate run --stage S` once per
stage (ingest, filter, dedup, score, cluster, mix, remix) with embedded Ray on --cpus CPUs, each as its own
process group, and samples the process tree every 0.2 s from /proc: the driver's RSS (the `curate`
process) and the largest RSS of any Ray worker process (title `ray::<task>`, or default_worker.py). docs/s = documents
into the stage / wall seconds of the whole `curate run` (start-up included). It prints one row per
(size, stage), the RSS ratio largest/smallest size per stage, and writes --json.

mix and remix run on what the cluster stage kept, with small fixed sizes (a proportional mixture
verified by 3 tiny proxies; a remix of REMIX_TOKENS tokens): both are bounded by design (mix keeps
only the documents its streams can take, remix holds its samples), so what grows with the corpus
is their per-document pass (mix's token count, remix's census), which is what their rate measures.

--project N computes, from the largest size's per-core rates and the dedup task RSS, what N
documents (default 1 B) would cost: core-hours per stage (documents reaching each stage in the
measured proportion), wall hours on --nodes nodes of --cores cores (linear scaling assumed), and the
largest dedup task's memory at the documents per partition N gives (run.shard.target_rows rows per
shard, one partition per shard: a linear fit of task RSS over the measured documents per
partition). --write-rates PATH writes the per-core rates (documents and text bytes per second per
core) that `curate run --dry-run` reads (pipeline/estimate.py, bench/scale_rates.json).

The config is configs/default.yaml with a cheaper score section (perplexity against the bundled
reference LM + decontamination) and max_tokens 16 for the cluster embedder: see README_scale.md.
"""
from __future__ import annotations

import argparse
import io as _io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml
import zstandard

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "filter", "dedup", "score", "cluster", "mix", "remix"]
REMIX_TOKENS = 50_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def sample_docs(words: int) -> list[dict]:
    docs = []
    for f in sorted((ROOT / "data/sample").glob("*.jsonl.zst")):
        with open(f, "rb") as fh:
            text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
        for line in text.splitlines():
            d = json.loads(line)
            docs.append({"id": d["id"], "text": " ".join(d["text"].split(" ")[:words]), "domain": d.get("domain")})
    return docs


def build_corpus(n: int, words: int, dest: Path, per_shard: int = 5000, cluster: int = 8) -> None:
    """Document i is sample document i mod n0, copy c = i // n0. Copies come in groups of `cluster`:
    group g = c // cluster starts from the sample text with every 3rd word replaced by a token of
    g (g > 0; no 5-gram shared with another group), and member m = c % cluster > 0 of a group is an
    exact copy of its start when m % 4 == 1, else a near duplicate (one word replaced). So a
    duplicate cluster has `cluster` members at every corpus size (cluster 1: every document unique)."""
    if (dest / "_done").exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    base = sample_docs(words)
    rng = random.Random(0)
    for s in range(0, n, per_shard):
        buf = _io.StringIO()
        for i in range(s, min(n, s + per_shard)):
            d, c = base[i % len(base)], i // len(base)
            g, m = divmod(c, cluster)
            w = d["text"].split(" ")
            if g > 0:  # every 3rd word replaced: no 5-gram shared with another group
                for j in range((i % len(base) + g) % 3, len(w), 3):  # the same for every member of the group
                    w[j] = f"g{g}w{j}"
            if m > 0 and m % 4 != 1:
                w[rng.randrange(len(w))] = f"copy{m}"
            buf.write(json.dumps({"id": f"{d['id']}-{c}", "text": " ".join(w), "domain": d["domain"]}) + "\n")
        (dest / f"shard-{s // per_shard:05d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(buf.getvalue().encode()))
    (dest / "_done").write_text(str(n))


def config(corpus: Path, out: Path, cpus: int, path: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "configs/default.yaml").read_text())
    cfg["run"]["output"] = str(out)
    cfg["run"]["ray"] = {**cfg["run"].get("ray", {}), "num_cpus": cpus}
    cfg["ingest"]["inputs"][0]["path"] = str(corpus)
    cfg["score"] = {"perplexity": {"reference": "bundled", "train": {"order": 3, "data": {"max_docs": 2000}}},
                    "decontam": {"ngram": 13, "action": "reject"}}
    cfg["cluster"]["embed"] = {"max_tokens": 16}
    cfg["mix"] = {"method": "proportional", "domain_column": "cluster",
                  "proxy": {"n_layer": 1, "n_head": 2, "d_model": 32, "ctx": 32, "train_tokens": 2000, "eval_tokens": 2000}}
    cfg["remix"] = {"budget_tokens": REMIX_TOKENS, "select": None}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _procs() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, rss bytes, cmdline) for every process we can read."""
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out[int(p)] = (int(fields[1]), int(fields[21]) * PAGE, cmd)
        except (OSError, ValueError, IndexError):
            continue
    return out


class Sampler(threading.Thread):
    """Peak RSS of the root process and of the largest Ray worker among its descendants."""

    def __init__(self, root: int):
        super().__init__(daemon=True)
        self.root, self.driver, self.task, self.stop = root, 0, 0, threading.Event()
        self.task_title = ""  # process title of the largest worker at its peak (ray::<task name>)

    def run(self) -> None:
        while not self.stop.is_set():
            ps = _procs()
            kids, seen, todo = {}, set(), [self.root]
            for pid, (pp, _, _) in ps.items():
                kids.setdefault(pp, []).append(pid)
            while todo:
                p = todo.pop()
                if p in seen:
                    continue
                seen.add(p)
                todo.extend(kids.get(p, []))
            if self.root in ps:
                self.driver = max(self.driver, ps[self.root][1])
            workers = [(ps[p][1], ps[p][2]) for p in seen if p in ps and (ps[p][2].startswith("ray::") or "default_worker.py" in ps[p][2])]
            if workers:
                rss, title = max(workers)
                if rss > self.task:
                    self.task, self.task_title = rss, title.strip()[:80]
            self.stop.wait(0.2)


def totals(out: Path, stage: str) -> dict:
    """The stage's manifest totals ({} for multi-pass stages without document accounting: mix)."""
    return json.loads((out / stage / "_manifest.json").read_text()).get("totals") or {}


def dedup_partitions(out: Path) -> int:
    """Partitions of the dedup run = its input shards (dedup.partitions default)."""
    return max(1, len(list((out / "filter").glob("part-*.parquet"))))


def project(rows: list[dict], n: int, docs: float, nodes: list[int], cores: int, cpus: int, target_rows: int) -> dict:
    """Core-hours per stage and wall hours on each node count for `docs` documents, from the rates of
    size n; the largest dedup task's RSS at `docs`' documents per partition (linear fit over sizes)."""
    at = {r["stage"]: r for r in rows if r["docs"] == n}
    stages = {}
    for st, r in at.items():
        rate = r["docs_in"] / r["wall_s"] / cpus  # docs/s/core, start-up included: a low bound for short runs
        reach = r["docs_in"] / n  # share of the corpus' documents that reach this stage (dedup removes copies)
        ch = docs * reach / rate / 3600
        stages[st] = {"docs_per_s_per_core": round(rate, 1), "share_of_docs": round(reach, 4), "core_hours": round(ch, 1)}
    total = sum(s["core_hours"] for s in stages.values())
    out = {"documents": docs, "from_size": n, "cores_per_node": cores, "stages": stages, "core_hours": round(total, 1),
           "wall_hours": {str(k): round(total / (k * cores), 2) for k in nodes}}
    pts = [(r["docs_in"] / r["partitions"], r["task_rss_mb"]) for r in rows if r["stage"] == "dedup" and r.get("partitions")]
    if pts:
        x, y = [p[0] for p in pts], [p[1] for p in pts]
        into = docs * (at["dedup"]["docs_in"] / n if "dedup" in at else 1.0)  # documents into dedup at `docs`
        parts = max(1, int(-(-into // target_rows)))  # the filter output's shards: one partition each
        per_part_1b = into / parts
        if max(x) >= 1.5 * min(x):  # a fit needs documents per partition that differ; memory never shrinks with them
            xm, ym = sum(x) / len(x), sum(y) / len(y)
            slope = max(0.0, sum((a - xm) * (b - ym) for a, b in zip(x, y)) / sum((a - xm) ** 2 for a in x))
            mb, how = max(y) + slope * max(0.0, per_part_1b - x[y.index(max(y))]), "linear fit (slope >= 0) from the largest measured task"
        else:
            slope, mb, how = None, max(y), "largest measured task (the sizes' documents per partition are too close to fit: run sizes that differ more per partition)"
        out["dedup_partition"] = {"docs_per_partition": round(per_part_1b), "partitions": parts, "task_rss_mb": round(mb), "how": how,
                                  "fit_mb_per_1k_docs": None if slope is None else round(1000 * slope, 3),
                                  "measured": [{"docs_per_partition": round(a), "task_rss_mb": b} for a, b in pts]}
    return out


def rates(rows: list[dict], n: int, cpus: int, sizes: list[int], words: int) -> dict:
    """Per-core rates of size n, for `curate run --dry-run` (pipeline/estimate.py)."""
    at = [r for r in rows if r["docs"] == n]
    return {"source": "bench/scale.py", "measured": time.strftime("%Y-%m-%d"), "size": n, "sizes": sizes, "cpus": cpus,
            "words_per_doc": words,
            "docs_per_sec_per_core": {r["stage"]: round(r["docs_in"] / r["wall_s"] / cpus, 1) for r in at},
            "bytes_per_sec_per_core": {r["stage"]: round(r["bytes_in"] / r["wall_s"] / cpus) for r in at if r.get("bytes_in")}}


def run_stage(cfg: Path, stage: str, timeout: float) -> tuple[float, int, int]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    cmd = [str(Path(sys.executable).with_name("curate")), "run", str(cfg), "-q", "--stage", stage]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    s = Sampler(p.pid)
    s.start()
    _, err = p.communicate(timeout=timeout)
    wall = time.perf_counter() - t0
    s.stop.set()
    s.join()
    if p.returncode != 0:
        raise SystemExit(f"{stage}: curate run exited {p.returncode}: {err.decode()[-2000:]}")
    return wall, s.driver, s.task, s.task_title


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--words", type=int, default=64, help="words kept per document (the box has 2 shared cores)")
    ap.add_argument("--cluster", type=int, default=8, help="members of each duplicate cluster, the same at every size (1: all unique)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--stages", nargs="+", default=STAGES)
    ap.add_argument("--out", type=Path, default=Path("/tmp/curate-scale"))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--project", type=float, default=None, metavar="DOCS", help="project the largest size's rates to DOCS documents (e.g. 1e9)")
    ap.add_argument("--nodes", type=int, nargs="+", default=[10, 100], help="--project: node counts")
    ap.add_argument("--cores", type=int, default=16, help="--project: cores per node")
    ap.add_argument("--write-rates", type=Path, default=None, help="write the largest size's per-core rates (bench/scale_rates.json)")
    ap.add_argument("--rows", type=Path, default=None, help="no runs: take the rows of an earlier --json (re-project, re-write rates)")
    a = ap.parse_args()
    rows = []
    if a.rows:
        rows = json.loads(a.rows.read_text())
        rows = rows["rows"] if isinstance(rows, dict) else rows
        a.sizes = sorted({r["docs"] for r in rows})
    print(f"{'docs':>8} {'stage':<8} {'docs_in':>8} {'wall_s':>7} {'docs/s':>8} {'driver_MB':>9} {'task_MB':>8}", flush=True)
    for n in a.sizes if not a.rows else []:
        tag = f"{n}-c{a.cluster}"
        corpus, out = a.out / f"corpus-{tag}", a.out / f"run-{tag}"
        build_corpus(n, a.words, corpus, cluster=a.cluster)
        shutil.rmtree(out, ignore_errors=True)  # a finished run would be skipped, not measured
        cfg = config(corpus, out, a.cpus, a.out / f"config-{tag}.yaml")
        prev, prev_bytes = n, None  # a stage without accounting (mix) reads what the stage before kept
        for st in a.stages:
            wall, drv, task, title = run_stage(cfg, st, a.timeout)
            try:
                tot = totals(out, st)
            except (OSError, ValueError):
                tot = {}
            din, bin_ = int(tot.get("rows_in") or prev), int(tot.get("bytes_in") or prev_bytes or 0)
            if st in ("mix", "remix"):  # they read every document the stage before kept (remix's rows_in = its samples)
                din, bin_ = prev, int(prev_bytes or 0)
            r = {"docs": n, "stage": st, "docs_in": din, "bytes_in": bin_, "wall_s": round(wall, 1), "docs_per_s": round(din / wall, 1),
                 "driver_rss_mb": round(drv / 2**20), "task_rss_mb": round(task / 2**20), "largest_task": title}
            if st == "dedup":
                r["partitions"] = dedup_partitions(out)
            if st != "remix":  # remix samples: what it keeps is its budget, not what the next stage reads
                prev, prev_bytes = int(tot.get("kept") or din), int(tot.get("bytes_kept") or bin_) or None
            rows.append(r)
            print(f"{n:>8} {st:<8} {din:>8} {r['wall_s']:>7} {r['docs_per_s']:>8} {r['driver_rss_mb']:>9} {r['task_rss_mb']:>8}  {title}", flush=True)
            if a.json:
                a.json.write_text(json.dumps({"rows": rows}, indent=1))
    lo, hi = min(a.sizes), max(a.sizes)
    if lo != hi:
        print(f"\nRSS ratio {hi}/{lo} (goal <= 1.3)")
        for st in [st for st in a.stages if any(r["stage"] == st for r in rows)]:
            r0 = next(r for r in rows if r["docs"] == lo and r["stage"] == st)
            r1 = next(r for r in rows if r["docs"] == hi and r["stage"] == st)
            print(f"  {st:<8} driver {r1['driver_rss_mb'] / max(r0['driver_rss_mb'], 1):.2f}x"
                  f"  task {r1['task_rss_mb'] / max(r0['task_rss_mb'], 1):.2f}x")
    doc = {"rows": rows}
    if a.project:
        target_rows = int(yaml.safe_load((ROOT / "configs/default.yaml").read_text())["run"].get("shard", {}).get("target_rows", 50_000))
        pj = doc["projection"] = project(rows, hi, a.project, a.nodes, a.cores, a.cpus, target_rows)
        print(f"\nProjection to {a.project:,.0f} documents from the {hi:,} run ({a.cpus} CPUs; linear in cores and documents):")
        for st, s in pj["stages"].items():
            print(f"  {st:<8} {s['docs_per_s_per_core']:>10,.1f} docs/s/core  x {s['share_of_docs']:.3f} of the documents  "
                  f"{s['core_hours']:>12,.1f} core-hours")
        print(f"  total {pj['core_hours']:,.1f} core-hours; wall " +
              ", ".join(f"{h:,.2f} h on {k} nodes x {a.cores} cores" for k, h in pj["wall_hours"].items()))
        if "dedup_partition" in pj:
            dp = pj["dedup_partition"]
            print(f"  dedup: {dp['partitions']:,} partitions of ~{dp['docs_per_partition']:,} documents; largest task ~{dp['task_rss_mb']:,} MB "
                  f"({dp['how']}; measured (docs/partition, MB): {[(m['docs_per_partition'], m['task_rss_mb']) for m in dp['measured']]})")
    if a.write_rates:
        doc["rates"] = rates(rows, hi, a.cpus, a.sizes, a.words)
        a.write_rates.write_text(json.dumps(doc["rates"], indent=1) + "\n")
        print(f"rates -> {a.write_rates}")
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
