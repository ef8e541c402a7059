"""TrainingShards: contiguous shares per worker, phase order, block shuffle, each sample exactly once
across ranks x workers, resume, token mode, packing, `phases` checks."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from pipeline import config, io, runner
from pipeline.loader import TrainingShards, packed
from stages import remix as R
from tests.test_remix import make_input, train_bpe, write_weights

PHASE = partial(runner.run_stage, use_ray=False, show_progress=False, max_retries=0)
G = 4  # 2 ranks x 2 DataLoader workers


def remix_dir(d, **remix):
    inp = make_input(d / "inp", n_per=60, shards=2)
    (d / "mix").mkdir()
    train_bpe(d / "mix" / "tokenizer.json", inp)
    wp = write_weights(d / "mix" / "weights.json", [0.5, 0.2, 0.3], 12_000, tokenizer="tokenizer.json")
    cfg = config.parse({"run": {"output": str(d / "run"), "seed": 0, "shard": {"target_rows": 37}},
                        "remix": {"weights": str(wp), "tokenized": True, "formats": ["parquet"], **remix}})
    out = d / "out"
    assert R.run(cfg, inp, out, PHASE).ok
    return out


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return remix_dir(tmp_path_factory.mktemp("loader"))


@pytest.fixture(scope="module")
def phased(tmp_path_factory):
    """Two phases of 59 and 41 samples (59 % 4 = 3: unequal ranges), 6-row row groups."""
    out = remix_dir(tmp_path_factory.mktemp("loader2"), phases=[{"fraction": 0.6}, {"fraction": 0.4, "weights": {"0": 1, "2": 1}}])
    for p in io.shard_files(out):
        pq.write_table(pq.read_table(p), p, row_group_size=6)
    doc = json.loads((out / "_remix.json").read_text())
    assert [ph["samples"] for ph in doc["phases"]] == [[0, 59], [59, 100]]
    return out


def all_ids(out):
    return [i for p in io.shard_files(out) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]


def collect(ds, workers=2):
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def rank_stream(ds, rank, start=0, nw=2, world=2):
    """What DataLoader's round-robin over rank's workers yields (a worker that ran out is skipped):
    worker gid's positions are gid, gid + G, ... from `start` on."""
    g, order = world * nw, ds.order(world * nw)
    own = [[int(order[t]) for t in range(start, ds.total) if t % g == rank * nw + w] for w in range(nw)]
    return [x for rnd in range(max(map(len, own))) for w in own if rnd < len(w) for x in [w[rnd]]]


def phase_of(ds, x):
    return np.searchsorted(ds.bounds, x, side="right") - 1


def test_every_sample_once_across_ranks_and_workers(shards):
    ids = all_ids(shards)
    assert len(io.shard_files(shards)) >= 3 and len(ids) > 100
    got = []
    for rank in (0, 1):
        rows = collect(TrainingShards(shards, rank=rank, world_size=2))
        assert set(rows[0]) == {"id", "text", "domain", "n_tokens"}
        got += [r["id"] for r in rows]
    assert Counter(got) == Counter(ids) and len(got) == len(ids)
    # global worker gid reads the contiguous gid-th quarter; DataLoader alternates rank 0's workers 0 and 1
    c = [len(range(g, len(ids), G)) for g in range(G)]
    r0 = [r["id"] for r in collect(TrainingShards(shards, rank=0, world_size=2))]
    assert sorted(r0) == sorted(ids[:c[0] + c[1]]) and r0[:4] == [ids[0], ids[c[0]], ids[1], ids[c[0] + 1]]
    ds = TrainingShards(shards)
    assert ds.bounds.tolist() == [0, len(ids)] and sorted(ds.order(G).tolist()) == list(range(len(ids)))


