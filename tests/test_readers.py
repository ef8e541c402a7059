"""Tests for pipeline.readers: every bad input becomes a Bad item, every good record comes through."""

import base64
import datetime
import gzip
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline import readers
from pipeline.readers import Bad, Record, UnknownFormat, detect_format, jsonl, list_inputs, read_records


def _all(path, **kw):
    items = list(read_records(str(path), **kw))
    for it in items:  # every error is one line starting with "<file>:<pos>: "
        if isinstance(it, Bad):
            assert "\n" not in it.error and it.error.startswith(f"{path}:{it.pos}: "), it.error
            assert len(it.raw) <= readers.RAW_MAX
    return items


def _good(items):
    return [i for i in items if isinstance(i, Record)]


def _bad(items):
    return [i for i in items if isinstance(i, Bad)]


def _jsonl(rows):
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_positions_ids_meta_blank_lines_crlf(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"text": "one", "id": 5, "src": "x", "n": [1, 2]}\r\n'
                  b"\r\n"
                  b"   \n"
                  b'{"text": "two", "id": "k"}\n'
                  b'\n'
                  b'{"text": "three"}')  # no final newline
    items = _all(p)
    assert items == [
        Record(1, "one", "5", {"src": "x", "n": [1, 2]}),
        Record(4, "two", "k", {}),
        Record(6, "three", None, {}),
    ]


def test_jsonl_custom_fields_and_no_id(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(_jsonl([{"content": "hi", "doc": 7, "id": 1}]))
    assert _all(p, text_field="content", id_field="doc") == [Record(1, "hi", "7", {"id": 1})]
    assert _all(p, text_field="content", id_field=None) == [Record(1, "hi", None, {"doc": 7, "id": 1})]


def test_jsonl_bad_lines_each_reported_good_ones_kept(tmp_path):
    p = tmp_path / "bad.jsonl"
    lines = [
        b'{"text": "ok1"}',                      # 1
        b'{"text": "a" "b": 1}',                 # 2 invalid JSON
        b'{"text": "caf\xe9"}',                  # 3 latin-1 byte
        b'["text", "list"]',                     # 4 not an object
        b'"just a string"',                      # 5 not an object
        b'{"body": "x", "id": 1}',               # 6 missing text
        b'{"text": null}',                       # 7 null
        b'{"text": ""}',                         # 8 empty
        b'{"text": 42}',                         # 9 number
        b'{"text": ["a", "b"]}',                 # 10 list
        b'{"text": "ok2"',                       # 11 truncated object
        b'{"text": "ok3", "big": 123456789012345678901234567890}',  # 12 big int
        b'{"text": "x", "v": NaN}',              # 13 NaN is not JSON
        b'{"text": "\\ud800"}',                  # 14 lone surrogate
        b'{"text": "ok4"}',                      # 15
        b'[' * 100000,                           # 16 nested too deeply for any parser
    ]
    p.write_bytes(b"\n".join(lines) + b"\n")
    items = _all(p)
    assert [r.pos for r in _good(items)] == [1, 12, 15]
    assert _good(items)[1].meta["big"] == pytest.approx(1.2345678901234568e29)  # orjson: > 64-bit ints -> float
    bad = {b.pos: b for b in _bad(items)}
    assert sorted(bad) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 16]
    assert bad[2].error == f"{p}:2: invalid JSON (Expecting ',' delimiter at col 14)"
    assert bad[2].raw == lines[1]
    assert bad[3].error == f"{p}:3: not valid UTF-8 at byte 13"
    assert "JSON array, not an object" in bad[4].error
    assert "JSON string, not an object" in bad[5].error
    assert "missing text field 'text' (fields: body, id)" in bad[6].error
    assert "text field 'text' is null" in bad[7].error
    assert bad[8].error.endswith(": empty text")
    assert "text field 'text' is a number, not a string" in bad[9].error
    assert "text field 'text' is a array, not a string" in bad[10].error
    assert "invalid JSON" in bad[11].error and "col" in bad[11].error
    assert "NaN is not valid JSON" in bad[13].error
    assert "lone surrogate" in bad[14].error
    assert "nested too deeply" in bad[16].error and bad[16].raw == lines[15][:64 * 1024]  # raw capped at 64 KiB


def test_jsonl_bom_and_fmt_override(tmp_path):
    p = tmp_path / "data.txt"
    p.write_bytes(b'\xef\xbb\xbf{"text": "bom"}\n')
    assert _all(p, fmt="jsonl") == [Record(1, "bom", None, {})]


