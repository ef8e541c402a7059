"""Output dirs on object stores (`run.output: s3://bucket/run`, `gs://...`, any fsspec URL).

Stages keep writing local files: a run whose output is a URL runs in a local *staging* mirror of it
(`$CURATE_STAGING/<tail>-<hash of the URL>`, default `~/.cache/curate/staging`), and this module
keeps the bucket in step with it, in an order that makes the bucket alone enough to resume from:

- whole-file puts only (an object store never shows half an object; a put killed midway leaves
  nothing), data before markers: when a task finishes, its files are put, then its `_done/` marker
  (`push_task`); a marker in the bucket always means its files are there too.
- at the start and end of every pass its own dir is synced in the same order: data, markers, side
  files (`README.md`, `_stats.json`, ...), `_manifest.json` last, together with the files the
  driver process wrote elsewhere in staging since the last sync (`recording`: a multi-pass stage's
  models, weights, index files between its passes), so a pass's markers never reach the bucket
  before what the driver wrote for it; no pass walks the rest of the tree. The driver syncs a
  stage's whole dir when the stage ends, and the whole tree when the run ends.
- `pull` (at the start of a run) makes the staging mirror equal to what the bucket can vouch for:
  markers whose listed files are all there at the recorded size, those files, and every file no
  marker governs. A Parquet file in a marker dir that no marker lists (its task was killed before
  its marker was put) is an orphan: not pulled, and deleted from the bucket when its pass completes
  (`prune`), as local orphans are. Local files the bucket lacks are removed, so a fresh machine and
  a reused one resume from the same state.
- one live run per output URL: a lease object `_lock.json` made by a conditional create (S3
  `If-None-Match: *`), refreshed while the run lives; an expired lease is taken over.

Staging must be visible to every process that runs tasks: one machine, or a staging dir on
storage all Ray nodes mount at the same path (see README, "Outputs on object stores").
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

from pipeline import faults, io, logs, storage
from pipeline.lock import Locked

STAGING_ENV, TTL_ENV = "CURATE_STAGING", "CURATE_LEASE_TTL"
REMOTE_FILE, PUSHED_FILE = ".curate-remote.json", ".curate-pushed.log"
LEASE = "_lock.json"
WRITTEN = "_written"  # key of runner.execute_task's result: every file the task wrote (io.recording_writes)
SIDE = {io.STATS, io.CARD, "_input_shards.json", "_run_summary.json"}
_MIRRORS: dict[str, "Mirror"] = {}


def staging_for(url: str) -> Path:
    """The local staging dir of an output URL (created, with the URL recorded in it)."""
    url = url.rstrip("/")
    base = Path(os.environ.get(STAGING_ENV) or Path.home() / ".cache" / "curate" / "staging").expanduser().absolute()
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://", 1)[1])[-40:].strip("-")
    d = base / f"{tail}-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    d.mkdir(parents=True, exist_ok=True)
    if not (d / REMOTE_FILE).exists():
        io.write_json({"url": url}, d / REMOTE_FILE)
    return d


def mirror_for(path: Path | str) -> "Mirror | None":
    """The mirror whose staging dir holds `path`, or None for a plain local dir."""
    path = Path(path).absolute()
    for p in (path, *path.parents):
        if str(p) in _MIRRORS:
            return _MIRRORS[str(p)]
        if (p / REMOTE_FILE).is_file():
            _MIRRORS[str(p)] = Mirror(io.read_json(p / REMOTE_FILE)["url"], p)
            return _MIRRORS[str(p)]
    return None


def _rank(rel: str) -> int:
    """Upload order: data 0, markers 1, side files 2, manifests 3."""
    parts = rel.split("/")
    if parts[-1] == io.MANIFEST:
        return 3
    if parts[-1] in SIDE:
        return 2
    return 1 if len(parts) > 1 and parts[-2] == io.DONE else 0


def _marker_dir(rel: str) -> str:
    """The dataset dir of a marker `<dir>/_done/<key>.json` ('' at the top)."""
    return rel.rsplit("/", 2)[0] if rel.count("/") >= 2 else ""


def _skip(name: str) -> bool:
    return name in (REMOTE_FILE, PUSHED_FILE, io.LOCK, LEASE) or io.TMP_TAG in name


def _same(p: Path, info: dict) -> bool:
    """A local file holds the object's bytes: same size and MD5 (S3's ETag of a single-part put,
    GCS's md5Hash); an object without a plain MD5 counts as different (downloaded again)."""
    try:
        if p.stat().st_size != int(info["size"]):
            return False
    except OSError:
        return False
    etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if re.fullmatch(r"[0-9a-f]{32}", etag):
        want = etag
    elif info.get("md5Hash"):
        want = base64.b64decode(info["md5Hash"]).hex()
    else:
        return False
    h = hashlib.md5(usedforsecurity=False)
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == want


