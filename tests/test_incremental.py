"""Incremental scheduled runs (what deploy/cronjob.yaml promises): a re-run over a grown input adds
the new files as new shards and leaves every finished shard's bytes alone; dedup checks the new
documents against everything kept before; a changed or removed input file is refused by name."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from pipeline import io
from tests.conftest import SAMPLE_SMALL, clean_env, curate_bin, output_hashes, small_config


def curate(*args, timeout=600):
    return subprocess.run([curate_bin(), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=clean_env())


def _config(tmp_path, inp):
    cfg = small_config(tmp_path, "run")
    data = yaml.safe_load(cfg.read_text())
    data["ingest"]["inputs"][0]["path"] = str(inp)
    default = yaml.safe_load((SAMPLE_SMALL.parents[1] / "configs" / "default.yaml").read_text())
    data["dedup"] = default["dedup"]
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def _write_jsonl_zst(path, rows):
    path.write_bytes(zstandard.ZstdCompressor().compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows)))


def _kept_text(dataset_dir, n):
    """(id, text) of n kept documents long enough to pass every filter again."""
    t = pq.read_table(io.shard_files(dataset_dir)[0], columns=["id", "text", "source"]).to_pylist()
    return [(r["id"], r["text"], r["source"]) for r in t if len(r["text"].split()) > 80][:n]


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@pytest.mark.slow
def test_rerun_over_grown_input_adds_new_shards_and_keeps_old_bytes(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    shutil.copy(SAMPLE_SMALL / "shard-00001.jsonl.zst", inp / "shard-00001.jsonl.zst")
    cfg = _config(tmp_path, inp)
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    before = output_hashes(run)
    assert any(k.startswith("dedup/part-") for k in before)

    # New files arrive: one that sorts BEFORE the old one (ids of the sample), and one holding
    # exact copies (new ids) of documents the first run kept.
    shutil.copy(SAMPLE_SMALL / "shard-00000.jsonl.zst", inp / "shard-00000.jsonl.zst")
    copies = _kept_text(run / "dedup", 3)
    _write_jsonl_zst(inp / "zz-late.jsonl.zst", [{"id": f"copy-{i}", "text": t, "domain": s} for i, (_, t, s) in enumerate(copies)])
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    after = output_hashes(run)
    changed = [k for k, v in before.items() if after.get(k) != v and not k.startswith("dedup/_work/")]
    assert not changed, changed  # every finished shard (kept, rejected, quarantined, index) is untouched
    new = sorted(set(after) - set(before))
    for stage in ("ingest", "filter", "dedup"):
        assert any(k.startswith(f"{stage}/part-") for k in new), (stage, new)

    man = io.read_json(run / "ingest" / io.MANIFEST)
    inputs = {s["inputs"][0]: k for k, s in man["shards"].items()}
    assert inputs[str(inp / "shard-00001.jsonl.zst")] == "part-00000"  # the old file kept its shard name
    assert {inputs[str(inp / "shard-00000.jsonl.zst")], inputs[str(inp / "zz-late.jsonl.zst")]} == {"part-00001", "part-00002"}

    # the new documents are all there: every input row accounted, the sample's new ids kept somewhere
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in io.shard_files(run / "ingest"))
    assert total == man["totals"]["kept"] and man["status"] == "complete"
    dman = io.read_json(run / "dedup" / io.MANIFEST)
    assert dman["status"] == "complete" and dman["totals"]["rows_in"] == io.read_json(run / "filter" / io.MANIFEST)["totals"]["kept"]
    # dedup across runs: the copies of old kept documents are rejected as duplicates of them
    rej = pq.read_table(run / "dedup" / io.REJECTED).to_pylist()
    dup_of = {r["id"]: r["dup_of"] for r in rej}
    for i, (old_id, _, _) in enumerate(copies):
        assert dup_of.get(f"copy-{i}") == old_id, (i, old_id)
    kept_ids = {i for p in io.shard_files(run / "dedup") for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()}
    assert not any(i.startswith("copy-") for i in kept_ids)

    # a third run over the same input is a no-op: same bytes everywhere
    third_before = output_hashes(run)
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 0, r.stderr
    assert output_hashes(run) == third_before


@pytest.mark.slow
def test_changed_or_removed_input_file_is_refused_by_name(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("shard-00000.jsonl.zst", "shard-00001.jsonl.zst"):
        shutil.copy(SAMPLE_SMALL / name, inp / name)
    cfg = small_config(tmp_path, "run")
    data = yaml.safe_load(cfg.read_text())
    data["ingest"]["inputs"][0]["path"] = str(inp)
    cfg.write_text(yaml.safe_dump(data))
    assert curate("run", cfg, "-q", "--no-ray").returncode == 0
    hashes = output_hashes(tmp_path / "run")

    changed = inp / "shard-00001.jsonl.zst"
    with open(changed, "ab") as fh:  # a changed file: new size and mtime
        fh.write(zstandard.ZstdCompressor().compress(b'{"id": "extra", "text": "one more line of text here"}\n'))
    os.utime(changed, (1, 1))
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 2, r.stderr
    line = _error_line(r.stderr)
    assert "changed" in line and str(changed) in line and "--force" in line, line
    assert output_hashes(tmp_path / "run") == hashes

    changed.unlink()
    r = curate("run", cfg, "-q", "--no-ray")
    assert r.returncode == 2
    line = _error_line(r.stderr)
    assert "removed" in line and str(changed) in line, line
    assert output_hashes(tmp_path / "run") == hashes

    r = curate("run", cfg, "-q", "--no-ray", "--force")  # --force recomputes over what is there now
    assert r.returncode == 0, r.stderr
    assert len(io.read_json(tmp_path / "run" / "ingest" / io.MANIFEST)["shards"]) == 1


def test_task_keys_keep_finished_files_and_number_new_ones_after(tmp_path):
    from stages.ingest import task_keys

    out = tmp_path / "out"
    assert task_keys(["b", "d"], out) == ["part-00000", "part-00001"]
    for key, path in (("part-00000", "b"), ("part-00001", "d")):
        io.write_json({"inputs": [path]}, io.marker_path(out, key))
    assert task_keys(["a", "b", "c", "d", "e"], out) == ["part-00002", "part-00000", "part-00003", "part-00001", "part-00004"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
