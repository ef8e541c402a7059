"""Skill-it (Chen et al. 2023, "Skill-it! A Data-Driven Skills Framework for Understanding and
Training Language Models"): a skills graph between domains, then a mixture that changes per phase.

  graph     (one pass)  each domain's stream is split into a training head and a validation tail
                        (mix.skillit.val_tokens). One proxy per domain i trains on i alone
                        (graph_tokens); with the untrained proxy of the same seed as the reference f,
                        A_ij = max(0, (L_j(f) - L_j(f_i)) / L_j(f)): the relative loss drop on
                        evaluation skill j (every domain's validation tail and every mix target) from
                        training on i, negative transfer clipped to 0 (edges of the graph).
  schedule  (one task)  the paper's online algorithm on one proxy run: phase 1 weights
                        w_1,i ∝ exp(eta Σ_j A_ij) (the paper's initialization), then after phase t the
                        evaluation skills' losses L_j,t of the model trained so far give
                        w_{t+1,i} ∝ w_{t,i} exp(eta Σ_j A_ij L_j,t). Every phase's weights are projected
                        onto mix.constraints (so they are what remix can realise). The proxy trains
                        on the heads with the proxy settings of the search, one learning-rate schedule
                        over all phases.

The result is a schedule, not one mixture: weights.json gets `phases` (fraction, {domain: weight})
that remix uses when remix.phases is not set, and top-level weights = the token-weighted mean of the
phases (what each domain contributes over the whole budget). skillit.json holds the graph, eta,
the per-phase weights and the losses that drove each update. Each proxy is a runner task with a
marker (<out>/_work/skillit/...), so a killed run re-trains nothing that finished.
"""
from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import numpy as np

from pipeline import io, runner
from pipeline.config import ConfigError
from pipeline.models import tokenstreams as ts

from stages.mix.constraints import Bounds, project

VAL_SUFFIX = "@val"  # an evaluation skill that is a domain's validation tail: "<domain>@val"


def split_streams(streams: list[str], names: list[str], val_tokens: int, ctx: int, dest: Path) -> tuple[list[str], dict[str, str]]:
    """Per domain: <dest>/<key>/<i>.train.npy (the stream without its last val_tokens) and <i>.val.npy
    (those last tokens), <key> a digest of the streams' bytes and val_tokens (so proxies keyed by it
    never reuse splits of other streams). One-line ConfigError when a domain is too small for both."""
    key = ts.digest(*[io.sha256_file(Path(s)) for s in streams], val_tokens)
    for old in dest.glob("*") if dest.exists() else []:
        if old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    dest = dest / key
    dest.mkdir(parents=True, exist_ok=True)
    heads, vals = [], {}
    for i, (s, name) in enumerate(zip(streams, names)):
        arr = np.load(s, mmap_mode="r")
        if len(arr) < val_tokens + 2 * (ctx + 1):
            raise ConfigError(f"mix.skillit.val_tokens: domain {name!r} has {len(arr)} tokens in its stream, too few to hold out "
                              f"{val_tokens} and still train (ctx {ctx}); lower mix.skillit.val_tokens or drop the domain")
        for part, sl in (("train", slice(0, len(arr) - val_tokens)), ("val", slice(len(arr) - val_tokens, len(arr)))):
            f = dest / f"{i:04d}.{part}.npy"
            if not f.exists():
                io.write_npy(np.ascontiguousarray(arr[sl]), f)
        heads.append(str(dest / f"{i:04d}.train.npy"))
        vals[name + VAL_SUFFIX] = str(dest / f"{i:04d}.val.npy")
    return heads, vals


def eval_skills(chosen: list[str], domains: list[str], targets: list[str]) -> list[str]:
    """Column names of the evaluation skills that drive the update: mix targets by name, domains as
    '<domain>@val'; empty = every mix target. Unknown names: one-line ConfigError."""
    if not chosen:
        return list(targets)
    out = []
    for n in chosen:
        if n in targets:
            out.append(n)
        elif n in domains:
            out.append(n + VAL_SUFFIX)
        else:
            raise ConfigError(f"mix.skillit.eval: {n!r} is neither a mix target ({', '.join(targets)}) nor a domain "
                              f"({', '.join(domains)}); use one of those names")
    if len(set(out)) != len(out):
        raise ConfigError(f"mix.skillit.eval: a name is listed twice in {chosen}")
    return out


def graph(ref: dict[str, float], trained: list[dict[str, float]], columns: list[str]) -> np.ndarray:
    """A[i, j] = max(0, (ref_j - L_ij) / ref_j): relative loss drop on column j from training on domain i."""
    r = np.array([ref[c] for c in columns], np.float64)
    L = np.array([[row[c] for c in columns] for row in trained], np.float64)
    return np.maximum(0.0, (r[None, :] - L) / r[None, :])


def initial_weights(A: np.ndarray, eta: float, tokens, budget: float, bounds: Bounds) -> np.ndarray:
    """w_1,i ∝ exp(eta Σ_j A_ij) (Skill-it's initialization), projected onto the constraints."""
    z = eta * A.sum(axis=1)
    w = np.exp(z - z.max())
    return project(w / w.sum(), tokens, budget, bounds)


def update(A: np.ndarray, eta: float, w, losses: np.ndarray, tokens, budget: float, bounds: Bounds) -> np.ndarray:
    """One exponentiated-gradient step w_i ∝ w_i exp(eta Σ_j A_ij L_j), projected onto the constraints
    (computed in log space: a large eta·A·L cannot overflow)."""
    w = np.asarray(w, np.float64)
    z = np.log(np.maximum(w, 1e-300)) + eta * (A @ np.asarray(losses, np.float64))
    z = np.where(w > 0, z, -np.inf)
    v = np.exp(z - z.max())
    return project(v / v.sum(), tokens, budget, bounds)


