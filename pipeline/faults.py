"""Fault injection for tests and `bench/fault_injection.py`. Off unless `CURATE_FAULT` is set.

When the variable is unset, every hook is one dict lookup in `os.environ` and returns at once;
nothing is parsed, no file is touched. The variable is read at call time, so a Ray worker sees
what the driver's environment held when Ray started (embedded Ray copies it to its workers).

    CURATE_FAULT=kill_worker:<glob>
        Inside `runner.execute_task`, before the task's function runs, the process running a task
        whose key matches <glob> SIGKILLs itself, once per key: a flag file
        `$CURATE_FAULT_DIR/kill_worker-<stage>-<key>` is created first (O_EXCL), so the retry (or
        the re-run) of that task goes through. <glob> (fnmatch) is matched against the task key
        (`part-00001-0000`) and against `<stage dir name>/<key>` (`filter/part-00001-0000`), so a
        key that several stages share can be aimed at one stage. With Ray the process is a Ray
        worker (Ray sees a crashed worker and retries the task up to `run.ray.max_retries`); with
        `--no-ray` it is the `curate` process itself (the whole run dies, as on a power cut).

    CURATE_FAULT=enospc:<n>[+][:<path-glob>]
        The <n>-th call of `io.atomic_write` (counted over all processes of the run that share
        `$CURATE_FAULT_DIR`, and only over target paths matching <path-glob> when given) raises
        `OSError(errno.ENOSPC, ...)` after writing part of its temp file, as a full disk does.
        With `+`, that write and every later one fail (the disk stays full); without it only the
        <n>-th does (a transient failure, which a task retry survives).

    CURATE_FAULT=kill_put:<glob>
        Inside `remote.Mirror` (outputs on an object store), while a file whose path relative to the
        output URL matches <glob> is being put, once per path: the put is opened, half of the file's
        bytes are written to it, and the process SIGKILLs itself before the put completes.

    Several faults: separate them with `;`, e.g. `kill_worker:filter/*;enospc:3`.

    CURATE_FAULT_DIR: where the once-flags and the write counter live (default:
        `<tmp>/curate-faults-<uid>`). Use a fresh directory per run you inject into; delete it to
        re-arm the faults.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import signal
import tempfile
from pathlib import Path

ENV, DIR_ENV = "CURATE_FAULT", "CURATE_FAULT_DIR"


def _specs() -> list[tuple[str, str]]:
    raw = os.environ.get(ENV)
    if not raw:
        return []
    out = []
    for part in raw.split(";"):
        kind, _, arg = part.strip().partition(":")
        if kind not in ("kill_worker", "enospc", "kill_put"):
            raise ValueError(f"{ENV}: unknown fault {kind!r} in {raw!r}; use kill_worker:<glob>, kill_put:<glob> or enospc:<n>[+][:<glob>]")
        out.append((kind, arg))
    return out


def fault_dir() -> Path:
    d = Path(os.environ.get(DIR_ENV) or Path(tempfile.gettempdir()) / f"curate-faults-{os.getuid()}")
    d.mkdir(parents=True, exist_ok=True)
    return d


def _once(name: str) -> bool:
    """True the first time `name` is claimed (by any process sharing the fault dir)."""
    try:
        os.close(os.open(fault_dir() / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        return True
    except FileExistsError:
        return False


def maybe_kill_worker(out: str, key: str) -> None:
    """Hook of `runner.execute_task`: SIGKILL this process once per matching task key."""
    if ENV not in os.environ:
        return
    stage = Path(out).name
    for kind, glob in _specs():
        if kind != "kill_worker" or not (fnmatch.fnmatchcase(key, glob) or fnmatch.fnmatchcase(f"{stage}/{key}", glob)):
            continue
        if _once(f"kill_worker-{stage}-{key}".replace("/", "_")):
            os.kill(os.getpid(), signal.SIGKILL)


def maybe_kill_put(rel: str, fs, rpath: str, local: Path) -> None:
    """Hook of `remote.Mirror`: die in the middle of putting `local` to `rpath`, once per path."""
    if ENV not in os.environ:
        return
    for kind, glob in _specs():
        if kind == "kill_put" and fnmatch.fnmatchcase(rel, glob) and _once(f"kill_put-{rel}".replace("/", "_")):
            data = Path(local).read_bytes()
            fh = fs.open(rpath, "wb")
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def _next_write(tag: str) -> int:
    """Cross-process counter of matching writes (flock'd file in the fault dir)."""
    import fcntl

    path = fault_dir() / f"enospc-{tag}.count"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.read(fd, 32) or b"0") + 1
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        os.write(fd, str(n).encode())
        return n
    finally:
        os.close(fd)  # releases the lock


def maybe_enospc(path: Path, tmp: Path) -> None:
    """Hook of `io.atomic_write`, called after the temp file is written and before it is renamed:
    raises ENOSPC on the configured write (the partial temp file is left for `atomic_write` to clean)."""
    if ENV not in os.environ:
        return
    for i, (kind, arg) in enumerate(_specs()):
        if kind != "enospc":
            continue
        nth, _, glob = arg.partition(":")
        sticky = nth.endswith("+")
        try:
            n = int(nth.rstrip("+"))
        except ValueError:
            raise ValueError(f"{ENV}: enospc needs a write number, e.g. enospc:3 or enospc:3+, not {arg!r}") from None
        if glob and not fnmatch.fnmatchcase(str(path), glob):
            continue
        k = _next_write(str(i))
        if k == n or (sticky and k > n):
            with open(tmp, "r+b") as fh:  # a full disk leaves a partial file behind
                fh.truncate(max(0, os.path.getsize(tmp) // 2))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected by CURATE_FAULT)", str(path))
