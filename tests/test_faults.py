"""Fault injection: crashed Ray workers, corrupt input and output shards, full disks, random SIGKILLs.

Fast tests drive the hooks of `pipeline.faults` and the engine in-process; the `slow` ones run
`curate run` in subprocesses on data/sample_small (ingest + filter) and compare the bytes with an
uninterrupted run.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import faults, io, runner
from tests.conftest import ROOT, SAMPLE_SMALL, clean_env, curate_bin, output_hashes, small_config


@pytest.fixture
def fault_env(monkeypatch, tmp_path):
    """Set CURATE_FAULT for this process only; flags go to a fresh dir."""
    d = tmp_path / "faults"
    monkeypatch.setenv(faults.DIR_ENV, str(d))

    def arm(spec: str) -> Path:
        monkeypatch.setenv(faults.ENV, spec)
        return d

    yield arm
    monkeypatch.delenv(faults.ENV, raising=False)


# ---------------------------------------------------------------- hooks (fast)


def test_hooks_are_off_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(faults.ENV, raising=False)
    monkeypatch.setenv(faults.DIR_ENV, str(tmp_path / "never"))
    faults.maybe_kill_worker(str(tmp_path), "part-00000")  # would SIGKILL pytest if it were on
    for i in range(3):
        io.write_json({"i": i}, tmp_path / f"{i}.json")
    assert not (tmp_path / "never").exists()  # no flag, no counter: nothing touched


def test_enospc_nth_write_fails_cleanly_then_writes_go_on(fault_env, tmp_path):
    fault_env("enospc:2")
    io.write_json({"a": 1}, tmp_path / "one.json")
    with pytest.raises(io.DiskFull) as e:
        io.write_parquet(pa.table({"x": list(range(1000))}), tmp_path / "part-00001.parquet")
    msg = str(e.value)
    assert "\n" not in msg and "part-00001.parquet" in msg and "free space" in msg and "re-run" in msg
    assert e.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["one.json"]  # no partial file, no temp file
    io.write_json({"c": 3}, tmp_path / "three.json")  # transient: the 3rd write succeeds


def test_enospc_sticky_and_path_glob(fault_env, tmp_path):
    fault_env("enospc:2+:*.parquet")
    t = pa.table({"x": [1, 2]})
    io.write_json({}, tmp_path / "a.json")  # not counted: the glob names Parquet files only
    io.write_parquet(t, tmp_path / "p1.parquet")
    for name in ("p2.parquet", "p3.parquet"):  # the disk stays full
        with pytest.raises(io.DiskFull):
            io.write_parquet(t, tmp_path / name)
    io.write_json({}, tmp_path / "b.json")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["a.json", "b.json", "p1.parquet"]


def test_unknown_fault_is_named(fault_env, tmp_path):
    fault_env("explode:1")
    with pytest.raises(ValueError, match="unknown fault 'explode'"):
        io.write_json({}, tmp_path / "a.json")


def test_real_enospc_from_any_writer_becomes_diskfull(tmp_path):
    """What the OS or pyarrow raise on a full disk is turned into the same one-line DiskFull."""
    def full(tmp):
        Path(tmp).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    def arrow_full(tmp):
        raise OSError("IOError: [Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")

    for writer in (full, arrow_full):
        with pytest.raises(io.DiskFull, match=r"disk full: no space left on device writing .*x\.parquet; free space"):
            io.atomic_write(tmp_path / "x.parquet", writer)
        assert list(tmp_path.iterdir()) == []
    with pytest.raises(PermissionError):  # other errors stay what they are
        io.atomic_write(tmp_path / "y.json", lambda tmp: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))


def test_diskfull_survives_pickling_and_reads_as_one_line():
    """Ray ships a task's exception to the driver by pickling it."""
    e = io.disk_full(OSError(errno.ENOSPC, "No space left on device"), Path("/out/part-1.parquet"))
    back = pickle.loads(pickle.dumps(e))
    assert isinstance(back, io.DiskFull) and back.errno == errno.ENOSPC and str(back) == str(e)
    assert runner._one_line(back) == str(e) and "\n" not in str(e)


