"""A two-node Ray cluster on localhost (`ray start --head` + one `ray start --address` worker node):
`curate run --ray-address` and `ray job submit -- curate run` both give byte-identical output to
the embedded run, run on the cluster's nodes, and leave no process behind.

Ports: every port a node binds by default to a fixed number (dashboard 8265, dashboard agent 52365,
Ray client 10001) is given a free one, because another Ray on the same machine (an embedded
`ray.init()` of a parallel test run starts a dashboard agent on 52365 even without a dashboard)
makes the head's agent fail to bind, and then `ray job submit` answers "No available agent to
submit job". Processes are stopped by killing the `ray start --block` process groups, never with
`ray stop`, which would stop every Ray of this user on the machine.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from pipeline import config, driver
from tests.conftest import SAMPLE_SMALL, clean_env, curate_bin, kill_group, output_hashes, small_config

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")

# Runs in a subprocess (this process holds the embedded Ray of the session): the cluster's nodes,
# jobs and tasks as JSON, read through the dashboard's state API.
STATE = r"""
import json, sys, time
from ray.util.state import list_jobs, list_nodes, list_tasks
addr, want_nodes, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + timeout
while True:
    try:
        nodes = [n for n in list_nodes(address=addr, timeout=10) if n.state == "ALIVE"]
    except Exception as e:  # dashboard not up yet
        nodes, err = [], e
    if len(nodes) >= want_nodes or time.time() > deadline:
        break
    time.sleep(1)
out = {"nodes": [n.node_id for n in nodes]}
if want_nodes == 0 or len(nodes) >= want_nodes:
    out["jobs"] = [{"type": str(j.type), "job_id": j.job_id, "submission_id": j.submission_id, "status": str(j.status),
                    "entrypoint": j.entrypoint, "driver_pid": (j.driver_info.pid if j.driver_info else None)}
                   for j in list_jobs(address=addr, timeout=10)]
    out["tasks"] = [{"name": t.name, "job_id": t.job_id, "node_id": t.node_id, "state": str(t.state)}
                    for t in list_tasks(address=addr, limit=10000, timeout=10, detail=True) if t.name.startswith("curate:")]
print(json.dumps(out))
"""


def _free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _state(dash: str, env: dict, want_nodes: int = 0, timeout: float = 120) -> dict:
    r = subprocess.run([sys.executable, "-c", STATE, dash, str(want_nodes), str(timeout)], capture_output=True,
                       text=True, timeout=timeout + 120, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _ours(ray_tmp: str) -> list[int]:
    """Processes of this cluster that outlived their `ray start` process group: anything whose
    command line or working directory is under the cluster's own temp dir (a job's driver runs in
    the unpacked working_dir there)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if ray_tmp in cmd or cwd.startswith(ray_tmp):
            pids.append(int(d.name))
    return pids


def _baseline(tmp: Path, ray_session) -> dict[str, str]:
    cfg = config.load(small_config(tmp, out_name="embedded"))
    results = driver.run(cfg, driver.plan(cfg), show_progress=False)
    assert all(r.ok for r in results)
    return output_hashes(cfg.run.output)


