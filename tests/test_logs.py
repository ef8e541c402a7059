"""JSON logs: one object per line on stderr, the runner's events, no progress bars in json mode."""
from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline import io, logs, runner
from tests.conftest import ROOT, clean_env, curate_bin


@pytest.fixture
def json_logs(monkeypatch):
    monkeypatch.delenv("CURATE_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    saved = [(h, h.formatter) for h in root.handlers]
    logs.configure("json")
    yield
    logs.configure("text")
    logs._state["fmt"] = None
    for h, f in saved:
        h.setFormatter(f)
    monkeypatch.delenv("CURATE_LOG_FORMAT", raising=False)


def _events(err: str) -> list[dict]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    evs = [json.loads(ln) for ln in lines]  # every line is one JSON object
    for e in evs:
        assert {"ts", "level", "event"} <= set(e) and e["ts"].endswith("Z")
    return evs


def _task(out: str, key: str, n: int, fail: bool = False, flaky: str | None = None) -> dict:
    if fail:
        raise ValueError(f"bad shard {key}\nsecond line of the message")
    if flaky and not Path(flaky).exists():
        Path(flaky).write_text("1")
        raise RuntimeError("transient")
    w = io.ShardWriter(Path(out), key, single=True)
    w.add(pa.table({"x": list(range(n))}))
    return {"rows_in": n, "kept": n, "rejected": 0, "quarantined": 0, "kept_files": w.close()}


def test_runner_events_in_json_mode(json_logs, tmp_path, capsys):
    out = tmp_path / "s"
    tasks = [runner.Task("a", _task, dict(out=str(out), key="a", n=5)),
             runner.Task("b", _task, dict(out=str(out), key="b", n=7, flaky=str(tmp_path / "flag"))),
             runner.Task("c", _task, dict(out=str(out), key="c", n=1, fail=True))]
    res = runner.run_stage("demo", out, tasks, config_hash="h", input_fingerprint="f", use_ray=False, max_retries=1, show_progress=True)
    assert [f["key"] for f in res.failed] == ["c"]
    cap = capsys.readouterr()
    evs = _events(cap.err)  # show_progress=True, yet no tqdm bar: only JSON lines
    names = [e["event"] for e in evs]
    assert names[0] == "stage_start" and names[-1] == "stage_end"
    assert evs[0]["stage"] == "demo" and evs[0]["tasks"] == 3 and evs[0]["pending"] == 3
    done = {e["key"]: e for e in evs if e["event"] == "task_done"}
    assert set(done) == {"a", "b"} and done["a"]["rows"] == 5 and done["b"]["rows"] == 7
    assert all(isinstance(e["seconds"], float) for e in done.values())
    retries = [e for e in evs if e["event"] == "task_retry"]
    assert [(e["key"], e["attempt"]) for e in retries] == [("b", 1), ("c", 1)] and retries[0]["level"] == "warning"
    [failed] = [e for e in evs if e["event"] == "task_failed"]
    assert failed["key"] == "c" and failed["level"] == "error"
    assert "\n" not in failed["error"] and "ValueError" in failed["error"] and "second line" in failed["error"]
    end = evs[-1]
    assert end["status"] == "incomplete" and end["failed"] == 1 and end["done"] == 2 and end["rows_in"] == 12 and end["kept"] == 12
    # Resume: nothing pending, a complete stage.
    runner.run_stage("demo", out, tasks[:2], config_hash="h", input_fingerprint="f", use_ray=False, show_progress=True)


def test_text_mode_is_unchanged(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CURATE_LOG_FORMAT", raising=False)
    logs._state["fmt"] = None
    logs.event("task_done", key="x")
    assert capsys.readouterr().err == ""
    out = tmp_path / "s"
    runner.run_stage("demo", out, [runner.Task("a", _task, dict(out=str(out), key="a", n=5))], config_hash="h",
                     input_fingerprint="f", use_ray=False, show_progress=True)
    err = capsys.readouterr().err
    assert "demo" in err and "1/1" in err and "{" not in err  # the tqdm bar, as before


def test_log_records_become_json(monkeypatch):
    import io as _io

    buf = _io.StringIO()
    handler = logging.StreamHandler(buf)  # as after cli's logging.basicConfig: a stderr handler
    logging.getLogger().addHandler(handler)
    try:
        logs.configure("json")
        logging.getLogger("curate").warning("something odd\nin two lines")
    finally:
        logs.configure("text")
        logs._state["fmt"] = None
        monkeypatch.delenv("CURATE_LOG_FORMAT", raising=False)
        logging.getLogger().removeHandler(handler)
    [e] = _events(buf.getvalue())
    assert e["event"] == "log" and e["level"] == "warning" and e["logger"] == "curate" and e["message"] == "something odd in two lines"


def test_configure_refuses_unknown_format():
    with pytest.raises(ValueError, match="text or json"):
        logs.configure("xml")


@pytest.mark.slow
def test_curate_run_json_logs_end_to_end(tmp_path):
    """CURATE_LOG_FORMAT=json (what --log-format json sets): stderr of a real run is JSON lines only."""
    inp = ROOT / "data" / "web" / "html"
    r = subprocess.run([curate_bin(), "ingest", "--input", str(inp), "--output", str(tmp_path / "o"), "--no-ray"],
                       capture_output=True, text=True, timeout=300, env=clean_env(CURATE_LOG_FORMAT="json"))
    assert r.returncode == 0, r.stderr
    evs = _events(r.stderr)
    assert [e["event"] for e in evs][0] == "stage_start" and evs[-2]["event"] == "stage_end"
    assert evs[-2]["status"] == "complete" and any(e["event"] == "task_done" for e in evs)
    assert evs[-1]["event"] == "run_end" and evs[-1]["exit_code"] == 0  # the CLI's last word, for schedulers


def test_log_format_flag_and_json_errors(tmp_path):
    """`curate --log-format json`: a config error is one JSON event with the exit code."""
    r = subprocess.run([curate_bin(), "--log-format", "json", "run", str(tmp_path / "missing.yaml")],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2
    [ev] = _events(r.stderr)
    assert ev["event"] == "error" and ev["exit_code"] == 2 and "missing.yaml" in ev["message"]
    r = subprocess.run([curate_bin(), "run", str(tmp_path / "missing.yaml"), "--log-format", "xml"],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2 and "text or json" in r.stderr