def test_kill_worker_fires_once_per_key(tmp_path):
    """In a child process (it SIGKILLs itself): first call dies, second goes through."""
    env = clean_env(CURATE_FAULT="kill_worker:filter/part-0000?", CURATE_FAULT_DIR=str(tmp_path / "f"), PYTHONPATH=str(ROOT))
    code = ("import sys; from pipeline import faults; faults.maybe_kill_worker(sys.argv[1], sys.argv[2]); print('alive')")
    out = str(tmp_path / "run" / "filter")

    def call(o, key):
        return subprocess.run([sys.executable, "-c", code, o, key], env=env, capture_output=True, text=True, timeout=60)

    assert call(str(tmp_path / "run" / "ingest"), "part-00001").stdout == "alive\n"  # other stage: untouched
    assert call(out, "part-00010").stdout == "alive\n"  # key does not match
    r = call(out, "part-00001")
    assert r.returncode == -9 and r.stdout == ""
    assert (tmp_path / "f" / "kill_worker-filter-part-00001").exists()
    assert call(out, "part-00001").stdout == "alive\n"  # the retry survives


# ---------------------------------------------------------------- markers verified against their files


def _task_output(d: Path, key: str = "part-00000") -> dict:
    io.prepare_dir(d)
    w = io.ShardWriter(d, key, single=True)
    w.add(pa.table({"id": [str(i) for i in range(500)], "text": ["lorem ipsum " * 10] * 500}))
    m = {"rows_in": 500, "kept": 500, "rejected": 0, "quarantined": 0, "kept_files": w.close()}
    io.write_json(m, io.marker_path(d, key))
    return m


