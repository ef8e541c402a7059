"""Tiny GPT proxy: determinism, a known-answer mixture test, weights realized, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.models import proxy_lm as P

V = 64


def _tiny(**kw) -> P.ProxySpec:
    base = dict(vocab_size=V, n_layer=1, n_head=2, d_model=32, ctx=32, batch_size=16, lr=1e-2,
                tokens=20_000, eval_tokens=4_000, device="cpu", threads=1)
    return P.ProxySpec(**{**base, **kw})


def _markov(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A domain: a random sparse bigram chain on its own half of the vocabulary.
    Returns (training stream, held-out stream) from the same generator."""
    rng = np.random.default_rng(seed)
    support = rng.choice(V, size=V // 2, replace=False)
    trans = rng.dirichlet(np.full(len(support), 0.05), size=len(support))
    cum = trans.cumsum(1)
    states = np.empty(n, dtype=np.int64)
    states[0] = 0
    u = rng.random(n)
    for i in range(1, n):
        states[i] = min(np.searchsorted(cum[states[i - 1]], u[i]), len(support) - 1)
    toks = support[states].astype(np.uint16)
    cut = int(n * 0.8)
    return toks[:cut], toks[cut:]


@pytest.fixture(scope="module")
def domains():
    return [_markov(s, 30_000) for s in (11, 22, 33)]


def test_deterministic_and_seed_matters(domains):
    streams = [d[0] for d in domains]
    evals = {"d1": domains[1][1]}
    a = P.train_proxy(streams, [0.2, 0.5, 0.3], evals, _tiny(), seed=3)
    b = P.train_proxy(streams, [0.2, 0.5, 0.3], evals, _tiny(), seed=3)
    c = P.train_proxy(streams, [0.2, 0.5, 0.3], evals, _tiny(), seed=4)
    assert abs(a["loss"] - b["loss"]) <= 1e-6
    assert abs(a["loss"] - c["loss"]) > 1e-4
    assert a["steps"] == 40 and a["tokens"] == 40 * 16 * 32 and a["device"] == "cpu"
    assert a["params"] == P.n_params(_tiny()) and a["tokens_per_s"] > 0
    assert a["loss"] == a["losses"]["d1"]


def test_known_answer_target_domain_wins(domains):
    """Held-out text of domain 1: training only on domain 1 beats domain 0 alone and the uniform mix."""
    streams = [d[0] for d in domains]
    evals = {"d1": domains[1][1]}
    only1 = P.train_proxy(streams, [0, 1, 0], evals, _tiny(), seed=0)["loss"]
    only0 = P.train_proxy(streams, [1, 0, 0], evals, _tiny(), seed=0)["loss"]
    mixed = P.train_proxy(streams, [1 / 3, 1 / 3, 1 / 3], evals, _tiny(), seed=0)["loss"]
    assert only1 + 0.3 < mixed < only0 - 0.3, (only1, mixed, only0)
    assert only1 < np.log(V / 2)  # better than uniform over the domain's own support


def test_multiple_targets_mean(domains):
    streams = [d[0] for d in domains]
    evals = {"d0": domains[0][1], "d2": domains[2][1]}
    r = P.train_proxy(streams, [1, 0, 1], evals, _tiny(tokens=5_000), seed=0)
    assert set(r["losses"]) == {"d0", "d2"}
    assert r["loss"] == pytest.approx(np.mean(list(r["losses"].values())))


@pytest.mark.parametrize("weights", [[0.05, 0.9, 0.05], [0.5, 0.25, 0.25], [0.013, 0.0, 0.987], [1, 1, 1]])
@pytest.mark.parametrize("n_seqs", [7, 100, 1333])
def test_sample_plan_realizes_weights(weights, n_seqs):
    lengths = [1_000, 50_000, 300]
    ctx = 32
    rng = np.random.Generator(np.random.PCG64(0))
    stream, offsets = P.sample_plan(lengths, weights, n_seqs, ctx, rng)
    assert len(stream) == len(offsets) == n_seqs
    w = np.asarray(weights, float) / np.sum(weights)
    share = np.bincount(stream, minlength=3) / n_seqs
    assert np.all(np.abs(share - w) <= 1 / n_seqs + 1e-12), (share, w)
    assert np.all(offsets >= 0)
    assert np.all(offsets + ctx + 1 <= np.asarray(lengths)[stream])


def test_sample_plan_shuffled_and_seeded():
    lengths, w = [10_000, 10_000], [0.5, 0.5]
    s1, o1 = P.sample_plan(lengths, w, 200, 16, np.random.Generator(np.random.PCG64(1)))
    s2, o2 = P.sample_plan(lengths, w, 200, 16, np.random.Generator(np.random.PCG64(1)))
    s3, _ = P.sample_plan(lengths, w, 200, 16, np.random.Generator(np.random.PCG64(2)))
    assert (s1 == s2).all() and (o1 == o2).all() and not (s1 == s3).all()
    assert 0 < s1[:100].sum() < 100  # not sorted by stream


class _Untouchable:
    """A stream that must never be read (weight 0); shorter than one window, which is allowed."""

    def __len__(self):
        return 5

    def __getitem__(self, item):
        raise AssertionError("a weight-0 stream was read")


def test_zero_weight_stream_never_read_and_memmap(domains, tmp_path):
    path = tmp_path / "s.npy"
    np.save(path, domains[0][0])
    mm = np.load(path, mmap_mode="r")
    r = P.train_proxy([_Untouchable(), mm], [0, 1], {"t": domains[0][1]}, _tiny(tokens=2_000), seed=0)
    assert np.isfinite(r["loss"])


def test_errors(domains):
    s = [d[0] for d in domains]
    ev = {"t": domains[0][1]}
    with pytest.raises(ValueError, match="fewer than ctx"):
        P.train_proxy([s[0], s[1][:20]], [0.5, 0.5], ev, _tiny(), seed=0)
    with pytest.raises(ValueError, match="all mixture weights are zero"):
        P.train_proxy(s, [0, 0, 0], ev, _tiny(), seed=0)
    with pytest.raises(ValueError, match="3 streams but 2 weights"):
        P.train_proxy(s, [0.5, 0.5], ev, _tiny(), seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        P.train_proxy(s, [1, -1, 1], ev, _tiny(), seed=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        P.train_proxy(s, [1, 1, 1], ev, _tiny(vocab_size=16), seed=0)
    with pytest.raises(ValueError, match="divisible"):
        _tiny(n_head=3)


def test_threads_restored(domains):
    before = torch.get_num_threads()
    P.train_proxy([domains[0][0]], [1], {}, _tiny(tokens=1_000, threads=1), seed=0)
    assert torch.get_num_threads() == before


def test_from_config_and_params():
    from pipeline.config import ProxyConfig

    cfg = ProxyConfig(n_layer=3, d_model=64, ctx=64, train_tokens=123_456, threads=None)
    spec = P.ProxySpec.from_config(cfg, vocab_size=4096)
    assert (spec.n_layer, spec.d_model, spec.ctx, spec.tokens, spec.threads) == (3, 64, 64, 123_456, None)
    assert spec.vocab_size == 4096 and spec.warmup == 0.05
    d, n, v, c = 64, 3, 4096, 64
    assert P.n_params(spec) == v * d + c * d + n * (12 * d * d + 13 * d) + 2 * d


def test_lr_schedule():
    spec = _tiny(lr=1.0, warmup=0.1)
    lrs = [P._lr_at(s, 100, spec) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_eval_windows():
    spec = _tiny(ctx=8, eval_tokens=40)
    arr = np.arange(100, dtype=np.uint16) % V
    win = P.eval_windows(arr, spec)
    assert win.shape == (4, 9) and win.dtype == np.int64 and (win.ravel() == arr[:36]).all()
    assert P.eval_windows(arr[:5], spec).shape == (1, 5)
    with pytest.raises(ValueError, match="at least 2"):
        P.eval_windows(arr[:1], spec)


def test_bad_eval_fails_before_training(domains):
    with pytest.raises(ValueError, match="at least 2"):
        P.train_proxy([domains[0][0]], [1], {"t": domains[0][1][:1]}, _tiny(tokens=10**7), seed=0)


def test_zero_weight_gets_no_sequences():
    counts = P._largest_remainder(np.array([0.0, 1 / 3, 1 / 3, 1 / 3]), 10)
    assert counts[0] == 0 and counts.sum() == 10
