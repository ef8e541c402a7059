"""Quality curriculum: remix.order (sorted within each phase; loader and trainer formats keep the
order) and the proxy trainer's lr_schedule / average_last / data_order (pipeline.models.proxy_lm)."""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from pipeline import config, io, runner
from pipeline.loader import TrainingShards
from pipeline.models import proxy_lm as P
from stages import remix as R
from stages.remix import plan as RPLAN
from tests.test_remix import make_input, train_bpe, write_weights
from tests.trainer_libs import import_megatron_indexed, streaming_dataset

PHASE = partial(runner.run_stage, use_ray=False, show_progress=False, max_retries=0)
PHASES = [{"fraction": 0.7, "weights": "mix"}, {"fraction": 0.3, "weights": {"2": 0.8, "0": 0.2}}]
ORDER = {"by": "quality", "direction": "ascending"}


@pytest.fixture(scope="module")
def inp(tmp_path_factory) -> Path:
    """The remix tests' synthetic corpus plus a `quality` column (a few nulls, a few ties)."""
    d = make_input(tmp_path_factory.mktemp("cur") / "inp", n_per=200)
    rng = np.random.default_rng(7)
    for p in io.shard_files(d):
        t = pq.read_table(p)
        q = np.round(rng.random(t.num_rows), 2)  # 2 decimals: ties among ~600 documents
        q = pa.array(q, pa.float64(), mask=rng.random(t.num_rows) < 0.03)
        pq.write_table(t.append_column("quality", q), p, row_group_size=40)
    return d


def remix_run(d: Path, inp: Path, **section) -> Path:
    (d / "mix").mkdir(parents=True, exist_ok=True)
    train_bpe(d / "mix" / "tokenizer.json", inp)
    wp = write_weights(d / "mix" / "weights.json", [0.5, 0.2, 0.3], 40_000, tokenizer="tokenizer.json")
    cfg = config.parse({"run": {"output": str(d / "run"), "seed": 0, "shard": {"target_rows": 90}},
                        "remix": {"weights": str(wp), "phases": PHASES, "formats": ["parquet", "megatron", "mds", "hf"], **section}})
    out = d / "out"
    assert R.run(cfg, inp, out, PHASE).ok
    return out


@pytest.fixture(scope="module")
def ordered(tmp_path_factory, inp) -> Path:
    return remix_run(tmp_path_factory.mktemp("ordered"), inp, order=ORDER)


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory, inp) -> Path:
    return remix_run(tmp_path_factory.mktemp("shuffled"), inp)


def quality_of(inp: Path) -> dict[str, float]:
    t = pa.concat_tables([pq.read_table(p, columns=["id", "quality"]) for p in io.shard_files(inp)])
    return {i: (math.nan if q is None else q) for i, q in zip(t.column("id").to_pylist(), t.column("quality").to_pylist())}


def stream_quality(out: Path, q: dict[str, float], ids: list[str] | None = None) -> np.ndarray:
    if ids is None:
        ids = pa.concat_tables([pq.read_table(p, columns=["id"]) for p in io.shard_files(out)]).column("id").to_pylist()
    return np.array([q[i.split("#e")[0]] for i in ids])


def ascending(x: np.ndarray) -> bool:
    """Non-decreasing, missing (NaN) values only at the end."""
    nan = np.isnan(x)
    k = int((~nan).sum())
    return not nan[:k].any() and bool(np.all(np.diff(x[:k]) >= 0))