@pytest.mark.parametrize("start", [0, 5, 37, 38, 100])
def test_resume_from_offset(shards, start):
    ids = all_ids(shards)
    got = []
    for rank in (0, 1):
        ds = TrainingShards(shards, rank=rank, world_size=2, start=start)
        rows = [r["id"] for r in collect(ds)]
        assert rows == [ids[i] for i in rank_stream(ds, rank, start)]
        got += rows
    consumed = TrainingShards(shards).order(G)[:start]
    assert sorted(got) == sorted(set(ids) - {ids[i] for i in consumed}) and len(got) == len(ids) - start


def test_resume_skips_whole_shards_without_reading(shards, monkeypatch):
    ds = TrainingShards(shards, rank=0, world_size=1, start=80)
    opened = []
    real = pq.ParquetFile

    def spy(source, *a, **kw):
        opened.append(str(source))
        return real(source, *a, **kw)

    monkeypatch.setattr(pq, "ParquetFile", spy)
    rows = list(ds)
    assert [r["id"] for r in rows] == all_ids(shards)[80:]
    names = [p.name for p in io.shard_files(shards)]
    assert sorted({p.split("/")[-1] for p in opened}) == names[2:]  # shards 0 and 1 (rows 0..73) never opened


def test_state_dict_round_trip(shards):
    ds = TrainingShards(shards, rank=0, world_size=2)
    st = ds.state_dict(samples_per_worker=3, num_workers=2)
    assert st["start"] == 12 and st["n_global"] == G and st["total"] == ds.total
    ds2 = TrainingShards(shards, rank=1, world_size=2)
    ds2.load_state_dict(st)
    assert ds2.start == 12
    # consume 4 samples per rank (2 per worker), resume from the state: nothing lost, nothing twice
    ids = all_ids(shards)
    seen = []
    for rank in (0, 1):
        it = iter(DataLoader(TrainingShards(shards, rank=rank, world_size=2), batch_size=None, num_workers=2))
        seen += [next(it)["id"] for _ in range(4)]
        del it
    assert sorted(seen) == sorted(ids[i] for i in ds.order(G)[:8])
    st = ds.state_dict(samples_per_worker=2, num_workers=2)
    rest = [r["id"] for rank in (0, 1) for r in collect(TrainingShards(shards, rank=rank, world_size=2, state=st))]
    assert sorted(seen + rest) == sorted(ids)
    with pytest.raises(ValueError, match="world_size x num_workers = 4"):  # the order depends on G
        list(TrainingShards(shards, rank=0, world_size=1, state=st))
    with pytest.raises(ValueError, match="samples"):
        TrainingShards(shards, state={**st, "total": 5})


def test_tokens_mode_matches_index(shards):
    expect = []
    for p in io.shard_files(shards):
        tok = np.load(p.with_name(p.stem + ".tokens.npy"))
        idx = np.load(p.with_name(p.stem + ".index.npy"))
        expect += [tok[idx[j]:idx[j + 1]].astype(np.int64) for j in range(len(idx) - 1)]
    got = {}
    for rank in (0, 1):
        ds = TrainingShards(shards, mode="tokens", rank=rank, world_size=2, start=3)
        for t in collect(ds):
            assert isinstance(t, torch.Tensor) and t.dtype == torch.long
            got.setdefault(rank, []).append(t)
        assert [t.tolist() for t in got[rank]] == [expect[i].tolist() for i in rank_stream(ds, rank, 3)]
    assert sum(len(v) for v in got.values()) == len(expect) - 3