def _gz(data):
    return gzip.compress(data)


def _zst(data):
    # two frames, to check multi-frame streams decode fully
    c = zstandard.ZstdCompressor()
    half = data.index(b"\n", len(data) // 2) + 1
    return c.compress(data[:half]) + c.compress(data[half:])


@pytest.mark.parametrize("ext,comp", [(".jsonl.gz", _gz), (".jsonl.zst", _zst), (".ndjson.zstd", _zst)])
def test_jsonl_compressed(tmp_path, ext, comp):
    rows = [{"text": f"doc {i}", "id": i} for i in range(2000)]
    p = tmp_path / f"a{ext}"
    p.write_bytes(comp(_jsonl(rows) + b"{oops}\n"))
    items = _all(p)
    assert [r.text for r in _good(items)] == [r["text"] for r in rows]
    assert [r.id for r in _good(items)][-1] == "1999"
    assert [(b.pos, b.raw) for b in _bad(items)] == [(2001, b"{oops}")]


@pytest.mark.parametrize("ext,comp,kind", [(".jsonl.gz", gzip.compress, "gzip"),
                                           (".jsonl.zst", lambda d: zstandard.ZstdCompressor().compress(d), "zstd")])
def test_jsonl_truncated_stream_keeps_records_before_cut(tmp_path, ext, comp, kind):
    rnd = random.Random(0)  # incompressible-ish text so the cut lands mid-stream
    rows = [{"text": "".join(rnd.choice("abcdefghij ") for _ in range(200))} for _ in range(3000)]
    data = comp(_jsonl(rows))
    p = tmp_path / f"cut{ext}"
    p.write_bytes(data[: len(data) // 2])
    items = _all(p)
    good, bad = _good(items), _bad(items)
    assert 0 < len(good) < 3000
    assert [r.text for r in good] == [r["text"] for r in rows[: len(good)]]
    assert [r.pos for r in good] == list(range(1, len(good) + 1))
    assert len(bad) == 1 and bad[0] is items[-1]
    n = len(good)
    assert bad[0].pos == n + 1 and _jsonl(rows[n:n + 1]).startswith(bad[0].raw)  # raw: the incomplete line
    assert bad[0].error.startswith(f"{p}:{n + 1}: truncated/corrupt {kind} stream after line {n}: ")


def test_jsonl_not_actually_gzip_and_trailing_garbage(tmp_path):
    p = tmp_path / "plain.jsonl.gz"  # plain text with a .gz name: content is sniffed, so it reads fine
    p.write_bytes(_jsonl([{"text": "x"}]))
    assert _all(p) == [Record(1, "x", None, {})]
    q = tmp_path / "trail.jsonl.gz"
    q.write_bytes(gzip.compress(_jsonl([{"text": "x"}, {"text": "y"}])) + b"garbage!")
    items = _all(q)
    assert [r.text for r in _good(items)] == ["x", "y"]
    assert len(_bad(items)) == 1 and "corrupt gzip stream after line 2" in items[-1].error


@pytest.mark.parametrize("ext", [".jsonl", ".jsonl.zst", ".jsonl.gz"])
def test_jsonl_huge_single_line(tmp_path, ext):
    text = "x" * (20 * 1024 * 1024)
    data = _jsonl([{"text": "small"}, {"text": text, "id": 2}, {"text": "after"}])
    if ext.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    elif ext.endswith(".gz"):
        data = gzip.compress(data, compresslevel=1)
    p = tmp_path / f"huge{ext}"
    p.write_bytes(data)
    items = _all(p)
    assert [(r.pos, len(r.text)) for r in items] == [(1, 5), (2, len(text)), (3, 5)]


def test_jsonl_max_text_bytes(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(_jsonl([{"text": "é" * 10}, {"text": "é" * 5}, {"text": "abcdefghijk"}]))
    items = _all(p, max_text_bytes=10)
    assert [r.pos for r in _good(items)] == [2]
    bad = _bad(items)
    assert bad[0].error == f"{p}:1: text of 20 bytes exceeds max_text_bytes=10"
    assert bad[1].error == f"{p}:3: text of 11 bytes exceeds max_text_bytes=10"


def test_jsonl_json_fallback_without_orjson(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "orjson", None)
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"text": "ok", "id": 3}\n{bad\n')
    items = _all(p)
    assert items[0] == Record(1, "ok", "3", {})
    assert items[1].pos == 2 and "invalid JSON" in items[1].error


# ----------------------------------------------------------------------------- Parquet


def _table(n=10):
    return pa.table({
        "text": [f"doc {i}" for i in range(n)],
        "id": list(range(n)),
        "blob": [bytes([i % 256, 255]) for i in range(n)],
        "ts": [datetime.datetime(2024, 1, 1, i % 24) for i in range(n)],
        "score": [0.5] * n,
    })


def test_parquet_good_rows_row_groups_and_meta(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(_table(2500), p, row_group_size=1000)
    items = _all(p)
    assert len(items) == 2500 and all(isinstance(i, Record) for i in items)
    assert [r.pos for r in items] == list(range(2500))
    r = items[7]
    assert (r.text, r.id) == ("doc 7", "7")
    assert r.meta == {"blob": base64.b64encode(bytes([7, 255])).decode(), "ts": "2024-01-01T07:00:00",
                      "score": 0.5, "_base64_fields": ["blob"]}
    json.dumps(r.meta)  # JSON-serializable


def test_parquet_missing_text_column(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": ["a"], "url": ["u"]}), p)
    items = _all(p)
    assert len(items) == 1 and items[0].pos == 0
    assert items[0].error == (f"{p}:0: no text column 'text' (columns: content, url; 1 row not read); "
                              "set `text_field:` for this input")
    assert _all(p, text_field="content") == [Record(0, "a", None, {"url": "u"})]


def test_parquet_bad_rows(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["ok", None, "", "ok2"], "id": [1, 2, 3, 4]}), p)
    items = _all(p)
    assert [r.pos for r in _good(items)] == [0, 3]
    bad = _bad(items)
    assert [b.pos for b in bad] == [1, 2]
    assert "text field 'text' is null" in bad[0].error and json.loads(bad[0].raw) == {"text": None, "id": 2}
    assert bad[1].error.endswith("empty text")
    q = tmp_path / "num.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), q)
    assert ["is a number, not a string" in b.error for b in _all(q)] == [True, True]


def test_parquet_binary_text_column(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": pa.array([b"caf\xc3\xa9", b"\xff"], pa.binary())}), p)
    items = _all(p)
    assert items[0] == Record(0, "café", None, {})
    assert "not valid UTF-8 at byte 0" in items[1].error


def test_parquet_truncated_garbage_and_empty(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(_table(100), good)
    data = good.read_bytes()
    for name, content in [("half.parquet", data[: len(data) // 2]), ("garbage.parquet", b"hello, not parquet" * 10),
                          ("empty.parquet", b"")]:
        p = tmp_path / name
        p.write_bytes(content)
        items = _all(p)
        assert len(items) == 1 and isinstance(items[0], Bad) and items[0].pos == 0, name
        assert "corrupt or unreadable Parquet file" in items[0].error


def test_parquet_corrupt_row_group_keeps_earlier_rows(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(_table(4000), p, row_group_size=1000)
    col = pq.ParquetFile(p).metadata.row_group(2).column(0)
    off = col.dictionary_page_offset or col.data_page_offset
    b = bytearray(p.read_bytes())
    b[off:off + 20] = b"\xab" * 20  # smash the page header of row group 2
    p.write_bytes(bytes(b))
    items = _all(p)
    # row groups 0, 1 and 3 are kept, row group 2 becomes one Bad at its first row, standing for its 1000 rows
    assert [r.pos for r in _good(items)] == list(range(2000)) + list(range(3000, 4000))
    assert len(_bad(items)) == 1 and items[2000].pos == 2000 and items[2000].rows == 1000
    assert "corrupt or unreadable Parquet row group 2 (rows 2000-2999)" in items[2000].error
    assert "Deserializing page header failed" in items[2000].error


# ----------------------------------------------------------------------------- HF datasets


def test_hf_dataset_and_datasetdict(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": ["a", None, "c"], "id": [1, 2, 3], "lang": ["en", "de", "fr"]})
    d1 = tmp_path / "single"
    ds.save_to_disk(str(d1))
    assert detect_format(str(d1)) == "hf"
    items = _all(d1)
    assert _good(items) == [Record(0, "a", "1", {"lang": "en"}), Record(2, "c", "3", {"lang": "fr"})]
    assert _bad(items)[0].pos == 1 and "is null" in _bad(items)[0].error

    d2 = tmp_path / "dict"
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(d2))
    assert detect_format(str(d2)) == "hf"
    recs = _good(read_records(str(d2)))
    assert [(r.meta["split"], r.pos, r.text) for r in recs] == [("test", 0, "a"), ("train", 0, "a"),
                                                                 ("train", 2, "c")]
    bad = _bad(read_records(str(d2), text_field="body"))
    assert [b.error.split(":")[0] for b in bad] == [str(d2 / "test"), str(d2 / "train")]


def test_hf_broken_dir(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "state.json").write_text("{not json")
    items = _all(d)
    assert len(items) == 1 and "cannot load saved HF dataset" in items[0].error


# ----------------------------------------------------------------------------- WARC / HTML

ARTICLE = ("<html><head><title>t</title></head><body><nav>Home | About</nav><article><h1>Heading {i}</h1><p>"
           + "Page {i} has plenty of real sentence content written for the extraction test. " * 6
           + "</p></article><footer>copyright</footer></body></html>")


def _warc(gz, pages):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gz)
    w.write_record(w.create_warcinfo_record("x.warc", {"software": "test"}))
    for i, (ctype, html) in enumerate(pages):
        hh = StatusAndHeaders("200 OK", [("Content-Type", ctype)], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(f"http://ex.com/{i}", "response", payload=io.BytesIO(html),
                                            http_headers=hh))
        if i == 0:  # a request record: skipped
            w.write_record(w.create_warc_record(f"http://ex.com/{i}", "request", payload=io.BytesIO(b"GET /")))
    return buf.getvalue()


PAGES = [("text/html; charset=utf-8", ARTICLE.format(i=0).encode()),
         ("image/png", b"\x89PNG..."),
         ("text/html", b"<html><body></body></html>"),
         ("application/xhtml+xml", ARTICLE.format(i=3).encode())]


@pytest.mark.parametrize("gz", [False, True])
def test_warc_html_responses_only(tmp_path, gz):
    p = tmp_path / ("a.warc.gz" if gz else "a.warc")
    p.write_bytes(_warc(gz, PAGES))
    assert detect_format(str(p)) == "warc"
    items = _all(p)
    # records: 0 warcinfo, 1 response(html), 2 request, 3 png, 4 empty html, 5 xhtml
    assert [(type(i).__name__, i.pos) for i in items] == [("Record", 1), ("Bad", 4), ("Record", 5)]
    r = items[0]
    assert "Page 0 has plenty of real sentence content" in r.text and "copyright" not in r.text
    assert r.id is None and r.meta["url"] == "http://ex.com/0"
    assert set(r.meta) == {"url", "date", "warc_record_id"} and r.meta["warc_record_id"].startswith("<urn:uuid:")
    assert "no extractable text" in items[1].error and items[1].raw == PAGES[2][1]


def test_warc_corrupt(tmp_path):
    data = _warc(True, PAGES)
    p = tmp_path / "c.warc.gz"
    p.write_bytes(data[: len(data) // 2] + b"GARBAGE\r\n" * 10 + data[len(data) // 2:])
    items = _all(p)
    assert isinstance(items[-1], Bad) and "corrupt WARC after record" in items[-1].error
    assert len(_bad(items)) >= 1
    t = tmp_path / "t.warc"  # uncompressed, cut inside the payload of the last record
    t.write_bytes(_warc(False, PAGES)[:-200])
    items = _all(t)
    assert [(type(i).__name__, i.pos) for i in items] == [("Record", 1), ("Bad", 4), ("Bad", 5)]
    assert "truncated WARC record" in items[-1].error and items[-1].raw
    r = tmp_path / "typeless.warc"
    r.write_bytes(b"WARC/1.0\r\nnot-a-header\r\n\r\n" + bytes(range(256)) * 4)
    items = _all(r)
    assert len(items) == 1 and "not a valid WARC file (no valid WARC header)" in items[0].error
    q = tmp_path / "junk.warc"
    q.write_bytes(b"this is not a warc file\n" * 5)
    items = _all(q)
    assert len(items) == 1 and items[0].pos == 0 and "not a valid WARC file" in items[0].error


def test_html_file(tmp_path):
    p = tmp_path / "page.html"
    p.write_bytes(ARTICLE.format(i=9).encode())
    items = _all(p)
    assert len(items) == 1 and items[0].pos == 0 and items[0].id is None
    assert "Page 9 has plenty" in items[0].text and items[0].meta == {"path": "page.html"}
    e = tmp_path / "blank.htm"
    e.write_bytes(b"<html><body><div></div></body></html>")
    items = _all(e)
    assert len(items) == 1 and "no extractable text" in items[0].error


# ----------------------------------------------------------------------------- formats, empty, unknown


@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.jsonl.zst", "e.warc", "e.warc.gz", "e.html"])
def test_empty_file_yields_nothing(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"")
    assert _all(p) == []


def test_empty_but_valid_compressed_and_parquet(tmp_path):
    (tmp_path / "e.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp_path / "e.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(b""))
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "e.parquet")
    for n in ("e.jsonl.gz", "e.jsonl.zst", "e.parquet"):
        assert _all(tmp_path / n) == []


def test_unknown_extension(tmp_path):
    p = tmp_path / "data.xyz"
    p.write_bytes(b"whatever")
    with pytest.raises(UnknownFormat, match=r"data\.xyz: unknown input format \(extension '\.xyz'\)"):
        detect_format(str(p))
    items = _all(p)
    assert items == [Bad(0, b"", f"{p}:0: unknown input format (extension '.xyz'); "
                                 "set `format:` for this input or rename the file")]
    assert "unknown format 'csv'" in _all(p, fmt="csv")[0].error


def test_missing_file(tmp_path):
    items = _all(tmp_path / "nope.jsonl")
    assert len(items) == 1 and "does not exist" in items[0].error


def test_detect_format_table(tmp_path):
    cases = {"a.jsonl": "jsonl", "a.JSON": "jsonl", "a.ndjson.gz": "jsonl", "a.jsonl.zst": "jsonl",
             "a.json.zstd": "jsonl", "a.parquet": "parquet", "a.warc": "warc", "a.warc.gz": "warc",
             "a.html": "html", "a.HTM": "html"}
    for name, fmt in cases.items():
        assert detect_format(str(tmp_path / name)) == fmt, name
    for name in ("a.gz", "a.txt", "README"):
        with pytest.raises(UnknownFormat, match=name):
            detect_format(str(tmp_path / name))
    with pytest.raises(UnknownFormat, match="directory"):
        detect_format(str(tmp_path))


@pytest.mark.parametrize("name", ["f.jsonl", "f.jsonl.gz", "f.jsonl.zst", "f.parquet", "f.warc", "f.warc.gz",
                                  "f.html"])
def test_random_bytes_never_raise(tmp_path, name):
    rnd = random.Random(name)
    for k, prefix in enumerate([b"", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"PAR1", b"WARC/1.0\r\n"]):
        p = tmp_path / f"{k}{name}"
        p.write_bytes(prefix + bytes(rnd.randrange(256) for _ in range(3000)))
        items = _all(p)  # must not raise, and garbage never vanishes silently
        assert _bad(items) and all(isinstance(i, (Record, Bad)) for i in items)


def test_list_inputs(tmp_path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "_quarantine").mkdir()
    (tmp_path / ".cache").mkdir()
    for rel in ["b.jsonl", "a.parquet", "sub/c.jsonl.gz", "sub/deeper/d.warc", "_SUCCESS", ".hidden.jsonl",
                "_quarantine/x.parquet", ".cache/y.jsonl", "notes.txt"]:
        (tmp_path / rel).write_bytes(b"")
    datasets.Dataset.from_dict({"text": ["a"]}).save_to_disk(str(tmp_path / "sub" / "hfds"))
    t = str(tmp_path)
    assert list_inputs(t) == [f"{t}/a.parquet", f"{t}/b.jsonl", f"{t}/notes.txt", f"{t}/sub/c.jsonl.gz",
                              f"{t}/sub/deeper/d.warc", f"{t}/sub/hfds"]
    assert list_inputs(t, "*.jsonl*") == [f"{t}/b.jsonl", f"{t}/sub/c.jsonl.gz"]
    assert list_inputs(t, "sub/*") == [f"{t}/sub/c.jsonl.gz", f"{t}/sub/deeper/d.warc", f"{t}/sub/hfds"]
    assert list_inputs(f"{t}/b.jsonl") == [f"{t}/b.jsonl"]
    assert list_inputs(f"{t}/sub/hfds") == [f"{t}/sub/hfds"]
    assert list_inputs(f"{t}/**/*.jsonl*") == [f"{t}/b.jsonl", f"{t}/sub/c.jsonl.gz"]
    assert list_inputs(f"{t}/sub*") == [f"{t}/sub/c.jsonl.gz", f"{t}/sub/deeper/d.warc", f"{t}/sub/hfds"]
    assert list_inputs(f"{t}/nothing*") == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_inputs(f"{t}/missing")
