"""Robust input readers: JSONL (plain/.gz/.zst), Parquet, saved HF datasets, WARC and HTML.

`read_records` never raises on bad data: every record that cannot be read becomes a `Bad` item
whose `error` is one line, "<file>:<pos>: <what was wrong>[; <what to do>]", and every good record
still comes through as a `Record`. Whole-file problems are `Bad(pos=0)`. Nothing is lost silently:
a `Bad` says how many input rows it stands for (`rows`: all N rows of a corrupt Parquet row group,
from the footer, less those already read) and, where the loss is a byte range rather than rows (the
undecodable tail of a compressed JSONL stream, an unreadable Parquet file), which bytes (`offset`,
`length`). Memory stays bounded: compressed JSONL is decompressed as a stream, Parquet/HF are read
in batches. It does raise on transient IO (an OSError of the input file itself) so that the task
is retried, and on MemoryError (`source`).

Inputs may be fsspec URLs (`s3://bucket/dir`, `gs://...`, `memory://...`, `file:///...`): listing,
format detection and every reader work on them through `pipeline.storage`; local paths keep the
plain `os`/`open` path.

- `listing`  finding the input files and their format
- `records`  `Record`, `Bad`, and a row -> Record-or-Bad rule shared by the formats
- `source`   the input file as readers see it; transient IO vs bad data
- `jsonl`    JSONL, plain/gzip/zstd, streamed
- `parquet`  Parquet files and saved HF datasets, by row group / batch
- `web`      WARC and HTML, through trafilatura
"""

from __future__ import annotations

from typing import Iterator

from pipeline import storage
from pipeline.readers.jsonl import read_jsonl
from pipeline.readers.listing import UnknownFormat, detect_format, input_files, list_inputs
from pipeline.readers.parquet import read_hf, read_parquet
from pipeline.readers.records import RAW_MAX, Bad, Record, error_line
from pipeline.readers.source import fatal, mark_io
from pipeline.readers.web import read_html, read_warc

__all__ = ["FORMATS", "RAW_MAX", "Bad", "Record", "UnknownFormat", "detect_format", "input_files", "list_inputs",
           "read_records"]

FORMATS = ("jsonl", "parquet", "hf", "warc", "html")
_READERS = {"jsonl": read_jsonl, "parquet": read_parquet, "hf": read_hf, "warc": read_warc, "html": read_html}


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
            mark_io(e)
            raise
        if missing:
            yield Bad(0, b"", error_line(path, 0, "input does not exist; check the input path"))
            return
        if empty:
            return  # an empty file has no records (an empty Parquet file is corrupt: no footer)
        for item in _READERS[fmt](path, text_field, id_field, max_text_bytes):
            pos = item.pos
            yield item
    except (UnknownFormat, storage.StorageError) as e:
        msg = str(e)
        yield Bad(0, b"", error_line(path, 0, msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg))
    except FileNotFoundError:  # gone between the check and the read
        yield Bad(0, b"", error_line(path, 0, "input does not exist; check the input path"))
    except Exception as e:  # anything unforeseen: report it, never crash the caller
        fatal(e)  # ... except transient IO and MemoryError
        yield Bad(0, b"", error_line(path, 0, f"cannot read input after position {pos} ({type(e).__name__}: {e})"))
