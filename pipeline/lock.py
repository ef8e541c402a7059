"""The output-dir lock: one live run per output dir (`flock` on `<dir>/_lock`)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from pathlib import Path

from pipeline.io import LOCK


class Locked(RuntimeError):
    """Another live run holds the output dir."""


@contextlib.contextmanager
def dir_lock(directory: Path):
    """Exclusive lock on an output dir: `fcntl.flock` on `<dir>/_lock`, held open for the run. The
    kernel drops the lock when its process exits however it dies, so a crashed run leaves no stale
    lock; the file's {pid, host} only names the holder in the message. Two starts racing for the
    dir: one wins, the other gets Locked. On release the file is removed while still locked; a start
    that opened it just before then finds that the path no longer names the inode it locked, and
    tries again on the new file. NFSv4 carries flock as a byte-range lock with lease semantics (a
    dead client's lock expires with its lease), so this also excludes other hosts on NFS; an object
    store or a FUSE mount without locking needs the lease lock described under Shared storage."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = lock_holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise Locked(f"{directory}: locked by pid {holder.get('pid', '?')} on {holder.get('host', '?')}; "
                         "wait for that run to finish (its lock ends when its process exits)") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a file its holder removed on release: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        yield
    finally:
        try:
            path.unlink(missing_ok=True)  # still locked: nobody else holds this inode
        finally:
            os.close(fd)


def lock_holder(fd: int) -> dict:
    """The {pid, host} the holder wrote into the lock file ({} if it has not yet)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}