def test_each_phase_is_written_in_ascending_order_and_stated(ordered, shuffled, inp):
    q = quality_of(inp)
    rep, rep_s = io.read_json(ordered / R.REMIX_JSON), io.read_json(shuffled / R.REMIX_JSON)
    assert rep["order"]["by"] == "quality" and rep["order"]["direction"] == "ascending" and rep["order"]["scope"] == "within each phase"
    assert "order" not in rep_s  # the default is today's seeded shuffle
    x, xs = stream_quality(ordered, q), stream_quality(shuffled, q)
    assert len(rep["phases"]) == 2
    for ph, ph_s in zip(rep["phases"], rep_s["phases"]):
        lo, hi = ph["samples"]
        assert ph["samples"] == ph_s["samples"] and ph["domain_tokens"] == ph_s["domain_tokens"]  # same samples, other order
        assert ascending(x[lo:hi]), f"phase {ph['index']} not sorted"
        assert not ascending(xs[lo:hi])  # the shuffled remix is not (this fails if the ordering is removed)
        assert np.array_equal(np.sort(x[lo:hi]), np.sort(xs[lo:hi]), equal_nan=True)
        assert ph["order_score"]["first"] == np.nanmin(x[lo:hi]) and ph["order_score"]["last"] == np.nanmax(x[lo:hi])
        assert ph["order_score"]["missing"] == int(np.isnan(x[lo:hi]).sum()) > 0
    # the phase boundary restarts the curriculum: phase 1 starts below where phase 0 ends
    lo1 = rep["phases"][1]["samples"][0]
    assert x[lo1] < np.nanmax(x[:lo1])


def test_descending_and_ties_are_deterministic():
    keys = np.array([0.5, 0.1, np.nan, 0.5, 0.9, 0.1])
    tie = np.array([5, 4, 3, 2, 1, 0])
    assert RPLAN.curriculum(keys, "ascending", tie).tolist() == [5, 1, 3, 0, 4, 2]
    assert RPLAN.curriculum(keys, "descending", tie).tolist() == [4, 3, 0, 5, 1, 2]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_loader_yields_the_written_order_for_any_number_of_workers(ordered, inp, world):
    ds = TrainingShards(ordered, mode="text", columns=("id",))
    assert ds.ordered
    assert np.array_equal(ds.order(world), np.arange(ds.total))
    ids = [None] * ds.total
    for g in range(world):  # what a DataLoader's round-robin over the global workers yields
        for k, row in enumerate(ds.samples(g, world)):
            ids[k * world + g] = row["id"]
    want = pa.concat_tables([pq.read_table(p, columns=["id"]) for p in io.shard_files(ordered)]).column("id").to_pylist()
    assert ids == want
    # tokens mode, resumed mid-stream: the remaining positions are still the written samples
    tk = TrainingShards(ordered, mode="tokens", start=101)
    first = next(iter(tk.samples(101 % world, world)))
    p0 = io.shard_files(ordered)[1]
    base = pq.read_metadata(io.shard_files(ordered)[0]).num_rows
    toks, idx = np.load(p0.with_name(p0.stem + ".tokens.npy")), np.load(p0.with_name(p0.stem + ".index.npy"))
    assert torch.equal(first, torch.from_numpy(toks[idx[101 - base]:idx[101 - base + 1]].astype(np.int64)))


def test_shuffled_remix_keeps_contiguous_worker_ranges(shuffled):
    ds = TrainingShards(shuffled, mode="text", columns=("id",))
    assert not ds.ordered and not np.array_equal(ds.order(2), np.arange(ds.total))


