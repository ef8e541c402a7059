"""Outputs on object stores (pipeline/remote.py), engine level on an in-process memory:// bucket: a
pass's upload sync walks and puts its own dir and the files the driver wrote for it, never the rest
of the staging tree (another stage's dir waits for that stage's or the run's final sync)."""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from pipeline import io, remote, runner
from pipeline.manifest import COUNTERS


def _task(out: str) -> dict:
    io.write_npy(np.arange(3), Path(out) / "a.npy")  # an engine write: put with the marker
    (Path(out) / "raw.bin").write_bytes(b"r")  # written other than by io: put by the pass's end sync
    return {c: 0 for c in COUNTERS}


def test_a_pass_syncs_its_own_dir_and_the_drivers_files_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_STAGING", str(tmp_path / "staging"))
    url = f"memory://sync-{uuid.uuid4().hex[:8]}/run"
    root = remote.staging_for(url)
    m = remote.mirror_for(root)
    walked, stated, puts = [], [], []
    local_files, stat, put_file = remote.Mirror._local_files, remote.Mirror._stat, m.fs.put_file
    monkeypatch.setattr(remote.Mirror, "_local_files", lambda self, under: walked.append(Path(under)) or local_files(self, under))
    monkeypatch.setattr(remote.Mirror, "_stat", staticmethod(lambda p: stated.append(Path(p)) or stat(p)))
    monkeypatch.setattr(m.fs, "put_file", lambda lp, rp, **kw: puts.append(m._relof(rp)) or put_file(lp, rp, **kw))

    other = root / "filter" / "part-00000.parquet"  # another stage's file, not yet put
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    d = root / "mix" / "_work" / "round0"
    with m.recording():
        io.write_json({"w": [1.0]}, root / "mix" / "weights.json")  # the driver's side file for this pass, outside its dir
        res = runner.run_stage("mix:round0", d, [runner.Task("a", _task, {"out": str(d)})], config_hash="h", input_fingerprint="f",
                               use_ray=False, show_progress=False, max_retries=0)
        assert res.ok
        rel = "mix/_work/round0"
        assert set(puts) == {f"{rel}/a.npy", f"{rel}/raw.bin", f"{rel}/_done/a.json", f"{rel}/{io.MANIFEST}", f"{rel}/{io.STATS}",
                             "mix/weights.json"}
        assert puts.index("mix/weights.json") < puts.index(f"{rel}/_done/a.json")  # what the driver wrote for it, before its markers
        assert walked and all(w == d for w in walked)  # nothing else of the tree is walked ...
        assert all(p.is_relative_to(d) or p == root / "mix" / "weights.json" for p in stated)  # ... or stat'ed
        assert not m.fs.exists(m.rpath("filter/part-00000.parquet"))
        # a second pass does not put the driver's file again (noted once), nor the first pass's files
        puts.clear()
        res = runner.run_stage("mix:round1", root / "mix" / "_work" / "round1", [runner.Task("a", _task, {"out": str(root / "mix" / "_work" / "round1")})],
                               config_hash="h", input_fingerprint="f", use_ray=False, show_progress=False, max_retries=0)
        assert res.ok and puts and all(p.startswith("mix/_work/round1/") for p in puts)
    m.sync(root / "filter")  # the other stage's own sync (the driver's, when that stage ends) puts it
    assert m.fs.cat_file(m.rpath("filter/part-00000.parquet")) == b"x"


def test_without_recording_a_pass_syncs_its_dir_only(tmp_path, monkeypatch):
    """A pass run outside `curate run` (no recording): its dir only; the run's final sync puts the rest."""
    monkeypatch.setenv("CURATE_STAGING", str(tmp_path / "staging"))
    url = f"memory://sync-{uuid.uuid4().hex[:8]}/run"
    root = remote.staging_for(url)
    m = remote.mirror_for(root)
    io.write_json({"w": 1}, root / "st" / "side.json")
    d = root / "st" / "_work" / "p"
    assert runner.run_stage("st:p", d, [runner.Task("a", _task, {"out": str(d)})], config_hash="h", input_fingerprint="f",
                            use_ray=False, show_progress=False, max_retries=0).ok
    assert m.fs.exists(m.rpath("st/_work/p/_done/a.json")) and not m.fs.exists(m.rpath("st/side.json"))
    m.sync()
    assert m.fs.exists(m.rpath("st/side.json"))
