"""Ray execution of a stage: one task per shard, retries, resume by markers, progress, manifest.

A task is a plain function `fn(**kwargs) -> counters` that writes its own output files and
returns what it did (see `pipeline.stage_io.TaskOutput`). `execute_task` runs it and writes the
completion marker last, so a task killed at any moment leaves either no marker (re-run) or a
complete, verified set of files. The only module that knows about Ray is this one.
"""
from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline import io
from pipeline.version import __version__

log = logging.getLogger("curate")


class StageConflict(RuntimeError):
    """Output dir holds another config's or input's results; needs --force."""


@dataclass
class Task:
    key: str  # unique within the stage; becomes the marker name
    fn: Callable[..., dict]
    kwargs: dict[str, Any]


@dataclass
class StageResult:
    stage: str
    out: Path
    manifest: dict
    failed: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.manifest.get("status") == "complete"


def execute_task(out: str, key: str, fn: Callable[..., dict], kwargs: dict) -> dict:
    """Run one task and write its marker. Safe to call twice: outputs are overwritten in place."""
    t0 = time.perf_counter()
    counters = fn(**kwargs)
    counters["seconds"] = round(time.perf_counter() - t0, 3)
    counters["key"] = key
    rows_in = counters["rows_in"]
    accounted = counters["kept"] + counters["rejected"] + counters["quarantined"]
    if rows_in != accounted:  # never write a marker for output that lost or invented rows
        raise RuntimeError(f"task {key}: accounting broken: in={rows_in} != kept+rejected+quarantined={accounted}")
    io.write_json(counters, io.marker_path(Path(out), key))
    return counters


# ---------------------------------------------------------------- Ray plumbing


def init_ray(address: str | None = None, num_cpus: int | None = None) -> str:
    """Connect to a cluster (address or RAY_ADDRESS) or start an embedded local Ray once."""
    import ray

    if ray.is_initialized():
        return "existing"
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
    if address:
        os.environ["RAY_ADDRESS"] = address  # Ray prefers the variable over the argument
        ray.init(address=address, **quiet)
        return address
    ray.init(num_cpus=num_cpus, include_dashboard=False, **quiet)
    return "embedded"


def _run_with_ray(out: Path, tasks: list[Task], max_retries: int, cpus: float, progress) -> list[dict]:
    import ray

    remote = ray.remote(execute_task)
    opts = dict(max_retries=max_retries, retry_exceptions=True, num_cpus=cpus)
    refs = {remote.options(name=f"curate:{t.key}", **opts).remote(str(out), t.key, t.fn, t.kwargs): t for t in tasks}
    failed, pending = [], list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            task = refs[ref]
            try:
                progress(ray.get(ref))
            except Exception as e:  # task exhausted its retries
                failed.append({"key": task.key, "error": _one_line(e)})
                progress(None)
    return failed


def _run_local(out: Path, tasks: list[Task], max_retries: int, progress) -> list[dict]:
    failed = []
    for t in tasks:
        for attempt in range(max_retries + 1):
            try:
                progress(execute_task(str(out), t.key, t.fn, t.kwargs))
                break
            except Exception as e:
                if attempt == max_retries:
                    failed.append({"key": t.key, "error": _one_line(e)})
                    progress(None)
    return failed


def _one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    # Ray wraps the task's exception; keep its last meaningful line.
    lines = [m for m in msg if m.strip()]
    return (lines[-1] if lines else type(e).__name__)[:500]


# ---------------------------------------------------------------- stage


def run_stage(stage: str, out: Path, tasks: list[Task], **kw) -> StageResult:
    """Run one stage into `out` under an exclusive lock of that dir (see `_run_stage`)."""
    with io.dir_lock(Path(out)):
        return _run_stage(stage, Path(out), tasks, **kw)


