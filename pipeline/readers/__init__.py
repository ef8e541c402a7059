"""Robust input readers: JSONL (plain/.gz/.zst), Parquet, saved HF datasets, WARC and HTML.

`read_records` never raises on bad data: every record that cannot be read becomes a `Bad` item
whose `error` is one line, "<file>:<pos>: <what was wrong>[; <what to do>]", and every good record
still comes through as a `Record`. Whole-file problems are `Bad(pos=0)`. Nothing is lost silently:
a `Bad` says how many input rows it stands for (`rows`: all N rows of a corrupt Parquet row group,
from the footer, less those already read) and, where the loss is a byte range rather than rows (the
undecodable tail of a compressed JSONL stream, an unreadable Parquet file), which bytes (`offset`,
`length`). Memory stays bounded: compressed JSONL is decompressed as a stream, Parquet/HF are read
in batches.

It does raise on transient IO, so that the task fails and the runner (Ray) retries it: an OSError
raised by the input file itself (open, read, seek: EIO, timeouts, connection errors of object
stores) propagates as-is. Decode errors that libraries report as OSError (pyarrow's corrupt pages,
a bad gzip header) come from data already read and are quarantined; a missing file is a `Bad`.
The origin decides, not the type: readers read through `_Source`, which records the file's own
errors. MemoryError always propagates. (HF dataset dirs are opened by `datasets` itself, so their
IO errors cannot be told from corrupt data and are quarantined.)

Inputs may be fsspec URLs (`s3://bucket/dir`, `gs://...`, `memory://...`, `file:///...`): listing,
format detection and every reader work on them through `pipeline.storage`; local paths keep the
plain `os`/`open` path.
"""

from __future__ import annotations

import base64
import fnmatch
import glob
import json
import math
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator

import zstandard

from pipeline import storage

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None

FORMATS = ("jsonl", "parquet", "hf", "warc", "html")
RAW_MAX = 64 * 1024  # Bad.raw is truncated to this many bytes
CHUNK = 1 << 20  # read size for JSONL streams
BATCH_ROWS = 1024  # rows per Parquet/HF batch
_JSONL_EXTS = tuple(e + c for e in (".jsonl", ".json", ".ndjson") for c in ("", ".gz", ".zst", ".zstd"))
_HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_GZIP_MAGIC, _ZSTD_MAGIC, _BOM = b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xef\xbb\xbf"
_MISSING = object()


@dataclass
class Record:
    pos: int  # JSONL: 1-based line; Parquet/HF: 0-based row; WARC: 0-based record number; HTML: 0
    text: str
    id: str | None
    meta: dict  # other fields (JSON-serializable); WARC: url, date, warc_record_id; HTML: path


@dataclass
class Bad:
    pos: int  # as Record.pos (first row lost, for a row group); 0 for whole-file problems
    raw: bytes  # offending bytes (JSONL line, JSON dump of a row, HTML), at most RAW_MAX
    error: str  # one line: "<file>:<pos>: <what was wrong>; <what to do>"
    rows: int = 1  # input rows this stands for: N for a lost row group or a file without the text
    #               column (known from metadata); 1 otherwise, also for an unread byte tail, whose
    #               line count is unknown (then `offset`/`length` say what was lost)
    offset: int | None = None  # byte-addressed loss: first byte of the file not read/decoded
    length: int | None = None  # and how many bytes from there to the end of the file


class UnknownFormat(ValueError):
    """The input format cannot be told from the path."""


class _BadInput(Exception):
    """A record-level problem; str(e) is the message (without the '<file>:<pos>: ' prefix)."""


# ----------------------------------------------------------------------------- IO vs data errors

# OSErrors of the file that retrying will not fix: reported as a Bad naming the path, like today
_NOT_TRANSIENT = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, storage.StorageError)
_IO_MARK = "_curate_input_io_error"


def _mark_io(e: OSError) -> None:
    """Mark an OSError of the input file itself (not of decoding) as transient IO."""
    if not isinstance(e, _NOT_TRANSIENT):
        try:
            setattr(e, _IO_MARK, True)
        except AttributeError:  # pragma: no cover - exotic exception class without __dict__
            pass


