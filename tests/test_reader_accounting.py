"""No silent loss in readers (issue 12): what a reader cannot read is accounted as what it is.

- a corrupt Parquet row group of N rows counts N rows (from the footer metadata), minus the rows
  of that group already read; a file without the text column counts all its rows;
- the unreadable tail of a compressed JSONL stream is reported with its byte range;
- an IO error of the input file itself (EIO, timeout, connection) propagates, so the runner (Ray)
  retries the task, while decode errors that libraries report as OSError are still quarantined;
- MemoryError is never quarantined.

Transient IO comes from a real fsspec filesystem defined here (`flaky://`, a memory:// subclass)
whose files fail to open or to read where a test says so.
"""
from __future__ import annotations

import errno
import gzip
import io
import json
import random
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fsspec.implementations.memory import MemoryFileSystem

from pipeline import config, io as pio, runner
from pipeline.readers import Bad, Record, read_records
from stages import ingest

# ----------------------------------------------------------------------------- a flaky filesystem


class _FailingFile(io.BytesIO):
    """File contents whose read/readinto covering byte `at` raises `exc` (a failing disk/network read)."""

    def __init__(self, data: bytes, at: int, exc: BaseException):
        super().__init__(data)
        self.at, self.exc = at, exc

    def _check(self, n):
        pos = self.tell()
        end = len(self.getbuffer()) if n is None or n < 0 else pos + n
        if pos <= self.at < end:
            raise self.exc

    def read(self, n=-1):
        self._check(n)
        return super().read(n)

    def read1(self, n=-1):
        self._check(n)
        return super().read1(n)

    def readinto(self, b):
        self._check(len(b))
        return super().readinto(b)


class FlakyFS(MemoryFileSystem):
    """memory:// with its own store; `rules[path]` makes open() fail `open_fails` times with
    `open_exc`, or makes reads at byte `read_at` raise `read_exc`."""

    protocol = "flaky"
    store: dict = {}
    pseudo_dirs = [""]
    rules: dict = {}
    opened: dict = {}

    @classmethod
    def _strip_protocol(cls, path):
        if isinstance(path, str):
            path = path.removeprefix("flaky://")
        return super()._strip_protocol(path)

    def _open(self, path, mode="rb", **kw):
        f = super()._open(path, mode, **kw)
        if "r" not in mode:
            return f
        p = self._strip_protocol(path)
        FlakyFS.opened[p] = FlakyFS.opened.get(p, 0) + 1
        rule = FlakyFS.rules.get(p, {})
        if rule.get("open_fails", 0) > 0:
            rule["open_fails"] -= 1
            raise rule["open_exc"]
        if "read_exc" in rule:
            return _FailingFile(f.getvalue(), rule["read_at"], rule["read_exc"])
        return f


@pytest.fixture()
def flaky():
    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    FlakyFS.store.clear()
    FlakyFS.pseudo_dirs[:] = [""]
    FlakyFS.rules.clear()
    FlakyFS.opened.clear()
    fs = fsspec.filesystem("flaky")

    def put(name: str, data: bytes, **rule) -> str:
        fs.pipe(f"/bucket/{name}", data)
        if rule:
            FlakyFS.rules[f"/bucket/{name}"] = rule
        return f"flaky://bucket/{name}"

    yield put
    FlakyFS.store.clear()
    FlakyFS.rules.clear()


# ----------------------------------------------------------------------------- helpers


def _jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _random_rows(n, seed=0):
    rnd = random.Random(seed)  # incompressible-ish text, so compressed streams are long
    return [{"id": f"r{i}", "text": "".join(rnd.choice("abcdefghij ") for _ in range(200))} for i in range(n)]


def _parquet_100_250_100(path: Path) -> pa.Table:
    t = pa.table({"id": [f"p{i}" for i in range(450)], "text": [f"parquet row {i} " * 5 for i in range(450)]})
    with pq.ParquetWriter(path, t.schema) as w:
        for start, n in ((0, 100), (100, 250), (350, 100)):
            w.write_table(t.slice(start, n))
    return t


