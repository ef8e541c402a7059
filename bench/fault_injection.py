"""Crash-resume benchmark: SIGKILL `curate run` at a random moment, resume, compare bytes.

    python bench/fault_injection.py [--config configs/default.yaml] [--trials 20] [--seed 0]
        [--stages ingest --stages filter ...] [--set run.shard.target_rows=400 ...] [--no-ray]

1. One uninterrupted run gives the reference output (sha256 of every Parquet file under the run
   dir, kept/rejected/quarantined and intermediate) and its duration T.
2. Each trial runs the same config into a fresh output dir (a temp copy of the config with
   `run.output` changed), SIGKILLs the whole process group (driver, embedded Ray, workers) at a
   moment drawn uniformly from [0, T) with a seeded RNG, then runs `curate run` again until it
   exits 0 (at most --max-resumes times) and compares the output with the reference.

Prints per trial the kill time, the stage reached (and its finished shards) and whether the result
is identical; ends with `N/N identical`. Exit status 0 only when every trial is identical.
The cheap setup used for bench/README_faults.md:

    python bench/fault_injection.py --stages ingest --stages filter --stages dedup \\
        --set ingest.inputs.0.path=data/sample_small --set run.shard.target_rows=400
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def curate_bin() -> str:
    return str(Path(sys.executable).with_name("curate"))


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CURATE_FAULT")}
    e.setdefault("HF_HUB_OFFLINE", "1")
    e.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    return e


def output_hashes(run_dir: Path) -> dict[str, str]:
    out = {}
    for p in sorted(Path(run_dir).rglob("*.parquet")):
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[str(p.relative_to(run_dir))] = h.hexdigest()
    return out


def _set(data: dict, dotted: str, value) -> None:
    node = data
    *head, last = dotted.split(".")
    for k in head:
        node = node[int(k)] if isinstance(node, list) else node.setdefault(k, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def write_config(base: dict, sets: list[str], output: Path, path: Path) -> Path:
    data = json.loads(json.dumps(base))
    for s in sets:
        k, _, v = s.partition("=")
        _set(data, k, yaml.safe_load(v))
    for inp in (data.get("ingest") or {}).get("inputs", []):  # the copy lives elsewhere: absolute input paths
        if not os.path.isabs(str(inp["path"])):
            inp["path"] = str(ROOT / inp["path"])
    data.setdefault("run", {})["output"] = str(output)
    path.write_text(yaml.safe_dump(data))
    return path


def command(cfg: Path, stages: list[str], no_ray: bool) -> list[str]:
    cmd = [curate_bin(), "run", str(cfg), "-q"]
    for s in stages:
        cmd += ["--stage", s]
    return cmd + (["--no-ray"] if no_ray else [])


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=120)


def _progress(d: Path) -> str:
    try:
        man = json.loads((d / "_manifest.json").read_text())
    except (OSError, ValueError):
        man = {}
    done = len(list((d / "_done").glob("*.json"))) if (d / "_done").exists() else 0
    return f"{done}/{len(man['shards'])}" if man.get("status") == "complete" else f"{done} done"


def reached(run_dir: Path, stages: list[str]) -> str:
    """The last stage started, its last pass (multi-pass stages keep them under _work/) and how
    many tasks have markers there, e.g. 'filter 2 done' or 'dedup:lsh 3 done'."""
    last = "start-up"
    for s in stages:
        d = run_dir / s
        if not (d / "_manifest.json").exists() and not (d / "_work").exists():
            break
        passes = sorted((p for p in (d / "_work").glob("*") if (p / "_manifest.json").exists()),
                        key=lambda p: (p / "_manifest.json").stat().st_mtime) if (d / "_work").exists() else []
        if (d / "_manifest.json").exists() and (not passes or (d / "_manifest.json").stat().st_mtime >= (passes[-1] / "_manifest.json").stat().st_mtime):
            last = f"{s} {_progress(d)}"
        else:
            last = f"{s}:{passes[-1].name} {_progress(passes[-1])}" if passes else f"{s} start"
    return last


def run_to_completion(cmd: list[str], max_resumes: int, timeout: float) -> tuple[int, int, str]:
    """-> (attempts, final exit code, last stderr line)."""
    r = None
    for attempt in range(1, max_resumes + 1):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT)
        if r.returncode == 0:
            return attempt, 0, ""
    lines = [ln for ln in (r.stderr or "").splitlines() if ln.strip()]
    return max_resumes, r.returncode, lines[-1] if lines else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", action="append", default=None, help="run only these stages (repeatable; passed as --stage)")
    ap.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE",
                    help="config override, dotted key (list items by index), YAML value; repeatable")
    ap.add_argument("--no-ray", action="store_true", help="run with --no-ray")
    ap.add_argument("--kill-window", type=float, default=None,
                    help="kill within [0, this many seconds) instead of [0, T): T measured on a loaded machine overshoots")
    ap.add_argument("--max-resumes", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per curate run")
    ap.add_argument("--workdir", default=None, help="where the run dirs go (default: a temp dir, removed at the end)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = ap.parse_args(argv)

    base = yaml.safe_load(Path(a.config).read_text())
    stages = a.stages or [s for s in ("ingest", "filter", "dedup", "score", "cluster", "mix", "remix", "evaluate") if base.get(s) is not None]
    work = Path(a.workdir or tempfile.mkdtemp(prefix="curate-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(a.seed)
    try:
        ref_dir = work / "reference"
        ref_cfg = write_config(base, a.sets, ref_dir, work / "reference.yaml")
        t0 = time.perf_counter()
        r = subprocess.run(command(ref_cfg, stages, a.no_ray), capture_output=True, text=True, timeout=a.timeout, env=env(), cwd=ROOT)
        duration = time.perf_counter() - t0
        if r.returncode != 0:
            print(f"reference run failed (exit {r.returncode}): {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 2
        ref = output_hashes(ref_dir)
        print(f"reference: {' '.join(stages)} in {duration:.1f} s, {len(ref)} Parquet files", flush=True)
        results = []
        for i in range(a.trials):
            at = rng.uniform(0, a.kill_window or duration)
            d = work / f"trial-{i:03d}"
            cfg = write_config(base, a.sets, d, work / f"trial-{i:03d}.yaml")
            cmd = command(cfg, stages, a.no_ray)
            p = subprocess.Popen(cmd, start_new_session=True, env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            t = time.perf_counter()
            try:
                p.wait(timeout=at)
                finished = True  # it beat the kill
            except subprocess.TimeoutExpired:
                finished = False
            kill_group(p)  # also reaps the Ray processes it started
            stage = "finished before the kill" if finished else reached(d, stages)
            killed_at = time.perf_counter() - t
            attempts, code, last = run_to_completion(cmd, a.max_resumes, a.timeout)
            same = code == 0 and output_hashes(d) == ref
            diff = ""
            if code == 0 and not same:
                got = output_hashes(d)
                bad = sorted(k for k in set(ref) | set(got) if ref.get(k) != got.get(k))
                diff = f" differs: {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}"
            results.append({"trial": i, "kill_at": round(killed_at, 2), "reached": stage, "resumes": attempts,
                            "exit": code, "identical": same, "error": last})
            print(f"trial {i + 1:2d}: SIGKILL at {killed_at:5.1f} s  reached {stage:<28} resumed in {attempts} run(s)  "
                  f"{'identical' if same else 'DIFFERENT' + diff if code == 0 else f'FAILED exit {code}: {last}'}", flush=True)
            shutil.rmtree(d, ignore_errors=True)
        n_ok = sum(r["identical"] for r in results)
        print(f"{n_ok}/{len(results)} identical")
        if a.json:
            Path(a.json).write_text(json.dumps({"reference_seconds": round(duration, 2), "stages": stages, "trials": results,
                                                "identical": n_ok, "total": len(results)}, indent=1))
        return 0 if n_ok == len(results) else 1
    finally:
        if a.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
