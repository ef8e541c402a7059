"""The input file as readers see it, and the line between transient IO and bad data.

A reader raises on transient IO, so that the task fails and the runner (Ray) retries it: an OSError
raised by the input file itself (open, read, seek: EIO, timeouts, connection errors of object
stores) propagates as-is. Decode errors that libraries report as OSError (pyarrow's corrupt pages,
a bad gzip header) come from data already read and are quarantined; a missing file is a `Bad`.
The origin decides, not the type: readers read through `Source`, which records the file's own
errors, and hand every exception to `fatal`, which re-raises what must not be quarantined.
MemoryError always propagates. (HF dataset dirs are opened by `datasets` itself, so their IO
errors cannot be told from corrupt data and are quarantined.)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from pipeline import storage

CHUNK = 1 << 20  # read size for JSONL streams (and for draining WARC payloads)

# OSErrors of the file that retrying will not fix: reported as a Bad naming the path, like today
_NOT_TRANSIENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, storage.StorageError)
_IO_MARK = "_curate_input_io_error"


def mark_io(e: OSError) -> None:
    """Mark an OSError of the input file itself (not of decoding) as transient IO."""
    if not isinstance(e, _NOT_TRANSIENT):
        try:
            setattr(e, _IO_MARK, True)
        except AttributeError:  # pragma: no cover - exotic exception class without __dict__
            pass


def fatal(e: BaseException, src: "Source | None" = None) -> None:
    """Re-raise what must never be quarantined: MemoryError, and an IO error of the input file
    (the one `src` saw, even if a library turned it into something else, or one marked as such),
    so that the task fails and is retried. Returns when `e` is a data problem."""
    if isinstance(e, MemoryError):
        raise e
    err = src.error if src is not None and src.error is not None else e if getattr(e, _IO_MARK, False) else None
    if err is not None:
        raise err


class Source:
    """The raw input file as readers and decoders see it. Counts the bytes read (`pos`) and records
    an OSError that the file's own open/read/seek raised (`error`): that is IO, never data."""

    def __init__(self, fh):
        self._fh, self.pos, self.error = fh, 0, None

    def _io(self, e: OSError) -> None:
        if not isinstance(e, _NOT_TRANSIENT):
            mark_io(e)
            self.error = e

    def _call(self, fn, *args):
        """`fn(*args)` on the file; an OSError it raises is recorded as IO, then re-raised."""
        try:
            return fn(*args)
        except OSError as e:
            self._io(e)
            raise

    def read(self, n: int = -1) -> bytes:
        data = self._call(self._fh.read, n)
        self.pos += len(data)
        return data

    def readinto(self, b) -> int:
        n = self._call(self._fh.readinto, b)
        self.pos += n or 0
        return n

    def readline(self, limit: int = -1) -> bytes:
        data = self._call(self._fh.readline, limit)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = self._call(self._fh.seek, offset, whence)
        return self.pos

    def tell(self) -> int:
        return self._call(self._fh.tell)

    def head(self, n: int) -> bytes:
        """The first `n` bytes, leaving the position at 0 (peek where the file has it: fsspec files do not)."""
        return self._call(self._head, n)

    def _head(self, n: int) -> bytes:
        if hasattr(self._fh, "peek"):
            return self._fh.peek(n)[:n]
        data = self._fh.read(n)
        self._fh.seek(0)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._fh.seekable() if hasattr(self._fh, "seekable") else True

    @property
    def closed(self) -> bool:
        return bool(getattr(self._fh, "closed", False))

    def close(self) -> None:  # the owner (`open_input`) closes the real file
        pass


def input_size(path: str) -> int:
    """Size of the input file; a storage that does not answer is transient IO."""
    try:
        return storage.size(path)
    except OSError as e:
        mark_io(e)
        raise


@contextmanager
def open_input(path: str) -> Iterator[Source]:
    """The input file as a `Source`; an OSError opening it is transient IO unless it is a missing
    file, a directory, a permission or an unusable URL."""
    try:
        fh = storage.open_binary(path)
    except OSError as e:
        mark_io(e)
        raise
    with fh:
        yield Source(fh)

