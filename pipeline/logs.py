"""Run events for people (text: tqdm bars, as always) or for machines (json: one object per line).

    configure("json")   # or CURATE_LOG_FORMAT=json in the environment
    event("task_done", stage="filter", key="part-00001-0000", rows=812, seconds=1.3)

In json mode every event is one line on stderr:
    {"ts": "2026-11-23T21:58:45.417Z", "level": "info", "event": "task_done", "stage": ..., ...}
and Python log records (the `curate` logger and the rest) are written the same way with
`"event": "log"`; the runner draws no progress bars. Events the runner emits:

    stage_start  stage, out, tasks, done (already finished, resumed), pending
    task_done    stage, key, rows (rows in), kept, rejected, quarantined, seconds
    task_retry   stage, key, attempt, error    (visible with --no-ray; Ray retries crashed
                 workers and raised tasks itself and does not tell the driver)
    task_failed  stage, key, error (one line)  level "error"
    stage_end    stage, status (complete|incomplete), tasks, done, failed, rows_in, kept,
                 rejected, quarantined, seconds

In text mode `event` does nothing: the progress bar and the end-of-run summary are the output.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

FORMATS = ("text", "json")
_state = {"fmt": None}


def configure(fmt: str) -> None:
    """Select the output format of this process: 'text' (default) or 'json'."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format: use text or json, not {fmt!r}")
    _state["fmt"] = fmt
    os.environ["CURATE_LOG_FORMAT"] = fmt  # subprocesses (and a re-configured logging) agree
    root = logging.getLogger()
    if fmt == "json":
        if not root.handlers:
            root.addHandler(logging.StreamHandler(sys.stderr))
        for h in root.handlers:
            h.setFormatter(JsonFormatter())
    else:
        for h in root.handlers:
            if isinstance(h.formatter, JsonFormatter):
                h.setFormatter(logging.Formatter(logging.BASIC_FORMAT))


def fmt() -> str:
    f = _state["fmt"] or os.environ.get("CURATE_LOG_FORMAT") or "text"
    return f if f in FORMATS else "text"


def json_mode() -> bool:
    return fmt() == "json"


def _ts(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def _line(obj: dict) -> str:
    return json.dumps(obj, default=str, ensure_ascii=False, separators=(",", ":"))


def event(name: str, level: str = "info", **fields) -> None:
    """One structured event; in text mode a no-op."""
    if not json_mode():
        return
    rec = {"ts": _ts(), "level": level, "event": name, **fields}
    try:
        sys.stderr.write(_line(rec) + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # closed or broken stderr must not fail a run
        pass


class JsonFormatter(logging.Formatter):
    """Log records as the same one-line JSON objects as `event`."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += " | " + " ".join(self.formatException(record.exc_info).split())
        return _line({"ts": _ts(record.created), "level": record.levelname.lower(), "event": "log",
                      "logger": record.name, "message": " ".join(msg.split())})