def test_megatron_mds_and_hf_keep_the_written_order(ordered, inp, tmp_path):
    import pyarrow.ipc as ipc

    idx = import_megatron_indexed()
    q = quality_of(inp)
    rep = io.read_json(ordered / R.REMIX_JSON)
    t = pa.concat_tables([pq.read_table(p) for p in io.shard_files(ordered)])
    toks = [np.load(p.with_name(p.stem + ".tokens.npy")) for p in io.shard_files(ordered)]
    offs = [np.load(p.with_name(p.stem + ".index.npy")) for p in io.shard_files(ordered)]
    docs = [a[o[i]:o[i + 1]] for a, o in zip(toks, offs) for i in range(len(o) - 1)]
    mixed = idx.IndexedDataset(str(ordered / "megatron" / "mixed"))
    assert len(mixed) == t.num_rows
    assert all(np.array_equal(mixed[k], docs[k]) for k in range(len(docs)))  # document k = sample k of the stream
    del mixed
    ids, dom = t.column("id").to_pylist(), t.column("domain").to_pylist()
    for ph in rep["phases"]:
        lo, hi = ph["samples"]
        pdir = f"phase-{ph['index']}"
        for name, n in ph["domain_samples"].items():
            if not n:
                continue
            rows = [j for j in range(lo, hi) if dom[j] == name]
            ds = idx.IndexedDataset(str(ordered / "megatron" / pdir / name))
            assert [ds[k].tolist() for k in range(len(ds))] == [docs[j].tolist() for j in rows]
            del ds
            with streaming_dataset(tmp_path, local=str(ordered / "mds" / pdir / name), batch_size=1, shuffle=False) as mds:
                got = [x["id"] for x in mds]
            assert got == [ids[j] for j in rows] and ascending(stream_quality(ordered, q, got))
            with ipc.open_stream(str(ordered / "hf" / pdir / name / "part.arrow")) as rd:
                assert rd.read_all().column("id").to_pylist() == [ids[j] for j in rows]
    doc = yaml.safe_load((ordered / "mosaic_streams.yaml").read_text())
    assert doc["shuffle"] is False


def test_bad_order_is_one_line(tmp_path, inp):
    d = tmp_path
    (d / "mix").mkdir()
    wp = write_weights(d / "mix" / "weights.json", [0.5, 0.2, 0.3], 40_000)
    for order, needle in [({"by": "nope"}, "has no column 'nope'"), ({"by": "source"}, "not a number"),
                          ({"by": "quality", "direction": "sideways"}, "direction")]:
        with pytest.raises(config.ConfigError) as e:
            cfg = config.parse({"run": {"output": str(d / "run")}, "remix": {"weights": str(wp), "order": order, "tokenized": False}})
            R.run(cfg, inp, d / "out", PHASE)
        assert needle in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------- proxy trainer

V = 64


def _tiny(**kw) -> P.ProxySpec:
    base = dict(vocab_size=V, n_layer=1, n_head=2, d_model=32, ctx=32, batch_size=8, lr=1e-2,
                tokens=12_000, eval_tokens=4_000, device="cpu", threads=1)
    return P.ProxySpec(**{**base, **kw})


def _chain(seed: int, n: int, lo: int) -> np.ndarray:
    """A bigram chain on the token ids [lo, lo + 32): a domain of its own."""
    rng = np.random.default_rng(seed)
    trans = rng.dirichlet(np.full(32, 0.05), size=32).cumsum(1)
    s = np.zeros(n, np.int64)
    u = rng.random(n)
    for i in range(1, n):
        s[i] = min(np.searchsorted(trans[s[i - 1]], u[i]), 31)
    return (s + lo).astype(np.uint16)


def test_schedules_give_the_documented_curves():
    lrs = {s: [P._lr_at(k, 100, _tiny(lr=1.0, warmup=0.1, lr_schedule=s)) for k in range(100)] for s in P.ProxySpec.SCHEDULES}
    for s, floor in (("cosine", 0.1), ("moderate", 0.5), ("constant", 1.0)):
        x = lrs[s]
        assert x[0] == pytest.approx(0.1) and x[9] == pytest.approx(1.0)  # the same linear warmup
        assert x[-1] == pytest.approx(floor) and all(a >= b - 1e-12 for a, b in zip(x[9:], x[10:]))
    assert all(v == pytest.approx(1.0) for v in lrs["constant"][9:])
    mid = 10 + (100 - 10 - 1) // 2  # progress ~ 0.5: halfway between lr and the floor
    assert lrs["moderate"][mid] == pytest.approx(0.75, abs=0.02) and lrs["cosine"][mid] == pytest.approx(0.55, abs=0.02)
    # the default is byte-for-byte the original expression
    spec = _tiny(lr=1.0, warmup=0.1)
    assert [P._lr_at(k, 100, spec) for k in range(100)] == lrs["cosine"]


