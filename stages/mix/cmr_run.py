"""The mix stage's `method: cmr` passes: held-out validation sets, the proxy grid, the law, cmr.json.

  check_domains  (driver, before any work)  mix.cmr.domain and mix.cmr.general name values of the
                 domain column; one-line ConfigError otherwise
  split          (driver)  from each used domain stream (<out>/domains/), whole documents drawn by
                 seed are held out: <out>/cmr/domain.val.npy (up to proxy.eval_tokens) and
                 <out>/cmr/general.val.npy (up to proxy.eval_tokens, each general domain by its token
                 share); the rest are the training streams <out>/cmr/streams/<i>.npy
  grid           (runner pass <out>/_work/cmr)  one proxy task (`tokenstreams.proxy_task`) per
                 (ratio, tokens, seed) on the mixture (1 - r) * general + r * domain, general
                 domains by token share; the marker holds both validation losses, so a killed run
                 re-trains nothing finished, and a changed tolerance re-fits without training (the
                 pass hash leaves out tolerance, grid and bootstrap; keys name the grid point)
  law            `stages.mix.cmr`: the fit of general and domain loss, leave-one-point-out error,
                 the critical ratio with a bootstrap interval

Continual pretraining as in the paper: with mix.cmr.base_tokens > 0 (default: the largest grid
count) a base proxy per seed is first trained on the general corpus alone (<out>/_work/cmr_base,
its weights in <key>.pt) and every grid run continues it (fresh optimizer and schedule) on the
mixture; base_tokens 0 trains the grid from scratch. The reference is the r = 0 continuation.
"""
from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io, runner
from pipeline.config import ConfigError, MixConfig
from pipeline.models import tokenstreams as ts

from stages.mix import cmr

HOLDOUT_MAX = 0.2  # at most this share of a domain's stream is held out for validation


def check_domains(c: MixConfig, shards) -> tuple[str, list[str]]:
    """(domain, general domains) validated against the values of the domain column."""
    vals = set()
    for p in shards:
        col = pq.read_table(p, columns=[c.domain_column]).column(c.domain_column)
        vals |= {"" if v is None else str(v) for v in pc.unique(col).to_pylist()}
    known = ", ".join(sorted(vals)[:20]) + (" ..." if len(vals) > 20 else "")
    d = c.cmr.domain
    if d not in vals:
        raise ConfigError(f"mix.cmr.domain: {d!r} is not a value of column {c.domain_column!r} (values: {known}); name one of them")
    general = c.cmr.general if c.cmr.general is not None else sorted(vals - {d})
    bad = [g for g in general if g not in vals]
    if bad:
        raise ConfigError(f"mix.cmr.general: {bad[0]!r} is not a value of column {c.domain_column!r} (values: {known}); name values of it or leave it null")
    if d in general or not general or len(set(general)) != len(general):
        raise ConfigError(f"mix.cmr.general: {general} must be non-empty, without repeats, and must not contain the domain {d!r}")
    return d, list(general)


def _holdout(arr: np.ndarray, quota: int, seed) -> np.ndarray:
    """Mask of the tokens of whole documents (EOS-terminated), drawn in a seeded order until `quota`
    tokens (at least one document; at most HOLDOUT_MAX of the stream unless one document is more)."""
    from pipeline.models.bpe import EOS_ID

    doc = np.concatenate([[0], np.cumsum(arr[:-1] == EOS_ID)]) if len(arr) else np.zeros(0, np.int64)
    n_docs = int(doc[-1]) + 1 if len(arr) else 0
    if n_docs < 2:
        return np.zeros(len(arr), bool)
    lens = np.bincount(doc, minlength=n_docs)
    order = np.random.default_rng(seed).permutation(n_docs)
    quota = min(int(quota), int(HOLDOUT_MAX * len(arr)))
    k = max(1, int(np.searchsorted(np.cumsum(lens[order]), quota)) + 1)
    return np.isin(doc, order[:min(k, n_docs - 1)])


