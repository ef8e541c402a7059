"""Scale curve: per-stage docs/s and peak RSS (driver and largest Ray task) at growing corpus sizes.

  python bench/scale.py --sizes 20000 80000 --words 64 --out /tmp/curate-scale

For each size it builds a synthetic corpus from the bundled sample (data/sample): document i is
sample document i mod n0, its text cut to the first --words words; copy c > 0 of a document is an
exact copy when c % 4 == 1 (exact dedup work) and otherwise has one word replaced by a marker at a
seeded position (a near duplicate: fuzzy dedup work). With --unique every copy has every 3rd word
replaced instead (no 5-gram shared with its original), so the later stages see ~all documents. It then runs `curate run --stage S` once per
stage (ingest, filter, dedup, score, cluster) with embedded Ray on --cpus CPUs, each as its own
process group, and samples the process tree every 0.2 s from /proc: the driver's RSS (the `curate`
process) and the largest RSS of any Ray worker process (title `ray::<task>`, or default_worker.py). docs/s = documents
into the stage / wall seconds of the whole `curate run` (start-up included). It prints one row per
(size, stage), the RSS ratio largest/smallest size per stage, and writes --json.

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
STAGES = ["ingest", "filter", "dedup", "score", "cluster"]
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


def build_corpus(n: int, words: int, dest: Path, per_shard: int = 5000, unique: bool = False) -> None:
    if (dest / "_done").exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    base = sample_docs(words)
    rng = random.Random(0)
    for s in range(0, n, per_shard):
        buf = _io.StringIO()
        for i in range(s, min(n, s + per_shard)):
            d, c = base[i % len(base)], i // len(base)
            text = d["text"]
            if c > 0 and unique:  # every 3rd word replaced: no shared 5-gram, the copy survives dedup
                w = text.split(" ")
                for j in range(rng.randrange(3), len(w), 3):
                    w[j] = f"c{c}w{j}"
                text = " ".join(w)
            elif c > 0 and c % 4 != 1:
                w = text.split(" ")
                w[rng.randrange(len(w))] = f"copy{c}"
                text = " ".join(w)
            buf.write(json.dumps({"id": f"{d['id']}-{c}", "text": text, "domain": d["domain"]}) + "\n")
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
            workers = [ps[p][1] for p in seen if p in ps and (ps[p][2].startswith("ray::") or "default_worker.py" in ps[p][2])]
            if workers:
                self.task = max(self.task, max(workers))
            self.stop.wait(0.2)


def docs_in(out: Path, stage: str) -> int:
    m = json.loads((out / stage / "_manifest.json").read_text())
    return int(m["totals"]["rows_in"])


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
    return wall, s.driver, s.task


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--words", type=int, default=64, help="words kept per document (the box has 2 shared cores)")
    ap.add_argument("--unique", action="store_true", help="copies with every 3rd word replaced (they survive dedup: score/cluster see ~all documents)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--stages", nargs="+", default=STAGES)
    ap.add_argument("--out", type=Path, default=Path("/tmp/curate-scale"))
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rows = []
    print(f"{'docs':>8} {'stage':<8} {'docs_in':>8} {'wall_s':>7} {'docs/s':>8} {'driver_MB':>9} {'task_MB':>8}", flush=True)
    for n in a.sizes:
        tag = f"{n}-unique" if a.unique else f"{n}"
        corpus, out = a.out / f"corpus-{tag}", a.out / f"run-{tag}"
        build_corpus(n, a.words, corpus, unique=a.unique)
        shutil.rmtree(out, ignore_errors=True)  # a finished run would be skipped, not measured
        cfg = config(corpus, out, a.cpus, a.out / f"config-{tag}.yaml")
        prev = n
        for st in a.stages:
            wall, drv, task = run_stage(cfg, st, a.timeout)
            try:
                din = docs_in(out, st) or prev
            except (OSError, KeyError, ValueError):
                din = prev
            r = {"docs": n, "stage": st, "docs_in": din, "wall_s": round(wall, 1), "docs_per_s": round(din / wall, 1),
                 "driver_rss_mb": round(drv / 2**20), "task_rss_mb": round(task / 2**20)}
            rows.append(r)
            print(f"{n:>8} {st:<8} {din:>8} {r['wall_s']:>7} {r['docs_per_s']:>8} {r['driver_rss_mb']:>9} {r['task_rss_mb']:>8}", flush=True)
            if a.json:
                a.json.write_text(json.dumps(rows, indent=1))
    lo, hi = min(a.sizes), max(a.sizes)
    if lo != hi:
        print(f"\nRSS ratio {hi}/{lo} (goal <= 1.3)")
        for st in a.stages:
            r0 = next(r for r in rows if r["docs"] == lo and r["stage"] == st)
            r1 = next(r for r in rows if r["docs"] == hi and r["stage"] == st)
            print(f"  {st:<8} driver {r1['driver_rss_mb'] / max(r0['driver_rss_mb'], 1):.2f}x"
                  f"  task {r1['task_rss_mb'] / max(r0['task_rss_mb'], 1):.2f}x")


if __name__ == "__main__":
    main()