def _fatal(e: BaseException, src: "_Source | None" = None) -> None:
    """Re-raise what must never be quarantined: MemoryError, and an IO error of the input file
    (the one `src` saw, even if a library turned it into something else, or one marked as such),
    so that the task fails and is retried. Returns when `e` is a data problem."""
    if isinstance(e, MemoryError):
        raise e
    err = src.error if src is not None and src.error is not None else e if getattr(e, _IO_MARK, False) else None
    if err is not None:
        raise err


class _Source:
    """The raw input file as readers and decoders see it. Counts the bytes read (`pos`) and records
    an OSError that the file's own open/read/seek raised (`error`): that is IO, never data."""

    def __init__(self, fh):
        self._fh, self.pos, self.error = fh, 0, None

    def _io(self, e: OSError) -> None:
        if not isinstance(e, _NOT_TRANSIENT):
            _mark_io(e)
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

    def close(self) -> None:  # the owner (`_open`) closes the real file
        pass


def _size(path: str) -> int:
    """Size of the input file; a storage that does not answer is transient IO."""
    try:
        return storage.size(path)
    except OSError as e:
        _mark_io(e)
        raise


@contextmanager
def _open(path: str) -> Iterator[_Source]:
    """The input file as a `_Source`; an OSError opening it is transient IO unless it is a missing
    file, a directory, a permission or an unusable URL."""
    try:
        fh = storage.open_binary(path)
    except OSError as e:
        _mark_io(e)
        raise
    with fh:
        yield _Source(fh)


# ----------------------------------------------------------------------------- finding inputs


def _is_hf_dir(path: str) -> bool:
    if storage.is_url(path):
        return storage.isdir(path) and any(storage.isfile(storage.join(path, m)) for m in _HF_MARKERS)
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, m)) for m in _HF_MARKERS)


def detect_format(path: str) -> str:
    """Format of `path` by its extension (or, for a directory, datasets.save_to_disk markers)."""
    if storage.isdir(path):
        if _is_hf_dir(path):
            return "hf"
        raise UnknownFormat(f"{path}: unknown input format (directory without dataset_info.json/state.json); "
                            "point the input at files or at a datasets.save_to_disk directory")
    name = storage.basename(path).lower()
    if name.endswith(_JSONL_EXTS):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".warc", ".warc.gz")):
        return "warc"
    if name.endswith((".html", ".htm")):
        return "html"
    ext = os.path.splitext(name)[1]
    what = f"extension '{ext}'" if ext else "no extension"
    raise UnknownFormat(f"{path}: unknown input format ({what}); set `format:` for this input or rename the file")


def input_files(inputs: list) -> list[tuple[Any, str, str]]:
    """(input spec, file path, path relative to the input root) for every file of the ingest
    inputs (`ingest.inputs`: specs with `path` and `pattern`), in a stable order."""
    files = []
    for spec in inputs:
        root = str(spec.path)
        for f in list_inputs(root, spec.pattern):
            rel = storage.relpath(f, root) if storage.isdir(root) and f != root else storage.basename(f)
            files.append((spec, f, rel))
    return files


