"""Outputs on an object store: `run.output: s3://...` against a real S3 wire-protocol server (moto's
standalone server, started here on loopback). The bucket must end byte-identical to a local run of
the same config: uninterrupted, after a SIGKILL mid-run resumed from the bucket alone (empty
staging), and after a kill in the middle of a put. The lease lock refuses a second live run and is
taken over once it has expired."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import clean_env, curate_bin, small_config

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

FIVE = {  # ingest -> filter -> dedup -> score -> cluster, shrunk (as tests/test_whole_path.py)
    "dedup": {"method": ["exact", "fuzzy"]},
    "score": {"perplexity": {"backend": "numpy", "train": {"order": 2, "data": {"max_docs": 300}}}},
    "cluster": {"embed": {"max_tokens": 16}, "kmeans": {"k_init": 16}, "refine": {"k": 5}},
}
TWO = {"dedup": {"method": ["exact", "fuzzy"]}}  # ingest -> filter -> dedup, for the kill tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 and the environment that points boto/s3fs at it."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        import boto3

        boto3.client("s3").create_bucket(Bucket="curate")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _fs():
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    return fs


def _config(tmp: Path, name: str, output: str, extra: dict) -> Path:
    p = small_config(tmp, out_name=name, extra=yaml.safe_dump(extra))
    cfg = yaml.safe_load(p.read_text())
    cfg["run"]["output"] = output
    p.write_text(yaml.safe_dump(cfg))
    return p


def curate(cfg: Path, *args, env: dict, ray: bool = False, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run([curate_bin(), "run", str(cfg), "-q", *([] if ray else ["--no-ray"]), *args], capture_output=True,
                          text=True, timeout=timeout, env=clean_env(**env), start_new_session=True)


def _normal(rel: str, data: bytes, roots: list[str]) -> str:
    """sha256 of a file; a marker without the fields that depend on time and task placement (its
    `seconds`; `model_loads`: how often the worker process that ran it loaded a model, 0 when an
    earlier task in the same process had) and with the run dir's path replaced."""
    if "/_done/" in f"/{rel}":
        m = json.loads(data)
        m.pop("seconds", None)
        m.pop("model_loads", None)
        text = json.dumps(m, sort_keys=True)
        for r in roots:
            text = text.replace(r, "<run>")
        data = text.encode()
    return hashlib.sha256(data).hexdigest()


COMPARED = (".parquet", ".npy", ".npz")


def local_hashes(run: Path, roots: list[str]) -> dict[str, str]:
    """Data files and markers of a local run dir, by relative path."""
    return {p.relative_to(run).as_posix(): _normal(p.relative_to(run).as_posix(), p.read_bytes(), roots)
            for p in sorted(run.rglob("*")) if p.is_file() and (p.suffix in COMPARED or p.parent.name == "_done")}


def bucket_hashes(prefix: str, roots: list[str]) -> dict[str, str]:
    fs, out, key = _fs(), {}, prefix.split("://", 1)[1]
    for path in sorted(fs.find(key)):
        rel = path[len(key):].lstrip("/")
        if rel.endswith(COMPARED) or rel.rsplit("/", 2)[-2:-1] == ["_done"]:
            out[rel] = _normal(rel, fs.cat_file(path), roots)
    return out


def bucket_names(prefix: str) -> set[str]:
    key = prefix.split("://", 1)[1]
    return {p[len(key):].lstrip("/") for p in _fs().find(key)}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """An uninterrupted local run (the reference) of the five-stage config. Its ingest, filter and
    dedup dirs are also the reference of the three-stage config (same sections, same hashes)."""
    tmp = tmp_path_factory.mktemp("local")
    cfg = _config(tmp, "five", str(tmp / "five"), FIVE)
    r = curate(cfg, env={})
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "five"


def _first_three(hashes: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in hashes.items() if k.split("/", 1)[0] in ("ingest", "filter", "dedup")}


def _staging_roots(staging: Path) -> list[str]:
    return [str(p) for p in staging.iterdir()] if staging.exists() else []