def _smash_row_group(path: Path, k: int) -> None:
    """Overwrite the page header of every column chunk of row group `k` (offsets from the footer)."""
    rg = pq.ParquetFile(path).metadata.row_group(k)
    b = bytearray(path.read_bytes())
    for c in range(rg.num_columns):
        col = rg.column(c)
        off = col.dictionary_page_offset or col.data_page_offset
        b[off:off + 20] = b"\xab" * 20
    path.write_bytes(bytes(b))


def _ingest_kwargs(path: str, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return dict(path=path, relpath=Path(path).name, spec={"path": path}, out=str(out), key="part-00000",
                target_rows=100_000, target_bytes=1 << 30, batch_size=100, tokenizer=None, max_text_bytes=None)


def _run_ingest(tmp: Path, inp: str, max_retries: int) -> tuple[runner.StageResult, list[dict]]:
    """The real ingest stage through the runner (in-process, so the test's filesystem is there)."""
    cfg = config.parse({"run": {"output": str(tmp / "out")}, "ingest": {"inputs": [{"path": inp}]}})
    out = tmp / "out" / "ingest"
    tasks, fp = ingest.tasks(cfg, None, out)
    res = runner.run_stage("ingest", out, tasks, config_hash=cfg.stage_hash("ingest"), input_fingerprint=fp,
                           use_ray=False, max_retries=max_retries, show_progress=False, finalize=ingest.finalize)
    q = [r for p in sorted((out / pio.QUARANTINE).glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    return res, q


# ----------------------------------------------------------------------------- Parquet rows


def test_corrupt_row_group_counts_its_rows(tmp_path):
    p = tmp_path / "groups.parquet"
    _parquet_100_250_100(p)
    _smash_row_group(p, 1)
    items = list(read_records(str(p)))
    good = [i for i in items if isinstance(i, Record)]
    bad = [i for i in items if isinstance(i, Bad)]
    assert [r.pos for r in good] == list(range(100)) + list(range(350, 450))
    assert len(bad) == 1 and bad[0].rows == 250 and bad[0].pos == 100
    assert len(good) + sum(b.rows for b in bad) == 450
    assert "Parquet row group 1 (rows 100-349)" in bad[0].error and "250 rows" in bad[0].error


def test_corrupt_row_group_through_ingest_manifest(tmp_path):
    """The manifest counts the 250 lost rows, and the quarantine row says how many it stands for."""
    inp = tmp_path / "in"
    inp.mkdir()
    _parquet_100_250_100(inp / "groups.parquet")
    _smash_row_group(inp / "groups.parquet", 1)
    res, q = _run_ingest(tmp_path, str(inp), max_retries=0)
    assert res.ok, res.failed
    tot = res.manifest["totals"]
    assert (tot["rows_in"], tot["kept"], tot["rejected"], tot["quarantined"]) == (450, 200, 0, 250)
    assert len(q) == 1 and q[0]["rows"] == 250 and q[0]["pos"] == 100
    assert q[0]["byte_offset"] is None and q[0]["byte_length"] is None  # rows are known: not a byte range
    stats = pio.read_json(tmp_path / "out" / "ingest" / pio.STATS)
    assert sum(n for r, n in stats["reasons"].items() if r.startswith("quarantine:")) == 250


def test_row_group_failing_midway_counts_only_unread_rows(tmp_path):
    """A group whose later pages are corrupt: rows already yielded are not counted twice."""
    rnd = random.Random(1)
    n = 5000
    t = pa.table({"id": [f"m{i}" for i in range(n)],
                  "text": ["".join(rnd.choice("abcdefgh ") for _ in range(100)) for _ in range(n)]})
    p = tmp_path / "mid.parquet"
    pq.write_table(t, p, row_group_size=n, data_page_size=20_000, compression="none", use_dictionary=False)
    col = pq.ParquetFile(p).metadata.row_group(0).column(1)
    start = col.dictionary_page_offset or col.data_page_offset
    b = bytearray(p.read_bytes())
    at = start + int(0.7 * col.total_compressed_size)
    b[at:at + 200] = b"\xab" * 200
    p.write_bytes(bytes(b))
    items = list(read_records(str(p)))
    good = [i for i in items if isinstance(i, Record)]
    bad = [i for i in items if isinstance(i, Bad)]
    assert 0 < len(good) < n and [r.pos for r in good] == list(range(len(good)))
    assert len(bad) == 1 and bad[0].pos == len(good) and bad[0].rows == n - len(good)


def test_missing_text_column_counts_all_rows(tmp_path):
    p = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"body": [f"b{i}" for i in range(37)]}), p, row_group_size=10)
    [bad] = list(read_records(str(p)))
    assert isinstance(bad, Bad) and bad.rows == 37 and "no text column 'text'" in bad.error


