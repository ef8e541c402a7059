"""The whole path of configs/default.yaml, shrunk to data/sample_small and tiny proxies, through the
CLI with a real Ray: ingest -> filter -> dedup -> score -> cluster -> mix -> remix -> evaluate, then
`curate stats` and `curate report` on the run. Checks the hand-offs between the stages (the
clustered documents' domains in the weights, the weights in the remix, the remix and the mix's
target split in the evaluation) rather than the numbers (tests/test_mix_stage.py has those)."""
from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import clean_env, curate_bin, small_config

EXTRA = {
    "dedup": {"method": ["exact", "fuzzy"]},
    "score": {"fasttext": {"train": {"preselect": {"lm_docs": 300, "pool_docs": 400}, "params": {"epoch": 3}}},
              "perplexity": {"backend": "numpy", "train": {"order": 2, "data": {"max_docs": 300}}},
              "decontam": {"action": "reject"},
              "betr": {"sample_docs": 200, "max_tokens": 16, "params": {"epoch": 10, "dim": 16, "minCount": 1}},
              "quality": [{"column": "fasttext_score", "weight": 2}, {"column": "perplexity", "lower_is_better": True}]},
    "cluster": {"embed": {"max_tokens": 16}, "kmeans": {"k_init": 16}, "refine": {"k": 5}},
    "mix": {"method": "climb", "budget_tokens": 200_000, "constraints": {"max_epochs": 4, "max_weight": 0.6},
            "proxy": {"n_layer": 1, "d_model": 32, "n_head": 2, "ctx": 32, "sequences_per_step": 8, "train_tokens": 8_000, "eval_tokens": 4_000},
            "search": {"rounds": [4, 2], "candidates": 2_000}},
    "remix": {"budget_tokens": 200_000, "select": {"column": "betr", "keep": 0.5}},
    "evaluate": {"train_tokens": 8_000, "arms": ["raw", "proportional", "uniform", "mix", "remix"]},
}


@pytest.mark.slow
def test_whole_path_through_the_cli(tmp_path):
    cfg = small_config(tmp_path, extra=yaml.safe_dump(EXTRA), run={"tokenizer": {"vocab_size": 512, "train_docs": 500}})
    r = subprocess.run([curate_bin(), "run", str(cfg), "-q"], capture_output=True, text=True, timeout=1500, env=clean_env())
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    summary = json.loads((run / "_run_summary.json").read_text())
    assert summary["status"] == "ok"
    assert [s["stage"] for s in summary["stages"]] == ["ingest", "filter", "dedup", "score", "cluster", "mix", "remix", "evaluate"]

    clusters = {str(c["id"]) for c in json.loads((run / "cluster" / "clusters.json").read_text())["clusters"]}
    w = json.loads((run / "mix" / "weights.json").read_text())
    assert {d["name"] for d in w["domains"]} == clusters
    assert abs(sum(d["weight"] for d in w["domains"]) - 1) < 1e-6
    assert all(d["epochs"] <= 4 + 1e-6 and d["weight"] <= 0.6 + 1e-6 for d in w["domains"])

    rm = json.loads((run / "remix" / "_remix.json").read_text())
    assert rm["max_abs_share_error"] <= 0.02
    # the score stage's BETR column reached the remix through cluster: each domain sampled its best half first
    sel = [d for d in rm["domains"] if d["weight"] > 0]
    assert rm["select"]["column"] == "betr" and all(d["docs_available"] <= d["docs_in_domain"] for d in sel)
    assert any(d["docs_available"] < d["docs_in_domain"] for d in sel)  # (the epoch cap may widen a small domain's share)
    assert rm["formats"] == ["parquet", "megatron"] and (run / "remix" / "megatron" / "mixed.idx").exists()
    shards = sorted((run / "remix").glob("part-*.parquet"))
    assert shards and pq.read_schema(shards[0]).names[:4] == ["id", "text", "domain", "n_tokens"]
    assert sorted((run / "remix").glob("part-*.tokens.npy"))

    from pipeline.loader import TrainingShards

    n = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
    assert sum(1 for _ in TrainingShards(run / "remix")) == n

    ev = json.loads((run / "evaluate" / "evaluate.json").read_text())
    assert [a["arm"] for a in ev["arms"]] == EXTRA["evaluate"]["arms"]
    assert ev["split"] == "eval" and set(ev["targets"]) == set(w["targets"])
    assert all(a["loss"] > 0 for a in ev["arms"])

    st = subprocess.run([curate_bin(), "stats", str(run)], capture_output=True, text=True, env=clean_env())
    assert st.returncode == 0 and "evaluate: proxy LM target loss" in st.stdout and "mixture (climb" in st.stdout
    rep = subprocess.run([curate_bin(), "report", str(run)], capture_output=True, text=True, env=clean_env())
    assert rep.returncode == 0, rep.stderr
    html = (run / "report.html").read_text()
    for section in ("funnel", "clusters", "mixture", "evaluate"):
        assert f'<section id="{section}">' in html
    assert 'class="error"' not in html  # every real stage file was readable (bug: _remix.json's list of domains)

    # a second run finds everything done: same weights, same remix shards
    before = {p.name: p.read_bytes() for p in shards}
    r = subprocess.run([curate_bin(), "run", str(cfg), "-q"], capture_output=True, text=True, timeout=900, env=clean_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "mix" / "weights.json").read_text())["domains"] == w["domains"]
    assert {p.name: p.read_bytes() for p in sorted((run / "remix").glob("part-*.parquet"))} == before
