"""Token streams for proxies (pipeline/models/tokenstreams.py): the tokenize tasks keep only what the
streams can take (a seeded id-hash threshold per domain), and the streams are the same as from a
store of the whole corpus; domain totals still count every document."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline import io, runner
from pipeline.models import bpe
from pipeline.models import tokenstreams as ts
from tests.test_remix import make_input, train_bpe

PHASE = partial(runner.run_stage, use_ray=False, show_progress=False, max_retries=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("ts")
    inp = make_input(d / "inp", n_per=300, shards=6)  # 3 domains (`cluster`), ~ 7.5k / 18k / 38k words
    return d, inp, train_bpe(d / "tok.json", inp)


def _pass(d: Path, inp: Path, tok: Path, cap: int) -> Path:
    shards = io.shard_files(inp)
    r = ts.tokenize_pass(PHASE, "t", shards, d, tok, io.sha256_file(tok), "cluster", 64, io.dataset_fingerprint(inp), cap, 5)
    assert r.ok
    return d


def test_tokenized_store_holds_the_sample_and_streams_match_the_whole_corpus(corpus):
    d, inp, tok = corpus
    keys = [p.stem for p in io.shard_files(inp)]
    cap = 3000
    small = _pass(d / "small", inp, tok, cap)
    whole = _pass(d / "whole", inp, tok, 10 ** 12)  # every document tokenized (the old store)
    # the per-domain totals count every document, whatever was kept
    t = bpe.load(str(tok))
    want: dict[str, list[int]] = {}
    for p in io.shard_files(inp):
        tab = pq.read_table(p, columns=["text", "cluster"])
        for c, n in zip(tab.column("cluster").to_pylist(), bpe.encode_docs(t, tab.column("text").to_pylist())[1].tolist()):
            want.setdefault(str(c), [0, 0])
            want[str(c)][0] += 1
            want[str(c)][1] += n
    for store in (small, whole):
        got = ts.domain_totals({k: io.read_marker(ts.count_dir(store), k) for k in keys})
        assert got == {k: tuple(v) for k, v in sorted(want.items())}
    # the store holds what the streams can take: per domain cap tokens plus at most one document
    kept = sum(len(np.load(small / f"tokens-{k}.npy", mmap_mode="r")) for k in keys)
    longest = max(int(pq.read_table(p, columns=["n_tokens"]).column("n_tokens").to_numpy().max()) for p in io.shard_files(inp))
    assert kept <= 3 * (cap + 4 * longest) and kept * 5 < sum(v[1] for v in want.values())
    # ... and the streams built from it are byte for byte the ones from the whole corpus
    names = list(want)
    a = ts.build_streams(small, keys, names, cap, 5, d / "sa")
    b = ts.build_streams(whole, keys, names, cap, 5, d / "sb")
    assert a == b and all(x["tokens"] >= cap for x in a)
    for x in a:
        assert np.array_equal(np.load(d / "sa" / x["file"]), np.load(d / "sb" / x["file"]))


def test_thresholds_do_not_depend_on_the_shard_order(corpus):
    d, inp, tok = corpus
    store = _pass(d / "order", inp, tok, 2000)
    keys = [p.stem for p in io.shard_files(inp)]
    assert ts.thresholds(ts.count_dir(store), keys, 2000) == ts.thresholds(ts.count_dir(store), keys[::-1], 2000)
