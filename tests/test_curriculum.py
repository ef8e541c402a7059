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
                        "remix": {"weights": str(wp), "phases": PHASES, "formats": ["parquet", "megatron", "mds"], **section}})
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


def test_megatron_and_mds_keep_the_written_order(ordered, inp, tmp_path):
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
