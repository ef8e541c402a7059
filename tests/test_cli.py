"""`curate ingest` / `curate filter` as single stages from the command line, on real bundled input."""
import json
import subprocess
from pathlib import Path

import pyarrow.parquet as pq

from pipeline import io
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
    out.mkdir()
    (out / io.LOCK).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))  # a live holder
    r = curate("ingest", "--input", ROOT / "data/web/html", "--output", out, "-q")
    assert r.returncode == 2 and "locked by pid" in r.stderr and not list(out.glob("part-*"))
