"""stages.mix: constraints, baselines, predictor, RegMix/CLIMB search, output formats (fast, no Ray)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from stages.mix import (BASELINES, Bounds, Predictor, WeightsFormatError, baseline, caps, climb, feasible,
                              project, read_weights, regmix, sample_mixtures, temperature,
                              unimax, write_outputs)

M = 1_000_000
# K=6; domain 2 is the target-like one; no cap binds with the default bounds
TOKENS = np.array([4, 3, 4, 5, 2, 6]) * M
BUDGET = 10 * M


def true_loss(W):
    """2.0 - 1.2*w2 + 0.3*sum(w^2) + small deterministic noise (a function of the weights only)."""
    W = np.atleast_2d(W)
    h = np.round(W * 1e6).astype(np.int64).sum(axis=1)
    return 2.0 - 1.2 * W[:, 2] + 0.3 * (W**2).sum(axis=1) + 0.002 * np.sin(h * 1e-3)


class Counting:
    """Evaluator that records every (round, W) it is asked for."""

    def __init__(self):
        self.calls = []

    def __call__(self, rnd, W):
        self.calls.append((rnd, np.array(W)))
        return true_loss(W)


# -- constraints -------------------------------------------------------------------------------

def test_caps_and_projection():
    b = Bounds(max_weight=0.5, max_epochs=4)
    tokens = np.array([1, 10, 10]) * M
    assert np.allclose(caps(tokens, 10 * M, b), [0.4, 0.5, 0.5])
    w = project([0.7, 0.2, 0.1], tokens, 10 * M, b)
    # domain 0 clipped to its epoch cap 0.4, the 0.3 excess shared 2:1 by the others
    assert np.allclose(w, [0.4, 0.4, 0.2]) and w.sum() == pytest.approx(1, abs=1e-12)
    assert feasible(w, tokens, 10 * M, b)
    # max_weight cap with proportional redistribution, floors, and batched rows
    b2 = Bounds(min_weight=0.05, max_weight=0.5)
    W = project(np.array([[0.7, 0.2, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0], [5, 1, 1, 1]]), np.full(4, 100 * M), 10 * M, b2)
    assert np.allclose(W.sum(axis=1), 1, atol=1e-12)
    assert np.all(W <= 0.5 + 1e-12) and np.all(W >= 0.05 - 1e-12)
    assert np.allclose(W[1], 0.25)
    assert W[0, 1] / W[0, 2] == pytest.approx(2.0)  # ratios among free domains kept
    rng = np.random.default_rng(0)
    R = project(rng.dirichlet(np.full(6, 0.3), 500), TOKENS, 2 * BUDGET, Bounds(0.02, 0.3, 1.5))
    assert all(feasible(r, TOKENS, 2 * BUDGET, Bounds(0.02, 0.3, 1.5)) for r in R)


@pytest.mark.parametrize("tokens,budget,bounds,needle", [
    ([0.6 * M, 0.6 * M], 10 * M, Bounds(), "max_epochs 4 x 1.2M tokens available < budget 10M: raise max_epochs or lower the budget"),
    ([M] * 6, M, Bounds(max_weight=0.1), "max_weight 0.1 x 6 domains"),
    ([M] * 6, M, Bounds(min_weight=0.2), "min_weight 0.2 x 6 domains"),
    ([100 * M, 0.1 * M, 0.1 * M], 10 * M, Bounds(max_weight=0.5), "raise max_weight or max_epochs, or lower the budget"),
])
def test_infeasible_bounds_one_line_error(tokens, budget, bounds, needle):
    with pytest.raises(ValueError) as e:
        project(np.ones(len(tokens)), np.array(tokens), budget, bounds)
    assert needle in str(e.value) and "\n" not in str(e.value)


# -- baselines ---------------------------------------------------------------------------------

def test_baselines_known_values():
    tokens = np.array([1, 2, 10, 100]) * M
    # UniMax by hand, budget 40M, E=4: 4M (cap), 8M (cap), then 28M/2 = 14M each
    assert np.allclose(unimax(tokens, 40 * M, 4), [0.1, 0.2, 0.35, 0.35])
    assert np.allclose(baseline("unimax", tokens, 40 * M, Bounds(max_epochs=4)), [0.1, 0.2, 0.35, 0.35])
    assert np.allclose(temperature(np.array([1, 4, 16]), 2.0), np.array([1, 2, 4]) / 7)
    assert np.allclose(baseline("uniform", tokens, 10 * M), 0.25)
    assert np.allclose(baseline("proportional", tokens, 10 * M, Bounds(max_epochs=100)), tokens / tokens.sum())
    # proportional under a 0.5 weight cap: 100/113 clipped, excess spread over the rest by size
    w = baseline("proportional", tokens, 10 * M, Bounds(max_weight=0.5, max_epochs=100))
    assert w[3] == pytest.approx(0.5) and np.allclose(w[:3] / w[:3].sum(), np.array([1, 2, 10]) / 13)
    # uniform with epoch caps 4 x 1M / 40M = 0.1 and 4 x 2M / 40M = 0.2: the rest split evenly
    w = baseline("uniform", tokens, 40 * M, Bounds(max_epochs=4))
    assert np.allclose(w, [0.1, 0.2, 0.35, 0.35])
    for name in BASELINES:
        w = baseline(name, tokens, 40 * M, Bounds(max_weight=0.6), tau=3.0)
        assert feasible(w, tokens, 40 * M, Bounds(max_weight=0.6)), name
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline("nope", tokens, 10 * M)


# -- sampler and predictor ---------------------------------------------------------------------

def test_sampler_distinct_feasible_and_large_k():
    b = Bounds(max_weight=0.5)
    W = sample_mixtures(np.random.default_rng(0), None, 200, b, TOKENS, BUDGET)
    assert W.shape == (200, 6) and len(np.unique(W.round(6), axis=0)) == 200
    assert all(feasible(w, TOKENS, BUDGET, b) for w in W)
    # K=64: concentrations scaled by K/17, so draws do not collapse onto one or two domains
    tokens = np.full(64, M)
    W = sample_mixtures(np.random.default_rng(1), None, 100, Bounds(max_epochs=100), tokens, 10 * M)
    assert np.median((W > 1e-3).sum(axis=1)) >= 5


@pytest.mark.parametrize("kind", ["lightgbm", "linear"])
def test_predictor_deterministic_with_rho(kind):
    rng = np.random.default_rng(3)
    W = rng.dirichlet(np.ones(6), 24)
    y = true_loss(W)
    a, b = Predictor(kind, seed=1).fit(W, y), Predictor(kind, seed=1).fit(W, y)
    C = rng.dirichlet(np.ones(6), 300)
    assert np.array_equal(a.predict(C), b.predict(C)) and a.rho == b.rho
    assert a.rho > 0.6
    assert Predictor(kind).fit(W[:6], y[:6]).rho is None


# -- searches ----------------------------------------------------------------------------------

SMALL = dict(candidates=2000, top_k=32)


@pytest.mark.parametrize("method", ["regmix", "climb"])
def test_search_is_deterministic_per_round(method):
    runs = []
    for _ in range(2):
        ev = Counting()
        if method == "regmix":
            res = regmix(ev, None, TOKENS, BUDGET, Bounds(), runs=12, predictor="lightgbm", seed=5, **SMALL)
        else:
            res = climb(ev, None, TOKENS, BUDGET, Bounds(), rounds=[10, 4, 3], predictor="lightgbm", seed=5, **SMALL)
        runs.append((ev.calls, res))
    (c1, r1), (c2, r2) = runs
    assert [r for r, _ in c1] == [r for r, _ in c2] == ([1] if method == "regmix" else [1, 2, 3])
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(c1, c2))
    assert np.array_equal(r1.weights, r2.weights) and r1.runs == r2.runs
    # anchors: the prior (proportional) and uniform mixtures are round-1 runs
    assert np.allclose(c1[0][1][0], TOKENS / TOKENS.sum()) and np.allclose(c1[0][1][1], 1 / 6)
    if method == "climb":  # no mixture run twice; later runs carry the prediction made before training
        allw = np.vstack([w for _, w in c1])
        assert len(np.unique(allw.round(6), axis=0)) == len(allw)
        assert all(r["predicted"] is None for r in r1.runs if r["round"] == 1)
        assert all(isinstance(r["predicted"], float) for r in r1.runs if r["round"] > 1)


@pytest.mark.parametrize("predictor", ["lightgbm", "linear"])
def test_known_answer(predictor):
    uni = true_loss(np.full(6, 1 / 6))[0]
    r = regmix(Counting(), None, TOKENS, BUDGET, Bounds(), runs=32, predictor=predictor, seed=0, candidates=5000, top_k=64)
    c = climb(Counting(), None, TOKENS, BUDGET, Bounds(), rounds=[16, 8, 4], predictor=predictor, seed=0, candidates=5000, top_k=64)
    for res in (r, c):
        assert int(np.argmax(res.weights)) == 2, (res.method, res.weights)
        assert res.predicted_loss < uni and true_loss(res.weights)[0] < uni - 0.1, res.method
        assert res.weights.sum() == pytest.approx(1, abs=1e-9) and res.rho is not None
    if predictor == "linear":  # a smooth predictor also beats every round-1 run (a tree cannot
        # isolate one lucky run: min_child_samples keeps >= 4 runs per leaf)
        assert true_loss(c.weights)[0] < min(x["loss"] for x in c.runs if x["round"] == 1)


@pytest.mark.parametrize("bounds,tokens,cap", [
    (Bounds(max_weight=0.5), TOKENS, 0.5),
    (Bounds(max_epochs=4), np.array([4, 3, 1, 5, 2, 6]) * M, 0.4),  # domain 2: 4 x 1M / 10M
])
def test_search_honors_constraints(bounds, tokens, cap):
    for res in (regmix(Counting(), None, tokens, BUDGET, bounds, runs=16, predictor="linear", seed=0, **SMALL),
                climb(Counting(), None, tokens, BUDGET, bounds, rounds=[10, 5], predictor="linear", seed=0, **SMALL)):
        assert feasible(res.weights, tokens, BUDGET, bounds), res.method
        assert res.weights[2] == pytest.approx(cap, abs=5e-3)  # the target wants as much as allowed
        assert all(feasible(np.array(x["weights"]), tokens, BUDGET, bounds) for x in res.runs)


# -- formats -----------------------------------------------------------------------------------

def test_write_and_read_outputs(tmp_path):
    names = [f"cluster_{i}" for i in range(6)]
    w = project([0.3, 0.0, 0.4, 0.1, 0.1, 0.1], TOKENS, BUDGET)
    paths = write_outputs(tmp_path, names, w, TOKENS, np.arange(6) * 10 + 1, BUDGET, Bounds(), "climb", {"rho": 0.9})
    doc = read_weights(paths["weights"])
    assert doc["method"] == "climb" and doc["rho"] == 0.9 and doc["budget_tokens"] == BUDGET
    assert sum(d["weight"] for d in doc["domains"]) == pytest.approx(1, abs=1e-6)
    assert doc["domains"][2]["epochs"] == pytest.approx(0.4 * BUDGET / TOKENS[2])
    # the trainer recipes are remix's (they name data that exists): the mix writes weights.json only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.json"]
    with pytest.raises(ValueError, match="name files"):
        write_outputs(tmp_path, ["a/b"] + names[1:], w, TOKENS, np.arange(6) + 1, BUDGET, Bounds(), "climb")
    assert not list(tmp_path.glob(".*tmp*"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"method": "x", "budget_tokens": 1, "max_epochs": 4, "domains": [{"name": "a", "weight": 0.5}]}))
    with pytest.raises(WeightsFormatError, match=r"bad\.json: domains\[0\] is missing 'tokens'"):
        read_weights(bad)
