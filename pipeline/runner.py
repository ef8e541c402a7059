"""Ray execution of a stage: one task per shard, retries, resume by markers, progress, manifest.

A task is a plain function `fn(**kwargs) -> counters` that writes its own output files and
returns what it did (see `pipeline.stage_io.TaskOutput`). `execute_task` runs it and writes the
completion marker last, so a task killed at any moment leaves either no marker (re-run) or a
complete, verified set of files. The only module that knows about Ray is this one.

Progress goes to a tqdm bar (text mode) or to one JSON event per line (`pipeline.logs`, json mode).
Fault injection hooks (`pipeline.faults`, off unless CURATE_FAULT is set) sit in `execute_task`
and in `io.atomic_write`.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pipeline import faults, io, lock, logs, remote
from pipeline.manifest import build_manifest, build_stats
from pipeline.version import __version__

log = logging.getLogger("curate")


class StageConflict(RuntimeError):
    """Output dir holds another config's or input's results; needs --force."""


@dataclass
class Task:
    key: str  # unique within the stage; becomes the marker name
    fn: Callable[..., dict]
    kwargs: dict[str, Any]
    num_gpus: float = 0.0  # GPUs Ray reserves for this task (0: CPU only)
    # Fingerprint of what this task reads (a raw file's size+mtime, an upstream shard's sha256).
    # Recorded in its marker; when every task of a stage has one, a re-run over a grown input runs
    # only the new tasks, and refuses (naming the file) when a finished task's input changed or
    # disappeared. None: the stage-level input fingerprint alone decides.
    input_fp: str | None = None


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


def execute_task(out: str, key: str, fn: Callable[..., dict], kwargs: dict, input_fp: str | None = None) -> dict:
    """Run one task and write its marker. Safe to call twice: outputs are overwritten in place."""
    faults.maybe_kill_worker(out, key)  # no-op unless CURATE_FAULT is set
    t0 = time.perf_counter()
    with io.recording_writes() as written:
        counters = fn(**kwargs)
    counters["seconds"] = round(time.perf_counter() - t0, 3)
    counters["key"] = key
    io.check_accounting(Path(out), key, counters)  # never write a marker for output that lost or invented rows
    if input_fp is not None:
        counters["input_fp"] = input_fp
    io.write_json(counters, io.marker_path(Path(out), key))
    return {**counters, remote.WRITTEN: [str(p) for p in written]}  # not in the marker: what the task wrote, to put


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
    # An embedded Ray is private to this run: it listens on loopback only (not on the machine's
    # network address) and sends no usage statistics (no network access at run time).
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", **quiet)
    return "embedded"


def _gpus_available(ray) -> float:
    try:
        return float(ray.cluster_resources().get("GPU", 0.0))
    except Exception:  # pragma: no cover - a cluster that cannot report resources
        return 0.0


def _run_with_ray(out: Path, tasks: list[Task], max_retries: int, cpus: float, progress) -> list[dict]:
    import ray

    remote = ray.remote(execute_task)
    opts = dict(max_retries=max_retries, retry_exceptions=True, num_cpus=cpus)
    gpus = _gpus_available(ray) if any(t.num_gpus for t in tasks) else 0.0
    if any(t.num_gpus for t in tasks) and not gpus:
        # A GPU request no node can meet would leave the task pending forever: run on CPUs.
        log.warning("%s: tasks ask for GPUs but the Ray cluster has none; running them on CPUs", out.name)
    refs = {}
    for t in tasks:
        ng = min(t.num_gpus, gpus) if gpus else 0.0
        refs[remote.options(name=f"curate:{t.key}", num_gpus=ng, **opts).remote(str(out), t.key, t.fn, t.kwargs, t.input_fp)] = t
    failed, pending = [], list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            task = refs.pop(ref)  # drop the ref: Ray frees the task's result (its marker) once we are done with it
            try:
                marker = ray.get(ref)
            except Exception as e:  # task exhausted its retries
                failed.append({"key": task.key, "error": _one_line(e)})
                progress(None, key=task.key, error=failed[-1]["error"])
            else:
                progress(marker)
    return failed


def _run_local(out: Path, tasks: list[Task], max_retries: int, progress) -> list[dict]:
    failed = []
    for t in tasks:
        for attempt in range(max_retries + 1):
            try:
                marker = execute_task(str(out), t.key, t.fn, t.kwargs, t.input_fp)
            except Exception as e:
                if attempt == max_retries:
                    failed.append({"key": t.key, "error": _one_line(e)})
                    progress(None, key=t.key, error=failed[-1]["error"])
                else:
                    logs.event("task_retry", level="warning", stage=out.name, key=t.key, attempt=attempt + 1, error=_one_line(e))
            else:
                progress(marker)
                break
    return failed


def _one_line(e: BaseException) -> str:
    """What went wrong in a task, in one line: the task's own exception (unwrapped from Ray's
    wrapper, which adds a traceback), or what happened to the worker process."""
    try:
        import ray.exceptions as rex
    except ImportError:  # pragma: no cover - ray is a dependency
        rex = None
    if rex is not None:
        if isinstance(e, rex.RayTaskError):
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException) and not isinstance(cause, rex.RayTaskError):
                return _one_line(cause)
        oom = getattr(rex, "OutOfMemoryError", ())
        if oom and isinstance(e, oom):
            return "worker ran out of memory (killed by Ray's memory monitor); lower run.docs_per_batch or run.ray.num_cpus, then re-run"
        died = tuple(c for c in (getattr(rex, "WorkerCrashedError", None), getattr(rex, "NodeDiedError", None)) if c)
        if died and isinstance(e, died):
            return "worker process died while running the task (killed by a signal or out of memory); re-run to retry it"
    if isinstance(e, io.DiskFull):
        return str(e)
    msg = str(e).strip().splitlines()
    # Ray wraps the task's exception; keep its last meaningful line.
    lines = [m.strip() for m in msg if m.strip()]
    text = lines[-1] if lines else ""
    name = type(e).__name__
    if text and name not in text and type(e) is not RuntimeError:
        text = f"{name}: {text}"
    return (text or name)[:500]


# ---------------------------------------------------------------- stage


def run_stage(stage: str, out: Path, tasks: list[Task], **kw) -> StageResult:
    """Run one stage into `out` under an exclusive lock of that dir (see `_run_stage`)."""
    with lock.dir_lock(Path(out)):
        return _run_stage(stage, Path(out), tasks, **kw)


def _refuse_output_over_input(out: Path, tasks: list[Task]) -> None:
    """The output dir must not hold the stage's input files: `--force` clears the output dir and
    tasks overwrite `part-*` names there, which would destroy the input (`curate filter -i d -o d`)."""
    o = out.resolve()
    for t in tasks:
        for k in ("path", "input_path"):
            v = t.kwargs.get(k)
            if isinstance(v, (str, Path)):
                p = Path(v).resolve()
                if p == o or o in p.parents:
                    raise StageConflict(f"{out}: the output dir holds this stage's input ({v}); writing there would "
                                        "destroy it: choose a separate output dir")


def input_diff(old: dict, now: dict[str, str | None]) -> tuple[list[str], list[str]] | None:
    """Finished tasks of an old manifest vs this run's task keys -> input fingerprints: (changed,
    removed) keys. None when either side lacks fingerprints (nothing can be said per task)."""
    shards = old.get("shards") or {}
    if not now or any(v is None for v in now.values()) or not shards or any("input_fp" not in v for v in shards.values()):
        return None
    return ([k for k in shards if k in now and shards[k]["input_fp"] != now[k]], [k for k in shards if k not in now])


def task_input_change(old: dict, tasks: list[Task]) -> str | None:
    """Compare a stage's finished tasks (old manifest) with the tasks of this run by their recorded
    input fingerprints. None: only new tasks were added (an incremental run). Otherwise what changed,
    naming the input ("" when the tasks do not carry fingerprints: the caller describes it)."""
    now = {t.key: t for t in tasks}
    diff = input_diff(old, {k: t.input_fp for k, t in now.items()})
    if diff is None:
        return ""
    changed, removed = diff
    if not removed and not changed:
        return None
    shards = old["shards"]

    def name(k: str) -> str:
        t = now.get(k)
        path = (t.kwargs.get("path") or t.kwargs.get("input_path")) if t else None
        return str(path or ", ".join(shards[k].get("inputs", [])) or k)

    parts = [f"input {what}: {', '.join(name(k) for k in keys[:3])}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
             for what, keys in (("changed", changed), ("removed", removed)) if keys]
    return "; ".join(parts) + " (finished shards were made from it)"


def _input_change(old: dict, tasks: list[Task], fp: str) -> str:
    """What changed in a stage's input, for the refusal message: added/removed input files when
    the old manifest and the tasks name them, else the fingerprints."""
    before = {i for s in (old.get("shards") or {}).values() for i in s.get("inputs", [])}
    now = {t.kwargs.get("path") for t in tasks}
    parts = []
    if before and all(isinstance(p, str) for p in now):
        for what, names in (("added", sorted(now - before)), ("removed", sorted(before - now))):
            if names:
                parts.append(f"input {what}: {', '.join(names[:3])}" + (f" and {len(names) - 3} more" if len(names) > 3 else ""))
    if not parts:
        parts.append("an input file changed (size or mtime)" if before and all(isinstance(p, str) for p in now) else "input data changed")
    return "; ".join(parts) + f" (fingerprint {old.get('input_fingerprint')} -> {fp})"


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
    _refuse_output_over_input(out, tasks)
    old = io.read_json(out / io.MANIFEST) if (out / io.MANIFEST).exists() else None
    if old and (old.get("config_hash"), old.get("input_fingerprint")) != (config_hash, input_fingerprint) and not force:
        if old.get("config_hash") != config_hash:
            what = f"a different config (hash {old.get('config_hash')} -> {config_hash})"
        elif (change := task_input_change(old, tasks)) is None:
            what = None  # the input grew: finished tasks are kept, the new ones run
        else:
            what = f"a different input: {change or _input_change(old, tasks, input_fingerprint)}"
        if what is not None:
            raise StageConflict(
                f"{out}: holds stage '{old.get('stage')}' output from {what}; "
                "re-run with --force to recompute it, or choose another output dir"
            )
    if force:
        io.clear_dir(out)
    io.prepare_dir(out)
    header = {"stage": stage, "version": __version__, "config_hash": config_hash, "input_fingerprint": input_fingerprint}
    t0 = time.perf_counter()
    try:
        io.write_json({**header, "status": "running"}, out / io.MANIFEST)
    except io.DiskFull as e:  # nothing ran: report it like a failed task (exit 1, re-run resumes)
        return _driver_failed(stage, out, header, [], e, t0)
    mirror = remote.mirror_for(out)  # an output URL's staging dir: keep the bucket in step
    if mirror is not None:
        if force:
            mirror.prune(out)
        mirror.sync_pass(out)  # this pass's dir and the driver's files written for it, not the whole tree

    pending = [t for t in tasks if io.read_marker(out, t.key) is None]
    logs.event("stage_start", stage=stage, out=str(out), tasks=len(tasks), done=len(tasks) - len(pending), pending=len(pending))
    bar = _progress(stage, total=len(tasks), initial=len(tasks) - len(pending), enabled=show_progress and not logs.json_mode())
    if mirror is not None:
        bar = _pushing(bar, mirror, out)
    try:
        if use_ray:
            failed = _run_with_ray(out, pending, max_retries, cpus_per_task, bar) if pending else []
        else:
            failed = _run_local(out, pending, max_retries, bar)
    finally:
        bar(None, close=True)
    seconds = time.perf_counter() - t0

    try:
        markers = {k: _slim(io.read_marker(out, k)) for k in keys}
        missing = [k for k, m in markers.items() if m is None]
        if finalize is not None and not missing:
            finalize(out, markers)
            markers = {k: _slim(io.read_marker(out, k)) for k in keys}
            missing = [k for k, m in markers.items() if m is None]
            failed += _recheck(out, markers)  # a global step may rewrite shards: same invariant after it
            missing += [f["key"] for f in failed if f["key"] not in missing]
        manifest = build_manifest(header, {k: m for k, m in markers.items() if m}, complete=not missing)
        manifest["failed"] = failed
        if not missing:
            _remove_orphans(out, markers.values())
            if ":" not in stage and not (out / io.CARD).exists():  # a stage's dir, not one of its passes'
                io.write_dataset_card(out, stage)
        io.write_json(manifest, out / io.MANIFEST)
        io.write_json(build_stats(markers.values(), seconds), out / io.STATS)
    except io.DiskFull as e:  # the markers on disk stay valid: a re-run redoes only this step
        return _driver_failed(stage, out, header, failed, e, t0)
    if mirror is not None:
        if not missing:
            mirror.prune(out)  # orphans, as _remove_orphans did here
        mirror.sync_pass(out)
    totals = manifest["totals"]
    logs.event("stage_end", level="info" if not missing else "error", stage=stage, status=manifest["status"], tasks=len(tasks),
               done=len(tasks) - len(missing), failed=len(failed), seconds=round(seconds, 3),
               **{c: totals.get(c, 0) for c in ("rows_in", "kept", "rejected", "quarantined")})
    return StageResult(stage, out, manifest, failed, seconds)


def _slim(marker: dict | None) -> dict | None:
    """A marker without its files' `parts` (a shuffle file's row groups per partition: O(partitions)
    per file, so O(tasks x partitions) for a pass). The stage that wrote them reads them back one
    marker at a time (stages/dedup); the driver holds every marker of a pass at once, so it keeps
    only what the manifest, stats and checks use."""
    if not marker:
        return marker
    for fk in ("kept_files", "rejected_files", "quarantine_files"):
        if any("parts" in f for f in marker.get(fk, [])):
            marker[fk] = [{k: v for k, v in f.items() if k != "parts"} for f in marker[fk]]
    return marker


def _recheck(out: Path, markers: dict[str, dict | None]) -> list[dict]:
    failed = []
    for k, m in markers.items():
        if m is None:
            continue
        try:
            io.check_accounting(out, k, m)
        except (RuntimeError, OSError) as e:
            failed.append({"key": k, "error": _one_line(e)})
            logs.event("task_failed", level="error", stage=out.name, key=k, error=failed[-1]["error"])
    return failed


def _driver_failed(stage: str, out: Path, header: dict, failed: list[dict], e: BaseException, t0: float) -> StageResult:
    """A write of the driver itself (manifest, stats, finalize) failed with a full disk."""
    failed = [*failed, {"key": f"{stage} (manifest)", "error": str(e)}]
    logs.event("task_failed", level="error", stage=stage, key=failed[-1]["key"], error=str(e))
    seconds = time.perf_counter() - t0
    logs.event("stage_end", level="error", stage=stage, status="incomplete", failed=len(failed), seconds=round(seconds, 3))
    return StageResult(stage, out, {**header, "status": "incomplete", "failed": failed}, failed, seconds)


def _remove_orphans(out: Path, markers) -> None:
    """Delete shards no marker names (e.g. left by an older, killed attempt)."""
    keep = {(d, f["name"]) for m in markers for d, fk in (("", "kept_files"), (io.REJECTED, "rejected_files"), (io.QUARANTINE, "quarantine_files")) for f in m.get(fk, [])}
    for d in ("", io.REJECTED, io.QUARANTINE):
        for p in (out / d).glob("part-*.parquet"):
            if (d, p.name) not in keep:
                p.unlink()


def _pushing(update, mirror: remote.Mirror, out: Path):
    """The progress callback, putting each finished task's files and then its marker to the bucket."""
    def push(marker: dict | None, **kw) -> None:
        if marker and not kw.get("close"):
            mirror.push_task(out, marker)
        update(marker, **kw)

    return push