def test_defaults_leave_the_spec_dict_unchanged():
    d = _tiny().as_dict()
    assert not set(P.ProxySpec.NEW_FIELDS) & set(d)
    assert _tiny(lr_schedule="constant").as_dict()["lr_schedule"] == "constant"


def test_average_last_evaluates_the_mean_of_the_documented_checkpoints():
    assert P.average_interval(100, 4) == 5 and P.averaged_steps(100, 4) == [84, 89, 94, 99]
    assert P.averaged_steps(10, 1) == [9] and P.averaged_steps(3, 8) == [0, 1, 2]
    stream, held = _chain(1, 20_000, 0), _chain(1, 24_000, 0)[20_000:]
    spec = _tiny(average_last=4, lr_schedule="constant")
    steps = math.ceil(spec.tokens / (spec.batch_size * spec.ctx))
    kept: dict[int, dict] = {}
    res = P.train_proxy([stream], [1.0], {"t": held}, spec, seed=0,
                        on_step=lambda s, m: kept.__setitem__(s, {k: v.detach().clone() for k, v in m.state_dict().items()}))
    want = P.averaged_steps(steps, 4)
    assert res["averaged_steps"] == want
    model = P.TinyGPT(spec)
    win = P.eval_windows(held, spec)
    model.load_state_dict({k: sum(kept[s][k] for s in want) / len(want) for k in kept[want[0]]})
    assert P.evaluate(model, win, torch.device("cpu")) == pytest.approx(res["loss"], rel=1e-6)
    model.load_state_dict(kept[steps - 1])  # the final weights: another loss
    assert abs(P.evaluate(model, win, torch.device("cpu")) - res["loss"]) > 1e-4
    plain = P.train_proxy([stream], [1.0], {"t": held}, _tiny(lr_schedule="constant"), seed=0)
    assert plain["loss"] == pytest.approx(P.evaluate(model, win, torch.device("cpu")), rel=1e-6) and "averaged_steps" not in plain


def test_sequential_order_reads_the_stream_in_order_and_the_order_matters():
    st, off = P.sequential_plan([10_000, 5_000], [0.5, 0.5], 40, 32)
    assert (np.bincount(st) == [20, 20]).all()
    for i, n in ((0, 10_000), (1, 5_000)):
        o = off[st == i]
        assert o[0] == 0 and o[-1] == n - 33 and (np.diff(o) > 0).all()
    # a stream of domain A (token ids 0..31), then domain B (32..63): read in order, the proxy ends on B
    # and is better at B than at A; reversed, the opposite; random windows see both all along
    r = np.random.default_rng(0)
    a, b = r.integers(0, 32, 12_000).astype(np.uint16), r.integers(32, 64, 12_000).astype(np.uint16)
    evals = {"a": r.integers(0, 32, 4_000).astype(np.uint16), "b": r.integers(32, 64, 4_000).astype(np.uint16)}
    for order in ("sequential", "random"):
        spec = _tiny(data_order=order, lr_schedule="constant")
        ab = P.train_proxy([np.concatenate([a, b])], [1.0], evals, spec, seed=0)["losses"]
        ba = P.train_proxy([np.concatenate([b, a])], [1.0], evals, spec, seed=0)["losses"]
        if order == "sequential":
            assert ab["b"] < ab["a"] - 0.1 and ba["a"] < ba["b"] - 0.1, (ab, ba)
        else:
            assert abs(ab["a"] - ab["b"]) < 0.05 and abs(ba["a"] - ba["b"]) < 0.05, (ab, ba)


def test_bad_proxy_options_are_one_line():
    for kw, needle in (({"lr_schedule": "linear"}, "lr_schedule"), ({"average_last": -1}, "average_last"),
                       ({"data_order": "sorted"}, "data_order")):
        with pytest.raises(ValueError, match=needle) as e:
            _tiny(**kw)
        assert "\n" not in str(e.value)
    with pytest.raises(config.ConfigError) as e:
        config.parse({"run": {"output": "/tmp/x"}, "evaluate": {"proxy": {"lr_schedule": "linear"}}})
    assert "lr_schedule" in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------- evaluate


