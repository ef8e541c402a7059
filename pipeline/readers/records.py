"""What a reader yields, and how a row becomes one: `Record` (a good record) or `Bad` (what could
not be read, with the rows and bytes it stands for and a one-line error naming file and position).

`make_record` turns a dict row (a JSON line, a Parquet/HF row) into a Record, or into a Bad with
the reason; `check_text` is the text rule every format shares (a non-empty UTF-8 string, at most
`max_text_bytes`).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from typing import Any

from pipeline.readers.source import fatal

RAW_MAX = 64 * 1024  # Bad.raw is truncated to this many bytes
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


class BadInput(Exception):
    """A record-level problem; str(e) is the message (without the '<file>:<pos>: ' prefix)."""


def _one_line(s: str, limit: int = 600) -> str:
    s = " ".join(s.split())
    s = "".join(c if c.isprintable() else "?" for c in s)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def error_line(path: str, pos: int, msg: str) -> str:
    return _one_line(f"{path}:{pos}: {msg}")


def type_name(v: Any) -> str:
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


def check_text(text: Any, text_field: str, row: dict, max_text_bytes: int | None) -> str:
    if type(text) is str and text and (max_text_bytes is None or len(text) * 4 <= max_text_bytes):
        return text  # fast path
    if text is _MISSING:
        fields = ", ".join(sorted(map(str, row))[:30]) or "none"
        raise BadInput(f"missing text field '{text_field}' (fields: {fields}); set `text_field:` for this input")
    if isinstance(text, (bytes, bytearray)):  # binary text column: accept valid UTF-8
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInput(f"text field '{text_field}' is not valid UTF-8 at byte {e.start}") from None
    if text is None:
        raise BadInput(f"text field '{text_field}' is null")
    if not isinstance(text, str):
        raise BadInput(f"text field '{text_field}' is a {type_name(text)}, not a string")
    if not text:
        raise BadInput("empty text")
    if max_text_bytes is not None and len(text) * 4 > max_text_bytes:
        n = len(text.encode("utf-8", "surrogatepass"))
        if n > max_text_bytes:
            raise BadInput(f"text of {n} bytes exceeds max_text_bytes={max_text_bytes}")
    return text


def make_record(path, pos, row, raw, text_field, id_field, max_text_bytes, convert=False, extra=None):
    """Record from a dict `row`, or Bad. `raw=None` means 'JSON dump of the row' (computed lazily)."""
    try:
        text = check_text(row.get(text_field, _MISSING), text_field, row, max_text_bytes)
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
    except BadInput as e:
        msg = str(e)
    except Exception as e:  # never let one record kill the reader
        fatal(e)
        msg = f"cannot convert record ({type(e).__name__}: {e})"
    return Bad(pos, raw[:RAW_MAX] if raw is not None else _safe_dump(row), error_line(path, pos, msg))


def _safe_dump(row: dict) -> bytes:
    try:
        return _dump_row(row)
    except Exception as e:
        fatal(e)
        return b""