def _progress(stage: str, total: int, initial: int, enabled: bool):
    """Progress callback: `update(marker)` for a finished task, `update(None, key=, error=)` for a
    failed one. Draws a tqdm bar when enabled and emits task events (json mode)."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, desc=f"{stage:>8}", unit="shard", disable=not enabled, leave=True, dynamic_ncols=True)
    docs = {"n": 0}

    def update(marker: dict | None, close: bool = False, key: str | None = None, error: str | None = None) -> None:
        if close:
            bar.close()
            return
        if marker:
            docs["n"] += marker.get("rows_in", 0)
            bar.set_postfix(docs=docs["n"], refresh=False)
            logs.event("task_done", stage=stage, key=marker.get("key"), rows=marker.get("rows_in", 0), kept=marker.get("kept", 0),
                       rejected=marker.get("rejected", 0), quarantined=marker.get("quarantined", 0), seconds=marker.get("seconds"))
        elif key is not None:
            logs.event("task_failed", level="error", stage=stage, key=key, error=error)
        bar.update(1)

    return update


# ---------------------------------------------------------------- helpers of multi-pass stages


def work_phase(phase, name: str, d: Path, tasks: list[Task], config_hash: str, fp: str) -> StageResult:
    """A pass of a multi-pass stage into <out>/_work/...: derived state, recomputed (not refused)
    when its config hash or input changed. `phase` is the driver's partial of `run_stage`."""
    old = io.read_json(d / io.MANIFEST) if (d / io.MANIFEST).exists() else None
    stale = bool(old) and (old.get("config_hash"), old.get("input_fingerprint")) != (config_hash, fp)
    return phase(name, d, tasks, config_hash=config_hash, input_fingerprint=fp, force=stale)


def stopped(stage: str, out: Path, header: dict, res: StageResult) -> StageResult:
    """A pass left failed tasks: record the stage as incomplete (re-running resumes) and stop."""
    manifest = {**header, "status": "incomplete", "phase": res.stage, "totals": {}, "shards": {}, "failed": res.failed}
    io.prepare_dir(out)
    io.write_json(manifest, out / io.MANIFEST)
    return StageResult(stage, out, manifest, res.failed or [{"key": res.stage, "error": "pass incomplete"}], res.seconds)


def refuse_other_output(out: Path, config_hash: str, fp: str, force: bool, stage: str, what_config: str = "config",
                        hint: str = "") -> None:
    """A multi-pass stage's output dir holding results of another config or input: refuse unless --force."""
    old = io.read_json(out / io.MANIFEST) if (out / io.MANIFEST).exists() else None
    if old and (old.get("config_hash"), old.get("input_fingerprint")) != (config_hash, fp) and not force:
        what = what_config if old.get("config_hash") != config_hash else "input"
        raise StageConflict(f"{out}: holds {stage} output from a different {what}; re-run with --force to overwrite it"
                            f"{hint}, or choose another output dir")
