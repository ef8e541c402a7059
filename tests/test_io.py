"""Shard writer, atomic writes, markers and the names they may take."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import io, lock


def test_shard_writer_rolls_over_by_rows(tmp_path):
    w = io.ShardWriter(tmp_path, "part-00001", target_rows=10)
    for i in range(5):
        w.add(pa.table({"x": list(range(i * 7, i * 7 + 7))}))
    files = w.close()
    assert [f["name"] for f in files] == [f"part-00001-{k:04d}.parquet" for k in range(len(files))]
    assert sum(f["rows"] for f in files) == 35
    assert pq.read_table(tmp_path / files[0]["name"]).column("x").to_pylist()[:3] == [0, 1, 2]
    assert all(f["sha256"] == io.sha256_file(tmp_path / f["name"]) for f in files)


def test_atomic_write_leaves_no_partial_file_on_error(tmp_path):
    class Boom(Exception):
        pass

    def bad(tmp):
        tmp.write_bytes(b"half")
        raise Boom

    with pytest.raises(Boom):
        io.atomic_write(tmp_path / "x.parquet", bad)
    assert os.listdir(tmp_path) == []


def test_same_table_gives_identical_bytes(tmp_path):
    t = pa.table({"id": ["a", "b"], "text": ["x", "y"]})
    io.write_parquet(t, tmp_path / "a.parquet")
    io.write_parquet(t, tmp_path / "b.parquet")
    assert io.sha256_file(tmp_path / "a.parquet") == io.sha256_file(tmp_path / "b.parquet")


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x\x00"])
def test_shard_names_cannot_escape(name):
    with pytest.raises(ValueError):
        io.safe_name(name)


def test_marker_invalid_when_its_file_is_gone(tmp_path):
    io.prepare_dir(tmp_path)
    io.write_parquet(pa.table({"x": [1]}), tmp_path / "part-0.parquet")
    io.write_json({"kept_files": [{"name": "part-0.parquet"}]}, io.marker_path(tmp_path, "part-0"))
    assert io.read_marker(tmp_path, "part-0") is not None
    (tmp_path / "part-0.parquet").unlink()
    assert io.read_marker(tmp_path, "part-0") is None


def test_prepare_dir_removes_temp_leftovers(tmp_path):
    (tmp_path / "part-0.parquet.tmp-123").write_bytes(b"partial")
    io.prepare_dir(tmp_path)
    assert not (tmp_path / "part-0.parquet.tmp-123").exists()


def test_dir_lock_excludes_a_second_run_and_takes_over_stale_locks(tmp_path):
    import json
    import socket
    import subprocess
    import sys

    with lock.dir_lock(tmp_path):
        with pytest.raises(lock.Locked, match="locked by pid"):
            with lock.dir_lock(tmp_path):
                pass
    assert not (tmp_path / io.LOCK).exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (tmp_path / io.LOCK).write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    with lock.dir_lock(tmp_path):  # its process is gone: taken over
        assert json.loads((tmp_path / io.LOCK).read_text())["pid"] == os.getpid()
    # A leftover file naming another host is no lock either: only a held flock excludes (NFSv4
    # carries flock across hosts); tests/test_lock.py has the races and the killed holder.
    (tmp_path / io.LOCK).write_text(json.dumps({"pid": 1, "host": "some-other-host"}))
    with lock.dir_lock(tmp_path):
        assert json.loads((tmp_path / io.LOCK).read_text())["host"] == socket.gethostname()
    assert not (tmp_path / io.LOCK).exists()


def test_concat_npy_same_bytes_as_concatenate_and_save(tmp_path):
    rng = np.random.default_rng(3)
    files = []
    for i, n in enumerate([5, 0, 70_000, 1]):
        f = tmp_path / f"part-{i}.npy"
        np.save(f, rng.integers(0, 60_000, n).astype(np.uint16))
        files.append(f)
    io.concat_npy(files, tmp_path / "streamed.npy")
    io.write_npy(np.concatenate([np.load(f) for f in files]), tmp_path / "whole.npy")
    assert (tmp_path / "streamed.npy").read_bytes() == (tmp_path / "whole.npy").read_bytes()
    assert np.load(tmp_path / "streamed.npy", mmap_mode="r").shape == (70_006,)