def test_marker_invalid_when_its_shard_is_truncated_or_replaced(tmp_path):
    _task_output(tmp_path)
    f = tmp_path / "part-00000.parquet"
    data = f.read_bytes()
    assert io.read_marker(tmp_path, "part-00000") is not None
    f.write_bytes(data[: len(data) // 2])  # truncated (copy cut short, disk trouble)
    assert io.read_marker(tmp_path, "part-00000") is None
    f.write_bytes(data[:-4] + b"XXXX")  # same size, no Parquet footer
    assert io.read_marker(tmp_path, "part-00000") is None
    f.write_bytes(data[:100] + bytes(1) * 10 + data[110:])  # same size and footer: only a content hash sees it
    assert io.read_marker(tmp_path, "part-00000") is not None
    assert io.verify_marker(tmp_path, "part-00000", sha256=True) is None
    f.write_bytes(data)
    assert io.verify_marker(tmp_path, "part-00000", sha256=True) is not None


def test_marker_naming_a_file_outside_the_dir_is_not_trusted(tmp_path):
    io.prepare_dir(tmp_path)
    (tmp_path.parent / "evil.parquet").write_bytes(b"PAR1")
    io.write_json({"kept_files": [{"name": "../evil.parquet"}]}, io.marker_path(tmp_path, "part-0"))
    assert io.read_marker(tmp_path, "part-0") is None  # re-run, never a crash or a path outside


def _count_task(out: str, key: str, n: int) -> dict:
    res = io.ShardWriter(Path(out), key, single=True)
    res.add(pa.table({"x": list(range(n))}))
    return {"rows_in": n, "kept": n, "rejected": 0, "quarantined": 0, "kept_files": res.close()}


def test_truncated_output_shard_reruns_only_its_task(tmp_path):
    out = tmp_path / "stage"
    tasks = [runner.Task(f"part-{i}", _count_task, dict(out=str(out), key=f"part-{i}", n=100 + i)) for i in range(3)]
    kw = dict(config_hash="h", input_fingerprint="f", use_ray=False, show_progress=False)
    assert runner.run_stage("s", out, tasks, **kw).ok
    before = output_hashes(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / io.DONE).iterdir()}
    f = out / "part-1.parquet"
    f.write_bytes(f.read_bytes()[:50])
    assert runner.run_stage("s", out, tasks, **kw).ok
    assert output_hashes(out) == before
    after = {p.name: p.stat().st_mtime_ns for p in (out / io.DONE).iterdir()}
    assert [k for k in after if after[k] != mtimes[k]] == ["part-1.json"]


def test_driver_write_on_full_disk_is_a_failed_stage_not_a_crash(fault_env, tmp_path):
    out = tmp_path / "stage"
    tasks = [runner.Task("part-0", _count_task, dict(out=str(out), key="part-0", n=10))]
    fault_env("enospc:1:*_manifest.json")  # the driver's first manifest write
    res = runner.run_stage("s", out, tasks, config_hash="h", input_fingerprint="f", use_ray=False, show_progress=False)
    assert not res.ok and "disk full" in res.failed[0]["error"] and "_manifest.json" in res.failed[0]["error"]
    assert not list(out.rglob(f"*{io.TMP_TAG}*"))
    os.environ.pop(faults.ENV)
    assert runner.run_stage("s", out, tasks, config_hash="h", input_fingerprint="f", use_ray=False, show_progress=False).ok


# ---------------------------------------------------------------- engine: num_gpus


def test_task_num_gpus_goes_to_ray_and_falls_back_without_gpus(ray_session, tmp_path, monkeypatch):
    def _gpu_ids_task(out: str, key: str) -> dict:  # local: Ray workers get it by value
        import ray

        return {"rows_in": 0, "kept": 0, "rejected": 0, "quarantined": 0, "gpus": list(ray.get_gpu_ids())}

    assert runner.Task("k", _gpu_ids_task, {}).num_gpus == 0.0
    seen = []
    real_remote = ray_session.remote

    def spy_remote(fn):
        r = real_remote(fn)

        class Spy:
            def options(self, **kw):
                seen.append(kw)
                return r.options(**{**kw, "num_gpus": 0})  # the session's Ray has no GPU to give

        return Spy()

    monkeypatch.setattr(ray_session, "remote", spy_remote)
    monkeypatch.setattr(runner, "_gpus_available", lambda ray: 2.0)
    tasks = [runner.Task("g", _gpu_ids_task, dict(out=str(tmp_path), key="g"), num_gpus=1), runner.Task("c", _gpu_ids_task, dict(out=str(tmp_path), key="c"))]
    assert runner._run_with_ray(tmp_path, tasks, 0, 1.0, lambda *a, **k: None) == []
    assert [(kw["num_gpus"], kw["num_cpus"], kw["name"]) for kw in seen] == [(1, 1.0, "curate:g"), (0.0, 1.0, "curate:c")]
    # A cluster without GPUs: the request is dropped (a warning), not left pending forever.
    seen.clear()
    monkeypatch.setattr(runner, "_gpus_available", lambda ray: 0.0)
    monkeypatch.setattr(ray_session, "remote", real_remote)
    done = []
    assert runner._run_with_ray(tmp_path, tasks[:1], 0, 1.0, lambda m, **k: done.append(m)) == []
    assert done[0]["gpus"] == []


# ---------------------------------------------------------------- end to end (slow)


def _config(tmp: Path, name: str, inp: Path | None = None, **ray) -> Path:
    p = small_config(tmp, out_name=name)
    cfg = yaml.safe_load(p.read_text())
    cfg["run"]["ray"].update(ray)
    if inp is not None:
        cfg["ingest"]["inputs"][0]["path"] = str(inp)
    p.write_text(yaml.safe_dump(cfg))
    return p


def curate(*args, timeout: int = 300, **env) -> subprocess.CompletedProcess:
    return subprocess.run([curate_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=clean_env(**env))


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "_run_summary.json").read_text())


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:") or "failed shard" in ln]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (in-process engine, no Ray) of ingest + filter on sample_small."""
    tmp = tmp_path_factory.mktemp("faults_ref")
    r = curate("run", _config(tmp, "run"), "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    hashes = output_hashes(tmp / "run")
    assert len(hashes) > 6
    return hashes


@pytest.mark.slow
def test_ray_worker_killed_mid_task_is_retried(reference, tmp_path):
    cfg = _config(tmp_path, "run", max_retries=1)
    r = curate("run", cfg, "-q", CURATE_FAULT="kill_worker:filter/part-00000-0001", CURATE_FAULT_DIR=tmp_path / "f")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "f" / "kill_worker-filter-part-00000-0001").exists()  # the worker really died once
    assert output_hashes(tmp_path / "run") == reference
    assert _summary(tmp_path / "run")["status"] == "ok"