def test_run_and_job_submit_on_a_two_node_cluster(tmp_path, ray_session):
    t0 = time.time()
    port, dash, agent_head, agent_worker, client = _free_ports(5)
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # unix socket paths must stay short
    # The worker node gets its own temp dir, as a separate host would: with a shared one, both nodes'
    # runtime-env agents unpack the job's working_dir into the same directory at job start (eager
    # install), and the driver on the head intermittently finds its inputs missing.
    worker_tmp = tempfile.mkdtemp(prefix="rayw", dir="/tmp")
    # An activated venv: the job's driver finds `curate` on PATH, as in the Docker image.
    env = clean_env(RAY_AUTH_MODE="token", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    logs = {n: open(tmp_path / f"{n}.log", "wb") for n in ("head", "worker")}
    head = subprocess.Popen([RAY, "start", "--head", *common, f"--port={port}", f"--dashboard-port={dash}",
                             "--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--ray-client-server-port={client}",
                             f"--dashboard-agent-listen-port={agent_head}", f"--temp-dir={ray_tmp}"],
                            start_new_session=True, env=env, stdout=logs["head"], stderr=subprocess.STDOUT)
    worker = subprocess.Popen([RAY, "start", *common, f"--address=127.0.0.1:{port}",
                               f"--dashboard-agent-listen-port={agent_worker}", f"--temp-dir={worker_tmp}"],
                              start_new_session=True, env=env, stdout=logs["worker"], stderr=subprocess.STDOUT)
    leftovers: list[int] = []
    timings = {}
    try:
        want = _baseline(tmp_path, ray_session)  # while the cluster starts
        assert want and any(k.startswith("filter/") for k in want)
        dash_url = f"http://127.0.0.1:{dash}"
        nodes = _state(dash_url, env, want_nodes=2, timeout=150)["nodes"]
        assert len(nodes) == 2, f"cluster did not come up with 2 nodes: {(tmp_path / 'head.log').read_text()[-2000:]}"
        timings["cluster_up"] = time.time() - t0

        # (a) a driver outside the cluster connects with --ray-address
        t = time.time()
        cfg_a = small_config(tmp_path, out_name="cluster_a")
        r = subprocess.run([curate_bin(), "run", str(cfg_a), "-q", "--ray-address", f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        assert output_hashes(tmp_path / "cluster_a") == want
        timings["run_ray_address"] = time.time() - t

        # (b) `ray job submit`: the driver runs on the head, in an unpacked copy of the working dir,
        # with RAY_ADDRESS set by the job manager, which runner.init_ray uses to join this cluster.
        t = time.time()
        wd = tmp_path / "wd"
        shutil.copytree(SAMPLE_SMALL, wd / "sample_small")
        cfg = yaml.safe_load(cfg_a.read_text())
        cfg["ingest"]["inputs"][0]["path"] = "sample_small"  # relative: resolved in the job's working dir
        cfg["run"]["output"] = str(tmp_path / "job_b")  # shared POSIX path (localhost: every node sees it)
        (wd / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        r = subprocess.run([RAY, "job", "submit", "--address", dash_url, "--working-dir", str(wd), "--",
                            "curate", "run", "cfg.yaml", "-q"], capture_output=True, text=True, timeout=300, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "succeeded" in out, out[-3000:]
        sub_id = re.search(r"Job '(raysubmit_\w+)' succeeded", out).group(1)
        assert output_hashes(tmp_path / "job_b") == want
        timings["ray_job_submit"] = time.time() - t

        state = _state(dash_url, env, want_nodes=2, timeout=30)
        assert sorted(state["nodes"]) == sorted(nodes)  # both nodes alive throughout
        job_b = next(j for j in state["jobs"] if j["submission_id"] == sub_id)
        assert job_b["status"].endswith("SUCCEEDED") and job_b["entrypoint"] == "curate run cfg.yaml -q"
        # The job's driver joined this cluster (a fresh local Ray would never register a driver job
        # here, and its tasks would not show up in this cluster's task list).
        assert job_b["job_id"] and job_b["driver_pid"]
        job_a = [j for j in state["jobs"] if j["submission_id"] is None and j["job_id"] != job_b["job_id"]
                 and "--ray-address" in (j["entrypoint"] or "")]
        assert len(job_a) == 1, state["jobs"]
        by_job = {}
        for tk in state["tasks"]:
            by_job.setdefault(tk["job_id"], []).append(tk)
        for j in (job_a[0], job_b):
            tasks = by_job.get(j["job_id"], [])
            # 2 ingest + 4 filter shards (target_rows=400 on 1,500 docs), all finished.
            assert len(tasks) >= 6 and all(tk["state"].endswith("FINISHED") for tk in tasks), tasks
        used = {tk["node_id"] for tk in state["tasks"]}
        assert used == set(nodes), "the worker node ran no task"  # 1 CPU per node: tasks spill to both
        # The worker node really ran in its own temp dir (a second "host").
        assert list(Path(worker_tmp).glob("session_*/sockets/raylet*"))
        timings["total"] = time.time() - t0
        print("cluster test timings (s):", {k: round(v, 1) for k, v in timings.items()})
    finally:
        kill_group(worker)
        kill_group(head)
        for f in logs.values():
            f.close()
        leftovers = _ours(ray_tmp) + _ours(worker_tmp)
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)
    assert not leftovers, f"processes outlived `ray start`: {leftovers}"
