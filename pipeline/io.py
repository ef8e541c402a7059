"""Dataset directory IO: atomic Parquet/JSON writes, shard writer, completion markers, manifest.

Layout of a dataset directory (one per stage):

    part-*.parquet          kept documents (zstd)
    _rejected/part-*.parquet dropped documents: all columns + reason + stage
    _quarantine/part-*.parquet unreadable input / rows a stage could not process: raw + error
    _done/<task>.json       per-task completion marker with its counters, written last
    _manifest.json          stage, version, config hash, input fingerprint, per-shard accounting
    _stats.json             merged counters (reasons, per source), timings
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import faults

REJECTED, QUARANTINE, DONE = "_rejected", "_quarantine", "_done"
MANIFEST, STATS, LOCK = "_manifest.json", "_stats.json", "_lock"
TMP_TAG = ".tmp-"
PARQUET_OPTS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


def safe_name(name: str) -> str:
    """Shard/task names are file names inside the output dir; refuse anything that could escape it."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise ValueError(f"invalid shard name {name!r}: must be a plain file name")
    return name


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class DiskFull(OSError):
    """A write failed because the output filesystem is full (ENOSPC/EDQUOT). Its message is one
    line: what failed, where, and what to do. Constructed as DiskFull(errno, message) so that it
    pickles (Ray ships task exceptions to the driver)."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full(e: BaseException, path: Path) -> DiskFull | None:
    """`e` as a DiskFull naming `path`, when `e` is a no-space error (also pyarrow's, which may
    carry the errno only in its text); else None."""
    if isinstance(e, DiskFull):
        return e
    code = getattr(e, "errno", None)
    if isinstance(e, OSError) and (code in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e)):
        why = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
        return DiskFull(code or errno.ENOSPC, f"disk full: {why} writing {path}; free space (or choose another "
                                              "output dir) and re-run: finished shards are kept")
    return None


_WRITTEN: list[Path] | None = None  # what atomic_write completed while a task (runner.execute_task) or a run into a URL (remote.Mirror.recording) records


@contextlib.contextmanager
def recording_writes():
    """Collect the paths `atomic_write` completes in this process while the block runs (a task's
    files, also those its marker does not list, for outputs on object stores: pipeline/remote.py)."""
    global _WRITTEN
    prev, _WRITTEN = _WRITTEN, []
    try:
        yield _WRITTEN
    finally:
        _WRITTEN = prev


def atomic_write(path: Path, write) -> None:
    """Write via `write(tmp_path)` to a temp name in the same dir, fsync, rename over `path`.
    On any failure the temp file is removed and `path` is untouched (a full disk raises DiskFull)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}{TMP_TAG}{os.getpid()}")
    try:
        write(tmp)
        faults.maybe_enospc(path, tmp)  # no-op unless CURATE_FAULT is set
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = disk_full(e, path)
        if full is not None and full is not e:
            raise full from e
        raise
    _fsync_dir(path.parent)
    if _WRITTEN is not None:
        _WRITTEN.append(path)


def write_parquet(table: pa.Table, path: Path, row_group_size: int | None = None) -> None:
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp, row_group_size=row_group_size, **PARQUET_OPTS))