def test_contiguous_ranges_decode_only_their_row_groups(phased, monkeypatch):
    ds = TrainingShards(phased)
    n_rg = len(ds.rg_bytes)
    shard = {p.name: s for s, p in enumerate(ds.shards)}
    reads = []

    class Spy(pq.ParquetFile):
        def __init__(self, source, *a, **kw):
            super().__init__(source, *a, **kw)
            self.name = source.name

        def read_row_group(self, i, *a, **kw):
            reads.append(int(ds.rg_first[shard[self.name]]) + i)  # global row-group index
            return super().read_row_group(i, *a, **kw)

    monkeypatch.setattr(pq, "ParquetFile", Spy)
    order = ds.order(G)
    for gid in range(G):
        mine = order[gid::G]
        want = set()
        for p in range(len(ds.bounds) - 1):
            x = mine[phase_of(ds, mine) == p]
            assert np.all(np.diff(x) == 1) and len(x) in (14, 15, 10, 11)  # one contiguous range per phase (59 and 41 over 4), sizes differ <= 1
            want |= set(range(np.searchsorted(ds.rg_starts, x[0], side="right") - 1,
                              np.searchsorted(ds.rg_starts, x[-1], side="right")))
        reads.clear()
        rows = list(ds.samples(gid, G))
        assert len(rows) == len(mine)
        assert sorted(reads) == sorted(want) and len(want) <= n_rg // 2  # each once, only those of our ranges
        assert set(ds.row_groups(gid, G).tolist()) == want


def test_phase_order_across_ranks_and_workers(phased):
    ids = all_ids(phased)
    ph = {i: int(p) for i, p in zip(ids, phase_of(TrainingShards(phased), np.arange(len(ids))))}
    got = []
    for shuffle in (0, 4):
        for rank in (0, 1):
            ds = TrainingShards(phased, rank=rank, world_size=2, shuffle_buffer=shuffle, shuffle_seed=3)
            rows = [r["id"] for r in collect(ds)]
            assert [ph[i] for i in rows] == sorted(ph[i] for i in rows)  # every phase-0 sample before any phase-1
            assert rows == [ids[i] for i in rank_stream(ds, rank)]
            got += rows
    assert Counter(got) == Counter(ids * 2)
    # epoch_seed permutes shards inside each phase (and blocks), never across
    ds = TrainingShards(phased, world_size=1, rank=0, epoch_seed=1)
    x = ds.order(1)
    assert sorted(x.tolist()) == list(range(len(ids))) and not np.all(np.diff(x) == 1)
    assert np.all(np.diff(phase_of(ds, x)) >= 0)


def test_shuffle_buffer_deterministic_within_blocks(phased):
    plain = TrainingShards(phased)
    a = TrainingShards(phased, shuffle_buffer=5, shuffle_seed=1)
    b = TrainingShards(phased, shuffle_buffer=5, shuffle_seed=1)
    c = TrainingShards(phased, shuffle_buffer=5, shuffle_seed=2)
    assert np.array_equal(a.order(G), b.order(G)) and not np.array_equal(a.order(G), c.order(G))
    base, mix = plain.order(G), a.order(G)
    for gid in range(G):
        x, y = base[gid::G], mix[gid::G]
        assert not np.array_equal(x, y)
        for p in range(len(plain.bounds) - 1):  # blocks of 5 from the start of each phase range
            xs, ys = x[phase_of(plain, x) == p], y[phase_of(plain, y) == p]
            assert len(xs) == len(ys)
            for k in range(0, len(xs), 5):
                assert sorted(ys[k:k + 5]) == sorted(xs[k:k + 5])
    ids = all_ids(phased)
    assert [r["id"] for r in a.samples(1, G)] == [ids[i] for i in mix[1::G]]


@pytest.mark.parametrize("shuffle", [0, 4])
def test_resume_exactly_once_unequal_ranges(phased, shuffle):
    """2 ranks x 2 workers: worker ranges of 15, 15, 14, 14 (phase 0) and 10 (phase 1); resume after
    k samples per worker, also past the boundary where workers 2 and 3 are already in phase 1."""
    ids = all_ids(phased)
    mk = partial(TrainingShards, phased, world_size=2, shuffle_buffer=shuffle, shuffle_seed=7)
    for k in (0, 3, 14, 15, 24):
        seen, rest = [], []
        for rank in (0, 1):
            if k in (3, 15):  # through real DataLoader workers (2 per rank, round-robin)
                it = iter(DataLoader(mk(rank=rank), batch_size=None, num_workers=2))
                seen += [next(it)["id"] for _ in range(2 * k)]
                del it
            else:
                seen += [r["id"] for w in (0, 1) for _, r in zip(range(k), mk(rank=rank).samples(rank * 2 + w, G))]
        st = mk(rank=0).state_dict(samples_per_worker=k, num_workers=2)
        for rank in (0, 1):
            ds = mk(rank=rank, state=st)
            rest += [r["id"] for w in (0, 1) for r in ds.samples(rank * 2 + w, G)] if k != 15 else [r["id"] for r in collect(ds)]
        assert len(seen) == 4 * k and Counter(seen + rest) == Counter(ids), k
    # a start between rounds: workers skip k or k + 1
    for start in (5, 59, 97):
        got = [r["id"] for g in range(G) for r in mk(rank=0, start=start).samples(g, G)]
        assert sorted(got) == sorted(ids[i] for i in mk(rank=0).order(G)[start:])


