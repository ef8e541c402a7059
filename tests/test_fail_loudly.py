"""A broken model or filter fails loudly (issue 12): a model that cannot load fails the task before
any document, a filter that raises on a whole batch (or on more than run.max_error_fraction of a
shard) fails the task naming the filter and the cause, and `curate run` exits 1. Below the budget,
documents a filter raises on are quarantined as before and the run exits 0."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import filters
from filters import langid
from pipeline import config, driver, io, runner
from stages import filter as F
from tests.conftest import ROOT, clean_env, curate_bin

WORDS = "the committee will publish its final report on the new railway line next spring".split()


def _docs(tmp: Path, n: int, bad: set[int] = frozenset(), marker: str = "BOOM") -> Path:
    """A JSONL file of `n` English documents; those in `bad` contain `marker`."""
    p = tmp / "docs.jsonl"
    with p.open("w") as f:
        for i in range(n):
            text = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(30)) + f" number {i}."
            if i in bad:
                text += f" {marker}"
            f.write(json.dumps({"id": f"d{i:04d}", "text": text}) + "\n")
    return p


def _config(tmp: Path, docs: Path, specs: list[dict], **run) -> Path:
    cfg = {"run": {"output": str(tmp / "run"), "ray": {"num_cpus": 2}, **run},
           "ingest": {"inputs": [{"path": str(docs), "source": "web"}]},
           "filter": {"filters": specs}}
    p = tmp / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _done(d: Path) -> list[str]:
    return sorted(p.name for p in (d / "_done").glob("*")) if (d / "_done").exists() else []


def _error_lines(stderr: str, *needles: str) -> list[str]:
    return [line for line in stderr.splitlines() if all(n in line for n in needles)]


# ---------------------------------------------------------------- a model that cannot load


def test_missing_langid_model_exits_1_before_any_shard(tmp_path):
    """Today every document was quarantined ('model not found' per document) and the run exited 0."""
    missing = tmp_path / "models" / "nope.ftz"
    cfg = _config(tmp_path, _docs(tmp_path, 50), [{"type": "length"}, {"type": "langid", "params": {"model_path": str(missing)}}])
    r = subprocess.run([curate_bin(), "run", str(cfg), "--no-ray", "--quiet"], capture_output=True, text=True,
                       timeout=300, env=clean_env())
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = _error_lines(r.stderr, "langid", str(missing))
    assert len(lines) == 1, r.stderr
    assert "model_path" in lines[0]
    assert _done(tmp_path / "run" / "filter") == []
    assert io.read_json(tmp_path / "run" / "ingest" / io.MANIFEST)["status"] == "complete"  # the stage before ran


def test_model_missing_on_a_worker_fails_the_task_with_ray(tmp_path, ray_session):
    """The driver saw the model, the workers do not (another node): every task fails at set-up,
    before any document, with one line naming the filter and the path; no shard is marked done."""
    model = tmp_path / "lid.ftz"
    shutil.copy(langid.default_model_path(), model)
    cfg = config.load(_config(tmp_path, _docs(tmp_path, 60), [{"type": "langid", "params": {"model_path": str(model)}}],
                              shard={"target_rows": 20}))
    (ing,) = driver.run(cfg, driver.plan(cfg, ["ingest"]), show_progress=False)
    assert ing.ok and len(io.shard_files(ing.out)) == 3
    out = tmp_path / "run" / "filter"
    tasks, fp = F.tasks(cfg, ing.out, out)  # the driver's check passes: the file is there
    model.unlink()  # ... but not where the tasks run
    res = runner.run_stage("filter", out, tasks, config_hash=cfg.stage_hash("filter"), input_fingerprint=fp,
                           use_ray=True, max_retries=1, show_progress=False)
    assert not res.ok and sorted(f["key"] for f in res.failed) == [t.key for t in tasks]
    for f in res.failed:
        assert "langid" in f["error"] and str(model) in f["error"] and "\n" not in f["error"], f
    assert _done(out) == []
    assert not list(out.glob("part-*.parquet")) and not list((out / io.QUARANTINE).glob("*.parquet"))


def test_driver_checks_filter_models_before_any_task(tmp_path):
    """`filters.build` (what config validation calls) stays cheap; the stage's plan checks the files."""
    missing = tmp_path / "nope.ftz"
    cfg = config.load(_config(tmp_path, _docs(tmp_path, 5), [{"type": "langid", "params": {"model_path": str(missing)}}]))
    with pytest.raises(filters.ModelError, match=r"filter 'langid': model_path .*nope\.ftz"):
        F.tasks(cfg, tmp_path, tmp_path / "out")