def write_npy(arr, path: Path) -> None:
    """One numpy array as .npy (np.load with mmap_mode reads it without copying)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)

    atomic_write(Path(path), write)


def concat_npy(files: list[Path], path: Path) -> None:
    """1-D .npy files concatenated into one .npy (the bytes np.save(np.concatenate(...)) writes),
    one part in memory at a time: the parts are memory-mapped and copied into a memory-mapped output."""
    parts = [np.load(f, mmap_mode="r") for f in files]
    dtype = np.result_type(*parts) if parts else np.dtype(np.float64)

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(sum(len(p) for p in parts),))
        at = 0
        for p in parts:
            out[at:at + len(p)] = p
            at += len(p)
        out.flush()
        del out

    atomic_write(Path(path), write)


PART_INDEX_ROWS = 1 << 14  # rows per row group of a part index: a reader of one part decodes a few of them


def write_part_index(table: pa.Table, path: Path) -> str:
    """A task index (which files / row groups each reducer reads): `table` with an int64 `part`
    column, written sorted by part (stable) in small row groups, so `read_part_index` of one part
    reads only its rows (row-group statistics). Tasks then get this path and their part, O(1)
    arguments, instead of lists that grow with the number of shards. A `file` column is stored
    relative to the index's directory (the index is the same bytes wherever the run dir is).
    Returns the path."""
    if "file" in table.column_names:
        rel = [os.path.relpath(f, Path(path).parent) for f in table.column("file").to_pylist()]
        table = table.set_column(table.column_names.index("file"), "file", pa.array(rel, pa.string()))
    if table.num_rows:
        table = table.take(np.argsort(table.column("part").to_numpy(), kind="stable"))
    atomic_write(Path(path), lambda tmp: pq.write_table(table, tmp, row_group_size=PART_INDEX_ROWS, **PARQUET_OPTS))
    return str(path)


def read_part_index(path: str | Path, part: int) -> pa.Table:
    """The rows of one part of a `write_part_index` file, in the order they were given (`file`
    resolved against the index's directory)."""
    t = pq.read_table(path, filters=[("part", "=", int(part))])
    if "file" in t.column_names:
        base = Path(path).parent
        t = t.set_column(t.column_names.index("file"), "file",
                         pa.array([os.path.normpath(base / f) for f in t.column("file").to_pylist()], pa.string()))
    return t


def write_npz(path: Path, arrays: dict) -> None:
    """An uncompressed .npz of `arrays`, atomically (np.savez to the open temp file: no suffix added)."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(Path(path), write)


def content_hash(obj: Any) -> str:
    """The content hash used for config hashes and cache keys: sha256 of the sorted JSON, 16 hex."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json(obj: Any, path: Path) -> None:
    data = json.dumps(obj, indent=1, sort_keys=True, default=str).encode()
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


CARD = "README.md"


def dataset_card(title: str, configs: list[tuple[str, list[str]]] | None = None, body: str = "") -> str:
    """An HF dataset card whose YAML `configs` tell `datasets.load_dataset(<dir>)` which files to
    read: without it HF reads every Parquet file below the dir, `_rejected/` and `_work/` included
    (measured), and picks its builder by the most common extension. `default` = the kept shards."""
    configs = [("default", ["part-*.parquet"])] + list(configs or [])
    yml = "".join(f"- config_name: {name}\n  data_files:\n  - split: train\n    path:\n" + "".join(f"    - {f}\n" for f in files)
                  for name, files in configs)
    return f"---\nconfigs:\n{yml}---\n# {title}\n\n{body}"


def write_dataset_card(out: Path, stage: str) -> None:
    """The default card of a stage's dataset dir (a stage may write a richer one first)."""
    text = dataset_card(f"curate {stage} output", body=(
        "Written by `curate`. `datasets.load_dataset(<this dir>)` reads the kept documents (`part-*.parquet`);\n"
        "dropped ones are in `_rejected/`, unreadable input in `_quarantine/`, counts in `_manifest.json`.\n"))
    atomic_write(Path(out) / CARD, lambda tmp: tmp.write_text(text))


def read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ShardWriter:
    """Buffers tables and writes numbered shards `<prefix>-NNNN.parquet` (or `<prefix>.parquet`
    when `single` is set) once `target_rows` or `target_bytes` is reached. Names depend only on the
    prefix and the order of rows, so a retried task rewrites exactly the same files."""

    directory: Path
    prefix: str
    target_rows: int = 50_000
    target_bytes: int = 256 << 20
    single: bool = False
    row_group_size: int | None = None  # rows per Parquet row group (None: pyarrow's default, one group here)
    written: list[dict] = field(default_factory=list)
    _buf: list[pa.Table] = field(default_factory=list)
    _rows: int = 0
    _bytes: int = 0

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            # Take as many rows as still fit in the current shard (all of them for `single`).
            room = table.num_rows if self.single else self.target_rows - self._rows
            head, table = table.slice(0, room), table.slice(room)
            self._buf.append(head)
            self._rows += head.num_rows
            self._bytes += head.nbytes
            if not self.single and (self._rows >= self.target_rows or self._bytes >= self.target_bytes):
                self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        table = pa.concat_tables(self._buf, promote_options="permissive").combine_chunks()
        name = f"{self.prefix}.parquet" if self.single else f"{self.prefix}-{len(self.written):04d}.parquet"
        path = Path(self.directory) / safe_name(name)
        write_parquet(table, path, self.row_group_size)
        self.written.append({"name": name, "rows": table.num_rows, "bytes": path.stat().st_size, "sha256": sha256_file(path)})
        self._buf, self._rows, self._bytes = [], 0, 0

    def close(self) -> list[dict]:
        self.flush()
        return self.written


def prepare_dir(out: Path) -> None:
    for sub in ("", REJECTED, QUARANTINE, DONE):
        (out / sub).mkdir(parents=True, exist_ok=True)
    # Leftovers of a killed writer are never valid output.
    for sub in ("", REJECTED, QUARANTINE, DONE):
        for p in (out / sub).glob(f"*{TMP_TAG}*"):
            p.unlink(missing_ok=True)


def clear_dir(out: Path) -> None:
    """Remove a stage's output (used by --force). Only the contract's own files are touched."""
    if not out.exists():
        return
    for sub in (REJECTED, QUARANTINE, DONE, "_work"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for p in out.glob("part-*.parquet*"):
        p.unlink()
    for name in (MANIFEST, STATS, CARD):
        (out / name).unlink(missing_ok=True)


def marker_path(out: Path, key: str) -> Path:
    return Path(out) / DONE / f"{safe_name(key)}.json"


def read_marker(out: Path, key: str) -> dict | None:
    """A task's marker, if the task finished and all its files are still there and intact: each file
    listed must exist, have the size the marker recorded and (Parquet) end with the footer magic.
    A truncated or replaced shard thus makes its task run again. (Same-size corruption inside a file
    would need a sha256 over all output; `verify_marker(..., sha256=True)` does that.)"""
    return verify_marker(out, key)


def verify_marker(out: Path, key: str, sha256: bool = False) -> dict | None:
    p = marker_path(out, key)
    if not p.exists():
        return None
    try:
        m = read_json(p)
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict):
        return None
    for sub, files in (("", m.get("kept_files", [])), (REJECTED, m.get("rejected_files", [])), (QUARANTINE, m.get("quarantine_files", []))):
        for f in files:
            try:
                path = Path(out) / sub / safe_name(f["name"])
            except (ValueError, KeyError, TypeError):  # not a marker this code wrote
                return None
            if not _file_intact(path, f, sha256):
                return None
    return m


def _file_intact(path: Path, entry: dict, sha256: bool) -> bool:
    try:
        size = path.stat().st_size
    except OSError:
        return False
    if "bytes" in entry and size != entry["bytes"]:
        return False
    if path.suffix == ".parquet":
        if size < 12:
            return False
        try:
            with open(path, "rb") as fh:
                fh.seek(-4, os.SEEK_END)
                if fh.read(4) != b"PAR1":
                    return False
        except OSError:
            return False
    return not (sha256 and "sha256" in entry and sha256_file(path) != entry["sha256"])


def shard_files(directory: Path) -> list[Path]:
    """Kept shards of a dataset dir in name order."""
    return sorted(p for p in Path(directory).glob("part-*.parquet") if TMP_TAG not in p.name)


def shard_rows(paths: list[Path]) -> int:
    """Rows of these Parquet shards, from their footers."""
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def fingerprint(paths: list[str | Path], stat_keys: dict[str, str] | None = None) -> str:
    """Cheap input fingerprint: names, sizes and mtimes (content hashes would read terabytes).
    `stat_keys`: `storage.stat_key` of some paths, already taken (not stat'ed again)."""
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        if stat_keys and p in stat_keys:  # same bytes as below for a local path
            h.update(f"{p}\0{stat_keys[p]}\n".encode())
            continue
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()[:16]


def written_rows(out: Path, marker: dict) -> tuple[int, int, int]:
    """Rows in the kept / rejected / quarantined Parquet files a task's marker lists, read back from
    their footers (a quarantine row standing for several lost rows, e.g. a corrupt row group, counts
    its `rows` column). Raises when a file's footer disagrees with the row count its writer recorded."""
    import pyarrow.compute as pc

    sums = []
    for sub, key in (("", "kept_files"), (REJECTED, "rejected_files"), (QUARANTINE, "quarantine_files")):
        total = 0
        for f in marker.get(key, []):
            path = Path(out) / sub / safe_name(f["name"])
            if path.suffix != ".parquet":
                continue
            pf = pq.ParquetFile(path)
            n = pf.metadata.num_rows
            if "rows" in f and f["rows"] != n:
                raise RuntimeError(f"{path}: holds {n} rows but its task recorded {f['rows']}; the file was changed "
                                   "after it was written: re-run with --force")
            if sub == QUARANTINE and "rows" in pf.schema_arrow.names and n:
                n = int(pc.sum(pc.fill_null(pf.read(columns=["rows"]).column("rows"), 1)).as_py())
            total += n
        sums.append(total)
    return sums[0], sums[1], sums[2]


def check_accounting(out: Path, key: str, marker: dict) -> None:
    """The accounting invariant of one task, on its counters AND on what its files hold: rows in =
    kept + rejected + quarantined, and those counts are the rows read back from the files. A pass of
    a multi-pass stage (`pass_output`) writes derived rows (bands, pairs...): its files are checked
    against the rows recorded for each of them."""
    rows_in = marker["rows_in"] + marker.get("created", 0)  # a stage that makes documents (rephrase) states how many
    accounted = marker["kept"] + marker["rejected"] + marker["quarantined"]
    if rows_in != accounted:  # never write a marker for output that lost or invented rows
        raise RuntimeError(f"task {key}: accounting broken: in+created={rows_in} != kept+rejected+quarantined={accounted}")
    written = written_rows(out, marker)
    if not marker.get("pass_output") and written != (marker["kept"], marker["rejected"], marker["quarantined"]):
        raise RuntimeError(f"task {key}: accounting broken: counted kept/rejected/quarantined={marker['kept']}/"
                           f"{marker['rejected']}/{marker['quarantined']} but its files hold {written[0]}/{written[1]}/{written[2]} rows")


def shard_fingerprints(directory: Path) -> dict[str, str]:
    """Fingerprint of each kept shard of an upstream dataset dir, by file name: its sha256 from the
    manifest, else (a dir this project did not write) name, size and mtime. Per-shard stages record
    these per task, so a new upstream shard is a new task and a changed one is told apart from it."""
    m = Path(directory) / MANIFEST
    shas = {}
    if m.exists():
        man = read_json(m)
        shas = {f["name"]: f["sha256"] for s in man.get("shards", {}).values() for f in s.get("files", [])
                if f.get("dir") == "" and f.get("sha256")}
    return {p.name: shas.get(p.name) or fingerprint([p]) for p in shard_files(directory)}


def dataset_fingerprint(directory: Path) -> str:
    """Content fingerprint of an upstream dataset dir: the sha256s of its kept shards (manifest)."""
    m = Path(directory) / MANIFEST
    if m.exists():
        man = read_json(m)
        shas = sorted(f["sha256"] for s in man.get("shards", {}).values() for f in s.get("files", []) if f.get("dir") == "")
        if shas:
            return hashlib.sha256("".join(shas).encode()).hexdigest()[:16]
    return fingerprint(shard_files(directory))
