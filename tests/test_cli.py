"""`curate ingest` / `curate filter` as single stages from the command line, on real bundled input."""
import json
import subprocess

import pyarrow.parquet as pq

from pipeline import io, lock
from tests.conftest import ROOT, clean_env, curate_bin


def curate(*args, timeout=300):
    return subprocess.run([curate_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=clean_env())


def test_ingest_warc_then_filter(tmp_path):
    raw, filt = tmp_path / "web", tmp_path / "web-filtered"
    r = curate("ingest", "--input", ROOT / "data/web/python-docs.warc.gz", "--output", raw, "--source", "pydocs", "-q")
    assert r.returncode == 0, r.stderr
    man = io.read_json(raw / io.MANIFEST)
    assert man["totals"]["rows_in"] == man["totals"]["kept"] + man["totals"]["quarantined"] and man["totals"]["kept"] >= 30
    t = pq.read_table(next(raw.glob("part-*.parquet")))
    meta = json.loads(t.column("meta")[0].as_py())
    assert meta["url"].startswith("https://docs.python.org/3.11/")
    assert set(t.column("source").to_pylist()) == {"pydocs"}
    assert t.column("id")[0].as_py().startswith("pydocs/python-docs.warc.gz:")  # derived, stable
    # boilerplate (navigation, footers) is gone: no page starts with the nav bar text
    assert not any(x.lstrip().startswith("Navigation") for x in t.column("text").to_pylist())

    cfg = tmp_path / "f.yaml"
    cfg.write_text("filter:\n  filters:\n    - {type: length, params: {min_words: 200}}\n    - {type: langid, params: {languages: [en]}}\n")
    r = curate("filter", "--input", raw, "--output", filt, "--config", cfg, "-q")
    assert r.returncode == 0, r.stderr
    fm = io.read_json(filt / io.MANIFEST)["totals"]
    assert fm["rows_in"] == man["totals"]["kept"] == fm["kept"] + fm["rejected"]
    assert fm["rejected"] > 0 and fm["kept"] > 0
    kept = pq.read_table(next(filt.glob("part-*.parquet")))
    assert set(kept.column("lang").to_pylist()) == {"en"}


def test_ingest_html_dir_and_resume(tmp_path):
    out = tmp_path / "html"
    args = ("ingest", "--input", ROOT / "data/web/html", "--output", out, "-q")
    assert curate(*args).returncode == 0
    before = {p.name: io.sha256_file(p) for p in out.glob("part-*.parquet")}
    assert len(before) == 3
    r = curate(*args)
    assert r.returncode == 0 and {p.name: io.sha256_file(p) for p in out.glob("part-*.parquet")} == before


def test_filter_on_missing_input_is_usage_error(tmp_path):
    r = curate("filter", "--input", tmp_path / "nope", "--output", tmp_path / "o", "-q")
    assert r.returncode == 2 and "not a dataset dir" in r.stderr


def test_locked_output_dir_is_refused_with_exit_2(tmp_path):
    import os
    import socket

    out = tmp_path / "html"
    with lock.dir_lock(out):  # a live holder: this process
        r = curate("ingest", "--input", ROOT / "data/web/html", "--output", out, "-q")
    assert r.returncode == 2 and f"locked by pid {os.getpid()} on {socket.gethostname()}" in r.stderr, r.stderr
    assert not list(out.glob("part-*"))


def test_failed_shard_exit_1_and_a_changed_input_needs_force(tmp_path):
    import pyarrow as pa

    from pipeline.schema import BASE_SCHEMA

    inp = tmp_path / "in"
    inp.mkdir()
    good = pa.table({"id": ["a", "b"], "text": ["one two three four", "x"], "source": ["s", "s"], "meta": ["{}", "{}"], "n_tokens": [4, 1]}, schema=BASE_SCHEMA)
    pq.write_table(good, inp / "part-00000.parquet")
    pq.write_table(good.drop_columns(["text"]).slice(0, 1), inp / "part-00001.parquet")  # breaks the contract
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run: {ray: {max_retries: 0}}\nfilter: {filters: [{type: length, params: {min_words: 2}}]}\n")
    out = tmp_path / "out"
    r = curate("filter", "--input", inp, "--output", out, "--config", cfg, "-q")
    assert r.returncode == 1, r.stderr
    assert "failed shard part-00001" in r.stderr and "re-run" in r.stderr
    assert (out / io.DONE / "part-00000.json").exists() and not (out / io.DONE / "part-00001.json").exists()
    assert io.read_json(out / io.MANIFEST)["status"] == "incomplete"
    done_before = (out / io.DONE / "part-00000.json").stat().st_mtime_ns
    pq.write_table(good.slice(1), inp / "part-00001.parquet")  # repaired input of the FAILED shard
    r = curate("filter", "--input", inp, "--output", out, "--config", cfg, "-q")
    assert r.returncode == 0, r.stderr  # an unfinished shard's input may change: it simply runs now
    assert (out / io.DONE / "part-00000.json").stat().st_mtime_ns == done_before  # the finished one is kept
    pq.write_table(good.slice(0, 1), inp / "part-00000.parquet")  # the input of a FINISHED shard changes
    r = curate("filter", "--input", inp, "--output", out, "--config", cfg, "-q")
    assert r.returncode == 2 and "--force" in r.stderr and "input changed" in r.stderr  # never mixed in silently
    assert str(inp / "part-00000.parquet") in r.stderr
    r = curate("filter", "--input", inp, "--output", out, "--config", cfg, "-q", "--force")
    assert r.returncode == 0, r.stderr
    assert io.read_json(out / io.MANIFEST)["totals"] == {**io.read_json(out / io.MANIFEST)["totals"], "rows_in": 2, "kept": 1, "rejected": 1}
    assert (out / io.DONE / "part-00000.json").stat().st_mtime_ns != done_before  # --force recomputed
