"""Input paths that are fsspec URLs (`s3://`, `gs://`, `hf://`, `memory://`, `file://` ...).

Local paths (no `scheme://`) never go through fsspec: callers keep their `os`/`open` fast path and
call these helpers only when `is_url(path)`. Every helper also accepts a local path, so code that
does not care (config validation, planning) can call `exists(p)` for either kind.

URLs returned by `glob`/`walk_files` are `fs.unstrip_protocol(path)`, e.g. `memory://bucket/x`
comes back as `memory:///bucket/x` and `s3://b/k` as `s3://b/k`; compare inputs with `relpath`,
not by string. Errors are one line: a missing package (`pip install s3fs`) or an unknown scheme is
a `StorageError` naming the URL; a missing object is `FileNotFoundError` naming the URL.
Credentials come from each filesystem's usual places (AWS_* variables, ~/.aws, GOOGLE_APPLICATION_
CREDENTIALS, instance metadata), never from the config file.
"""
from __future__ import annotations

import glob as _glob
import os
import posixpath
import re
from typing import IO, Iterator

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


class StorageError(OSError):
    """A URL whose filesystem cannot be used (unknown scheme, missing fsspec backend package)."""


def is_url(path) -> bool:
    """True for `scheme://...` (any fsspec protocol, `file://` included); False for local paths."""
    return isinstance(path, str) and bool(_URL.match(path))


def scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if is_url(url) else ""


def fs_and_path(url: str):
    """(fsspec filesystem, path without protocol) for a URL; StorageError (one line) if unusable."""
    try:
        from fsspec.core import url_to_fs

        return url_to_fs(url)
    except ImportError as e:  # fsspec knows the protocol but its package is missing (s3fs, gcsfs ...)
        msg = " ".join(str(e).split())
        raise StorageError(f"{url}: cannot use {scheme(url)}:// ({msg}); pip install the fsspec backend for it") from None
    except ValueError as e:  # "Protocol not known: xyz"
        raise StorageError(f"{url}: unsupported URL ({' '.join(str(e).split())})") from None


def _url(fs, path: str) -> str:
    return fs.unstrip_protocol(path)


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = fs_and_path(path)
    return fs.exists(p)


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = fs_and_path(path)
    return fs.isdir(p)


def isfile(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    fs, p = fs_and_path(path)
    return fs.isfile(p)


def size(path: str) -> int:
    if not is_url(path):
        return os.path.getsize(path)
    fs, p = fs_and_path(path)
    return int(fs.size(p))


def join(path: str, *parts: str) -> str:
    return posixpath.join(path, *parts) if is_url(path) else os.path.join(path, *parts)


def basename(path: str) -> str:
    if is_url(path):
        return posixpath.basename(path.split("://", 1)[1].rstrip("/"))
    return os.path.basename(path)


def has_magic(path: str) -> bool:
    """A glob pattern? (for URLs only the part after the scheme counts)."""
    return _glob.has_magic(path.split("://", 1)[1] if is_url(path) else path)


def glob(pattern: str) -> list[str]:
    """Paths matching `pattern` (`**` recurses), sorted; URLs for a URL pattern."""
    if not is_url(pattern):
        return sorted(_glob.glob(pattern, recursive=True))
    fs, p = fs_and_path(pattern)
    parts = p.split("/")
    fixed = next((i for i, c in enumerate(parts) if _glob.has_magic(c)), len(parts))
    wild = "/".join(parts[fixed:])
    dotted = wild.startswith(".") or "/." in wild  # like glob.glob: wildcards skip hidden names
    out = []
    for m in fs.glob(p):
        rest = m.rstrip("/").split("/")[fixed:]
        if dotted or not any(c.startswith(".") for c in rest):
            out.append(_url(fs, m))
    return sorted(out)


def walk_files(root: str, skip_dir=lambda name: False, dir_is_file=lambda path: False) -> Iterator[str]:
    """Files under the URL `root`, depth first in sorted order, as URLs. Directories for which
    `skip_dir(name)` is true are not entered; those for which `dir_is_file(url)` is true are
    yielded as one item instead of being entered (e.g. a saved HF dataset)."""
    fs, p = fs_and_path(root)
    for base, dirs, files in fs.walk(p, topdown=True):
        keep = []
        for d in sorted(dirs):
            if skip_dir(d):
                continue
            full = _url(fs, posixpath.join(base, d))
            if dir_is_file(full):
                yield full
            else:
                keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            yield _url(fs, posixpath.join(base, name))


def relpath(path: str, root: str) -> str:
    """`path` relative to `root` (POSIX separators); works across URL spellings of one filesystem
    (`memory://b/x` vs `memory:///b/x`) because both are compared without their protocol."""
    if not is_url(path) and not is_url(root):
        return os.path.relpath(path, root).replace(os.sep, "/")
    return posixpath.relpath(_strip(path), _strip(root))


def _strip(path: str) -> str:
    if not is_url(path):
        return os.path.abspath(path)
    fs, p = fs_and_path(path)
    return p if p.startswith("/") else "/" + p


def open_binary(path: str) -> IO[bytes]:
    """A binary, seekable-where-possible read handle (use as a context manager)."""
    if not is_url(path):
        return open(path, "rb")
    fs, p = fs_and_path(path)
    return fs.open(p, "rb")


def stat_key(path: str) -> str:
    """What changes when the input changes, cheaply (for input fingerprints): size plus mtime /
    ETag / generation / creation time, whichever the filesystem reports; 'missing' if absent."""
    if not is_url(path):
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        return f"{st.st_size}\0{int(st.st_mtime)}"
    fs, p = fs_and_path(path)  # StorageError propagates: a fingerprint must not hide it
    try:
        info = fs.info(p)
    except FileNotFoundError:
        return "missing"
    tag = next((info[k] for k in ("ETag", "etag", "md5Hash", "generation", "mtime", "LastModified",
                                  "last_modified", "updated", "created") if info.get(k) is not None), "")
    return f"{info.get('size')}\0{tag}"
