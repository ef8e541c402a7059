"""`curate run --dry-run` (pipeline/estimate.py): the time column uses bench/scale.py's measured rates."""
from __future__ import annotations

import json

from rich.console import Console

from pipeline import config, estimate
from pipeline.driver import StagePlan
from tests.conftest import ROOT


def _render(table) -> str:
    c = Console(width=250, record=True)
    c.print(table)
    return c.export_text()


def test_dry_run_reads_the_measured_rates(tmp_path):
    rates = tmp_path / "scale_rates.json"
    rates.write_text(json.dumps({"measured": "2026-12-05", "size": 4000,
                                 "bytes_per_sec_per_core": {"ingest": 1.0, "filter": 2e6, "cluster": 5.0}}))
    got, src = estimate.byte_rates(rates)
    assert got["ingest"] == 1.0 and got["filter"] == 2e6 and "scale_rates.json" in src
    assert got["dedup"] == estimate.BYTES_PER_SEC_PER_CORE["dedup"] and "cluster" not in got  # model stages keep their estimate
    assert estimate.byte_rates(tmp_path / "none.json") == (estimate.BYTES_PER_SEC_PER_CORE, "built-in rates")
    cfg = config.parse({"run": {"output": str(tmp_path / "run"), "ray": {"num_cpus": 1}},
                        "ingest": {"inputs": [{"path": str(ROOT / "data" / "sample")}]}})
    plans = [StagePlan("ingest", None, tmp_path / "run" / "ingest")]
    slow, fast = _render(estimate.plan_table(cfg, plans, rates)), _render(estimate.plan_table(cfg, plans, tmp_path / "none.json"))
    assert "scale_rates.json" in slow and "built-in rates" in fast
    # 1 byte/s/core: the corpus' tens of MB take years of seconds, against seconds with the built-in rate
    assert "≈" in slow and _est_seconds(slow) > 1000 * _est_seconds(fast)


def _est_seconds(text: str) -> float:
    import re

    return float(re.search(r"≈([\d,]+) s", text).group(1).replace(",", ""))
