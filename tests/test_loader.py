"""TrainingShards: each sample exactly once across ranks x workers, resume offsets, token mode, packing."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    inp = make_input(d / "inp", n_per=60, shards=2)
    (d / "mix").mkdir()
    train_bpe(d / "mix" / "tokenizer.json", inp)
    wp = write_weights(d / "mix" / "weights.json", [0.5, 0.2, 0.3], 12_000, tokenizer="tokenizer.json")
    cfg = config.parse({"run": {"output": str(d / "run"), "seed": 0, "shard": {"target_rows": 37}},
                        "remix": {"weights": str(wp), "tokenized": True}})
    out = d / "out"
    assert R.run(cfg, inp, out, PHASE).ok
    return out


def all_ids(out):
    return [i for p in io.shard_files(out) for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]


def collect(ds, workers=2):
    return list(DataLoader(ds, batch_size=None, num_workers=workers))


def test_every_sample_once_across_ranks_and_workers(shards):
    ids = all_ids(shards)
    assert len(io.shard_files(shards)) >= 3 and len(ids) > 100
    got = []
    for rank in (0, 1):
        rows = collect(TrainingShards(shards, rank=rank, world_size=2))
        assert set(rows[0]) == {"id", "text", "domain", "n_tokens"}
        got += [r["id"] for r in rows]
    assert Counter(got) == Counter(ids) and len(got) == len(ids)
    # each global worker gets the samples i with i % 4 == gid; DataLoader interleaves rank 0's workers
    r0 = [r["id"] for r in collect(TrainingShards(shards, rank=0, world_size=2))]
    expect = [ids[i] for i in range(len(ids)) if i % 4 in (0, 1)]
    assert sorted(r0) == sorted(expect) and r0[:4] == [ids[0], ids[1], ids[4], ids[5]]


@pytest.mark.parametrize("start", [0, 5, 37, 38, 100])
def test_resume_from_offset(shards, start):
    ids = all_ids(shards)
    got = []
    for rank in (0, 1):
        got += [r["id"] for r in collect(TrainingShards(shards, rank=rank, world_size=2, start=start))]
    assert sorted(got) == sorted(ids[start:])


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
    assert st["start"] == 12
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
    assert sorted(seen) == sorted(ids[:8])
    st = ds.state_dict(samples_per_worker=2, num_workers=2)
    rest = [r["id"] for rank in (0, 1) for r in collect(TrainingShards(shards, rank=rank, world_size=2, start=st["start"]))]
    assert sorted(seen + rest) == sorted(ids)


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
    # rank 0 gets i % 4 in {0, 1} for i >= 3; the DataLoader alternates its workers 0 and 1
    w0 = [i for i in range(3, len(expect)) if i % 4 == 0]
    w1 = [i for i in range(3, len(expect)) if i % 4 == 1]
    order = [x for pair in zip(w0, w1) for x in pair] + w0[len(w1):] + w1[len(w0):]
    assert [t.tolist() for t in got[0]] == [expect[i].tolist() for i in order]
    assert sum(len(v) for v in got.values()) == len(expect) - 3


def test_epoch_seed_reshuffles(shards):
    ids = all_ids(shards)
    a = [r["id"] for r in TrainingShards(shards, world_size=1, rank=0, epoch_seed=1)]
    b = [r["id"] for r in TrainingShards(shards, world_size=1, rank=0, epoch_seed=1)]
    c = [r["id"] for r in TrainingShards(shards, world_size=1, rank=0, epoch_seed=2)]
    assert a == b and a != c and a != ids and sorted(a) == sorted(ids)


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
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), tmp_path / "part-00000.parquet")
    with pytest.raises(FileNotFoundError, match="tokenized"):
        TrainingShards(tmp_path, mode="tokens")
