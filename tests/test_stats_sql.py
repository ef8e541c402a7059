"""`curate stats RUN --sql`: DuckDB over the run's Parquet views, without file, network or extension
access unless --allow-external."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline import io
from tests.conftest import ROOT, clean_env, curate_bin


def curate(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([curate_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=clean_env())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A small real run dir: ingest of the bundled HTML pages, then a filter that rejects some."""
    run = tmp_path_factory.mktemp("stats") / "run"
    r = curate("ingest", "--input", ROOT / "data/web/html", "--output", run / "ingest", "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    cfg = run.parent / "f.yaml"
    cfg.write_text("filter:\n  filters:\n    - {type: length, params: {min_words: 500}}\n")
    r = curate("filter", "--input", run / "ingest", "--output", run / "filter", "--config", cfg, "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    tot = io.read_json(run / "filter" / io.MANIFEST)["totals"]
    assert tot["kept"] > 0 and tot["rejected"] > 0
    return run


def _refused(r: subprocess.CompletedProcess, hint: bool = True) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "--sql:" in lines[0] and ("--allow-external" in lines[0]) is hint, lines[0]
    assert "root:" not in r.stdout + r.stderr  # nothing of /etc/passwd came back
    return lines[0]


def test_queries_over_the_views_work(run_dir):
    tot = io.read_json(run_dir / "filter" / io.MANIFEST)["totals"]
    r = curate("stats", run_dir, "--sql", "select (select count(*) from filter) k, (select count(*) from rejected) rej, "
                                          "(select count(distinct reason) from filter_rejected) n")
    assert r.returncode == 0, r.stderr
    assert [tot["kept"], tot["rejected"], 1] == [int(x) for x in r.stdout.split() if x.isdigit()], r.stdout
    r = curate("stats", run_dir / "ingest", "--sql", "select count(*) from kept where text is not null")
    assert r.returncode == 0 and str(io.read_json(run_dir / "ingest" / io.MANIFEST)["totals"]["kept"]) in r.stdout, r.stdout + r.stderr


def test_copy_to_a_file_is_refused(run_dir, tmp_path):
    """Bug fixed: --sql could write any file the user can (COPY ... TO), and overwrite the run's own shards."""
    target = tmp_path / "x.csv"
    _refused(curate("stats", run_dir, "--sql", f"COPY (SELECT 1) TO '{target}'"))
    assert not target.exists()
    shard = io.shard_files(run_dir / "filter")[0]
    before = io.sha256_file(shard)
    _refused(curate("stats", run_dir, "--sql", f"COPY (SELECT 42 AS x) TO '{shard}' (FORMAT parquet, USE_TMP_FILE false)"))
    assert io.sha256_file(shard) == before and pq.read_table(shard).num_rows > 0


@pytest.mark.parametrize("sql, hint", [
    ("SELECT * FROM read_csv('/etc/passwd')", True),
    ("SELECT * FROM '/etc/passwd'", False),  # no file scan at all: "Table with name /etc/passwd does not exist"
    ("SELECT * FROM glob('/etc/*')", True),
    ("INSTALL httpfs", True),
    ("LOAD httpfs", True),
    ("ATTACH '/tmp/curate-stats-attach.duckdb' AS x", True),
    ("SET enable_external_access = true", True),
])
def test_file_network_and_extension_access_is_refused(run_dir, sql, hint):
    _refused(curate("stats", run_dir, "--sql", sql), hint)
    assert not Path("/tmp/curate-stats-attach.duckdb").exists()


def test_allow_external_lifts_the_restrictions(run_dir, tmp_path):
    target = tmp_path / "kept.csv"
    r = curate("stats", run_dir, "--allow-external", "--sql", f"COPY (SELECT id FROM filter ORDER BY id) TO '{target}'")
    assert r.returncode == 0, r.stderr
    assert len(target.read_text().splitlines()) == 1 + io.read_json(run_dir / "filter" / io.MANIFEST)["totals"]["kept"]


def test_sandboxed_views_read_what_duckdb_union_by_name_reads(tmp_path):
    """The views through pyarrow (sandboxed) hold the same rows as DuckDB's own read_parquet views:
    shards with different columns, widened types, and types that only DuckDB can unite (int/str)."""
    import pyarrow as pa

    from pipeline import stats

    d = tmp_path / "ds"
    (d / io.REJECTED).mkdir(parents=True)
    io.write_json({"stage": "x"}, d / io.MANIFEST)
    pq.write_table(pa.table({"id": ["a", "b"], "n": pa.array([1, 2], pa.int32())}), d / "part-0.parquet")
    pq.write_table(pa.table({"id": ["c"], "n": pa.array([3], pa.int64()), "extra": [0.5]}), d / "part-1.parquet")
    pq.write_table(pa.table({"id": ["d"], "reason": ["r1"]}), d / io.REJECTED / "part-0.parquet")
    pq.write_table(pa.table({"id": [7], "reason": ["r2"]}), d / io.REJECTED / "part-1.parquet")  # id: int here
    for q in ("SELECT id, n, extra FROM kept ORDER BY id", "SELECT CAST(id AS VARCHAR) i, reason FROM rejected ORDER BY i"):
        assert stats.connect(d).execute(q).fetchall() == stats.connect(d, allow_external=True).execute(q).fetchall()
    assert stats.connect(d).execute("SELECT count(*) FROM rejected").fetchall() == [(2,)]