def split(out, built: list[dict], dnames: list[str], domain: str, general: list[str], shares: np.ndarray,
          eval_tokens: int, ctx: int, seed: int, streams_key: str) -> dict:
    """Held-out validation sets and training streams (cached by what made them); see the module doc."""
    dest = out / "cmr"
    key = ts.digest(streams_key, domain, general, eval_tokens, ctx, seed)
    index = dest / "index.json"
    if index.exists() and io.read_json(index).get("key") == key:
        return io.read_json(index)
    used = [dnames.index(domain)] + [dnames.index(g) for g in general]
    train, val = {}, {"general": [], "domain": []}
    for i in used:
        arr = np.load(out / "domains" / built[i]["file"], mmap_mode="r")
        quota = eval_tokens if dnames[i] == domain else max(ctx + 1, int(round(shares[i] * eval_tokens)))
        held = _holdout(np.asarray(arr), quota, [seed, i, 0xE7A1])
        if not held.any() or (~held).sum() < ctx + 1:
            raise ConfigError(f"mix.cmr: domain {dnames[i]!r} has a stream of {len(arr)} tokens, too small to hold out whole validation "
                              f"documents and keep training windows of {ctx + 1} tokens; pick a larger domain or a smaller mix.proxy.ctx")
        f = dest / "streams" / f"{i:04d}.npy"
        io.write_npy(np.ascontiguousarray(arr[~held]), f)
        train[i] = str(f.relative_to(out))
        val["general" if i != used[0] else "domain"].append(np.asarray(arr[held]))
    info = {"key": key, "train": {str(i): p for i, p in train.items()}}
    for name, parts in val.items():
        a = np.concatenate(parts)
        io.write_npy(a, dest / f"{name}.val.npy")
        info[name] = {"file": f"cmr/{name}.val.npy", "tokens": int(len(a))}
    io.write_json(info, index)
    return info


def mixture(shares: np.ndarray, d: int, r: float) -> np.ndarray:
    """(1 - r) * general shares + r * the domain."""
    w = (1.0 - r) * shares
    w[d] += r
    return w


BASE_SEED = 7919  # a base run s draws its init and data from seed + s + BASE_SEED, apart from its continuations (seed + s)


def _base(phase, work, streams, evals, base_spec, shares, c: MixConfig, key: str, seed: int, fp: str):
    """The general-only base proxies (one per seed) the grid runs continue from: (StageResult, runs, weights files)."""
    T = c.cmr_base_tokens()
    d = work / "cmr_base"
    d.mkdir(parents=True, exist_ok=True)
    keys = [f"base-t{T}-s{s}" for s in range(c.cmr.seeds)]
    files = [d / f"{k}.pt" for k in keys]
    for k, f in zip(keys, files):  # a finished base whose weights file went away runs again
        if io.marker_path(d, k).exists() and not f.exists():
            io.marker_path(d, k).unlink()
    tasks = [runner.Task(k, ts.proxy_task, dict(streams=streams, weights=shares.tolist(), evals=evals, spec={**base_spec, "tokens": int(T)},
                                                 seed=seed + s + BASE_SEED, save=str(f))) for s, (k, f) in enumerate(zip(keys, files))]
    res = runner.work_phase(phase, "mix:cmr-base", d, tasks, key, fp)
    if not res.ok:
        return res, [], []
    runs = []
    for s, k in enumerate(keys):
        m = io.read_marker(d, k)
        runs.append({"run": k, "tokens": int(T), "seed": s, "general_loss": float(m["losses"]["general"]),
                     "domain_loss": float(m["losses"]["domain"]), "seconds": float(m.get("seconds", 0.0))})
    return res, runs, [str(f) for f in files]


def grid(phase, out, work, c: MixConfig, dnames: list[str], built: list[dict], info: dict, shares: np.ndarray, d: int,
         spec: dict, seed: int, fp: str):
    """The base proxies (mix.cmr.base_tokens > 0), then one proxy task per (tokens, ratio, seed)
    continuing base s; returns (StageResult, [grid run records], [base run records])."""
    streams = [str(out / info["train"][str(i)]) if str(i) in info["train"] else str(out / "domains" / b["file"]) for i, b in enumerate(built)]
    evals = {n: str(out / info[n]["file"]) for n in ("general", "domain")}
    base = {**spec, "eval_tokens": max(info["general"]["tokens"], info["domain"]["tokens"])}
    key = ts.digest(info["key"], base, shares.round(12).tobytes(), d, seed, c.cmr_base_tokens())
    base_runs, inits = [], [None] * c.cmr.seeds
    if c.cmr_base_tokens():
        res, base_runs, inits = _base(phase, work, streams, evals, base, shares, c, key, seed, fp)
        if not res.ok:
            return res, [], []
    plan = []
    for T in c.cmr_tokens():
        for r in c.cmr.ratios:
            for s in range(c.cmr.seeds):
                plan.append((f"t{T}-r{round(r * 10_000):05d}-s{s}", T, r, s))
    tasks = [runner.Task(k, ts.proxy_task, dict(streams=streams, weights=mixture(shares, d, r).tolist(), evals=evals,
                                                 spec={**base, "tokens": int(T)}, seed=seed + s, init=inits[s])) for k, T, r, s in plan]
    d_ = work / "cmr"
    res = runner.work_phase(phase, "mix:cmr", d_, tasks, key, fp)
    if not res.ok:
        return res, [], []
    runs = []
    for k, T, r, s in plan:
        m = io.read_marker(d_, k)
        runs.append({"run": k, "ratio": float(r), "tokens": int(T), "seed": int(s), "general_loss": float(m["losses"]["general"]),
                     "domain_loss": float(m["losses"]["domain"]), "seconds": float(m.get("seconds", 0.0)),
                     "trained_tokens": int(m.get("tokens", 0)), "weights": m["weights"]})
    return res, runs, base_runs


