"""pipeline.formats.mds against mosaicml-streaming itself: byte-identical to streaming.MDSWriter
(shard split points included), and read back by StreamingDataset / Stream."""
from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from pipeline.formats.mds import MDSWriter
from tests.trainer_libs import import_streaming, streaming_dataset

streaming = import_streaming()
COLUMNS = {"tokens": "ndarray:uint16", "id": "str", "n": "int", "m": "int64", "t32": "ndarray:uint32"}


def _samples(seed: int, n: int) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, 300, n)
    lens[[1, 2, 3, 4, 5]] = [1, 255, 256, 65_535, 65_536]  # every shape-dtype boundary (uint8/16/32)
    toks = [rng.integers(0, 65_536, k).astype(np.uint16) for k in lens]
    return {"tokens": toks, "id": [f"doc-{i}" + "é" * (i % 3) if i % 7 else "" for i in range(n)],
            "n": [int(x) for x in rng.integers(-2**62, 2**62, n)], "m": [int(x) for x in rng.integers(-9, 9, n)],
            "t32": [t.astype(np.uint32) * 65_537 for t in toks]}


def _ours(out, samples, size_limit, cuts) -> dict:
    with MDSWriter(out, COLUMNS, size_limit) as w:
        for lo, hi in itertools.pairwise(cuts):
            batch = {k: v[lo:hi] for k, v in samples.items()}
            t32 = batch["t32"]  # the flat (values, offsets) form for one column, arrays for the other
            batch["t32"] = (np.concatenate(t32 or [np.zeros(0, np.uint32)]), np.concatenate([[0], np.cumsum([a.size for a in t32])]))
            batch["m"] = np.array(batch["m"])
            w.write_batch(batch)
    return json.loads((out / "index.json").read_text())


@pytest.mark.parametrize("size_limit", [1 << 15, 2_000, 100, None])
def test_byte_identical_to_streaming_writer(tmp_path, size_limit):
    """100: the first sample alone exceeds the limit, so streaming writes an empty shard.00000 first."""
    samples = _samples(1, 120)
    with streaming.MDSWriter(out=str(tmp_path / "ref"), columns=COLUMNS, size_limit=size_limit, compression=None, hashes=[]) as ref:
        for i in range(120):
            ref.write({k: v[i] for k, v in samples.items()})
    index = _ours(tmp_path / "ours", samples, size_limit, [0, 50, 51, 51, 120])
    names = sorted(p.name for p in (tmp_path / "ref").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ours").iterdir())
    for name in names:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    counts = [s["samples"] for s in index["shards"]]
    assert sum(counts) == 120 and (len(counts) > 3) == (size_limit is not None)
    assert (counts[0] == 0) == (size_limit == 100)


def _check(got: dict, samples: dict, i: int) -> None:
    assert got["id"] == samples["id"][i] and got["n"] == samples["n"][i] and got["m"] == samples["m"][i]
    for k in ("tokens", "t32"):
        assert got[k].dtype == samples[k][i].dtype and np.array_equal(got[k], samples[k][i])


def test_streaming_dataset_and_streams_read_it(tmp_path):
    a, b = _samples(2, 70), _samples(3, 30)
    _ours(tmp_path / "a", a, 1 << 14, [0, 70])
    _ours(tmp_path / "b", b, 1 << 20, [0, 10, 30])
    with streaming_dataset(tmp_path, local=str(tmp_path / "a"), batch_size=1, shuffle=False) as ds:
        assert len(ds) == 70
        got = list(ds)
    assert len(got) == 70 and all(_check(g, a, i) is None for i, g in enumerate(got))
    streams = [streaming.Stream(local=str(tmp_path / d)) for d in ("a", "b")]
    with streaming_dataset(tmp_path, streams=streams, batch_size=1, shuffle=False) as ds:
        got = list(ds)
        shm = [f"{ds._shm_prefix_int:06}_{name}" for name in ("locals", "barrier", "shard_states")]
    assert not any(os.path.exists(f"/dev/shm/{name}") for name in shm)  # the helper unlinked them
    assert len(got) == 100
    for i, g in enumerate(got):
        _check(g, a, i) if i < 70 else _check(g, b, i - 70)


def test_errors_and_abort(tmp_path):
    with pytest.raises(ValueError, match="encodings supported"):
        MDSWriter(tmp_path / "x", {"tokens": "ndarray"})
    with pytest.raises(ValueError, match="size_limit"):
        MDSWriter(tmp_path / "x", {"id": "str"}, size_limit=1 << 32)
    columns = {"tokens": "ndarray:uint16", "id": "str"}
    with pytest.raises(RuntimeError, match="boom"), MDSWriter(tmp_path / "x", columns, size_limit=200) as w:
        w.write_batch({"tokens": [np.arange(50, dtype=np.uint16)] * 9, "id": ["a"] * 9})
        with pytest.raises(ValueError, match="non-empty"):  # streaming refuses 0-element arrays
            w.write_batch({"tokens": [np.zeros(0, np.uint16)], "id": ["a"]})
        with pytest.raises(ValueError, match="do not fit uint16"):
            w.write_batch({"tokens": [np.array([70_000])], "id": ["a"]})
        with pytest.raises(ValueError, match="must be str"):
            w.write_batch({"tokens": [np.ones(2, np.uint16)], "id": [b"a"]})
        with pytest.raises(ValueError, match="columns"):
            w.write_batch({"tokens": [np.ones(2, np.uint16)]})
        assert len(w.shards) > 2
        raise RuntimeError("boom")
    assert list((tmp_path / "x").iterdir()) == []
    (tmp_path / "x" / "junk").write_text("")
    with pytest.raises(ValueError, match="not empty"):
        MDSWriter(tmp_path / "x", {"id": "str"})
    with MDSWriter(tmp_path / "empty", {"id": "str"}) as w:
        pass
    assert json.loads((tmp_path / "empty" / "index.json").read_text()) == {"shards": [], "version": 2}