# ---------------------------------------------------------------- a filter that raises

BOOM_CLI = textwrap.dedent('''
    """`curate` with one more filter, registered through the public registry: raises on documents
    that contain its marker."""
    import sys

    import filters
    from filters import Filter, FilterResult


    @filters.register
    class Boom(Filter):
        name = "test_boom"
        params = {"marker": "BOOM"}

        def apply(self, batch):
            if any(self.cfg["marker"] in t for t in batch.texts):
                raise ValueError(f"cannot handle {self.cfg['marker']!r}")
            return FilterResult([None] * len(batch))


    from pipeline.cli import main

    sys.argv[0] = "curate"
    main()
''')


def _run_boom(tmp: Path, n: int, bad: set[int], **run) -> subprocess.CompletedProcess:
    script = tmp / "curate_boom.py"
    script.write_text(BOOM_CLI)
    cfg = _config(tmp, _docs(tmp, n, bad), [{"type": "length", "params": {"min_words": 5}}, {"type": "test_boom"}], **run)
    env = clean_env(PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(script), "run", str(cfg), "--no-ray", "--quiet"], capture_output=True,
                          text=True, timeout=300, env=env)


def test_one_bad_document_in_1000_is_quarantined(tmp_path):
    r = _run_boom(tmp_path, 1000, {417})
    assert r.returncode == 0, r.stderr
    out = tmp_path / "run" / "filter"
    tot = io.read_json(out / io.MANIFEST)["totals"]
    assert (tot["rows_in"], tot["kept"], tot["quarantined"]) == (1000, 999, 1)
    (q,) = [row for p in (out / io.QUARANTINE).glob("*.parquet") for row in pq.read_table(p).to_pylist()]
    assert q["id"] == "d0417" and "filter 'test_boom' raised ValueError: cannot handle 'BOOM'" in q["error"]


def test_20_bad_documents_in_1000_fail_the_task(tmp_path):
    """2 % of the shard raised: over the default budget of 1 %."""
    r = _run_boom(tmp_path, 1000, set(range(5, 1000, 50)))
    assert r.returncode == 1, r.stderr
    (line,) = _error_lines(r.stderr, "failed shard")
    assert "filter 'test_boom'" in line and "20 of 1000 documents" in line and "max_error_fraction" in line
    assert "ValueError: cannot handle 'BOOM'" in line  # the first error
    assert _done(tmp_path / "run" / "filter") == []


def test_budget_is_configurable(tmp_path):
    r = _run_boom(tmp_path, 1000, set(range(5, 1000, 50)), max_error_fraction=0.05)
    assert r.returncode == 0, r.stderr
    assert io.read_json(tmp_path / "run" / "filter" / io.MANIFEST)["totals"]["quarantined"] == 20


def test_filter_raising_on_every_document_fails_the_task(tmp_path):
    """A systematic error (every document of the batch), not bad documents: the task fails naming
    the filter and the cause (the message says which rule: not the share of the shard)."""
    r = _run_boom(tmp_path, 300, set(range(300)))
    assert r.returncode == 1, r.stderr
    (line,) = _error_lines(r.stderr, "failed shard")
    assert "filter 'test_boom' failed on all 300 documents of a batch of" in line
    assert "part-00000" in line and "ValueError: cannot handle 'BOOM'" in line
    assert _done(tmp_path / "run" / "filter") == []
