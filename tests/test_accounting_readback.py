"""The accounting invariant is checked on what the files hold, not only on the counters a task
returns: every task's kept/rejected/quarantined rows are read back from the Parquet footers before
its marker is written, the runner re-checks after a stage's global finalize step, and intermediate
shuffle files carry their per-partition row counts, so a row deleted from an intermediate file
fails the stage instead of silently losing a document."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import io, runner
from stages.dedup import shuffle
from pipeline.taskio import TaskOutput
from tests.conftest import SAMPLE_SMALL, clean_env, curate_bin, small_config


def curate(*args, timeout=600):
    return subprocess.run([curate_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=clean_env())


def _drop_last_row(path: Path) -> None:
    """Rewrite a Parquet file without its last row, keeping its schema (and metadata) and row groups."""
    pf = pq.ParquetFile(path)
    groups = [pf.read_row_group(i) for i in range(pf.num_row_groups)]
    groups[-1] = groups[-1].slice(0, groups[-1].num_rows - 1)
    with pq.ParquetWriter(path, pf.schema_arrow) as w:
        for g in groups:
            w.write_table(g, row_group_size=max(1, g.num_rows))


def _patch_entry(marker: Path, name: str, path: Path) -> None:
    """Make a marker's file entry match the edited file, as if it had been written that way."""
    m = io.read_json(marker)
    for key in ("kept_files", "rejected_files", "quarantine_files"):
        for f in m.get(key, []):
            if f["name"] == name:
                f.update(bytes=path.stat().st_size, sha256=io.sha256_file(path), rows=pq.ParquetFile(path).metadata.num_rows)
    io.write_json(m, marker)


def _lying_task(out: str, key: str) -> dict:
    res = TaskOutput(Path(out), key, "test", target_rows=1 << 30, target_bytes=1 << 40, single=True)
    res.rows_in = 3
    res.add_kept(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"], "source": ["s"] * 3}))
    counters = res.finish()
    _drop_last_row(Path(out) / counters["kept_files"][0]["name"])  # a writer bug: one row never reached the file
    counters["kept_files"][0]["bytes"] = (Path(out) / counters["kept_files"][0]["name"]).stat().st_size
    counters["kept_files"][0]["rows"] = 2
    return counters


def test_task_whose_files_hold_fewer_rows_than_it_counted_gets_no_marker(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"accounting broken: counted kept/rejected/quarantined=3/0/0 but its files hold 2/0/0"):
        runner.execute_task(str(out), "part-00000", _lying_task, dict(out=str(out), key="part-00000"))
    assert not io.marker_path(out, "part-00000").exists()


def test_shuffle_partition_with_a_deleted_row_is_refused(tmp_path):
    t = pa.table({"key": np.arange(10, dtype=np.int64)})
    entry = shuffle.write(tmp_path / "s.parquet", t, np.array([0, 1] * 5), 2)
    assert shuffle.read([(str(tmp_path / "s.parquet"), entry["parts"])], 1).num_rows == 5
    _drop_last_row(tmp_path / "s.parquet")
    with pytest.raises(RuntimeError, match=r"partition 1 holds 4 rows but its writer wrote 5"):
        shuffle.read([(str(tmp_path / "s.parquet"), entry["parts"])], 1)


def _dedup_config(tmp_path) -> Path:
    cfg = small_config(tmp_path, "run")
    data = yaml.safe_load(cfg.read_text())
    data["ingest"]["inputs"][0]["path"] = str(SAMPLE_SMALL)
    data.pop("filter")
    data["dedup"] = {"method": ["exact", "fuzzy"]}
    cfg.write_text(yaml.safe_dump(data))
    return cfg


@pytest.mark.slow
def test_row_deleted_from_an_intermediate_dedup_file_fails_the_stage(tmp_path):
    cfg = _dedup_config(tmp_path)
    assert curate("run", cfg, "-q", "--no-ray").returncode == 0
    dedup = tmp_path / "run" / "dedup"
    sig = sorted((dedup / "_work" / "sig").glob("sig-part-*.parquet"))[0]
    key = sig.stem[len("sig-"):]
    _drop_last_row(sig)
    _patch_entry(io.marker_path(dedup / "_work" / "sig", key), sig.name, sig)  # the pass marker still verifies
    io.marker_path(dedup, key).unlink()  # the final write of that shard runs again
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 1, r.stderr
    summary = io.read_json(tmp_path / "run" / "_run_summary.json")
    errors = [f["error"] for st in summary["stages"] for f in st.get("failed", [])]
    assert any(sig.name in e and "signature rows" in e for e in errors), errors
    assert not io.marker_path(dedup, key).exists()


@pytest.mark.slow
def test_finalize_recheck_catches_a_kept_shard_that_lost_a_row(tmp_path):
    cfg = _dedup_config(tmp_path)
    data = yaml.safe_load(cfg.read_text())
    data.pop("dedup")
    cfg.write_text(yaml.safe_dump(data))
    assert curate("run", cfg, "-q", "--no-ray").returncode == 0
    ingest = tmp_path / "run" / "ingest"
    shard = io.shard_files(ingest)[0]
    key = next(k for k, s in io.read_json(ingest / io.MANIFEST)["shards"].items() if any(f["name"] == shard.name for f in s["files"]))
    _drop_last_row(shard)
    _patch_entry(io.marker_path(ingest, key), shard.name, shard)  # file entry consistent, counters not
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 1, r.stderr
    man = io.read_json(ingest / io.MANIFEST)
    assert man["status"] == "incomplete"
    assert any(f["key"] == key and "accounting broken" in f["error"] for f in man["failed"]), man["failed"]
