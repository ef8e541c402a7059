"""The mix stage end to end with real proxy LMs on a synthetic corpus with a known answer: four
domains written in four made-up vocabularies; the target set is fresh text of domain `c`. Every
search method must put the most weight on `c` and beat uniform on the predicted and the trained
proxy loss. Also: outputs, resume after SIGKILL without re-training finished proxies."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import clean_env, curate_bin, kill_group

DOMAINS = ("a", "b", "c", "d")
TARGET = "c"


def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=rng.integers(3, 8))) for _ in range(n)]


def _doc(rng: np.random.Generator, vocab: list[str], probs: np.ndarray, n_words: int) -> str:
    return " ".join(rng.choice(vocab, size=n_words, p=probs)) + "."


def make_corpus(root: Path, docs_per_domain: int = 120) -> tuple[Path, Path]:
    """A dataset dir (2 shards, column `source`) and a target JSONL drawn from domain TARGET."""
    rng = np.random.default_rng(7)
    zipf = 1.0 / np.arange(1, 61) ** 1.1
    zipf /= zipf.sum()
    vocabs = {d: _words(np.random.default_rng(100 + i), 60) for i, d in enumerate(DOMAINS)}
    rows = {"id": [], "text": [], "source": [], "n_tokens": []}
    for d in DOMAINS:
        # the target domain is the smallest, so token-proportional weighting under-weights it
        n = docs_per_domain // 2 if d == TARGET else docs_per_domain
        for j in range(n):
            t = _doc(rng, vocabs[d], zipf, int(rng.integers(40, 120)))
            rows["id"].append(f"{d}-{j}")
            rows["text"].append(t)
            rows["source"].append(d)
            rows["n_tokens"].append(len(t.split()))
    inp = root / "in"
    inp.mkdir()
    order = rng.permutation(len(rows["id"]))
    table = pa.table(rows).take(pa.array(order))
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), inp / "part-00000.parquet")
    pq.write_table(table.slice(half), inp / "part-00001.parquet")
    tgt = root / "target.jsonl"
    trng = np.random.default_rng(999)
    with open(tgt, "w") as fh:
        for j in range(60):
            fh.write(json.dumps({"id": f"t{j}", "text": _doc(trng, vocabs[TARGET], zipf, 80)}) + "\n")
    return inp, tgt


def mix_config(root: Path, method: str, tgt: Path, out: str = "run", **search) -> Path:
    cfg = {
        "run": {"output": str(root / out), "seed": 0, "ray": {"num_cpus": 2}, "tokenizer": {"vocab_size": 300, "train_docs": 200}},
        "mix": {
            "method": method, "domain_column": "source",
            "targets": [{"name": "synth", "path": str(tgt)}],
            "proxy": {"n_layer": 1, "n_head": 2, "d_model": 32, "ctx": 32, "sequences_per_step": 8, "train_tokens": 12_000, "lr": 0.01},
            "search": {"rounds": [6, 4], "runs": 10, "candidates": 2000, "top_k": 16, **search},
        },
    }
    p = root / f"{out}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixcorpus")
    return make_corpus(root)


def run_mix(cfg_path: Path, inp: Path, out: Path, *extra: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([curate_bin(), "mix", "--input", str(inp), "--output", str(out), "--config", str(cfg_path), "-q", *extra],
                          capture_output=True, text=True, timeout=timeout, env=clean_env())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["climb", "regmix"])
def test_search_finds_the_target_domain(tmp_path, corpus, method):
    inp, tgt = corpus
    cfg = mix_config(tmp_path, method, tgt)
    out = tmp_path / "mix"
    r = run_mix(cfg, inp, out, "--no-ray")
    assert r.returncode == 0, r.stderr
    w = json.loads((out / "weights.json").read_text())
    weights = {d["name"]: d["weight"] for d in w["domains"]}
    assert max(weights, key=weights.get) == TARGET, weights
    assert weights[TARGET] > 0.4, weights
    # beats uniform on the trained proxy loss (same tokens, same seed) ...
    assert w["trained_loss"]["chosen"] < w["trained_loss"]["uniform"], w["trained_loss"]
    assert w["trained_loss"]["chosen"] < w["trained_loss"]["proportional"], w["trained_loss"]
    assert "best_run" in w["trained_loss"]
    v = w["verify"]  # seed-averaged verification: 3 seeds per candidate, the final one with its interval
    assert v["seeds"] == 3 and all(len(x) == 3 for x in v["losses"].values())
    if w["picked"] == "predicted":
        assert v["final"] == "chosen" and (w["predictor_rho"] >= 0.5 or "rho" not in v["rule"])
    else:  # the predictor was unreliable: the candidate with the lowest mean loss
        assert w["picked"] == f"seed_mean:{v['final']}" and v["mean"][v["final"]] == min(v["mean"][n] for n in ("chosen", "best_run", "second_run") if n in v["mean"])
    assert v["vs_uniform"]["n"] == 3 and v["vs_uniform"]["mean"] < 0, v
    # ... and on the predicted loss
    pb = w["predicted_baselines"]
    assert pb["chosen"] < pb["uniform"] and w["predicted_loss"] < pb["uniform"], (w["predicted_loss"], pb)
    # every proxy run is in search.parquet with its weights and loss
    s = pq.read_table(out / "search.parquet").to_pandas()
    n_search = sum([6, 4]) if method == "climb" else 10
    assert (s["kind"] == "search").sum() == n_search
    assert {f"w_{d}" for d in DOMAINS} <= set(s.columns) and "loss_synth" in s.columns
    assert np.allclose(s[[f"w_{d}" for d in DOMAINS]].sum(axis=1), 1.0, atol=1e-6)
    # the trainer recipes are written by remix, next to the data they name (tests/test_remix_outputs.py)
    assert (out / "tokenizer.json").exists() and not (out / "megatron_data_path.txt").exists()


def test_baseline_method_trains_only_the_verification_runs(tmp_path, corpus):
    inp, tgt = corpus
    cfg = mix_config(tmp_path, "unimax", tgt)
    out = tmp_path / "mix"
    r = run_mix(cfg, inp, out, "--no-ray", "--max-epochs", "2", "--budget", "60000")
    assert r.returncode == 0, r.stderr
    w = json.loads((out / "weights.json").read_text())
    assert w["method"] == "unimax" and w["max_epochs"] == 2
    for d in w["domains"]:
        assert d["epochs"] <= 2 + 1e-6, d
    s = pq.read_table(out / "search.parquet")
    assert set(s.column("kind").to_pylist()) == {"verify"}


def test_evaluate_reports_seed_intervals(tmp_path, corpus):
    """curate evaluate with 3 seeds: per-arm seed losses and std, paired intervals vs raw and vs the
    best baseline; the synthetic target (domain c) is learnt better by the c-heavy mix than raw."""
    inp, tgt = corpus
    cfg = mix_config(tmp_path, "climb", tgt)
    out = tmp_path / "mix"
    assert run_mix(cfg, inp, out, "--no-ray").returncode == 0
    ev = tmp_path / "ev"
    r = subprocess.run([curate_bin(), "evaluate", "--mix", str(out), "--raw", str(inp), "--output", str(ev), "--config", str(cfg),
                        "--tokens", "12000", "--seeds", "3", "--arms", "raw,uniform,proportional,mix", "--no-ray", "-q"],
                       capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr
    e = json.loads((ev / "evaluate.json").read_text())
    arms = {a["arm"]: a for a in e["arms"]}
    assert e["seeds"] == 3 and all(len(a["seed_losses"]) == 3 and a["std"] > 0 for a in arms.values())
    mix = arms["mix"]
    for key in ("vs_raw_paired", "vs_best_baseline"):
        x = mix[key]
        assert x["n"] == 3 and x["lo"] <= x["mean"] <= x["hi"] and x["significant"] == (x["lo"] > 0 or x["hi"] < 0)
    assert mix["vs_best_baseline"]["baseline"] == min(("uniform", "proportional"), key=lambda b: arms[b]["loss"])
    assert mix["vs_raw_paired"]["mean"] < 0 and mix["vs_raw_paired"]["hi"] < 0, mix  # c-heavy beats natural proportions
    assert arms["raw"]["vs_raw_paired"] is None
    st = subprocess.run([curate_bin(), "stats", str(ev)], capture_output=True, text=True, env=clean_env())
    assert st.returncode == 0 and "vs best baseline" in st.stdout and "3 seed(s) per arm" in st.stdout, st.stdout


def test_bad_domain_column_is_one_line(tmp_path, corpus):
    inp, tgt = corpus
    cfg = mix_config(tmp_path, "uniform", tgt)
    r = subprocess.run([curate_bin(), "mix", "--input", str(inp), "--output", str(tmp_path / "m"), "--config", str(cfg),
                        "--domain-column", "nope", "--no-ray", "-q"], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 2
    assert "nope" in r.stderr and "not in" in r.stderr and len(r.stderr.strip().splitlines()) <= 2


@pytest.mark.slow
def test_search_resumes_after_sigkill_without_retraining(tmp_path, corpus):
    inp, tgt = corpus
    cfg = mix_config(tmp_path, "climb", tgt, rounds=[6, 6])
    out = tmp_path / "mix"
    p = subprocess.Popen([curate_bin(), "mix", "--input", str(inp), "--output", str(out), "--config", str(cfg), "-q"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env(), start_new_session=True)
    rounds = out / "_work" / "rounds"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and p.poll() is None:
            done = list(rounds.glob("*/_done/*.json")) if rounds.exists() else []
            if len(done) >= 2:
                break
            time.sleep(0.2)
    finally:
        kill_group(p)
    assert not (out / "weights.json").exists(), "killed too late: the search had finished"
    before = {f: f.read_bytes() for f in rounds.rglob("_done/*.json")}
    assert len(before) >= 2
    r = run_mix(cfg, inp, out)
    assert r.returncode == 0, r.stderr
    for f, content in before.items():  # a finished proxy run is never trained (or written) again
        assert f.read_bytes() == content, f
    # and the result equals an uninterrupted run
    ref = tmp_path / "ref"
    r = run_mix(mix_config(tmp_path, "climb", tgt, out="ref", rounds=[6, 6]), inp, ref, "--no-ray")
    assert r.returncode == 0, r.stderr
    a, b = json.loads((out / "weights.json").read_text()), json.loads((ref / "weights.json").read_text())
    assert [d["weight"] for d in a["domains"]] == pytest.approx([d["weight"] for d in b["domains"]], abs=1e-9)