def analyse(c: MixConfig, runs: list[dict], seed: int) -> dict:
    """Fits, held-out error and the critical ratio with its interval, from the grid runs."""
    tol, seeds = c.cmr.tolerance, c.cmr.seeds
    toks = sorted({x["tokens"] for x in runs})
    t_ref = max(toks)
    at = c.cmr.at_tokens or t_ref
    t_star = at / t_ref
    pts = sorted({(x["tokens"], x["ratio"]) for x in runs})
    cell = {p: [x for x in runs if (x["tokens"], x["ratio"]) == p] for p in pts}
    r = np.array([p[1] for p in pts])
    t = np.array([p[0] / t_ref for p in pts])
    out = {}
    for name in ("general", "domain"):
        Y = np.array([[x[f"{name}_loss"] for x in sorted(cell[p], key=lambda x: x["seed"])] for p in pts])
        y = Y.mean(axis=1)
        theta = cmr.fit(r, t, y)
        loo = cmr.leave_one_out(r, t, y)
        out[name] = dict(Y=Y, y=y, theta=theta, loo=loo, fitted=cmr.law(theta, r, t))
    g, dm = out["general"], out["domain"]
    ratio = cmr.critical_ratio(g["theta"], tol, t_star)
    boot = cmr.bootstrap(r, t, g["Y"], g["theta"], tol, t_star, c.cmr.bootstrap, seed)
    top = t == 1.0
    at_r = {name: float(cmr.law(out[name]["theta"], np.array([ratio]), np.array([t_star]))[0]) for name in out}
    at_0 = {name: float(cmr.law(out[name]["theta"], np.array([0.0]), np.array([t_star]))[0]) for name in out}
    cells = [{"ratio": float(p[1]), "tokens": int(p[0]), **{f"{n}_loss": float(out[n]["y"][j]) for n in out},
              **{f"{n}_seed_losses": [float(v) for v in out[n]["Y"][j]] for n in out},
              **{f"{n}_fit": float(out[n]["fitted"][j]) for n in out},
              **{f"{n}_held_out": out[n]["loo"]["predicted"][j] for n in out}} for j, p in enumerate(pts)]
    return {
        "form": cmr.FORM,
        "why": ("a data power law in tokens with an irreducible term plus a power of the domain share (0 at r = 0, so L(0, T) is the "
                "general-only reference); 5 parameters for the grid, and a closed-form critical ratio; fitted to the cell means "
                "(mean over seeds) by bounded least squares from fixed starts"),
        "tolerance": tol, "at_tokens": int(at), "T_ref": int(t_ref), "ratios": list(c.cmr.ratios), "tokens": toks, "seeds": seeds,
        "fit": {n: cmr.params(out[n]["theta"], t_ref) for n in out},
        "held_out": {n: {k: v for k, v in out[n]["loo"].items() if k != "predicted"} for n in out},
        "cells": cells,
        "ratio": {"value": ratio, "interval": [boot["low"], boot["high"]], "bootstrap": boot,
                  "grid_ratio": cmr.grid_ratio(r[top], g["y"][top], tol),
                  "general_loss_at_ratio": at_r["general"], "general_loss_at_0": at_0["general"],
                  "domain_loss_at_ratio": at_r["domain"], "domain_loss_at_0": at_0["domain"],
                  "domain_gain": (at_0["domain"] - at_r["domain"]) / at_0["domain"] if at_0["domain"] else None},
    }


def search_rows(runs: list[dict], result: dict) -> list[dict]:
    """search.parquet rows: one per proxy run, loss = general loss, predicted = the law's fit of its point."""
    toks = result["tokens"]
    fitted = {(cl["tokens"], cl["ratio"]): cl["general_fit"] for cl in result["cells"]}
    return [{"round": toks.index(x["tokens"]) + 1, "kind": "cmr", "run": x["run"], "loss": x["general_loss"],
             "predicted": fitted[(x["tokens"], x["ratio"])], "seconds": x["seconds"], "tokens": x["trained_tokens"],
             "weights": x["weights"], "losses": {"general": x["general_loss"], "domain": x["domain_loss"]}} for x in runs]
