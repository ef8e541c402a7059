"""Shared fixtures: one embedded Ray per test session (ray.init costs ~4 s), tiny real inputs."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SAMPLE_SMALL = ROOT / "data" / "sample_small"


@pytest.fixture(scope="session")
def ray_session():
    import ray

    from pipeline import runner

    runner.init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def curate_bin() -> str:
    """The `curate` console script of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("curate"))


def small_config(tmp: Path, out_name: str = "run", target_rows: int = 400, extra: str = "", run: dict | None = None) -> Path:
    """configs/default.yaml pointed at data/sample_small, with small shards so there are many tasks
    (`run`: more keys of the run section, `extra`: YAML of more sections)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    cfg["run"]["output"] = str(tmp / out_name)
    cfg["run"].setdefault("shard", {})["target_rows"] = target_rows
    cfg["run"]["ray"] = {"num_cpus": 2}
    cfg["run"].update(run or {})
    cfg["ingest"]["inputs"][0]["path"] = str(SAMPLE_SMALL)
    for s in [s for s in cfg if s not in ("run", "ingest", "filter")]:
        del cfg[s]  # later stages get their own tests
    p = tmp / f"{out_name}.yaml"
    p.write_text(yaml.safe_dump(cfg) + extra)
    return p


def output_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of every Parquet file under a run dir (kept, rejected, quarantined), by relative path."""
    from pipeline.io import sha256_file

    return {str(p.relative_to(run_dir)): sha256_file(p) for p in sorted(Path(run_dir).rglob("*.parquet"))}


def run_config(cfg_path: Path, only=None, force: bool = False):
    """Load a config, run its planned stages (or `only` those) in-process, assert every stage ended ok."""
    from pipeline import config, driver

    cfg = config.load(cfg_path)
    results = driver.run(cfg, driver.plan(cfg, only), show_progress=False, force=force)
    assert all(r.ok for r in results), [r.failed for r in results]
    return cfg


def read_table(dataset_dir: Path, sub: str = ""):
    """Every Parquet shard of a dataset dir (or its `_rejected/`, `_quarantine/` with sub) as one DataFrame."""
    import duckdb

    return duckdb.sql(f"select * from read_parquet('{dataset_dir}/{sub}*.parquet', union_by_name=true)").fetchdf()


def all_ids(dataset_dir: Path) -> list[str]:
    import pyarrow.parquet as pq

    ids = []
    for sub in ("", "_rejected"):
        for p in sorted((Path(dataset_dir) / sub).glob("part-*.parquet")):
            ids += pq.read_table(p, columns=["id"]).column("id").to_pylist()
    return ids


def clean_env(**extra: str) -> dict[str, str]:
    """Environment for `curate` subprocesses: without the RAY_ADDRESS that the session's embedded
    ray.init() exported, so each subprocess starts its own Ray unless told otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **extra}


def kill_group(p) -> None:
    """SIGKILL a subprocess started with start_new_session=True and everything it spawned (Ray too)."""
    import signal

    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=60)
