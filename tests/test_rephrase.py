"""The rephrase stage on bundled data: lineage, accounting with created rows, determinism,
one-line config errors, and resume after SIGKILL (byte-identical to an uninterrupted run)."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from tests.conftest import SAMPLE_SMALL, clean_env, curate_bin, kill_group, output_hashes

from pipeline.config import ConfigError, parse


def _docs(n: int) -> list[dict]:
    """The n shortest prose documents of the bundled small sample (short: cheap to rewrite on CPU)."""
    rows = []
    for p in sorted(SAMPLE_SMALL.glob("*.jsonl.zst")):
        with zstandard.open(p, "rt") as f:
            rows += [orjson.loads(line) for line in f]
    rows = [r for r in rows if r.get("domain") != "code" and 80 < len(r["text"]) < 400]
    return sorted(rows, key=lambda r: (len(r["text"]), r["id"]))[:n]


def _config(tmp: Path, name: str, n_docs: int = 6, per_shard: int = 3, rephrase: dict | None = None) -> Path:
    inp = tmp / "input.jsonl"
    if not inp.exists():
        inp.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in _docs(n_docs)))
    cfg = {
        "run": {"name": name, "output": str(tmp / name), "seed": 0, "shard": {"target_rows": per_shard},
                "ray": {"num_cpus": 2}},
        "ingest": {"inputs": [{"path": str(inp), "text_field": "text", "id_field": "id", "source_field": "domain"}]},
        "rephrase": {"style": "wikipedia", "select": {"fraction": 1.0}, "max_new_tokens": 12, "docs_per_forward": 3,
                     "threads": 2, "device": "cpu", **(rephrase or {})},
    }
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _run(cfg: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([curate_bin(), "run", str(cfg)], capture_output=True, text=True, timeout=timeout, env=clean_env())


def _read(d: Path):
    return pq.ParquetDataset(sorted(str(p) for p in d.glob("part-*.parquet"))).read().to_pylist()


def test_rephrase_replace_originals_and_column_select(tmp_path):
    r = _run(_config(tmp_path, "c", n_docs=4, per_shard=4,
                     rephrase={"style": "qa", "keep_originals": False, "select": {"column": "n_tokens", "below": 60}, "max_docs": 2}))
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "c" / "rephrase"
    kept, rejected = _read(d), pq.read_table(next((d / "_rejected").glob("*.parquet"))).to_pylist()
    assert len(rejected) == 2 and {x["reason"] for x in rejected} == {"rephrase:replaced"}
    made = [x for x in kept if x["rephrased_from"] is not None]
    assert sorted(x["rephrased_from"] for x in made) == sorted(x["id"] for x in rejected)
    assert all(x["rephrase_style"] == "qa" for x in made) and len(kept) == 4


@pytest.mark.parametrize("section,msg", [
    ({"style": "poem"}, "rephrase.style"),
    ({"select": {"column": "quality"}}, "select.column and select.below go together"),
    ({"select": {"fraction": 1.5}}, "rephrase.select.fraction"),
    ({"select": {"column": "quality", "below": 0.5}}, "rephrase.select.column: 'quality' needs the score stage"),
    ({"max_new_tokens": 0}, "rephrase.max_new_tokens"),
    ({"temperature": 0.7}, "rephrase.temperature: unknown key"),
])
def test_rephrase_bad_params_one_line(tmp_path, section, msg):
    data = yaml.safe_load(_config(tmp_path, "x").read_text())
    data["rephrase"].update(section)
    with pytest.raises(ConfigError) as e:
        parse(data, "cfg.yaml")
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_rephrase_missing_model_fails_loudly(tmp_path):
    r = _run(_config(tmp_path, "m", rephrase={"model": str(tmp_path / "nope.gguf")}))
    assert r.returncode != 0
    assert "ModelError" in r.stderr + r.stdout or "model file" in r.stderr + r.stdout
    assert not (tmp_path / "m" / "rephrase" / "_quarantine").exists() or not list((tmp_path / "m" / "rephrase" / "_quarantine").glob("*.parquet"))


def test_rephrase_lineage_accounting_determinism_and_resume_after_sigkill(tmp_path):
    """One uninterrupted run (lineage and accounting checked), then the same config killed after its
    first shard's marker and resumed: byte-identical to the first (determinism and resume at once;
    each run loads the rewriting model, so the test keeps to three runs)."""
    fraction = {"select": {"fraction": 0.7}}
    a = _run(_config(tmp_path, "a", n_docs=9, per_shard=3, rephrase=fraction))
    assert a.returncode == 0, a.stderr[-3000:]
    rows = _read(tmp_path / "a" / "rephrase")
    orig = {r["id"]: r for r in rows if r["rephrased_from"] is None}
    made = [r for r in rows if r["rephrased_from"] is not None]
    assert len(orig) == 9 and 0 < len(made) < 9  # fraction 0.7 of 9: some, not all
    for r in made:
        src = orig[r["rephrased_from"]]
        assert r["id"] == f"{src['id']}#rephrase-wikipedia" and r["rephrase_style"] == "wikipedia"
        assert r["text"] and r["text"] != src["text"] and r["source"] == src["source"]
    markers = [orjson.loads(p.read_bytes()) for p in sorted((tmp_path / "a" / "rephrase" / "_done").glob("*.json"))]
    assert len(markers) == 3
    assert sum(m["created"] for m in markers) == len(made)
    assert all(m["rows_in"] + m["created"] == m["kept"] for m in markers)

    cfg = _config(tmp_path, "k", n_docs=9, per_shard=3, rephrase=fraction)
    done = tmp_path / "k" / "rephrase" / "_done"
    p = subprocess.Popen([curate_bin(), "run", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env=clean_env(), start_new_session=True)
    t0 = time.monotonic()
    while not (done.is_dir() and any(done.glob("*.json"))) and p.poll() is None and time.monotonic() - t0 < 600:
        time.sleep(0.05)
    killed_with = len(list(done.glob("*.json"))) if done.is_dir() else 0
    kill_group(p)
    assert 1 <= killed_with  # the kill came after the first shard's marker
    r = subprocess.run([curate_bin(), "run", str(cfg), "--resume"], capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert output_hashes(tmp_path / "k" / "rephrase") == output_hashes(tmp_path / "a" / "rephrase")


def test_rephrase_select_column_missing_from_input_is_one_line(tmp_path):
    """A select column the input does not have fails in the driver, naming the input and its columns."""
    import pyarrow as pa

    from pipeline import io
    from stages.rephrase import tasks

    cfg = parse(yaml.safe_load(_config(tmp_path, "y", rephrase={"select": {"column": "n_tokens", "below": 60}}).read_text()), "cfg.yaml")
    cfg.rephrase.select.column = "quality"
    inp = tmp_path / "inp"
    io.write_parquet(pa.table({"id": ["a"], "text": ["x"], "n_tokens": [1]}), inp / "part-00000.parquet")
    with pytest.raises(ConfigError) as e:
        tasks(cfg, inp, tmp_path / "out")
    assert "rephrase.select.column" in str(e.value) and "'quality'" in str(e.value) and "\n" not in str(e.value)
