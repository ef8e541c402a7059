"""mix.method skillit on the bundled corpus (data/sample_small, 11 domains, ingested with the real
ingest stage): the skills graph's shape and diagonal, the per-phase schedule and its update rule,
remix writing the phases, resume without re-training, one-line errors for bad parameters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import config as pc
from pipeline import driver, io
from pipeline.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PROXY = {"n_layer": 1, "n_head": 2, "d_model": 32, "ctx": 32, "sequences_per_step": 8, "train_tokens": 12_000, "lr": 0.01}


def write_config(root: Path, **skillit) -> Path:
    cfg = {"run": {"output": str(root / "run"), "seed": 0, "tokenizer": {"vocab_size": 400, "train_docs": 300}},
           "ingest": {"inputs": [{"path": str(ROOT / "data" / "sample_small"), "pattern": "*.jsonl.zst", "text_field": "text",
                                  "id_field": "id", "source_field": "domain"}]},
           "mix": {"method": "skillit", "domain_column": "source", "proxy": PROXY,
                   "skillit": {"phases": 3, "eta": 0.5, "val_tokens": 2000, **skillit}}}
    p = root / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def run_stages(path: Path, only: list[str], **kw):
    cfg = pc.load(path)
    res = driver.run(cfg, driver.plan(cfg, only=only, **kw), use_ray=False, show_progress=False)
    assert all(r.ok for r in res), [r.failed for r in res]
    return cfg


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    root = tmp_path_factory.mktemp("skillit")
    run_stages(write_config(root), ["ingest", "mix"])
    mix = root / "run" / "mix"
    return root, json.loads((mix / "skillit.json").read_text()), json.loads((mix / "weights.json").read_text())


def test_graph_shape_and_diagonal(mixed):
    _, sk, _ = mixed
    g = sk["graph"]
    doms = sk["domains"]
    k = len(doms)
    A = np.array(g["A"])
    assert k == 11 and g["rows"] == doms
    # columns: every domain's validation tail, then the four bundled target benchmarks
    assert g["columns"] == [d + "@val" for d in doms] + ["arc_challenge", "gsm8k", "humaneval", "mbpp"]
    assert A.shape == (k, k + 4) and np.all(A >= 0) and np.all(A < 1)
    # training on a domain lowers its own held-out loss more than any other domain's training does,
    # and more than it lowers any other domain's loss (a random or constant graph fails this).
    # web_noise is injected boilerplate / lorem ipsum / ASCII art (24 docs): its tail is unlike its head.
    B = A[:, :k]
    real = [i for i, d in enumerate(doms) if d != "web_noise"]
    for i in real:
        assert B[i, i] == B[i].max(), (doms[i], B[i].round(3).tolist())
        assert B[i, i] == B[:, i].max(), (doms[i], B[:, i].round(3).tolist())
    off = B[~np.eye(k, dtype=bool)]
    assert np.diag(B).mean() > 1.5 * off.mean()
    # the definition: relative drop of each trained proxy's loss vs the untrained reference, clipped at 0
    ref, trained = g["reference_losses"], g["trained_losses"]
    for i, d in enumerate(doms):
        for j, col in enumerate(g["columns"]):
            assert A[i, j] == pytest.approx(max(0.0, (ref[col] - trained[d][col]) / ref[col]), abs=1e-7)


def test_schedule_follows_the_update_rule(mixed):
    from stages.mix import Bounds, skillit

    _, sk, w = mixed
    doms, sched = sk["domains"], sk["schedule"]
    assert len(sched) == 3 and sk["eta"] == 0.5
    W = np.array([[p["weights"][d] for d in doms] for p in sched])
    assert np.allclose(W.sum(axis=1), 1.0) and np.all(W >= 0)
    assert np.abs(np.diff(W, axis=0)).max() > 0.02  # the mixture changes over training
    cols = sk["eval_skills"]
    assert cols == ["arc_challenge", "gsm8k", "humaneval", "mbpp"]
    A = np.array(sk["graph"]["A"])[:, [sk["graph"]["columns"].index(c) for c in cols]]
    tokens = [d["tokens"] for d in w["domains"]]
    b = Bounds()
    assert np.allclose(W[0], skillit.initial_weights(A, 0.5, tokens, w["budget_tokens"], b))
    for t in range(2):
        L = np.array([sched[t]["losses_after"][c] for c in cols])
        assert np.allclose(W[t + 1], skillit.update(A, 0.5, W[t], L, tokens, w["budget_tokens"], b), atol=1e-9)
    # weights.json: the phases for remix, top-level weights = their token-weighted mean
    assert w["method"] == "skillit" and w["skillit"] == "skillit.json"
    assert [p["weights"] for p in w["phases"]] == [p["weights"] for p in sched]
    mean = W.mean(axis=0)
    assert np.allclose([d["weight"] for d in w["domains"]], mean / mean.sum())


def test_remix_writes_the_phases(mixed, tmp_path):
    from stages.remix.stage import remix

    root, sk, _ = mixed
    out = tmp_path / "remix"
    res = remix(root / "run" / "ingest", out, root / "run" / "mix" / "weights.json", 150_000, seed=0, target_rows=200)
    assert res.ok
    info = json.loads((out / "_remix.json").read_text())
    assert len(info["phases"]) == 3
    t = pa.concat_tables([pq.read_table(p, columns=["domain", "n_tokens"]) for p in sorted(out.glob("part-*.parquet"))])
    longest = {d: max(n for dd, n in zip(t.column("domain").to_pylist(), t.column("n_tokens").to_pylist()) if dd == d)
               for d in sk["domains"] if d in set(t.column("domain").to_pylist())}
    for ph, want in zip(info["phases"], sk["schedule"]):
        assert ph["weights"] == pytest.approx(want["weights"], abs=1e-7)
        # realised tokens per phase track the phase's weights up to whole documents: a phase boundary
        # falls on the nearest document boundary of each domain's list, so within two of its longest
        # samples (here 3-17 samples a domain: shares alone vary by 3-14 points from seed to seed)
        for d in sk["domains"]:
            assert abs(ph["domain_tokens"][d] - want["weights"][d] * ph["tokens"]) <= 2 * longest.get(d, 0) + 0.02 * ph["tokens"], (ph["index"], d)
    code = [ph["domain_tokens"]["code"] / ph["tokens"] for ph in info["phases"]]
    wcode = [p["weights"]["code"] for p in sk["schedule"]]
    assert np.sign(code[-1] - code[0]) == np.sign(wcode[-1] - wcode[0])


def test_resume_trains_nothing_again(mixed):
    root, sk, _ = mixed
    mix = root / "run" / "mix" / "_work" / "skillit"
    done = sorted((mix / "graph" / io.DONE).glob("*.json")) + sorted((mix / "schedule" / io.DONE).glob("*.json"))
    assert len(done) == 13  # reference + 11 domains + the schedule run
    before = {p: p.stat().st_mtime_ns for p in done}
    run_stages(root / "c.yaml", ["mix"])
    assert {p: p.stat().st_mtime_ns for p in done} == before
    again = json.loads((root / "run" / "mix" / "skillit.json").read_text())
    assert again["graph"] == sk["graph"] and again["schedule"] == sk["schedule"]


@pytest.mark.parametrize("bad, key", [({"eta": 0}, "mix.skillit.eta"), ({"eta": -1.0}, "mix.skillit.eta"),
                                      ({"phases": 0}, "mix.skillit.phases"), ({"val_tokens": 10}, "mix.skillit.val_tokens")])
def test_bad_parameters_are_one_line(tmp_path, bad, key):
    with pytest.raises(ConfigError) as e:
        pc.load(write_config(tmp_path, **bad))
    msg = str(e.value)
    assert "\n" not in msg and key in msg


def test_unknown_eval_skill_is_one_line(mixed, tmp_path):
    root, _, _ = mixed
    cfg = yaml.safe_load((root / "c.yaml").read_text())
    cfg["mix"]["skillit"]["eval"] = ["code", "klingon"]
    cfg["run"]["output"] = str(tmp_path / "run")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    c = pc.load(p)
    with pytest.raises(ConfigError) as e:
        driver.run(c, driver.plan(c, only=["mix"], inp=root / "run" / "ingest", out=tmp_path / "mix"), use_ray=False, show_progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "mix.skillit.eval" in msg and "'klingon'" in msg


def test_one_phase_is_train_proxy(mixed):
    """train_phased with one phase trains exactly what train_proxy trains (same windows, same losses)."""
    from pipeline.models import proxy_lm

    root = mixed[0]
    streams = [np.load(p) for p in sorted((root / "run" / "mix" / "domains").glob("*.npy"))[:3]]
    evals = {"t": np.load(root / "run" / "mix" / "targets" / "gsm8k.search.npy")}
    vocab = mixed[2]["proxy"]["vocab_size"]
    spec = proxy_lm.ProxySpec(vocab_size=vocab, n_layer=1, n_head=2, d_model=32, ctx=32, batch_size=8, tokens=4_000, lr=0.01, threads=1)
    a = proxy_lm.train_proxy(streams, [0.5, 0.3, 0.2], evals, spec, seed=3)
    b = proxy_lm.train_phased(streams, [1.0], [[0.5, 0.3, 0.2]], evals, spec, seed=3)
    assert a["losses"] == b["losses"] and a["steps"] == b["steps"]
    c = proxy_lm.train_phased(streams, [0.5, 0.5], [[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]], evals, spec, seed=3)
    assert c["losses"] != a["losses"] and [p["steps"] for p in c["phases"]] == [a["steps"] // 2, a["steps"] - a["steps"] // 2]


@pytest.mark.parametrize("extra", [{"average_last": 4}, {"data_order": "sequential"}, {"average_last": 3, "data_order": "sequential"}])
def test_one_phase_is_train_proxy_with_averaging_and_sequential_order(mixed, extra):
    """average_last and data_order sequential work in phases too: one phase is still train_proxy."""
    from dataclasses import replace

    from pipeline.models import proxy_lm

    root = mixed[0]
    streams = [np.load(p) for p in sorted((root / "run" / "mix" / "domains").glob("*.npy"))[:3]]
    evals = {"t": np.load(root / "run" / "mix" / "targets" / "gsm8k.search.npy")}
    spec = proxy_lm.ProxySpec(vocab_size=mixed[2]["proxy"]["vocab_size"], n_layer=1, n_head=2, d_model=32, ctx=32,
                              batch_size=8, tokens=4_000, lr=0.01, threads=1)
    a = proxy_lm.train_proxy(streams, [0.5, 0.3, 0.2], evals, replace(spec, **extra), seed=3)
    b = proxy_lm.train_phased(streams, [1.0], [[0.5, 0.3, 0.2]], evals, replace(spec, **extra), seed=3)
    plain = proxy_lm.train_phased(streams, [1.0], [[0.5, 0.3, 0.2]], evals, spec, seed=3)
    assert a["losses"] == b["losses"] and a.get("averaged_steps") == b.get("averaged_steps")
    assert b["losses"] != plain["losses"]  # the option changed what was trained or evaluated


@pytest.mark.parametrize("phases, words", [([{"fraction": 1.0, "weights": {"code": 1.0, "klingon": 1.0}}], "unknown domain(s) ['klingon']"),
                                           ([{"fraction": 0.5, "weights": {"code": 1.0}}], "sum to 0.5"),
                                           ([{"fraction": 1.0, "weights": {"code": -1.0}}], "finite numbers >= 0")])
def test_bad_phases_in_weights_file_are_one_line(mixed, tmp_path, phases, words):
    from stages.remix.weights import load_weights

    w = dict(mixed[2], phases=phases)
    p = tmp_path / "weights.json"
    p.write_text(json.dumps(w))
    with pytest.raises(ConfigError) as e:
        load_weights(p)
    msg = str(e.value)
    assert "\n" not in msg and words in msg and str(p) in msg