def _step(p: int, w, losses: dict, *, A, eta, columns, tokens, budget, bounds) -> list[float]:
    return update(A, eta, w, np.array([losses[c] for c in columns]), tokens, budget, bounds).tolist()


def reference_task(evals: dict[str, str], spec: dict, seed: int) -> dict:
    """The untrained proxy's losses on every evaluation set (the graph's reference f)."""
    from pipeline.models import proxy_lm

    ev = {k: np.load(v, mmap_mode="r") for k, v in evals.items()}
    return {**ts.ZERO, "losses": proxy_lm.initial_losses(ev, proxy_lm.ProxySpec(**spec), seed), "seed": seed}


def schedule_task(streams: list[str], evals: dict[str, str], spec: dict, seed: int, phases: int, A: list, eta: float,
                  columns: list[str], tokens: list[float], budget: float, bounds: dict) -> dict:
    """Skill-it's online loop on one proxy run (pipeline.models.proxy_lm.train_phased)."""
    from pipeline.models import proxy_lm

    A_, b = np.asarray(A, np.float64), Bounds(**bounds)
    w1 = initial_weights(A_, eta, tokens, budget, b)
    step = partial(_step, A=A_, eta=eta, columns=columns, tokens=tokens, budget=budget, bounds=b)
    arrays = [np.load(s, mmap_mode="r") for s in streams]
    ev = {k: np.load(v, mmap_mode="r") for k, v in evals.items()}
    res = proxy_lm.train_phased(arrays, [1.0 / phases] * phases, [w1.tolist()], ev, proxy_lm.ProxySpec(**spec), seed, update=step)
    keep = ("loss", "losses", "phases", "tokens", "steps", "seconds", "eval_seconds", "device")
    return {**ts.ZERO, **{k: res[k] for k in keep}, "seed": seed}


def run(phase, work: Path, streams: list[str], names: list[str], targets: dict[str, str], spec: dict, c, seed: int, fp: str,
        tokens, budget: float, bounds: Bounds):
    """Graph pass and schedule task. Returns (record for skillit.json, per-phase weights (phases x K))
    or a failed runner.StageResult."""
    sk = c.skillit
    columns = eval_skills(list(sk.eval), names, list(targets))
    heads, vals = split_streams(streams, names, sk.val_tokens, c.proxy.ctx, work / "streams")
    skey = Path(heads[0]).parent.name
    evals = {**vals, **targets}
    gspec = {**spec, "tokens": int(sk.graph_tokens or spec["tokens"])}
    tasks = [runner.Task("reference", reference_task, dict(evals=evals, spec=gspec, seed=seed))]
    tasks += [runner.Task(f"domain-{i:04d}", ts.proxy_task, dict(streams=heads, weights=[float(i == k) for k in range(len(names))],
                                                                 evals=evals, spec=gspec, seed=seed)) for i in range(len(names))]
    gdir = work / "graph"
    res = runner.work_phase(phase, "mix:skillit-graph", gdir, tasks, ts.digest(gspec, seed, skey, names, list(targets.values())), fp)
    if not res.ok:
        return res
    ref = io.read_marker(gdir, "reference")["losses"]
    trained = [io.read_marker(gdir, f"domain-{i:04d}")["losses"] for i in range(len(names))]
    all_cols = list(evals)
    A_full = graph(ref, trained, all_cols)
    A = A_full[:, [all_cols.index(col) for col in columns]]
    kw = dict(streams=heads, evals={col: evals[col] for col in columns}, spec=spec, seed=seed, phases=int(sk.phases),
              A=A.tolist(), eta=float(sk.eta), columns=columns, tokens=[float(t) for t in tokens], budget=float(budget),
              bounds=dict(min_weight=bounds.min_weight, max_weight=bounds.max_weight, max_epochs=bounds.max_epochs))
    sdir = work / "schedule"
    res = runner.work_phase(phase, "mix:skillit-schedule", sdir, [runner.Task("schedule", schedule_task, kw)],
                            ts.digest(kw["A"], kw["eta"], kw["phases"], columns, spec, seed, skey, kw["tokens"], budget, kw["bounds"]), fp)
    if not res.ok:
        return res
    m = io.read_marker(sdir, "schedule")
    W = np.array([ph["weights"] for ph in m["phases"]], np.float64)
    record = {
        "method": "skillit", "paper": "Chen et al. 2023, Skill-it! A Data-Driven Skills Framework (arXiv:2307.14430)",
        "eta": float(sk.eta), "phases": int(sk.phases), "domains": list(names),
        "graph": {"rows": list(names), "columns": all_cols, "A": A_full.round(8).tolist(),
                  "reference_losses": ref, "trained_losses": dict(zip(names, trained)),
                  "definition": "A_ij = max(0, (L_j(untrained) - L_j(trained on domain i only)) / L_j(untrained))",
                  "train_tokens": gspec["tokens"], "val_tokens": int(sk.val_tokens)},
        "eval_skills": columns,
        "schedule": [{"phase": p, "fraction": 1.0 / sk.phases, "weights": dict(zip(names, map(float, W[p]))),
                      "losses_after": ph["losses"], "steps": ph["steps"]} for p, ph in enumerate(m["phases"])],
        "update": "w_1,i ∝ exp(eta Σ_j A_ij); w_{t+1,i} ∝ w_{t,i} exp(eta Σ_j A_ij L_j,t), projected onto mix.constraints",
        "proxy": {"loss": m["loss"], "losses": m["losses"], "tokens": m["tokens"], "seconds": m["seconds"]},
    }
    return record, W