def test_evaluate_compares_a_curriculum_with_the_shuffle(tmp_path):
    """Known answer: the corpus's target domain `c` scored highest, so the ascending curriculum puts it
    last; read in order under a constant LR (averaged) over half the stream's tokens, the curriculum's
    target loss is lower at every seed (at a tenth of the tokens it was not: c got ~3 steps at the end).
    evaluate.json holds the overrides and the paired comparison."""
    import json
    import subprocess

    import yaml

    from tests.conftest import clean_env, curate_bin
    from tests.test_mix_stage import make_corpus, mix_config, run_mix

    inp, tgt = make_corpus(tmp_path)
    rng = np.random.default_rng(0)
    for p in io.shard_files(inp):
        t = pq.read_table(p)
        q = (np.asarray(t.column("source").to_pylist()) == "c") + rng.normal(0, 0.1, t.num_rows)
        pq.write_table(t.append_column("quality", pa.array(q, pa.float64())), p)
    cfg = mix_config(tmp_path, "proportional", tgt)
    mixd = tmp_path / "mix"
    r = run_mix(cfg, inp, mixd, "--no-ray")
    assert r.returncode == 0, r.stderr
    base = yaml.safe_load(cfg.read_text())
    remixes = {}
    for name, order in (("curriculum", ORDER), ("shuffled", None)):
        c = config.parse({**base, "remix": {"weights": str(mixd / "weights.json"), "order": order, "formats": ["parquet"]}})
        assert R.run(c, inp, tmp_path / name, PHASE).ok
        remixes[name] = str(tmp_path / name)
    ev_cfg = tmp_path / "ev.yaml"
    ev = {"remixes": remixes, "proxy": {"lr_schedule": "constant", "average_last": 2, "data_order": "sequential"},
          "compare": [["curriculum", "shuffled"]]}
    ev_cfg.write_text(yaml.safe_dump({**base, "evaluate": ev}))
    args = [curate_bin(), "evaluate", "--mix", str(mixd), "--output", str(tmp_path / "ev"), "--config", str(ev_cfg),
            "--tokens", "60000", "--seeds", "3", "--arms", "curriculum,shuffled", "--no-ray", "-q"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr
    e = json.loads((tmp_path / "ev" / "evaluate.json").read_text())
    assert {k: e["proxy"][k] for k in ev["proxy"]} == ev["proxy"]
    arms = {a["arm"]: a for a in e["arms"]}
    assert all(c < s for c, s in zip(arms["curriculum"]["seed_losses"], arms["shuffled"]["seed_losses"])), arms
    [cmp] = e["comparisons"]
    assert (cmp["arm"], cmp["reference"], cmp["n"]) == ("curriculum", "shuffled", 3)
    assert cmp["lo"] <= cmp["mean"] <= cmp["hi"] and cmp["mean"] < 0 and cmp["significant"] == (cmp["hi"] < 0 or cmp["lo"] > 0)
    assert cmp["text"].endswith("n.s.") == (not cmp["significant"])
    st = subprocess.run([curate_bin(), "stats", str(tmp_path / "ev")], capture_output=True, text=True, env=clean_env())
    assert st.returncode == 0 and "curriculum vs shuffled (paired)" in st.stdout, st.stdout
    ev_cfg.write_text(yaml.safe_dump({**base, "evaluate": {**ev, "compare": [["curriculum", "nope"]]}}))
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 2 and "evaluate.compare" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    # an ordered remix without token shards: re-tokenizing its text would reorder it
    c = config.parse({**base, "remix": {"weights": str(mixd / "weights.json"), "order": ORDER, "tokenized": False}})
    assert R.run(c, inp, tmp_path / "text-only", PHASE).ok
    ev_cfg.write_text(yaml.safe_dump({**base, "evaluate": {**ev, "remixes": {**remixes, "curriculum": str(tmp_path / "text-only")}}}))
    r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 2 and "no token shards" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