def list_inputs(path: str, pattern: str | None = None) -> list[str]:
    """Input files under `path` (a file, a directory searched recursively, or a glob), sorted.

    Hidden and underscore-prefixed files/dirs below `path` are skipped (`_SUCCESS`, `.crc`,
    `_quarantine/`); a saved HF dataset directory is one input. `pattern` (fnmatch) filters by
    file name or by path relative to `path`. A missing non-glob path raises FileNotFoundError.
    A URL `path` gives URLs (see `pipeline.storage`).
    """
    if storage.is_url(path):
        return _list_url_inputs(path, pattern)
    if glob.has_magic(path):
        out = []
        for p in sorted(glob.glob(path, recursive=True)):
            if os.path.isdir(p):
                out.extend(list_inputs(p, pattern))
            elif pattern is None or fnmatch.fnmatch(os.path.basename(p), pattern):
                out.append(p)
        return sorted(set(out))
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: input path does not exist")
    if not os.path.isdir(path) or _is_hf_dir(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for d in [d for d in dirs if _is_hf_dir(os.path.join(root, d))]:
            dirs.remove(d)
            files.append(d)  # an HF dataset dir is one input
        for name in files:
            full = os.path.join(root, name)
            if name.startswith((".", "_")):
                continue
            rel = os.path.relpath(full, path)
            if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
                out.append(full)
    return sorted(out)


def _list_url_inputs(url: str, pattern: str | None) -> list[str]:
    if storage.has_magic(url):
        out = []
        for p in storage.glob(url):
            if storage.isdir(p) and not _is_hf_dir(p):
                out.extend(_list_url_inputs(p, pattern))
            elif pattern is None or fnmatch.fnmatch(storage.basename(p), pattern):
                out.append(p)
        return sorted(set(out))
    if not storage.exists(url):
        raise FileNotFoundError(f"{url}: input path does not exist")
    if not storage.isdir(url) or _is_hf_dir(url):
        return [url]
    out = []
    for full in storage.walk_files(url, skip_dir=lambda d: d.startswith((".", "_")), dir_is_file=_is_hf_dir):
        name = storage.basename(full)
        if name.startswith((".", "_")):
            continue
        rel = storage.relpath(full, url)
        if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(rel, pattern):
            out.append(full)
    return sorted(out)


# ----------------------------------------------------------------------------- helpers


def _one_line(s: str, limit: int = 600) -> str:
    s = " ".join(s.split())
    s = "".join(c if c.isprintable() else "?" for c in s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _err(path: str, pos: int, msg: str) -> str:
    return _one_line(f"{path}:{pos}: {msg}")


def _n_rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _type_name(v: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", list: "array", dict: "object", str: "string"}
    return names.get(type(v), type(v).__name__)


def _jsonable(v: Any, notes: set, key: str) -> Any:
    """Make an Arrow-decoded Python value JSON-serializable (bytes -> base64, dates -> ISO)."""
    t = type(v)
    if v is None or t in (str, int, bool):
        return v
    if t is float:
        return v if math.isfinite(v) else None
    if t is dict:
        return {str(k): _jsonable(x, notes, key) for k, x in v.items()}
    if t in (list, tuple):
        return [_jsonable(x, notes, key) for x in v]
    if t in (bytes, bytearray):
        notes.add(key)
        return base64.b64encode(v).decode("ascii")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)  # Decimal, timedelta, ...


def _dump_row(row: dict) -> bytes:
    return json.dumps(_jsonable(row, set(), ""), ensure_ascii=False, default=str).encode("utf-8")[:RAW_MAX]


def _check_text(text: Any, text_field: str, row: dict, max_text_bytes: int | None) -> str:
    if type(text) is str and text and (max_text_bytes is None or len(text) * 4 <= max_text_bytes):
        return text  # fast path
    if text is _MISSING:
        fields = ", ".join(sorted(map(str, row))[:30]) or "none"
        raise _BadInput(f"missing text field '{text_field}' (fields: {fields}); set `text_field:` for this input")
    if isinstance(text, (bytes, bytearray)):  # binary text column: accept valid UTF-8
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _BadInput(f"text field '{text_field}' is not valid UTF-8 at byte {e.start}") from None
    if text is None:
        raise _BadInput(f"text field '{text_field}' is null")
    if not isinstance(text, str):
        raise _BadInput(f"text field '{text_field}' is a {_type_name(text)}, not a string")
    if not text:
        raise _BadInput("empty text")
    if max_text_bytes is not None and len(text) * 4 > max_text_bytes:
        n = len(text.encode("utf-8", "surrogatepass"))
        if n > max_text_bytes:
            raise _BadInput(f"text of {n} bytes exceeds max_text_bytes={max_text_bytes}")
    return text


def _make(path, pos, row, raw, text_field, id_field, max_text_bytes, convert=False, extra=None):
    """Record from a dict `row`, or Bad. `raw=None` means 'JSON dump of the row' (computed lazily)."""
    try:
        text = _check_text(row.get(text_field, _MISSING), text_field, row, max_text_bytes)
        ident = None
        if id_field and id_field != text_field and row.get(id_field) is not None:
            v = row[id_field]
            ident = v if isinstance(v, str) else str(v) if isinstance(v, (int, float)) else _dump_row(v).decode()
        meta = row  # rows are fresh dicts: reuse, minus the text and id fields
        del meta[text_field]
        meta.pop(id_field, None)
        if convert:
            notes: set = set()
            meta = {k: _jsonable(v, notes, k) for k, v in meta.items()}
            if notes:
                meta["_base64_fields"] = sorted(notes)
        if extra:
            meta.update(extra)
        return Record(pos, text, ident, meta)
    except _BadInput as e:
        msg = str(e)
    except Exception as e:  # never let one record kill the reader
        _fatal(e)
        msg = f"cannot convert record ({type(e).__name__}: {e})"
    return Bad(pos, raw[:RAW_MAX] if raw is not None else _safe_dump(row), _err(path, pos, msg))


def _safe_dump(row: dict) -> bytes:
    try:
        return _dump_row(row)
    except Exception as e:
        _fatal(e)
        return b""


# ----------------------------------------------------------------------------- JSONL


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _loads(line: bytes) -> Any:
    """Parse one JSON line; orjson fast path, stdlib for big ints and for precise messages."""
    if orjson is not None:
        try:
            return orjson.loads(line)
        except orjson.JSONDecodeError:
            pass
    try:
        s = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadInput(f"not valid UTF-8 at byte {e.start}") from None
    try:
        obj = json.loads(s, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise _BadInput(f"invalid JSON ({e.msg} at col {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise _BadInput(f"invalid JSON ({e if isinstance(e, ValueError) else 'nested too deeply'})") from None
    try:  # stdlib accepts lone surrogate escapes ("\ud800") that cannot be stored as UTF-8
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise _BadInput("invalid JSON (lone surrogate \\u escape; not encodable as UTF-8)") from None
    return obj


class _Decoded:
    """How far a decoder got: `offset` is the first byte of the compressed file not yet decoded."""

    def __init__(self):
        self.offset = 0


def _gzip_chunks(src: _Source, at: _Decoded) -> Iterator[bytes]:
    """Stream-decompress gzip (multi-member, zero padding between members like gzip.GzipFile);
    zlib.error on corrupt data, EOFError if the input ends inside a member. `at.offset` follows the
    input decoded so far: a failing call leaves it at the first byte of the input it was given."""
    d = None
    while data := src.read(1 << 16):
        base = src.pos - len(data)
        while True:
            if d is None:  # between members: skip zero padding, then a new member starts
                n = len(data) - len(data.lstrip(b"\0"))
                data, base = data[n:], base + n
                at.offset = base
                if not data:
                    break
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out = d.decompress(data, CHUNK)  # at most CHUNK bytes out per call
            rest = d.unused_data if d.eof else d.unconsumed_tail
            base += len(data) - len(rest)
            at.offset = base
            if d.eof:
                d = None
            if out:
                yield out
            data = rest
            if not data and (d is None or len(out) < CHUNK):  # input used up and no output held back
                break
    if d is not None:
        raise EOFError("gzip stream ended in the middle of a member")


def _zstd_chunks(src: _Source, at: _Decoded) -> Iterator[bytes]:
    """Stream-decompress zstd (multi-frame); raise EOFError if the input ends inside a frame.
    `at.offset` as for `_gzip_chunks`."""
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
    dobj, pending = dctx.decompressobj(), False
    while data := src.read(1 << 16):  # small input reads bound the output of highly compressed data
        base = src.pos - len(data)
        while data:
            out = dobj.decompress(data)
            pending = True
            if dobj.eof:  # frame finished: the rest belongs to the next frame
                rest, dobj, pending = dobj.unused_data, dctx.decompressobj(), False
            else:
                rest = b""
            base += len(data) - len(rest)
            at.offset = base
            if out:
                yield out
            data = rest
    if pending:
        raise EOFError("zstd stream ended in the middle of a frame")


def _split_lines(chunks: Iterator[bytes], tail: list[bytes] | None = None) -> Iterator[bytes]:
    """Lines (without b'\\n') from byte chunks; no line-length limit, no quadratic joins. `tail`
    holds the pieces of the incomplete line at any time (what is lost if `chunks` fails)."""
    tail = [] if tail is None else tail
    for chunk in chunks:
        parts = chunk.split(b"\n")
        if len(parts) == 1:
            tail.append(chunk)
            continue
        tail.append(parts[0])
        line = b"".join(tail)
        tail.clear()
        if parts[-1]:
            tail.append(parts[-1])
        yield line
        yield from parts[1:-1]
    if tail:
        line = b"".join(tail)
        tail.clear()
        yield line


def _head(pieces: list[bytes], limit: int = RAW_MAX) -> bytes:
    out, n = [], 0
    for p in pieces:
        if n >= limit:
            break
        out.append(p[: limit - n])
        n += len(out[-1])
    return b"".join(out)


def _read_jsonl(path, text_field, id_field, max_text_bytes):
    with _open(path) as src:
        magic = src.head(4)
        at = _Decoded()
        if magic.startswith(_GZIP_MAGIC):  # sniff content, not extension
            kind, chunks = "gzip", _gzip_chunks(src, at)
        elif magic == _ZSTD_MAGIC:
            kind, chunks = "zstd", _zstd_chunks(src, at)
        else:
            kind, chunks = None, iter(partial(src.read, CHUNK), b"")
        lineno, tail = 0, []
        try:
            for line in _split_lines(chunks, tail):
                lineno += 1
                if lineno == 1 and line.startswith(_BOM):
                    line = line[3:]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if not line or line.isspace():
                    continue
                try:
                    obj = _loads(line)
                    if not isinstance(obj, dict):
                        raise _BadInput(f"line is a JSON {_type_name(obj)}, not an object")
                except Exception as e:  # _BadInput, or anything a parser may raise on odd input
                    _fatal(e)
                    msg = str(e) if isinstance(e, _BadInput) else f"cannot parse line ({type(e).__name__}: {e})"
                    yield Bad(lineno, line[:RAW_MAX], _err(path, lineno, msg))
                    continue
                yield _make(path, lineno, obj, line, text_field, id_field, max_text_bytes)
        except Exception as e:  # decompression failure: keep what was read, report the rest
            _fatal(e, src)  # the file's own IO error (EIO, timeout ...) propagates: the task is retried
            size = _size(path)
            off = at.offset if kind else src.pos
            partial_line = sum(map(len, tail))
            what = f"truncated/corrupt {kind} stream" if kind else "read error"
            if off < size:
                where = f"unread bytes {off}-{size} of {size} (line count unknown)"
            else:
                where = (f"the file ends at byte {size} of {size} inside the {kind} stream (truncated: the rest is "
                         "missing, line count unknown)" if kind else f"read stopped at byte {size} of {size}")
            if partial_line:
                where += f"; the incomplete line {lineno + 1} ({partial_line} bytes decoded) is in raw"
            yield Bad(lineno + 1, _head(tail), _err(path, lineno + 1, f"{what} after line {lineno}: {type(e).__name__}: {e}; "
                                                    f"{where}; re-download or re-compress the file"),
                      offset=off, length=size - off)


# ----------------------------------------------------------------------------- Parquet / HF


def _rows(path, table, start, opts, extra=None):
    for i, row in enumerate(table.to_pylist()):
        yield _make(path, start + i, row, None, *opts, convert=True, extra=extra)


def _no_text_column(path, names, text_field, rows):
    """A Bad for all `rows` rows of a table without the text column (None if it has one)."""
    if text_field in names:
        return None
    return Bad(0, b"", _err(path, 0, f"no text column '{text_field}' (columns: {', '.join(names) or 'none'}; "
                                     f"{_n_rows(rows)} not read); set `text_field:` for this input"), rows=rows)


def _read_batches(path, batches, start, total, opts, what, src=None, extra=None):
    """Rows of `batches` (`total` rows, numbered from `start`); a read failure becomes one Bad at
    the first row not read that stands for all rows not read (`total` less those yielded)."""
    done = 0
    try:
        for batch in batches:
            for item in _rows(path, batch, start + done, opts, extra):
                yield item
                done += 1
    except Exception as e:
        _fatal(e, src)  # the file's own IO error propagates: the task is retried
        lost, pos = max(total - done, 0), start + done
        after = f" after row {pos - 1}" if done else ""
        yield Bad(pos, b"", _err(path, pos, f"corrupt or unreadable {what}{after}: {_n_rows(lost)} not read "
                                            f"({type(e).__name__}: {e}); re-export the file or remove it"), rows=lost)


def _read_parquet(path, *opts):
    with _open(path) as src:  # pyarrow reads the footer and row groups by seek + read through `src`
        yield from _read_parquet_file(path, src, *opts)


def _read_parquet_file(path, src, *opts):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src)
        names, sizes = pf.schema_arrow.names, [pf.metadata.row_group(k).num_rows for k in range(pf.num_row_groups)]
    except Exception as e:
        _fatal(e, src)
        size = _size(path)  # no footer: the row count is unknown, the whole file is lost
        yield Bad(0, b"", _err(path, 0, f"corrupt or unreadable Parquet file ({type(e).__name__}: {e}); "
                                        "re-export the file or remove it"), offset=0, length=size)
        return
    if bad := _no_text_column(path, names, opts[0], sum(sizes)):
        yield bad
        return
    start = 0  # one row group at a time: a corrupt group costs only its own rows
    for k, n in enumerate(sizes):
        batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[k])
        yield from _read_batches(path, batches, start, n, opts, f"Parquet row group {k} (rows {start}-{start + n - 1})", src)
        start += n


def _read_hf(path, *opts):
    try:
        import datasets

        ds = datasets.load_from_disk(path)
        splits = sorted(ds.items()) if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    except Exception as e:
        _fatal(e)
        yield Bad(0, b"", _err(path, 0, f"cannot load saved HF dataset ({type(e).__name__}: {e}); "
                                        "re-save it with datasets.save_to_disk"))
        return
    for split, d in splits:
        where = storage.join(path, split) if split else path
        if bad := _no_text_column(where, d.column_names, opts[0], d.num_rows):
            yield bad
            continue
        batches = d.with_format("arrow").iter(batch_size=BATCH_ROWS)
        yield from _read_batches(where, batches, 0, d.num_rows, opts, "HF dataset",
                                 extra={"split": split} if split else None)


# ----------------------------------------------------------------------------- WARC / HTML


def _extract(html: bytes) -> str | None:
    # favor_precision: less boilerplate (what FineWeb/datatrove use); tables are content, comments
    # are not; deduplicate=False because trafilatura's dedup cache makes output depend on the
    # order documents were processed in, breaking determinism across workers.
    import trafilatura

    return trafilatura.extract(html, include_comments=False, include_tables=True, favor_precision=True,
                               deduplicate=False) or None


def _html_record(path, pos, html, meta, max_text_bytes):
    try:
        text = _extract(html)
        if text is None:
            raise _BadInput("no extractable text (empty page, boilerplate only, or not HTML)")
        _check_text(text, "text", {}, max_text_bytes)
        return Record(pos, text, None, meta)
    except _BadInput as e:
        msg = str(e)
    except Exception as e:
        _fatal(e)
        msg = f"HTML extraction failed ({type(e).__name__}: {e})"
    return Bad(pos, html[:RAW_MAX], _err(path, pos, msg))


def _is_html(rec) -> bool:
    ctype = rec.http_headers.get_header("Content-Type", "") if rec.http_headers else ""
    return ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


def _read_warc(path, text_field, id_field, max_text_bytes):
    from warcio.archiveiterator import ArchiveIterator

    n = -1
    with _open(path) as src:
        try:
            for n, rec in enumerate(ArchiveIterator(src)):
                if rec.format != "warc" or not rec.rec_type:  # warcio reads some junk as ARC/untyped records
                    what = f"corrupt WARC at record {n}" if n else "not a valid WARC file"
                    yield Bad(n, b"", _err(path, n, f"{what} (no valid WARC header); the rest of the file is skipped"))
                    return
                if rec.rec_type != "response" or not _is_html(rec):
                    continue
                h = rec.rec_headers
                meta = {"url": h.get_header("WARC-Target-URI"), "date": h.get_header("WARC-Date"),
                        "warc_record_id": h.get_header("WARC-Record-ID")}
                try:
                    html = rec.content_stream().read()
                    while rec.raw_stream.read(CHUNK):
                        pass
                    missing = getattr(rec.raw_stream, "limit", 0)  # > 0: file ended inside this record
                except Exception as e:
                    _fatal(e, src)
                    yield Bad(n, b"", _err(path, n, f"cannot read WARC record payload ({type(e).__name__}: {e})"))
                    continue
                if missing > 0:
                    yield Bad(n, html[:RAW_MAX], _err(path, n, f"truncated WARC record ({missing} bytes missing from "
                                                               "its Content-Length); re-download the file"))
                    continue
                yield _html_record(path, n, html, meta, max_text_bytes)
        except Exception as e:
            _fatal(e, src)  # the file's own IO error propagates: the task is retried
            what = f"corrupt WARC after record {n}" if n >= 0 else "not a valid WARC file"
            yield Bad(n + 1, b"", _err(path, n + 1, f"{what} ({type(e).__name__}: {e}); the rest of the file is skipped"))


def _read_html(path, text_field, id_field, max_text_bytes):
    with _open(path) as src:
        html = src.read()
    yield _html_record(path, 0, html, {"path": storage.basename(path)}, max_text_bytes)


_READERS = {"jsonl": _read_jsonl, "parquet": _read_parquet, "hf": _read_hf, "warc": _read_warc,
            "html": _read_html}


# ----------------------------------------------------------------------------- entry point


def read_records(path: str, fmt: str | None = None, text_field: str = "text", id_field: str | None = "id",
                 max_text_bytes: int | None = None) -> Iterator[Record | Bad]:
    """Yield a Record per good record and a Bad per unreadable one (with the rows and bytes it
    stands for). Never raises on bad data; raises on transient IO: an OSError of the input file
    itself (not a missing file) propagates as-is so the task is retried; so does MemoryError."""
    pos = 0
    try:
        try:
            fmt = fmt or detect_format(path)
            if fmt not in FORMATS:
                raise UnknownFormat(f"{path}: unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
            missing = not storage.exists(path)
            empty = not missing and fmt != "parquet" and storage.isfile(path) and storage.size(path) == 0
        except OSError as e:  # the storage did not answer (object store timeout ...): transient
            _mark_io(e)
            raise
        if missing:
            yield Bad(0, b"", _err(path, 0, "input does not exist; check the input path"))
            return
        if empty:
            return  # an empty file has no records (an empty Parquet file is corrupt: no footer)
        for item in _READERS[fmt](path, text_field, id_field, max_text_bytes):
            pos = item.pos
            yield item
    except (UnknownFormat, storage.StorageError) as e:
        msg = str(e)
        yield Bad(0, b"", _err(path, 0, msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg))
    except FileNotFoundError:  # gone between the check and the read
        yield Bad(0, b"", _err(path, 0, "input does not exist; check the input path"))
    except Exception as e:  # anything unforeseen: report it, never crash the caller
        _fatal(e)  # ... except transient IO and MemoryError
        yield Bad(0, b"", _err(path, 0, f"cannot read input after position {pos} ({type(e).__name__}: {e})"))
