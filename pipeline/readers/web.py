"""WARC and HTML readers: the main text of each HTML page, extracted with trafilatura.

A WARC file gives one record per `response` record whose Content-Type is HTML (meta: url, date,
warc_record_id); a truncated record or a page without extractable text is a Bad; a corrupt WARC
header ends the file with one Bad. An HTML file is one record (meta: the file name).
"""

from __future__ import annotations

from pipeline import storage
from pipeline.readers.records import RAW_MAX, Bad, BadInput, Record, check_text, error_line
from pipeline.readers.source import CHUNK, fatal, open_input


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
            raise BadInput("no extractable text (empty page, boilerplate only, or not HTML)")
        check_text(text, "text", {}, max_text_bytes)
        return Record(pos, text, None, meta)
    except BadInput as e:
        msg = str(e)
    except Exception as e:
        fatal(e)
        msg = f"HTML extraction failed ({type(e).__name__}: {e})"
    return Bad(pos, html[:RAW_MAX], error_line(path, pos, msg))


def _is_html(rec) -> bool:
    ctype = rec.http_headers.get_header("Content-Type", "") if rec.http_headers else ""
    return ctype.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


def read_warc(path, text_field, id_field, max_text_bytes):
    from warcio.archiveiterator import ArchiveIterator

    n = -1
    with open_input(path) as src:
        try:
            for n, rec in enumerate(ArchiveIterator(src)):
                if rec.format != "warc" or not rec.rec_type:  # warcio reads some junk as ARC/untyped records
                    what = f"corrupt WARC at record {n}" if n else "not a valid WARC file"
                    yield Bad(n, b"", error_line(path, n, f"{what} (no valid WARC header); the rest of the file is skipped"))
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
                    fatal(e, src)
                    yield Bad(n, b"", error_line(path, n, f"cannot read WARC record payload ({type(e).__name__}: {e})"))
                    continue
                if missing > 0:
                    yield Bad(n, html[:RAW_MAX], error_line(path, n, f"truncated WARC record ({missing} bytes missing from "
                                                                     "its Content-Length); re-download the file"))
                    continue
                yield _html_record(path, n, html, meta, max_text_bytes)
        except Exception as e:
            fatal(e, src)  # the file's own IO error propagates: the task is retried
            what = f"corrupt WARC after record {n}" if n >= 0 else "not a valid WARC file"
            yield Bad(n + 1, b"", error_line(path, n + 1, f"{what} ({type(e).__name__}: {e}); the rest of the file is skipped"))


def read_html(path, text_field, id_field, max_text_bytes):
    with open_input(path) as src:
        html = src.read()
    yield _html_record(path, 0, html, {"path": storage.basename(path)}, max_text_bytes)
