"""lock.dir_lock: one holder of an output dir at a time, also when many starts race for a lock file
left by a crashed run; a killed holder frees the lock at once; the file's pid is only a label."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from pipeline import io, lock
from tests.conftest import ROOT

RACERS, ROUNDS = 8, 200
WON, LOCKED, TWO_HOLDERS, OTHER = 1, 0, 2, -1


def _dead_pid() -> int:
    """The pid of a process of this host that has exited (a crashed run's lock names such a pid)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True).stdout)


def _inside(directory: Path) -> bool:
    """Called while holding the lock: True if nobody else is inside (an O_EXCL marker), False if a
    second holder is."""
    try:
        os.close(os.open(directory / "inside", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def _racer(i: int, directory: Path, barrier, outcome, errors) -> None:
    """Each round: wait for the start, try the lock once; a winner holds it until every racer has
    tried (so exactly one can win a round), then releases it."""
    for _ in range(ROUNDS):
        barrier.wait()  # start: the parent has laid a stale lock
        try:
            with lock.dir_lock(directory):
                alone = _inside(directory)
                outcome[i] = WON if alone else TWO_HOLDERS
                barrier.wait()  # everybody has tried while this one holds the lock
                if alone:
                    os.unlink(directory / "inside")
        except lock.Locked:
            outcome[i] = LOCKED
            barrier.wait()
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the test
            outcome[i] = OTHER
            errors.put(traceback.format_exc())
            barrier.wait()
        barrier.wait()  # the winner has released


def test_racing_starts_on_a_stale_lock_have_exactly_one_winner(tmp_path):
    """Bug fixed: every start that saw the stale `_lock` of a dead pid unlinked it and created its
    own, so two overlapping starts after a crash could both hold the dir."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(RACERS + 1, timeout=120)
    outcome, errors = ctx.Array("i", RACERS), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(i, tmp_path, barrier, outcome, errors), daemon=True) for i in range(RACERS)]
    for p in procs:
        p.start()
    rounds = []
    try:
        for _ in range(ROUNDS):
            (tmp_path / io.LOCK).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
            for j in range(RACERS):
                outcome[j] = 99
            barrier.wait()  # go
            barrier.wait()  # all tried
            barrier.wait()  # released
            rounds.append(sorted(outcome[:]))
    finally:
        barrier.abort()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errs = []
    while not errors.empty():
        errs.append(errors.get())
    assert not errs, errs[0]
    bad = [r for r in rounds if r != [LOCKED] * (RACERS - 1) + [WON]]
    assert not bad, f"{len(bad)} of {ROUNDS} rounds without exactly one holder (1 won, 0 Locked, 2 two holders at once): {bad[:5]}"
    assert not (tmp_path / io.LOCK).exists()  # the last winner removed its lock file


def _churn(directory: str, tries: int, q) -> None:
    wins = clashes = 0
    d = Path(directory)
    for _ in range(tries):
        try:
            with lock.dir_lock(d):
                if _inside(d):
                    wins += 1
                    os.unlink(d / "inside")
                else:
                    clashes += 1
        except lock.Locked:
            pass
    q.put((wins, clashes))


def test_acquire_and_release_churn_never_has_two_holders(tmp_path):
    """Racers that lock and unlock as fast as they can: a start that opened the lock file just before
    its holder removed it must not hold that removed file while another start locks the new one."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_churn, args=(str(tmp_path), 1500, q), daemon=True) for _ in range(RACERS)]
    for p in procs:
        p.start()
    res = [q.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(c for _, c in res) == 0, res
    assert sum(w for w, _ in res) > 0, res


def _hold(directory: Path) -> subprocess.Popen:
    code = "import sys, time\nfrom pipeline import lock\nwith lock.dir_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(600)\n"
    p = subprocess.Popen([sys.executable, "-c", code, str(directory)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_live_holder_excludes_and_a_killed_one_frees_the_lock_at_once(tmp_path):
    holder = _hold(tmp_path)
    try:
        with pytest.raises(lock.Locked) as e:
            with lock.dir_lock(tmp_path):
                pass
        msg = str(e.value)
        assert "\n" not in msg and f"locked by pid {holder.pid} on {socket.gethostname()}" in msg, msg
    finally:
        holder.kill()  # SIGKILL: no cleanup runs
        holder.wait()
    assert (tmp_path / io.LOCK).exists()
    with lock.dir_lock(tmp_path):  # the next start takes it without waiting or a manual delete
        assert json.loads((tmp_path / io.LOCK).read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    assert not (tmp_path / io.LOCK).exists()


def test_the_pid_in_a_leftover_lock_file_is_only_a_label(tmp_path):
    """Bug fixed: a crashed run's `_lock` naming a pid that is alive again (reused by another
    process: pid 1 here) blocked the dir until someone deleted it by hand. Only a held lock counts."""
    (tmp_path / io.LOCK).write_text(json.dumps({"pid": 1, "host": socket.gethostname()}))
    with lock.dir_lock(tmp_path):
        assert json.loads((tmp_path / io.LOCK).read_text())["pid"] == os.getpid()


def test_the_same_process_cannot_take_a_dir_twice(tmp_path):
    with lock.dir_lock(tmp_path):
        with pytest.raises(lock.Locked, match=f"locked by pid {os.getpid()}"):
            with lock.dir_lock(tmp_path):
                pass
        assert (tmp_path / io.LOCK).exists()  # the refused start did not remove the holder's file
    with lock.dir_lock(tmp_path):
        pass