@pytest.mark.slow
def test_every_output_on_s3_gives_the_bytes_of_a_local_run(s3, local_run, tmp_path):
    url = "s3://curate/five"
    staging = tmp_path / "staging"
    cfg = _config(tmp_path, "five", url, FIVE)
    r = curate(cfg, env={**s3, "CURATE_STAGING": str(staging)}, ray=True)  # Ray workers write staging, the driver puts
    assert r.returncode == 0, r.stderr[-2000:]
    roots = [str(local_run), *_staging_roots(staging)]
    want = local_hashes(local_run, roots)
    assert len(want) > 60 and any(k.startswith("cluster/") for k in want)
    assert bucket_hashes(url, roots) == want
    # every file of the local run is in the bucket (manifests, stats, cards, weights...), and no lease is left
    names = bucket_names(url)
    local = {p.relative_to(local_run).as_posix() for p in local_run.rglob("*") if p.is_file()}
    assert local <= names and "_lock.json" not in names and not any(n.endswith("_lock") for n in names)
    assert json.loads(_fs().cat_file(f"{url}/cluster/_manifest.json"))["status"] == "complete"


def _killed_run(s3: dict, tmp_path, url: str, fault: str, ttl: int):
    """A run of TWO into `url` that the CURATE_FAULT `fault` SIGKILLs; -> (config, env without the fault, staging dir)."""
    staging = tmp_path / "staging"
    cfg = _config(tmp_path, "two", url, TWO)
    env = {**s3, "CURATE_STAGING": str(staging), "CURATE_LEASE_TTL": str(ttl)}
    r = curate(cfg, env={**env, "CURATE_FAULT": fault, "CURATE_FAULT_DIR": str(tmp_path / "f")})
    assert r.returncode == -9, r.stderr[-2000:]
    return cfg, env, staging


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_from_the_bucket_alone(s3, local_run, tmp_path):
    url = "s3://curate/killed"
    cfg, env, staging = _killed_run(s3, tmp_path, url, "kill_worker:dedup/part-00001-0000", ttl=2)  # --no-ray: curate itself died
    names = bucket_names(url)
    assert json.loads(_fs().cat_file(f"{url}/filter/_manifest.json"))["status"] == "complete"
    assert any(n.startswith("dedup/_work/") and "/_done/" in n for n in names)  # some of dedup's tasks were in the bucket
    assert "_lock.json" in names  # the dead run's lease: still there, expires
    shutil.rmtree(staging)  # a fresh machine: nothing but the bucket
    time.sleep(2.5)  # the dead run's lease (2 s, never renewed) expires: the resume takes it over
    r = curate(cfg, "--resume", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    roots = [str(local_run), *_staging_roots(staging)]
    assert bucket_hashes(url, roots) == _first_three(local_hashes(local_run, roots))


@pytest.mark.slow
def test_kill_during_a_put_leaves_no_marker_and_the_task_reruns(s3, local_run, tmp_path):
    url = "s3://curate/put-killed"
    shard = "filter/part-00001-0000.parquet"
    cfg, env, staging = _killed_run(s3, tmp_path, url, f"kill_put:{shard}", ttl=1)
    names = bucket_names(url)
    assert shard not in names and "filter/_done/part-00001-0000.json" not in names  # no half object, no marker
    assert "ingest/_manifest.json" in names
    time.sleep(1.5)  # the dead run's lease expires
    r = curate(cfg, "--resume", env=env)  # same machine: its staging holds the shard, unput: the bucket decides
    assert r.returncode == 0, r.stderr[-2000:]
    roots = [str(local_run), *_staging_roots(staging)]
    assert bucket_hashes(url, roots) == _first_three(local_hashes(local_run, roots))


def test_lease_refuses_a_live_run_and_takes_over_an_expired_one(s3, tmp_path, monkeypatch):
    from pipeline import remote
    from pipeline.lock import Locked

    url = "s3://curate/leased"
    monkeypatch.setenv("CURATE_STAGING", str(tmp_path / "staging"))
    monkeypatch.setenv("CURATE_LEASE_TTL", "30")
    a = remote.Mirror(url, remote.staging_for(url))
    b = remote.Mirror(url, tmp_path / "other-machine")
    with a.lease():
        holder = json.loads(_fs().cat_file(f"{url}/_lock.json"))
        assert holder["pid"] == os.getpid() and holder["expires"] > time.time()
        with pytest.raises(Locked) as e:
            with b.lease():
                pass
        msg = str(e.value)
        assert "\n" not in msg and url in msg and f"pid {os.getpid()}" in msg and "wait for that run" in msg
    assert not _fs().exists(f"{url}/_lock.json")  # released
    # a dead run's lease (expired): taken over, and the new holder's lease replaces it
    _fs().pipe_file(f"{url}/_lock.json", json.dumps({"owner": "dead", "pid": 1, "host": "gone", "expires": time.time() - 5}).encode())
    with b.lease():
        assert json.loads(_fs().cat_file(f"{url}/_lock.json"))["owner"] != "dead"
    # and through the CLI: a live lease makes `curate run` fail with one line, exit 2
    _fs().pipe_file(f"{url}/_lock.json", json.dumps({"owner": "x", "pid": 4242, "host": "elsewhere", "expires": time.time() + 600}).encode())
    cfg = _config(tmp_path, "two", url, TWO)
    r = curate(cfg, env={**s3, "CURATE_STAGING": str(tmp_path / "staging")})
    assert r.returncode == 2
    [line] = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "pid 4242 on elsewhere" in line and "_lock.json" in line
    _fs().rm_file(f"{url}/_lock.json")


def test_pull_trusts_markers_only_and_push_puts_data_before_markers(s3, tmp_path, monkeypatch):
    """Engine level: a Parquet file in the bucket that no marker lists (its marker was never put)
    is not pulled; a marker whose file has another size is dropped (its task reruns); sync puts
    data, then markers, then the manifest."""
    from pipeline import io, remote

    url = "s3://curate/unit"
    fs = _fs()
    fs.pipe_file(f"{url}/st/part-a.parquet", b"x" * 10)
    fs.pipe_file(f"{url}/st/part-b.parquet", b"y" * 10)  # orphan: no marker
    fs.pipe_file(f"{url}/st/part-c.parquet", b"z" * 5)  # its marker says 9 bytes
    fs.pipe_file(f"{url}/st/_done/a.json", json.dumps({"key": "a", "kept_files": [{"name": "part-a.parquet", "bytes": 10}]}).encode())
    fs.pipe_file(f"{url}/st/_done/c.json", json.dumps({"key": "c", "kept_files": [{"name": "part-c.parquet", "bytes": 9}]}).encode())
    fs.pipe_file(f"{url}/st/weights.json", b"{}")
    fs.pipe_file(f"{url}2/st/other.json", b"{}")  # another output URL sharing the prefix: not this one's
    monkeypatch.setenv("CURATE_STAGING", str(tmp_path / "staging"))
    root = remote.staging_for(url)
    (root / "st").mkdir()
    (root / "st" / "stale.parquet").write_bytes(b"old")  # not in the bucket: removed
    (root / "st" / "weights.json").write_bytes(b"[]")  # same size, other bytes than the bucket's: replaced
    (root / "st" / "part-a.parquet").write_bytes(b"x" * 10)  # already the bucket's bytes: kept
    m = remote.Mirror(url, root)
    m.pull()
    got = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".curate")}
    assert got == {"st/part-a.parquet", "st/_done/a.json", "st/weights.json"}
    assert (root / "st" / "weights.json").read_bytes() == b"{}" and (root / "st" / "part-a.parquet").read_bytes() == b"x" * 10
    # push order: a fresh pass writes data, a marker and a manifest; sync puts them in that order
    puts = []
    monkeypatch.setattr(m.fs, "put_file", lambda lp, rp, **kw: puts.append(rp.rsplit("/", 2)[-2:]))
    (root / "st" / "part-d.parquet").write_bytes(b"d")
    io.write_json({"key": "d"}, root / "st" / "_done" / "d.json")
    io.write_json({"status": "complete"}, root / "st" / io.MANIFEST)
    m.sync()
    assert puts == [["st", "part-d.parquet"], ["_done", "d.json"], ["st", io.MANIFEST]]
    m.prune(root / "st")  # the orphan and the bad marker's file go
    assert not fs.exists(f"{url}/st/part-b.parquet") and fs.exists(f"{url}/st/part-a.parquet")


def test_config_maps_an_output_url_to_its_staging_dir(tmp_path, monkeypatch):
    from pipeline import remote
    from pipeline.config import ConfigError, parse

    monkeypatch.setenv("CURATE_STAGING", str(tmp_path / "staging"))
    cfg = parse({"run": {"output": "s3://curate/runs/a"}}, "c.yaml")
    root = cfg.run.output
    assert root.parent == tmp_path / "staging" and root.name.startswith("curate-runs-a-")
    assert remote.mirror_for(root / "filter" / "_done").url == "s3://curate/runs/a"
    assert parse({"run": {"output": "s3://curate/runs/b"}}, "c.yaml").run.output != root  # one staging dir per URL
    assert remote.mirror_for(tmp_path) is None  # a local dir: no mirror
    with pytest.raises(ConfigError) as e:
        parse({"run": {"output": "nosuchfs://x/y"}}, "c.yaml")
    assert str(e.value).startswith("c.yaml: run.output: nosuchfs://x/y") and "\n" not in str(e.value)