@pytest.mark.slow
def test_ray_worker_killed_without_retries_fails_the_shard_then_resumes(reference, tmp_path):
    cfg = _config(tmp_path, "run", max_retries=0)
    key = "part-00001-0000"
    r = curate("run", cfg, "-q", CURATE_FAULT=f"kill_worker:filter/{key}", CURATE_FAULT_DIR=tmp_path / "f")
    assert r.returncode == 1, r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if "failed shard" in ln]
    assert key in line and "worker process died" in line and "re-run" in line
    s = _summary(tmp_path / "run")
    assert s["status"] == "failed" and s["exit_code"] == 1
    assert [f["key"] for st in s["stages"] for f in st["failed"]] == [key]
    assert not io.marker_path(tmp_path / "run" / "filter", key).exists()
    assert io.read_json(tmp_path / "run" / "filter" / io.MANIFEST)["status"] == "incomplete"
    r = curate("run", cfg, "-q", "--no-ray")  # no fault: resumes the one missing shard
    assert r.returncode == 0, r.stderr
    assert output_hashes(tmp_path / "run") == reference


def _truncated_zst(path: Path, n: int = 400) -> None:
    """A .jsonl.zst cut at 2/3 of its bytes: the first zstd blocks decode, then the stream ends."""
    import hashlib

    import zstandard

    def text(i: int) -> str:  # hex words: little redundancy, so the cut lands after whole blocks
        return " ".join(hashlib.sha256(f"{i}-{j}".encode()).hexdigest()[:12] for j in range(80))

    lines = b"".join(json.dumps({"id": f"late-{i}", "text": text(i), "domain": "web"}).encode() + b"\n" for i in range(n))
    data = zstandard.ZstdCompressor().compress(lines)
    path.write_bytes(data[: len(data) * 2 // 3])


@pytest.mark.slow
def test_corrupt_shard_added_to_input_is_a_new_shard_with_its_tail_quarantined(tmp_path):
    """A file added to the input between runs is a new task (incremental run, no --force); a cut
    .zst keeps its readable start and quarantines the unread rest; finished shards are untouched."""
    inp = tmp_path / "in"
    shutil.copytree(SAMPLE_SMALL, inp)
    cfg = _config(tmp_path, "run", inp=inp)
    assert curate("run", cfg, "-q", "--no-ray").returncode == 0
    before = output_hashes(tmp_path / "run")
    bad = inp / "shard-00002.jsonl.zst"
    _truncated_zst(bad)
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    after = output_hashes(tmp_path / "run")
    assert all(after.get(k) == v for k, v in before.items())
    q = pq.read_table(tmp_path / "run" / "ingest" / io.QUARANTINE).to_pylist()
    mine = [row for row in q if row["file"] == str(bad)]
    assert len(mine) == 1 and str(bad) in mine[0]["error"] and "\n" not in mine[0]["error"]
    assert any(w in mine[0]["error"].lower() for w in ("truncat", "corrupt", "unexpected end"))
    man = io.read_json(tmp_path / "run" / "ingest" / io.MANIFEST)
    new = [s for s in man["shards"].values() if s["inputs"] == [str(bad)]]
    assert man["status"] == "complete" and len(new) == 1 and new[0]["quarantined"] == 1
    assert new[0]["rows_in"] == new[0]["kept"] + new[0]["rejected"] + 1
    assert new[0]["kept"] > 100  # the readable start of the cut file (400 lines) was kept
    # changing that file now is refused by name; --force recomputes
    bad.write_bytes(bad.read_bytes()[:-100])
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 2
    [line] = _error_lines(r.stderr)
    assert "changed" in line and str(bad) in line and "--force" in line, line
    assert curate("run", cfg, "-q", "--no-ray", "--force").returncode == 0


@pytest.mark.slow
def test_corrupt_garbage_parquet_input_is_quarantined(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["a fine document with enough words in it"]}), inp / "good.parquet")
    (inp / "bad.parquet").write_bytes(os.urandom(3000))
    r = curate("ingest", "--input", inp, "--output", tmp_path / "out", "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    q = pq.read_table(tmp_path / "out" / io.QUARANTINE).to_pylist()
    assert len(q) == 1 and "bad.parquet" in q[0]["error"] and "Parquet" in q[0]["error"]


@pytest.mark.slow
def test_truncated_stage_output_is_detected_on_resume(reference, tmp_path):
    cfg = _config(tmp_path, "run")
    assert curate("run", cfg, "-q", "--no-ray").returncode == 0
    shard = tmp_path / "run" / "filter" / "part-00000-0001.parquet"
    shard.write_bytes(shard.read_bytes()[:1000])
    marker = io.marker_path(tmp_path / "run" / "filter", "part-00000-0001")
    other = io.marker_path(tmp_path / "run" / "filter", "part-00000-0000")
    m0, o0 = marker.stat().st_mtime_ns, other.stat().st_mtime_ns
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    assert marker.stat().st_mtime_ns != m0 and other.stat().st_mtime_ns == o0  # only that task ran again
    assert output_hashes(tmp_path / "run") == reference


def _no_leftovers(run_dir: Path) -> None:
    assert not [p for p in run_dir.rglob(f"*{io.TMP_TAG}*")]


@pytest.mark.slow
def test_disk_full_injected_fails_cleanly_then_resumes(reference, tmp_path):
    cfg = _config(tmp_path, "run", max_retries=0)
    # Only task writes of the filter stage are counted: the 2nd Parquet file it writes fails.
    r = curate("run", cfg, "-q", CURATE_FAULT="enospc:2:*/filter/*.parquet", CURATE_FAULT_DIR=tmp_path / "f")
    assert r.returncode == 1, r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if "disk full" in ln]
    assert "failed shard" in line and "no space left on device writing" in line and "/filter/" in line
    assert "free space" in line and "re-run" in line
    failed = [f["key"] for st in _summary(tmp_path / "run")["stages"] for f in st["failed"]]
    assert len(failed) == 1
    assert not io.marker_path(tmp_path / "run" / "filter", failed[0]).exists()
    _no_leftovers(tmp_path / "run")
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    assert output_hashes(tmp_path / "run") == reference
    _no_leftovers(tmp_path / "run")