def test_hf_missing_text_column_counts_dataset_rows(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "hf"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": ["a"] * 12}),
                          "test": datasets.Dataset.from_dict({"body": ["b"] * 5})}).save_to_disk(str(d))
    bad = list(read_records(str(d)))
    assert all(isinstance(b, Bad) for b in bad)
    assert sorted(b.rows for b in bad) == [5, 12]


# ----------------------------------------------------------------------------- JSONL byte ranges


def _gz(data):
    return gzip.compress(data)


def _zst(data):
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("ext,comp", [(".jsonl.gz", _gz), (".jsonl.zst", _zst)])
def test_truncated_stream_names_offset_and_unread_bytes(tmp_path, ext, comp):
    rows = _random_rows(3000)
    data = comp(_jsonl(rows))
    p = tmp_path / f"cut{ext}"
    p.write_bytes(data[: len(data) // 2])
    size = p.stat().st_size
    items = list(read_records(str(p)))
    good = [i for i in items if isinstance(i, Record)]
    [bad] = [i for i in items if isinstance(i, Bad)]
    assert bad is items[-1] and 0 < len(good) < 3000
    assert bad.offset == size and bad.length == 0  # the whole file was read: the stream's end is missing
    assert bad.offset + bad.length == size and bad.rows == 1
    assert f"after line {len(good)}" in bad.error and f"of {size}" in bad.error
    # the incomplete last line is kept as raw bytes: it is the start of line len(good) + 1
    assert bad.raw and _jsonl(rows).split(b"\n")[len(good)].startswith(bad.raw)


@pytest.mark.parametrize("ext,comp", [(".jsonl.gz", _gz), (".jsonl.zst", _zst)])
def test_corrupt_stream_names_unread_byte_range(tmp_path, ext, comp):
    rows = _random_rows(3000, seed=2)
    plain = _jsonl(rows)
    half = plain.index(b"\n", len(plain) // 2) + 1
    first = comp(plain[:half])
    b = bytearray(first + comp(plain[half:]))  # two members/frames; the second one is smashed
    cut = len(first)
    b[cut + 20:cut + 40] = b"\xff" * 20  # near the member/frame header: detected (zstd has no checksum by default)
    p = tmp_path / f"bad{ext}"
    p.write_bytes(bytes(b))
    size = len(b)
    items = list(read_records(str(p)))
    good = [i for i in items if isinstance(i, Record)]
    n_first = plain[:half].count(b"\n")
    assert [r.text for r in good[:n_first]] == [r["text"] for r in rows[:n_first]]  # first member intact
    stream = [x for x in items if isinstance(x, Bad) and x.offset is not None]
    assert len(stream) == 1 and stream[0] is items[-1]
    bad = stream[0]
    # gzip is decoded byte-exactly: reading stopped at the smashed member. zstd buffers a block
    # before decoding it, so there the offset is where reading stopped (a read boundary after it)
    assert (bad.offset == cut) if ext.endswith(".gz") else (cut <= bad.offset < size)
    assert bad.length == size - bad.offset > 0
    assert f"unread bytes {bad.offset}-{size} of {size}" in bad.error


def test_plain_jsonl_has_no_byte_range_for_record_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{oops}\n')
    [good, bad] = list(read_records(str(p)))
    assert isinstance(bad, Bad) and bad.rows == 1 and bad.offset is None and bad.length is None


# ----------------------------------------------------------------------------- transient IO propagates


def _warc_gz(n: int) -> bytes:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    rnd = random.Random(3)
    for i in range(n):
        body = _html(i) + "".join(rnd.choice("abcdefgh ") for _ in range(3000)).encode()
        headers = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.0")
        w.write_record(w.create_warc_record(f"http://example.com/{i}", "response", payload=io.BytesIO(body),
                                            http_headers=headers))
    return buf.getvalue()


def _inputs():
    rows = _random_rows(6000, seed=4)
    plain = _jsonl(rows)
    t = pa.table({"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    pbuf = io.BytesIO()
    pq.write_table(t, pbuf, row_group_size=1000)
    return {"a.jsonl": plain, "a.jsonl.gz": gzip.compress(plain), "a.jsonl.zst": _zst(plain),
            "a.parquet": pbuf.getvalue(), "a.warc.gz": _warc_gz(60), "a.html": _html(7)}


def _html(i: int) -> bytes:
    return ("<html><head><title>t</title></head><body><article><h1>Heading</h1><p>"
            + f"Page {i} has plenty of real sentence content written for the extraction test. " * 8
            + "</p></article></body></html>").encode()


INPUTS = _inputs()


@pytest.mark.parametrize("exc_type", [lambda: OSError(errno.EIO, "Input/output error"),
                                      lambda: TimeoutError("read timed out"),
                                      lambda: ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")],
                         ids=["EIO", "timeout", "connreset"])
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_read_error_mid_file_propagates_out_of_ingest(tmp_path, flaky, name, exc_type):
    data = INPUTS[name]
    exc = exc_type()
    at = len(data) // 2 if name == "a.parquet" else len(data) * 9 // 10  # parquet: inside a row group, not the footer
    url = flaky(name, data, read_at=at, read_exc=exc)
    with pytest.raises(type(exc)) as ei:
        ingest.ingest_file(**_ingest_kwargs(url, tmp_path / "out"))
    assert ei.value is exc  # re-raised as-is, not wrapped, not quarantined


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_same_files_read_fine_without_the_fault(tmp_path, flaky, name):
    """Control for the test above: the inputs themselves are good (nothing quarantined)."""
    res = ingest.ingest_file(**_ingest_kwargs(flaky(name, INPUTS[name]), tmp_path / "out"))
    assert res["quarantined"] == 0 and res["kept"] == res["rows_in"] > 0


def test_open_error_is_transient_but_missing_file_is_quarantined(tmp_path, flaky):
    url = flaky("c.jsonl", _jsonl(_random_rows(10)), open_fails=1, open_exc=ConnectionError("connection refused"))
    with pytest.raises(ConnectionError):
        list(read_records(url))
    gone = flaky("gone.jsonl", _jsonl(_random_rows(10)), open_fails=1, open_exc=FileNotFoundError("gone.jsonl"))
    [bad] = list(read_records(gone))
    assert isinstance(bad, Bad) and "gone.jsonl" in bad.error


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz", "a.jsonl.zst", "a.parquet"])
def test_memory_error_is_never_quarantined(tmp_path, flaky, name):
    data = INPUTS[name]
    url = flaky(name, data, read_at=len(data) // 2, read_exc=MemoryError())
    with pytest.raises(MemoryError):
        ingest.ingest_file(**_ingest_kwargs(url, tmp_path / "out"))


def test_runner_retries_a_task_whose_input_failed_once(tmp_path, flaky):
    rows = _random_rows(500, seed=5)
    url = flaky("in/x.jsonl.zst", _zst(_jsonl(rows)), open_fails=1, open_exc=ConnectionError("connection reset"))
    res, q = _run_ingest(tmp_path, url, max_retries=1)
    assert res.ok, res.failed
    tot = res.manifest["totals"]
    assert (tot["rows_in"], tot["kept"], tot["quarantined"]) == (500, 500, 0) and not q
    assert FlakyFS.opened["/bucket/in/x.jsonl.zst"] == 2


def test_runner_without_retries_reports_the_io_error(tmp_path, flaky):
    url = flaky("in/y.jsonl", _jsonl(_random_rows(20)), open_fails=5, open_exc=TimeoutError("read timed out"))
    res, q = _run_ingest(tmp_path, url, max_retries=0)
    assert not res.ok and len(res.failed) == 1 and "TimeoutError" in str(res.failed[0]) and not q
