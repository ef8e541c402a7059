"""Runs the stages of a config in order: each reads the previous stage's dir and writes its own.

The stages come from the registry (pipeline/registry.py): each is either one pass of per-shard
tasks or multi-pass (`run(cfg, inp, out, phase)`, where `phase(...)` runs one pass of tasks into a
directory with the run's Ray, retry, resume and progress settings).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pipeline import io, lock, logs, registry, remote, runner
from pipeline.config import STAGES, Config, ConfigError, inside


@dataclass
class StagePlan:
    stage: str
    inp: Path | None
    out: Path


# Per-shard stages (ingest, filter) and dedup (against its own index) add the new shards of a grown
# input only; stages registered with recompute_on_growth recompute. Any other change of the input is
# refused by the stage itself (needs --force).
INPUT_SHARDS = "_input_shards.json"  # the input's shard fingerprints when the stage last completed


def _input_grew(inp: Path, out: Path) -> bool:
    """`inp` holds every shard the last complete run of `out` read, unchanged, and more."""
    rec = Path(out) / INPUT_SHARDS
    if not rec.exists():
        return False
    before, now = io.read_json(rec), io.shard_fingerprints(inp)
    return len(now) > len(before) and all(now.get(k) == v for k, v in before.items())


def plan(cfg: Config, only: list[str] | None = None, inp: Path | None = None, out: Path | None = None) -> list[StagePlan]:
    """Stages present in the config (or `only`), chained through `<run.output>/<stage>` dirs. A stage
    reads the output of the dataset stage before it (mix, remix and evaluate read the same one: the
    clustered documents; they find the mix weights and the other run dirs under run.output)."""
    present = [s for s in STAGES if getattr(cfg, s, None) is not None]
    names = [s for s in present if only is None or s in only]
    last_data = inp
    plans = []
    for i, name in enumerate(names):
        o = out if (out is not None and i == len(names) - 1) else cfg.run.output / name
        src = last_data
        if src is None:  # `--stage dedup`: read the run's previous dataset stage
            prior = [s for s in present[:present.index(name)] if not registry.stage(s).artifact]
            src = cfg.run.output / prior[-1] if prior else None
        plans.append(StagePlan(name, src, Path(o)))
        if not registry.stage(name).artifact:
            last_data = Path(o)
    return plans


def run(cfg: Config, plans: list[StagePlan], *, force: bool = False, use_ray: bool = True,
        ray_address: str | None = None, show_progress: bool = True) -> list[runner.StageResult]:
    mirror = remote.mirror_for(cfg.run.output)  # run.output is a URL: run in its staging dir (pipeline/remote.py)
    if mirror is None:
        return _run(cfg, plans, force, use_ray, ray_address, show_progress, None)
    with mirror.lease(), mirror.recording():  # recording: what a pass's sync puts besides its dir
        mirror.pull()
        try:
            return _run(cfg, plans, force, use_ray, ray_address, show_progress, mirror)
        finally:
            mirror.sync()


def _run(cfg: Config, plans: list[StagePlan], force: bool, use_ray: bool, ray_address: str | None, show_progress: bool,
         mirror: remote.Mirror | None) -> list[runner.StageResult]:
    if use_ray:
        runner.init_ray(ray_address or cfg.run.ray.address, cfg.run.ray.num_cpus)
    results = []
    for p in plans:
        if mirror is not None and mirror.lost:
            raise lock.Locked(mirror.lost)
        spec = registry.stage(p.stage)
        if p.inp is not None and (inside(p.out, p.inp) or inside(p.inp, p.out)):
            raise ConfigError(f"{p.stage}: output {p.out} overlaps its input {p.inp}; choose a separate output dir")
        if p.inp is not None and not (Path(p.inp) / "_manifest.json").exists() and not list(Path(p.inp).glob("part-*.parquet")):
            raise runner.StageConflict(f"{p.stage}: input {p.inp} is not a dataset dir (no _manifest.json or part-*.parquet); run the previous stage first")
        grew = not force and spec.recompute_on_growth and p.inp is not None and _input_grew(p.inp, p.out)
        if grew:
            logs.event("input_grew", stage=p.stage, out=str(p.out), message=f"{p.stage}: its input gained new shards; "
                       "recomputing it (its models, thresholds or weights depend on every document)")
        phase = partial(runner.run_stage, force=force or grew, use_ray=use_ray, max_retries=cfg.run.ray.max_retries,
                        cpus_per_task=cfg.run.ray.cpus_per_task, show_progress=show_progress)
        if spec.run is not None:
            res = spec.run(cfg, p.inp, p.out, phase, force=force or grew)
        else:
            tasks, fp = spec.tasks(cfg, p.inp, p.out)
            res = phase(p.stage, p.out, tasks, config_hash=cfg.stage_hash(p.stage), input_fingerprint=fp, finalize=spec.finalize)
        results.append(res)
        if not res.ok:
            break  # later stages would read an incomplete input
        if spec.recompute_on_growth and p.inp is not None:  # what _input_grew compares with next time
            io.write_json(io.shard_fingerprints(p.inp), Path(p.out) / INPUT_SHARDS)
        if mirror is not None and remote.mirror_for(p.out) is mirror:
            mirror.prune(p.out)  # what the stage removed from its dir (a --force rerun's old passes)
            mirror.sync(p.out)  # the stage's whole dir, once: also files written other than by io.atomic_write
    return results
