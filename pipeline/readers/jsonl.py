"""JSONL reader: plain, gzip or zstd (told by the content, not the name), decompressed as a stream.

One record per line; a line that is not a JSON object is a Bad naming the line. A compressed stream
that breaks off (truncated or corrupt) keeps every line decoded before the break and reports the
rest as one Bad with the byte range not decoded (`offset`, `length`) and the incomplete line in raw.
"""

from __future__ import annotations

import json
import zlib
from functools import partial
from typing import Any, Iterator

import zstandard

from pipeline.readers.records import RAW_MAX, Bad, BadInput, error_line, make_record, type_name
from pipeline.readers.source import CHUNK, Source, fatal, input_size, open_input

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None

_GZIP_MAGIC, _ZSTD_MAGIC, _BOM = b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\xef\xbb\xbf"


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
        raise BadInput(f"not valid UTF-8 at byte {e.start}") from None
    try:
        obj = json.loads(s, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise BadInput(f"invalid JSON ({e.msg} at col {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise BadInput(f"invalid JSON ({e if isinstance(e, ValueError) else 'nested too deeply'})") from None
    try:  # stdlib accepts lone surrogate escapes ("\ud800") that cannot be stored as UTF-8
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("invalid JSON (lone surrogate \\u escape; not encodable as UTF-8)") from None
    return obj


class _Decoded:
    """How far a decoder got: `offset` is the first byte of the compressed file not yet decoded."""

    def __init__(self):
        self.offset = 0


def _gzip_chunks(src: Source, at: _Decoded) -> Iterator[bytes]:
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


def _zstd_chunks(src: Source, at: _Decoded) -> Iterator[bytes]:
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


def read_jsonl(path, text_field, id_field, max_text_bytes):
    """Records of a JSONL file, plain or compressed (see the module docstring)."""
    with open_input(path) as src:
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
                        raise BadInput(f"line is a JSON {type_name(obj)}, not an object")
                except Exception as e:  # BadInput, or anything a parser may raise on odd input
                    fatal(e)
                    msg = str(e) if isinstance(e, BadInput) else f"cannot parse line ({type(e).__name__}: {e})"
                    yield Bad(lineno, line[:RAW_MAX], error_line(path, lineno, msg))
                    continue
                yield make_record(path, lineno, obj, line, text_field, id_field, max_text_bytes)
        except Exception as e:  # decompression failure: keep what was read, report the rest
            fatal(e, src)  # the file's own IO error (EIO, timeout ...) propagates: the task is retried
            size = input_size(path)
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
            msg = f"{what} after line {lineno}: {type(e).__name__}: {e}; {where}; re-download or re-compress the file"
            yield Bad(lineno + 1, _head(tail), error_line(path, lineno + 1, msg), offset=off, length=size - off)