def test_epoch_seed_reshuffles(shards):
    ids = all_ids(shards)
    a = [r["id"] for r in TrainingShards(shards, world_size=1, rank=0, epoch_seed=1)]
    b = [r["id"] for r in TrainingShards(shards, world_size=1, rank=0, epoch_seed=1)]
    c = [r["id"] for r in TrainingShards(shards, world_size=1, rank=0, epoch_seed=2)]
    assert a == b and a != c and a != ids and sorted(a) == sorted(ids)
    got = [r["id"] for rank in (0, 1) for r in collect(TrainingShards(shards, rank=rank, world_size=2, epoch_seed=1, start=10))]
    assert sorted(got) == sorted(ids[i] for i in TrainingShards(shards, epoch_seed=1).order(G)[10:])


def test_packed():
    docs = [torch.arange(5), torch.arange(3), torch.arange(9)]
    seqs = list(packed(docs, 4))
    assert [s.tolist() for s in seqs] == [[0, 1, 2, 3], [4, 0, 1, 2], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert list(packed(docs, 4, drop_last=False))[-1].tolist() == [8]


def test_errors(tmp_path, shards):
    with pytest.raises(FileNotFoundError):
        TrainingShards(tmp_path)
    with pytest.raises(ValueError):
        TrainingShards(shards, mode="bytes")
    with pytest.raises(ValueError, match="shuffle_buffer"):
        TrainingShards(shards, shuffle_buffer=-1)
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "part-00000.parquet")
    with pytest.raises(FileNotFoundError, match="tokenized"):
        TrainingShards(tmp_path, mode="tokens")


def _edit(phases):
    ph = [{"index": 0, "samples": [0, 59], "shards": [0, 2]}, {"index": 1, "samples": [59, 100], "shards": [2, 4]}]
    return {"off_shard": [{**ph[0], "samples": [0, 50]}, {**ph[1], "samples": [50, 100]}],
            "gap": [ph[0], {**ph[1], "samples": [61, 100]}],
            "short": ph[:1], "order": ph[::-1], "empty": [], "malformed": [{"index": 0, "samples": 59}],
            "beyond": [ph[0], {**ph[1], "shards": [2, 9]}]}[phases]


@pytest.mark.parametrize("case", ["off_shard", "gap", "short", "order", "empty", "malformed", "beyond"])
def test_bad_phases_one_line_error(phased, tmp_path, case):
    d = tmp_path / "remix"
    d.mkdir()
    for p in phased.glob("part-*"):
        shutil.copy(p, d / p.name)
    assert TrainingShards(d).bounds.tolist() == [0, 100]  # no _remix.json: one phase
    doc = json.loads((phased / "_remix.json").read_text())
    (d / "_remix.json").write_text(json.dumps({**doc, "phases": _edit(case)}))
    with pytest.raises(ValueError) as e:
        TrainingShards(d)
    msg = str(e.value)
    assert str(d / "_remix.json") in msg and "\n" not in msg, msg
    (d / "_remix.json").write_text("{not json")
    with pytest.raises(ValueError, match="_remix.json: not valid JSON"):
        TrainingShards(d)
