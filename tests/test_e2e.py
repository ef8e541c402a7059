"""End-to-end: ingest + filter on the bundled sample, with the embedded Ray and with a cluster."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import config, driver, io
from tests.conftest import all_ids, clean_env, curate_bin, kill_group, output_hashes, small_config


def run_inprocess(cfg_path: Path, **kw):
    cfg = config.load(cfg_path)
    results = driver.run(cfg, driver.plan(cfg), show_progress=False, **kw)
    assert all(r.ok for r in results), [r.failed for r in results]
    return cfg, results


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("baseline")
    cfg, results = run_inprocess(small_config(tmp))
    return cfg.run.output, results


def test_accounting_invariant_every_stage_and_shard(baseline):
    run_dir, _ = baseline
    stages = [d for d in ("ingest", "filter") if (run_dir / d / io.MANIFEST).exists()]
    assert stages == ["ingest", "filter"]
    for stage in stages:
        d = run_dir / stage
        man = io.read_json(d / io.MANIFEST)
        assert man["status"] == "complete" and len(man["shards"]) > 1
        for key, s in man["shards"].items():
            assert s["rows_in"] == s["kept"] + s["rejected"] + s["quarantined"], (stage, key)
            # The counters match what is on disk (a quarantine row stands for its `rows` input rows).
            on_disk = {sub: sum(pq.ParquetFile(d / f["dir"] / f["name"]).metadata.num_rows for f in s["files"] if f["dir"] == sub)
                       for sub in ("", io.REJECTED)}
            q = [pq.read_table(d / f["dir"] / f["name"], columns=["rows"]).column("rows").to_pylist()
                 for f in s["files"] if f["dir"] == io.QUARANTINE]
            on_disk[io.QUARANTINE] = sum(1 if r is None else r for rows in q for r in rows)
            assert (on_disk[""], on_disk[io.REJECTED], on_disk[io.QUARANTINE]) == (s["kept"], s["rejected"], s["quarantined"])
    ingest, filt = (io.read_json(run_dir / s / io.MANIFEST)["totals"] for s in stages)
    assert filt["rows_in"] == ingest["kept"]  # nothing lost between stages
    assert filt["rejected"] > 0 and filt["kept"] > 0


def test_no_duplicate_or_missing_ids(baseline):
    run_dir, _ = baseline
    kept_ingest = all_ids(run_dir / "ingest")
    after_filter = all_ids(run_dir / "filter")
    assert len(after_filter) == len(set(after_filter))
    assert sorted(kept_ingest) == sorted(after_filter)  # filter quarantined nothing here


def test_rejections_carry_precise_reasons(baseline):
    run_dir, _ = baseline
    rej = pq.read_table(run_dir / "filter" / io.REJECTED).to_pydict()
    assert all(":" in r for r in rej["reason"])
    assert set(rej["stage"]) == {"filter"}
    stats = io.read_json(run_dir / "filter" / io.STATS)
    assert sum(stats["reasons"].values()) == len(rej["reason"])


def test_determinism_same_seed_same_bytes(baseline, tmp_path, ray_session):
    run_dir, _ = baseline
    cfg, _ = run_inprocess(small_config(tmp_path, out_name="again"))
    a, b = output_hashes(run_dir), output_hashes(cfg.run.output)
    assert a and a == b


def test_resume_skips_finished_shards_and_refuses_changed_config(baseline, tmp_path, ray_session):
    cfg_path = small_config(tmp_path)
    cfg, first = run_inprocess(cfg_path)
    before = output_hashes(cfg.run.output)
    marker = next((cfg.run.output / "filter" / io.DONE).glob("*.json"))
    mtime = marker.stat().st_mtime_ns
    run_inprocess(cfg_path)
    assert marker.stat().st_mtime_ns == mtime  # not recomputed
    assert output_hashes(cfg.run.output) == before
    changed = small_config(tmp_path, extra="")  # same file, then change a filter threshold
    text = changed.read_text().replace("min_doc_words: 50", "min_doc_words: 60")
    assert text != changed.read_text()
    changed.write_text(text)
    r = subprocess.run([curate_bin(), "run", str(changed), "-q"], capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 2 and "--force" in r.stderr, r.stderr
    r = subprocess.run([curate_bin(), "run", str(changed), "-q", "--force"], capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stderr


def test_outputs_readable_by_datasets_and_duckdb(baseline, tmp_path):
    import datasets
    import duckdb

    run_dir, _ = baseline
    cache = str(tmp_path / "hf-cache")  # not ~/.cache: an earlier run's cache of a same-named dir must not answer
    files = sorted(str(p) for p in (run_dir / "filter").glob("part-*.parquet"))
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache)
    man = io.read_json(run_dir / "filter" / io.MANIFEST)
    assert len(ds) == man["totals"]["kept"]
    assert {"id", "text", "source", "meta", "n_tokens", "lang"} <= set(ds.column_names)
    n = duckdb.sql(f"select count(*) from read_parquet('{run_dir}/filter/part-*.parquet')").fetchall()[0][0]
    assert n == len(ds)
    n_rej = duckdb.sql(f"select count(*) from read_parquet('{run_dir}/filter/_rejected/*.parquet')").fetchall()[0][0]
    assert n_rej == man["totals"]["rejected"]
    # the dir itself: the dataset card makes HF read the kept shards only, not _rejected/ or _quarantine/
    for stage in ("ingest", "filter"):
        kept = io.read_json(run_dir / stage / io.MANIFEST)["totals"]["kept"]
        assert datasets.load_dataset(str(run_dir / stage), split="train", cache_dir=cache).num_rows == kept
    assert man["totals"]["rejected"] > 0


def test_cli_stats_and_sql(baseline):
    run_dir, _ = baseline
    r = subprocess.run([curate_bin(), "stats", str(run_dir)], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 0 and "filter" in r.stdout and "gopher" in r.stdout, r.stderr
    q = "select reason, count(*) n from rejected group by reason order by n desc"
    r = subprocess.run([curate_bin(), "stats", str(run_dir), "--sql", q], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 0 and ":" in r.stdout, r.stderr
    r = subprocess.run([curate_bin(), "stats", str(run_dir), "--sql", "select nope from kept"], capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_dry_run_prints_plan_without_writing(tmp_path):
    cfg = small_config(tmp_path)
    r = subprocess.run([curate_bin(), "run", str(cfg), "--dry-run"], capture_output=True, text=True, timeout=120,
                       env=clean_env(COLUMNS="200"))
    assert r.returncode == 0, r.stderr
    assert "ingest" in r.stdout and "filter" in r.stdout and "est. time" in r.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_resume_after_sigkill_is_byte_identical(baseline, tmp_path):
    """Kill `curate run` (driver and its embedded Ray) with SIGKILL part-way, re-run, compare."""
    run_dir, _ = baseline
    cfg = small_config(tmp_path)
    p = subprocess.Popen([curate_bin(), "run", str(cfg), "-q"], start_new_session=True, env=clean_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = tmp_path / "run" / "filter" / io.DONE
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if done.exists() and len(list(done.glob("*.json"))) >= 1:
            break
        time.sleep(0.05)
    killed_mid_run = p.poll() is None
    kill_group(p)
    assert killed_mid_run, "run finished before it could be killed; use smaller shards"
    n_done = len(list(done.glob("*.json")))
    man = io.read_json(run_dir / "filter" / io.MANIFEST)
    assert n_done < len(man["shards"]), "kill came after the last shard"
    r = subprocess.run([curate_bin(), "run", str(cfg), "-q"], capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert output_hashes(tmp_path / "run") == output_hashes(run_dir)
    summary = json.loads((tmp_path / "run" / "_run_summary.json").read_text())
    assert summary["status"] == "ok" and summary["exit_code"] == 0 and [s["stage"] for s in summary["stages"]] == ["ingest", "filter"]
    ids = all_ids(tmp_path / "run" / "filter")
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(all_ids(run_dir / "ingest"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_same_output_on_a_ray_cluster(baseline, tmp_path):
    """`ray start --head` on localhost, `curate run --ray-address`, identical output, then stop it."""
    run_dir, _ = baseline
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    env = clean_env(RAY_AUTH_MODE="token")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay short
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}"],
                            start_new_session=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cfg = small_config(tmp_path, out_name="cluster")
        r = None
        for _ in range(20):  # the head takes a few seconds to accept drivers
            r = subprocess.run([curate_bin(), "run", str(cfg), "-q", "--ray-address", f"127.0.0.1:{port}"],
                               capture_output=True, text=True, timeout=300, env=env)
            if r.returncode == 0 or "connect" not in (r.stderr or "").lower():
                break
            time.sleep(2)
        assert r.returncode == 0, r.stderr[-2000:]
        assert output_hashes(tmp_path / "cluster") == output_hashes(run_dir)
    finally:
        kill_group(head)
        shutil.rmtree(ray_tmp, ignore_errors=True)