def _can_mount_tmpfs(d: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    d.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True)
    if r.returncode:
        return False
    subprocess.run(["umount", str(d)], capture_output=True)
    return True


@pytest.mark.slow
def test_disk_full_on_a_real_tiny_filesystem(reference, tmp_path):
    mnt = tmp_path / "small_disk"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("needs root and tmpfs mounts")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2600k", "tmpfs", str(mnt)], check=True)
    try:
        cfg = _config(tmp_path, "run", max_retries=0)
        data = yaml.safe_load(cfg.read_text())
        data["run"]["output"] = str(mnt / "run")
        cfg.write_text(yaml.safe_dump(data))
        r = curate("run", cfg, "-q", "--no-ray")  # ingest (~1.8 MB) fits, filter does not
        assert r.returncode == 1, r.stderr
        lines = [ln for ln in r.stderr.splitlines() if "disk full" in ln]
        assert lines and all("no space left on device writing" in ln and "free space" in ln for ln in lines), r.stderr
        assert "Traceback" not in r.stderr
        assert io.read_json(mnt / "run" / "ingest" / io.MANIFEST)["status"] == "complete"
        failed = [f["key"] for st in _summary(mnt / "run")["stages"] for f in st["failed"]]
        assert failed and all(not io.read_marker(mnt / "run" / "filter", k) for k in failed)
        _no_leftovers(mnt / "run")
        subprocess.run(["mount", "-o", "remount,size=16m", str(mnt)], check=True)  # space freed
        r = curate("run", cfg, "-q", "--no-ray")
        assert r.returncode == 0, r.stderr
        assert output_hashes(mnt / "run") == reference
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_random_sigkill_and_resume_3_trials(tmp_path):
    """The code path of bench/fault_injection.py, 3 trials (the bench runs 20)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import fault_injection
    finally:
        sys.path.remove(str(ROOT / "bench"))
    res = tmp_path / "res.json"
    code = fault_injection.main(["--trials", "3", "--seed", "1", "--stages", "ingest", "--stages", "filter", "--no-ray", "--kill-window", "3",
                                 "--set", f"ingest.inputs.0.path={SAMPLE_SMALL}", "--set", "run.shard.target_rows=400",
                                 "--workdir", str(tmp_path / "w"), "--json", str(res)])
    out = json.loads(res.read_text())
    assert code == 0 and out["identical"] == out["total"] == 3, out
    assert any(t["reached"] != "finished before the kill" for t in out["trials"])
