"""Bad input never crashes a run: bad records go to _quarantine/ with a one-line reason naming the
file and line/row, and every good record is still processed (through the real ingest stage + Ray)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import config, driver, io

GOOD = [{"id": f"g{i}", "text": f"Good document number {i} with some words in it."} for i in range(20)]


def jsonl(rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def ingest(tmp: Path, files: dict[str, bytes], **spec) -> tuple[dict, list[dict], list[str]]:
    """Write `files` into an input dir with one good file, run ingest; -> (totals, quarantine rows, kept ids)."""
    inp = tmp / "in"
    inp.mkdir()
    (inp / "00-good.jsonl").write_bytes(jsonl(GOOD))
    for name, data in files.items():
        (inp / name).write_bytes(data)
    cfg = config.parse({"run": {"output": str(tmp / "out")}, "ingest": {"inputs": [{"path": str(inp), **spec}]}})
    [res] = driver.run(cfg, driver.plan(cfg), show_progress=False)
    assert res.ok, res.failed
    for key, s in res.manifest["shards"].items():
        assert s["rows_in"] == s["kept"] + s["rejected"] + s["quarantined"], key
    qdir = tmp / "out" / "ingest" / io.QUARANTINE
    quarantine = [r for p in sorted(qdir.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    for r in quarantine:
        assert "\n" not in r["error"] and r["error"].startswith(str(inp)), r["error"]
    kept = [i for p in sorted((tmp / "out" / "ingest").glob("part-*.parquet")) for i in pq.read_table(p).column("id").to_pylist()]
    assert {g["id"] for g in GOOD} <= set(kept)  # the good file is never hurt
    return res.manifest["totals"], quarantine, kept


@pytest.fixture(autouse=True)
def _ray(ray_session):
    yield


def test_invalid_json_line(tmp_path):
    data = jsonl(GOOD[:2]).replace(b'"id": "g0"', b'"id": "x0"').replace(b'"id": "g1"', b'"id": "x1"')
    tot, q, kept = ingest(tmp_path, {"bad.jsonl": data + b'{"id": "x2", "text": oops}\n' + b'{"id": "x3", "text": "fine after"}\n'})
    assert len(q) == 1 and "bad.jsonl:3:" in q[0]["error"] and "JSON" in q[0]["error"]
    assert q[0]["raw"].startswith(b'{"id": "x2"')
    assert {"x0", "x1", "x3"} <= set(kept)


def test_non_utf8_bytes(tmp_path):
    data = b'{"id": "u1", "text": "caf\xe9 au lait"}\n{"id": "u2", "text": "ok"}\n'
    _, q, kept = ingest(tmp_path, {"latin1.jsonl": data})
    assert len(q) == 1 and "latin1.jsonl:1:" in q[0]["error"] and "UTF-8" in q[0]["error"]
    assert "u2" in kept


@pytest.mark.parametrize("row,needle", [
    ({"id": "m"}, "missing"),
    ({"id": "e", "text": ""}, "empty"),
    ({"id": "n", "text": None}, "null"),
    ({"id": "i", "text": 42}, "not a string"),
    ({"id": "l", "text": ["a", "b"]}, "not a string"),
])
def test_bad_text_field(tmp_path, row, needle):
    _, q, kept = ingest(tmp_path, {"t.jsonl": jsonl([row, {"id": "ok", "text": "fine"}])})
    assert len(q) == 1 and "t.jsonl:1:" in q[0]["error"] and needle in q[0]["error"].lower()
    assert "ok" in kept


def test_20mb_single_document(tmp_path):
    big = "word " * (4 << 20)  # 20 MiB
    tot, q, kept = ingest(tmp_path, {"big.jsonl": jsonl([{"id": "big", "text": big}])})
    assert "big" in kept and not q


def test_20mb_document_over_limit_is_quarantined(tmp_path):
    inp_big = "word " * (4 << 20)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "big.jsonl").write_bytes(jsonl([{"id": "big", "text": inp_big}, {"id": "s", "text": "small"}]))
    cfg = config.parse({"run": {"output": str(tmp_path / "out")}, "ingest": {"inputs": [{"path": str(inp)}], "max_text_bytes": 1 << 20}})
    [res] = driver.run(cfg, driver.plan(cfg), show_progress=False)
    assert res.manifest["totals"]["quarantined"] == 1 and res.manifest["totals"]["kept"] == 1


def test_truncated_gzip(tmp_path):
    rows = [{"id": f"z{i}", "text": f"compressed line {i} " * 20} for i in range(2000)]
    data = gzip.compress(jsonl(rows))
    _, q, kept = ingest(tmp_path, {"cut.jsonl.gz": data[: len(data) // 2]})
    zs = [k for k in kept if k.startswith("z")]
    assert 0 < len(zs) < 2000 and zs == [f"z{i}" for i in range(len(zs))]
    assert len(q) == 1 and "cut.jsonl.gz" in q[0]["error"] and ("truncat" in q[0]["error"] or "corrupt" in q[0]["error"])


def test_truncated_and_corrupt_parquet(tmp_path):
    t = pa.table({"id": [f"p{i}" for i in range(100)], "text": [f"parquet row {i}" for i in range(100)]})
    pq.write_table(t, tmp_path / "whole.parquet")
    whole = (tmp_path / "whole.parquet").read_bytes()
    _, q, kept = ingest(tmp_path, {"cut.parquet": whole[: len(whole) // 2], "garbage.parquet": b"not parquet at all" * 10})
    errors = " | ".join(r["error"] for r in q)
    assert "cut.parquet" in errors and "garbage.parquet" in errors
    assert all(r["pos"] == 0 for r in q)


def test_parquet_bad_rows(tmp_path):
    t = pa.table({"id": ["a", "b", "c"], "text": ["fine", None, ""]})
    buf = pa.BufferOutputStream()
    pq.write_table(t, buf)
    _, q, kept = ingest(tmp_path, {"rows.parquet": buf.getvalue().to_pybytes()})
    assert "a" in kept and sorted(r["pos"] for r in q) == [1, 2]
    assert all("rows.parquet:" in r["error"] for r in q)


def test_empty_file(tmp_path):
    tot, q, _ = ingest(tmp_path, {"empty.jsonl": b""})
    assert not q and tot["rows_in"] == len(GOOD)


def test_unknown_extension(tmp_path):
    _, q, _ = ingest(tmp_path, {"notes.xyz": b"some bytes"})
    assert len(q) == 1 and "notes.xyz" in q[0]["error"] and "unknown input format" in q[0]["error"]


def test_duplicate_ids_in_input(tmp_path):
    rows = [{"id": "d1", "text": "first"}, {"id": "d2", "text": "second"}, {"id": "d1", "text": "again"}]
    _, q, kept = ingest(tmp_path, {"dups.jsonl": jsonl(rows)})
    assert kept.count("d1") == 1 and "d2" in kept
    assert len(q) == 1 and "dups.jsonl:3:" in q[0]["error"] and "duplicate id 'd1'" in q[0]["error"]


def test_mixed_good_and_bad_shards(tmp_path):
    rows = [{"id": f"m{i}", "text": f"mixed {i}"} for i in range(50)]
    files = {
        "a.jsonl": jsonl(rows[:25]),
        "b.jsonl.gz": gzip.compress(jsonl(rows[25:]))[:40],  # truncated early
        "c.parquet": b"PAR1broken",
        "d.jsonl": b"\xff\xfe\x00garbage\n" + jsonl([{"id": "m99", "text": "survivor"}]),
    }
    tot, q, kept = ingest(tmp_path, files)
    assert {f"m{i}" for i in range(25)} | {"m99"} <= set(kept)
    named = {Path(r["file"]).name for r in q}
    assert {"b.jsonl.gz", "c.parquet", "d.jsonl"} <= named
    assert tot["rows_in"] == tot["kept"] + tot["quarantined"]


def test_ids_are_stable_when_absent(tmp_path):
    rows = [{"text": "no id one"}, {"text": "no id two"}]
    _, _, kept = ingest(tmp_path, {"noid.jsonl": jsonl(rows)}, source="web")
    assert {"web/noid.jsonl:1", "web/noid.jsonl:2"} <= set(kept)


def test_duplicate_ids_across_files(tmp_path):
    a = [{"id": "x1", "text": "from a"}, {"id": "x2", "text": "only a"}]
    b = [{"id": "x1", "text": "from b"}, {"id": "x3", "text": "only b"}, {"id": "g5", "text": "clash with good"}]
    tot, q, kept = ingest(tmp_path, {"a.jsonl": jsonl(a), "b.jsonl": jsonl(b)})
    assert sorted(k for k in kept if k.startswith("x")) == ["x1", "x2", "x3"] and kept.count("g5") == 1
    errs = sorted(r["error"] for r in q)
    assert len(errs) == 2 and all("duplicate id" in e and "b.jsonl" in e for e in errs)
    assert any("first seen in" in e and "00-good.jsonl" in e for e in errs)
    assert tot["rows_in"] == tot["kept"] + tot["quarantined"] == len(GOOD) + 5


def test_duplicate_id_repair_is_idempotent(tmp_path):
    """Re-running the global step (as after a kill) changes nothing more."""
    from stages import ingest as ingest_stage

    a = [{"id": "y", "text": "a"}]
    tot, q, kept = ingest(tmp_path, {"a.jsonl": jsonl(a), "b.jsonl": jsonl(a)})
    out = tmp_path / "out" / "ingest"
    man = io.read_json(out / io.MANIFEST)
    markers = {k: io.read_marker(out, k) for k in man["shards"]}
    before = {p.name: io.sha256_file(p) for p in out.rglob("*.parquet")}
    ingest_stage.finalize(out, markers)
    assert {p.name: io.sha256_file(p) for p in out.rglob("*.parquet")} == before
    assert kept.count("y") == 1 and len(q) == 1


def test_duplicate_ids_across_files_under_a_tiny_memory_cap(tmp_path, monkeypatch):
    """The cross-file id check runs in the driver with a DuckDB memory cap (it spills instead of
    growing with the corpus): with a cap below the id table (300k ids of 210 bytes), the same rows are found."""
    from stages import ingest as ingest_stage

    monkeypatch.setattr(ingest_stage, "DUPID_MEMORY", "32MB")
    a = [{"id": f"id-{i:07d}-" + "x" * 200, "text": "a"} for i in range(300_000)]
    b = [{"id": f"id-{i:07d}-" + "x" * 200, "text": "b"} for i in range(298_000, 302_000)]
    tot, q, kept = ingest(tmp_path, {"a.jsonl": jsonl(a), "b.jsonl": jsonl(b)})
    assert len(q) == 2_000 and all("b.jsonl" in r["error"] and "first seen in" in r["error"] for r in q)
    assert len(kept) == len(set(kept)) == len(GOOD) + 302_000
    assert not (tmp_path / "out" / "ingest" / ".tmp-dupid").exists()