def _run_stage(
    stage: str,
    out: Path,
    tasks: list[Task],
    *,
    config_hash: str,
    input_fingerprint: str,
    force: bool = False,
    use_ray: bool = True,
    max_retries: int = 2,
    cpus_per_task: float = 1.0,
    show_progress: bool = True,
    finalize: Callable[[Path, dict[str, dict]], None] | None = None,
) -> StageResult:
    """Run the tasks not yet marked done, then (when all are done) the stage's global `finalize`
    step, which may rewrite markers, and write the manifest and stats."""
    out = Path(out)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        raise ValueError(f"stage {stage}: duplicate task keys")
    old = io.read_json(out / io.MANIFEST) if (out / io.MANIFEST).exists() else None
    if old and (old.get("config_hash"), old.get("input_fingerprint")) != (config_hash, input_fingerprint) and not force:
        what = "config" if old.get("config_hash") != config_hash else "input"
        raise StageConflict(
            f"{out}: holds stage '{old.get('stage')}' output from a different {what} "
            f"(hash {old.get('config_hash')}, input {old.get('input_fingerprint')}); "
            "re-run with --force to overwrite it, or choose another output dir"
        )
    if force:
        io.clear_dir(out)
    io.prepare_dir(out)
    header = {"stage": stage, "version": __version__, "config_hash": config_hash, "input_fingerprint": input_fingerprint}
    io.write_json({**header, "status": "running"}, out / io.MANIFEST)

    pending = [t for t in tasks if io.read_marker(out, t.key) is None]
    t0 = time.perf_counter()
    bar = _progress(stage, total=len(tasks), initial=len(tasks) - len(pending), enabled=show_progress)
    if use_ray:
        failed = _run_with_ray(out, pending, max_retries, cpus_per_task, bar) if pending else []
    else:
        failed = _run_local(out, pending, max_retries, bar)
    bar(None, close=True)
    seconds = time.perf_counter() - t0

    markers = {k: io.read_marker(out, k) for k in keys}
    missing = [k for k, m in markers.items() if m is None]
    if finalize is not None and not missing:
        finalize(out, markers)
        markers = {k: io.read_marker(out, k) for k in keys}
    manifest = build_manifest(header, {k: m for k, m in markers.items() if m}, complete=not missing)
    manifest["failed"] = failed
    if not missing:
        _remove_orphans(out, markers.values())
    io.write_json(manifest, out / io.MANIFEST)
    io.write_json(build_stats(markers.values(), seconds), out / io.STATS)
    return StageResult(stage, out, manifest, failed, seconds)


COUNTERS = ("rows_in", "kept", "rejected", "quarantined", "tokens_in", "tokens_kept", "tokens_rejected", "bytes_in", "bytes_kept")


def build_manifest(header: dict, markers: dict[str, dict], complete: bool) -> dict:
    shards, totals = {}, Counter()
    for key in sorted(markers):
        m = markers[key]
        shards[key] = {c: m.get(c, 0) for c in COUNTERS} | {
            "files": [dict(f, dir=d) for d, fk in (("", "kept_files"), (io.REJECTED, "rejected_files"), (io.QUARANTINE, "quarantine_files")) for f in m.get(fk, [])],
            "inputs": m.get("inputs", []),
        }
        totals.update({c: m.get(c, 0) for c in COUNTERS})
    return {**header, "status": "complete" if complete else "incomplete", "totals": dict(totals), "shards": shards}


def build_stats(markers, seconds: float) -> dict:
    reasons, by_source, per_task = Counter(), {}, 0.0
    for m in markers:
        if not m:
            continue
        reasons.update(m.get("reasons", {}))
        per_task += m.get("seconds", 0.0)
        for src, c in m.get("by_source", {}).items():
            s = by_source.setdefault(src, {"rows_in": 0, "kept": 0, "rejected": 0, "reasons": Counter()})
            for k in ("rows_in", "kept", "rejected"):
                s[k] += c.get(k, 0)
            s["reasons"].update(c.get("reasons", {}))
    return {"reasons": dict(reasons.most_common()), "by_source": by_source,
            "timings": {"wall_seconds": round(seconds, 3), "task_seconds": round(per_task, 3)}}


def _remove_orphans(out: Path, markers) -> None:
    """Delete shards no marker names (e.g. left by an older, killed attempt)."""
    keep = {(d, f["name"]) for m in markers for d, fk in (("", "kept_files"), (io.REJECTED, "rejected_files"), (io.QUARANTINE, "quarantine_files")) for f in m.get(fk, [])}
    for d in ("", io.REJECTED, io.QUARANTINE):
        for p in (out / d).glob("part-*.parquet"):
            if (d, p.name) not in keep:
                p.unlink()


def _progress(stage: str, total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, desc=f"{stage:>8}", unit="shard", disable=not enabled, leave=True, dynamic_ncols=True)
    docs = {"n": 0}

    def update(marker: dict | None, close: bool = False) -> None:
        if close:
            bar.close()
            return
        if marker:
            docs["n"] += marker.get("rows_in", 0)
            bar.set_postfix(docs=docs["n"], refresh=False)
        bar.update(1)

    return update
