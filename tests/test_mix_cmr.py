"""mix.method: cmr on the bundled corpus (data/sample_small ingested; domain `religious`, the KJV
Bible, as the continual-pretraining domain, the other domains as the general corpus) with a tiny
proxy: cmr.json has the grid, the fits, the held-out error and the ratio with its interval; the ratio
follows the fitted law and grows with the tolerance (a changed tolerance re-fits without training);
remix takes the weights; bad parameters are one-line errors."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from stages.mix import cmr
from tests.conftest import SAMPLE_SMALL, clean_env, curate_bin

DOMAIN = "religious"
GRID = {"ratios": [0.0, 0.2, 0.5, 0.8], "tokens": [3000, 6000], "seeds": 1, "bootstrap": 40}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([curate_bin(), *args, "--no-ray", "-q"], capture_output=True, text=True, timeout=600, env=clean_env())


def _cfg(root: Path, name: str, **cmr_keys) -> Path:
    cfg = {"run": {"output": str(root / "run"), "seed": 0, "tokenizer": {"vocab_size": 300, "train_docs": 200}},
           "mix": {"method": "cmr", "domain_column": "source",
                   "proxy": {"n_layer": 1, "n_head": 2, "d_model": 32, "ctx": 32, "sequences_per_step": 8, "lr": 0.01,
                             "train_tokens": 6000, "eval_tokens": 4000},
                   "cmr": {"domain": DOMAIN, **GRID, **cmr_keys}}}
    p = root / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cmr")
    r = _cli("ingest", "--input", str(SAMPLE_SMALL), "--output", str(root / "ingest"), "--source-field", "domain")
    assert r.returncode == 0, r.stderr
    return root / "ingest"


@pytest.fixture(scope="module")
def runs(ingested, tmp_path_factory):
    """The same mix dir at a small and a larger tolerance (the second with --force: re-fit only)."""
    root = tmp_path_factory.mktemp("cmrrun")
    out = root / "mix"
    docs = {}
    for tol in (0.01, 0.2):
        r = _cli("mix", "--input", str(ingested), "--output", str(out), "--config", str(_cfg(root, f"t{tol}", tolerance=tol)), "--force")
        assert r.returncode == 0, r.stderr
        docs[tol] = (json.loads((out / "cmr.json").read_text()), json.loads((out / "weights.json").read_text()))
    return root, out, docs


def test_cmr_json_fields_fit_and_ratio(runs):
    _, out, docs = runs
    c, w = docs[0.01]
    assert c["domain"] == DOMAIN and DOMAIN not in c["general"] and abs(sum(c["general"].values()) - 1) < 1e-9
    assert len(c["grid"]) == len(GRID["ratios"]) * len(GRID["tokens"]) * GRID["seeds"]
    assert {(g["ratio"], g["tokens"]) for g in c["grid"]} == {(r, t) for r in GRID["ratios"] for t in GRID["tokens"]}
    for g in c["grid"]:
        assert np.isfinite(g["general_loss"]) and np.isfinite(g["domain_loss"])
    # the data: more of the domain -> the domain loss falls, the general loss rises (largest token count)
    top = {g["ratio"]: g for g in c["grid"] if g["tokens"] == 6000}
    assert top[0.8]["domain_loss"] < top[0.0]["domain_loss"] and top[0.8]["general_loss"] > top[0.0]["general_loss"]
    for name in ("general", "domain"):
        assert set(c["fit"][name]) == {"a", "b", "alpha", "c", "beta", "gamma", "T_ref"}
        h = c["held_out"][name]
        assert h["points"] == 8 and np.isfinite(h["rmse"]) and h["mean_rel"] < 0.2, h
    assert c["fit"]["general"]["c"] > 0 > c["fit"]["domain"]["c"]  # forgetting vs learning the domain
    ratio = c["ratio"]
    lo, hi = ratio["interval"]
    assert 0 <= lo <= hi <= 1 and 0 <= ratio["value"] <= 1
    # the ratio is the fitted law's: at r* the general loss is (1 + tol) x the r = 0 loss (when r* < 1)
    th = [c["fit"]["general"][k] for k in cmr.PARAMS]
    assert ratio["value"] < 1
    l0, lr = cmr.law(th, np.array([0.0]), np.array([1.0]))[0], cmr.law(th, np.array([ratio["value"]]), np.array([1.0]))[0]
    assert lr == pytest.approx(1.01 * l0, rel=1e-6)
    assert ratio["general_loss_at_ratio"] == pytest.approx(lr) and ratio["domain_gain"] > 0
    # weights.json: the cmr mixture (1 - r) x general shares + r x domain, projected onto the constraints
    ws = {d["name"]: d["weight"] for d in w["domains"]}
    assert w["method"] == "cmr" and w["cmr"] == "cmr.json" and w["critical_ratio"] == ratio["value"]
    assert ws[DOMAIN] == pytest.approx(ratio["realized"])
    if not ratio["projected"]:
        assert ws[DOMAIN] == pytest.approx(ratio["value"])
        for g, s in c["general"].items():
            assert ws[g] == pytest.approx((1 - ratio["value"]) * s)
    s = pq.read_table(out / "search.parquet").to_pydict()
    assert set(s["kind"]) == {"cmr"} and len(s["loss"]) == 8 and "loss_domain" in s


def test_ratio_grows_with_tolerance_without_retraining(runs):
    _, out, docs = runs
    (small, _), (large, _) = docs[0.01], docs[0.2]
    assert large["grid"] == small["grid"]  # same proxy runs: the second tolerance only re-fitted
    assert large["ratio"]["value"] > small["ratio"]["value"]
    assert large["ratio"]["interval"][1] >= small["ratio"]["interval"][1]


def test_remix_accepts_cmr_weights(runs, ingested):
    root, out, docs = runs
    rm = root / "remix"
    r = _cli("remix", "--input", str(ingested), "--output", str(rm), "--weights", str(out / "weights.json"), "--tokens", "60000",
             "--text-only")
    assert r.returncode == 0, r.stderr
    kept = sum(pq.ParquetFile(p).metadata.num_rows for p in rm.glob("part-*.parquet"))
    assert kept > 0
    doms = set()
    for p in rm.glob("part-*.parquet"):
        doms |= set(pq.read_table(p, columns=["domain"]).column("domain").to_pylist())
    assert DOMAIN in doms


@pytest.mark.parametrize("keys, expect", [
    ({"tolerance": 0}, "mix.cmr.tolerance"),
    ({"tolerance": 1.5}, "mix.cmr.tolerance"),
    ({"ratios": []}, "mix.cmr.ratios: Value error, the grid is empty"),
    ({"domain": "klingon"}, "mix.cmr.domain: 'klingon' is not a value of column 'source'"),
    ({"general": ["news", DOMAIN]}, "mix.cmr.general"),
])
def test_bad_parameters_are_one_line_errors(ingested, tmp_path, keys, expect):
    r = _cli("mix", "--input", str(ingested), "--output", str(tmp_path / "mix"), "--config", str(_cfg(tmp_path, "bad", **keys)))
    assert r.returncode != 0
    err = r.stderr.strip()
    assert expect in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "mix" / "tokenizer.json").exists()  # failed before any work


def test_law_recovers_a_known_ratio():
    """The fit and the closed form on a known law with noise: r* within the interval, near the truth."""
    r = np.array([0, 0.1, 0.2, 0.4, 0.6, 0.8] * 3)
    t = np.repeat([0.25, 0.5, 1.0], 6)
    true = (4.0, 1.0, 0.7, 0.8, 1.6, 0.3)
    cells = cmr.law(true, r, t)[:, None] + np.random.default_rng(0).normal(0, 0.01, (18, 2))
    th = cmr.fit(r, t, cells.mean(1))
    want = cmr.critical_ratio(true, 0.05)
    got = cmr.critical_ratio(th, 0.05)
    assert abs(got - want) < 0.03
    b = cmr.bootstrap(r, t, cells, th, 0.05, 1.0, 50, 0)
    assert b["low"] <= got <= b["high"] and b["resample"] == "seeds"
    assert cmr.leave_one_out(r, t, cells.mean(1))["rmse"] < 0.03
    assert cmr.critical_ratio(th, 0.01) < got < cmr.critical_ratio(th, 0.2)
    assert cmr.grid_ratio([0, 0.2, 0.5], [3.0, 3.01, 3.5], 0.01) == 0.2


def test_proxy_continues_from_saved_weights(tmp_path):
    """proxy_lm.train_proxy save_state / init_state (the base the grid continues): a continuation
    starts from the saved weights (lower loss than the same short run from scratch), and saving is
    deterministic."""
    from pipeline.models import proxy_lm

    rng = np.random.default_rng(0)
    probs = 1.0 / np.arange(1, 41) ** 1.2
    stream = rng.choice(40, size=20_000, p=probs / probs.sum()).astype(np.uint16)
    evals = {"v": rng.choice(40, size=2_000, p=probs / probs.sum()).astype(np.uint16)}
    spec = proxy_lm.ProxySpec(vocab_size=40, n_layer=1, n_head=2, d_model=16, ctx=16, batch_size=4, lr=0.01, tokens=4_000,
                              eval_tokens=2_000, device="cpu")
    short = proxy_lm.ProxySpec(**{**spec.__dict__, "tokens": 200})
    a = proxy_lm.train_proxy([stream], [1.0], evals, spec, 0, save_state=str(tmp_path / "a.pt"))
    proxy_lm.train_proxy([stream], [1.0], evals, spec, 0, save_state=str(tmp_path / "b.pt"))
    import torch

    sa, sb = (torch.load(tmp_path / f, weights_only=True) for f in ("a.pt", "b.pt"))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    cont = proxy_lm.train_proxy([stream], [1.0], evals, short, 1, init_state=str(tmp_path / "a.pt"))
    scratch = proxy_lm.train_proxy([stream], [1.0], evals, short, 1)
    assert cont["loss"] < scratch["loss"] - 0.1 and abs(cont["loss"] - a["loss"]) < 0.2, (a["loss"], cont["loss"], scratch["loss"])