class Mirror:
    def __init__(self, url: str, root: Path):
        self.url, self.root = url.rstrip("/"), Path(root)
        self.lost: str | None = None  # set when another run took this run's lease (checked between stages)
        self.fs, self.base = storage.fs_and_path(self.url)
        self.base = self.base.rstrip("/")
        self._pushed = self._load_record()
        self._written: list[Path] | None = None  # see recording()

    # ------------------------------------------------------------ names and the pushed record
    def rel(self, local: Path) -> str:
        return Path(local).absolute().relative_to(self.root).as_posix()

    def rpath(self, rel: str) -> str:
        return self.base if rel in ("", ".") else f"{self.base}/{rel}"

    def _load_record(self) -> dict[str, str]:
        rec = {}
        with contextlib.suppress(OSError):
            for line in (self.root / PUSHED_FILE).read_text().splitlines():
                rel, _, st = line.rpartition("\t")
                rec[rel] = st
        return rec

    def _note(self, rel: str, st: str) -> None:
        self._pushed[rel] = st
        with open(self.root / PUSHED_FILE, "a") as fh:
            fh.write(f"{rel}\t{st}\n")

    @staticmethod
    def _stat(p: Path) -> str:
        st = p.stat()
        return f"{st.st_size}:{st.st_mtime_ns}"

    # ------------------------------------------------------------ push
    def put(self, p: Path) -> None:
        rel = self.rel(p)
        st = self._stat(p)
        if self._pushed.get(rel) == st:
            return
        faults.maybe_kill_put(rel, self.fs, self.rpath(rel), p)  # no-op unless CURATE_FAULT is set
        self.fs.put_file(str(p), self.rpath(rel))
        self._note(rel, st)

    def _local_files(self, under: Path) -> list[Path]:
        out = []
        for d, dirs, files in os.walk(under):
            dirs[:] = [x for x in dirs if not x.startswith(".")]
            out += [Path(d) / f for f in files if not _skip(f)]
        return out

    def sync(self, under: Path | None = None) -> None:
        """Put every file under `under` (default: all) changed since it was last put: data,
        then markers, then side files, manifests last."""
        self._put_ranked(self._local_files(Path(under or self.root)))

    def _put_ranked(self, files) -> None:
        for p in sorted(set(files), key=lambda p: (_rank(self.rel(p)), self.rel(p))):
            if p.exists():
                self.put(p)

    @contextlib.contextmanager
    def recording(self):
        """While the run lives, note the files this process writes through the engine's atomic
        writes (io.recording_writes; a task run in this process records its own, put with its
        marker): what `sync_pass` puts besides the pass's dir."""
        with io.recording_writes() as written:
            self._written = written
            try:
                yield
            finally:
                self._written = None

    def sync_pass(self, out: Path) -> None:
        """A pass's sync: every file under its dir `out`, and the files the driver wrote elsewhere
        in staging since the last pass's sync (see `recording`), in `sync`'s order. Nothing else
        of the tree is walked or put (other stages' dirs are synced when they end)."""
        out = Path(out).absolute()
        noted = list(self._written or ())
        extra = [q for q in (Path(p).absolute() for p in noted)  # as _local_files: no hidden dirs, no lock/temp files
                 if q.is_relative_to(self.root) and not q.is_relative_to(out) and not _skip(q.name)
                 and not any(d.startswith(".") for d in q.relative_to(self.root).parts[:-1])]
        self._put_ranked([*self._local_files(out), *extra])
        if self._written is not None:
            del self._written[:len(noted)]  # put: not again at the next pass

    def push_task(self, out: Path, marker: dict) -> None:
        """A finished task: its files (whole-file puts; those its marker lists, then any other it
        wrote, e.g. dedup's `_index/` shard), then its marker."""
        for sub, key in (("", "kept_files"), (io.REJECTED, "rejected_files"), (io.QUARANTINE, "quarantine_files")):
            for f in marker.get(key, []):
                self.put(Path(out) / sub / io.safe_name(f["name"]))
        for p in sorted(marker.get(WRITTEN, [])):
            if Path(p).is_relative_to(self.root) and Path(p).exists():
                self.put(Path(p))
        self.put(io.marker_path(Path(out), marker["key"]))

    def prune(self, under: Path) -> None:
        """Delete objects under `under` that the staging dir no longer holds (orphans, --force)."""
        rel0 = self.rel(under)
        for path in self._find(self.rpath(rel0)):
            rel = self._relof(path)
            if not _skip(rel.rsplit("/", 1)[-1]) and not (self.root / rel).exists():
                self.fs.rm_file(path)
                self._pushed.pop(rel, None)

    # ------------------------------------------------------------ pull
    def _find(self, rpath: str) -> dict[str, dict]:
        try:
            return self.fs.find(rpath, detail=True)
        except FileNotFoundError:
            return {}

    def _relof(self, path: str) -> str:
        return path[len(self.base):].lstrip("/")

    def pull(self) -> None:
        """Make the staging dir equal to what the bucket vouches for (see the module doc)."""
        remote = {self._relof(p): i for p, i in self._find(self.base).items() if i.get("type") != "directory"}
        remote = {r: i for r, i in remote.items() if r and not _skip(r.rsplit("/", 1)[-1])}
        markers = {r for r in remote if _rank(r) == 1 and r.endswith(".json")}
        listed, dropped = set(), set()
        blobs = self.fs.cat([self.rpath(r) for r in sorted(markers)], on_error="return") if markers else {}
        blobs = {self._relof(k): v for k, v in blobs.items()}
        for r in sorted(markers):
            d = _marker_dir(r)
            try:
                m = json.loads(blobs[r])
                files = [(f"{d}/{sub}/{f['name']}".replace("//", "/").lstrip("/"), f.get("bytes"))
                         for sub, key in (("", "kept_files"), (io.REJECTED, "rejected_files"), (io.QUARANTINE, "quarantine_files"))
                         for f in m.get(key, [])]
            except (ValueError, KeyError, TypeError, AttributeError):
                files = None
            if files is None or any(f not in remote or (b is not None and int(remote[f]["size"]) != b) for f, b in files):
                dropped.add(r)  # its task runs again
            else:
                listed.update(f for f, _ in files)
        marker_dirs = {_marker_dir(r) for r in markers}
        data_dirs = {f"{d}/{s}".strip("/") for d in marker_dirs for s in ("", io.REJECTED, io.QUARANTINE)}
        trusted = {r for r in remote if r not in dropped
                   and not (r.endswith(".parquet") and (r.rsplit("/", 1)[0] if "/" in r else "") in data_dirs and r not in listed)}
        for p in self._local_files(self.root):
            if self.rel(p) not in trusted:
                p.unlink()
        (self.root / PUSHED_FILE).unlink(missing_ok=True)
        self._pushed = {}
        get = sorted(r for r in trusted if not _same(self.root / r, remote[r]))
        tmps = [self.root / f"{r}{io.TMP_TAG}{os.getpid()}" for r in get]
        for t in tmps:
            t.parent.mkdir(parents=True, exist_ok=True)
        if get:
            self.fs.get([self.rpath(r) for r in get], [str(t) for t in tmps])  # concurrent downloads
        for r, t in zip(get, tmps):
            os.replace(t, self.root / r)
        for r in sorted(trusted):
            self._note(r, self._stat(self.root / r))
        logs.event("remote_pull", url=self.url, staging=str(self.root), files=len(trusted),
                   skipped=len(remote) - len(trusted))

    # ------------------------------------------------------------ lease
    @contextlib.contextmanager
    def lease(self):
        """One live run per output URL: `<url>/_lock.json` made by a conditional create."""
        ttl = float(os.environ.get(TTL_ENV) or 120)
        path = self.rpath(LEASE)
        me = {"owner": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid(), "ttl": ttl}

        def body() -> bytes:
            return json.dumps({**me, "expires": time.time() + ttl}).encode()

        if not self._create(path, body()):
            cur = self._read_lease(path)
            if cur is not None and cur.get("expires", 0) > time.time():
                left = int(cur["expires"] - time.time())
                raise Locked(f"{self.url}: locked by pid {cur.get('pid', '?')} on {cur.get('host', '?')} (lease {LEASE}, "
                             f"expires in {left}s unless renewed); wait for that run to finish, or delete {self.url}/{LEASE} "
                             "if it is dead")
            logs.event("lease_takeover", level="warning", url=self.url, stale=cur)
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(path)
            if not self._create(path, body()):
                raise Locked(f"{self.url}: another run took over its stale lease ({LEASE}) at the same time; wait for it to finish")
        stop = threading.Event()
        self.lost = None

        def renew() -> None:
            while not stop.wait(ttl / 3):
                cur = self._read_lease(path)
                if cur is None or cur.get("owner") != me["owner"]:
                    self.lost = (f"{self.url}: this run lost its lease ({LEASE}) to pid {(cur or {}).get('pid', '?')} on "
                                 f"{(cur or {}).get('host', '?')}; stopped: re-run with --resume once that run has finished")
                    logs.event("lease_lost", level="error", url=self.url, holder=cur)
                    return
                self.fs.pipe_file(path, body())

        t = threading.Thread(target=renew, name="curate-lease", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
            cur = self._read_lease(path)
            if cur is not None and cur.get("owner") == me["owner"]:
                self.fs.rm_file(path)

    def _create(self, path: str, data: bytes) -> bool:
        try:
            self.fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except OSError as e:  # s3fs maps S3's 412 PreconditionFailed to a generic OSError on some versions
            if "PreconditionFailed" in str(e) or "412" in str(e):
                return False
            raise

    def _read_lease(self, path: str) -> dict | None:
        try:
            cur = json.loads(self.fs.cat_file(path))
            self.fs.invalidate_cache(path)
        except FileNotFoundError:
            return None
        except ValueError:
            return {}
        return cur if isinstance(cur, dict) else {}
