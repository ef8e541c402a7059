"""mix: choose mixture weights over domains (clusters, sources ...) for a target, with proxy LMs.

Passes (each resumable; a killed run re-trains no finished proxy):

  1. tokenizer  (driver)    train a byte-level BPE on a seeded sample of the input (or load
                            run.tokenizer.path) -> <out>/tokenizer.json
  2. tokenize   (per shard) token counts of every document -> <out>/_work/tokens-count (per-domain
                            docs/tokens); then BPE ids of only the documents the streams can take
                            (seeded id-hash threshold per domain) -> <out>/_work/tokens: O(sample)
  3. streams    (driver)    per-domain token streams for the proxies -> <out>/domains/<i>.npy
                            (whole documents in seeded id-hash order, at most STREAM_CAP x proxy.train_tokens each);
                            target sets split by example-id hash into search / eval parts ->
                            <out>/targets/ (evaluate uses the eval parts, the search never sees them)
  4. search     (rounds)    baselines need no proxy; RegMix and CLIMB call an evaluator that trains
                            one proxy per mixture as a runner task (<out>/_work/rounds/<r>, markers
                            keyed by the mixture), so identical mixtures are never trained twice
  5. verify     (one round) the chosen weights and the uniform and proportional baselines trained
                            once more, so weights.json reports trained (not only predicted) losses
  6. outputs                weights.json (+ Megatron / HF / MosaicML forms), search.parquet

method skillit replaces 4-6: skills graph + per-phase schedule (stages/mix/skillit.py) ->
weights.json with `phases`, skillit.json.

Weights respect mix.constraints (min/max weight, max epochs of a domain within budget_tokens).

method cmr (critical mixture ratio for continual pretraining) replaces passes 4-5 with those of
`cmr_run` (held-out validation documents, base proxies, the grid of domain shares x token counts,
the law of `cmr`) and also writes cmr.json.
"""
from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io, lock, runner
from pipeline.models import tokenstreams as ts
from pipeline.config import Config, ConfigError, MixConfig, TokenizerConfig, unsafe_domain_name
from pipeline.registry import Stage
from pipeline.version import __version__

STAGE = "mix"


class _RoundFailed(RuntimeError):
    def __init__(self, res: runner.StageResult):
        super().__init__(res.stage)
        self.res = res



def _tokenizer(tc: TokenizerConfig, shards: list[Path], out: Path, seed: int, fp: str) -> Path:
    from pipeline.models import bpe

    dest = out / "tokenizer.json"
    if tc.path is not None:
        src = Path(tc.path)
        if not src.exists():
            raise ConfigError(f"run.tokenizer.path: {src} does not exist; point it at a tokenizers JSON or leave it null to train one")
        if not dest.exists() or io.sha256_file(dest) != io.sha256_file(src):
            io.atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))
        return dest
    tseed = seed if tc.seed is None else tc.seed
    key = ts.digest(fp, tc.model_dump(exclude={"seed"}), tseed)
    cached = out / "_work" / f"tokenizer-{key}.json"
    if not cached.exists():
        texts = ts.sample_texts(shards, tc.train_docs, tseed)
        bpe.train_bpe(texts, tc.vocab_size, cached)
    if not dest.exists() or io.sha256_file(dest) != io.sha256_file(cached):
        io.atomic_write(dest, lambda tmp: shutil.copyfile(cached, tmp))
    return dest


def proxy_spec(c: MixConfig, tokenizer: Path) -> dict:
    from pipeline.models import bpe, proxy_lm

    spec = proxy_lm.ProxySpec.from_config(c.proxy, bpe.load(str(tokenizer)).get_vocab_size())
    return spec.as_dict()


class Evaluator:
    """evaluate(round, W) for the search: one proxy task per mixture, run as a resumable runner pass."""

    def __init__(self, phase, work: Path, streams: list[str], evals: dict[str, str], spec: dict, seed: int, fp: str):
        self.phase, self.work, self.streams, self.evals, self.spec, self.seed, self.fp = phase, work, streams, evals, spec, seed, fp
        self.records: list[dict] = []
        self.done: dict[str, dict] = {}  # weights digest -> marker of its finished proxy run

    def __call__(self, rnd, W: np.ndarray) -> np.ndarray:
        W = np.atleast_2d(np.asarray(W, dtype=np.float64))
        wkeys = [ts.digest(w.round(12).tobytes(), self.seed)[:12] for w in W]
        keys = [f"r{rnd}-{i:03d}-{wk}" for i, wk in enumerate(wkeys)]
        # a mixture trained in an earlier round (e.g. the uniform anchor, re-checked in `final`) is not trained again
        tasks = [runner.Task(k, ts.proxy_task, dict(streams=self.streams, weights=w.tolist(), evals=self.evals,
                                                     spec=self.spec, seed=self.seed))
                 for k, wk, w in zip(keys, wkeys, W) if wk not in self.done]
        d = self.work / "rounds" / str(rnd)
        res = runner.work_phase(self.phase, f"mix:round{rnd}", d, tasks, ts.digest(W.round(12).tobytes(), self.spec, self.seed), self.fp)
        if not res.ok:
            raise _RoundFailed(res)
        losses = []
        for k, wk in zip(keys, wkeys):
            m = self.done.get(wk) or io.read_marker(d, k)
            self.done[wk] = m
            losses.append(m["loss"])
            self.records.append({"round": rnd, "kind": "verify" if rnd == "final" else "search", "run": k, "loss": m["loss"], "losses": m.get("losses", {}),
                                 "weights": m["weights"], "seconds": m.get("seconds", 0.0), "tokens": m.get("tokens", 0),
                                 "tokens_per_s": m.get("tokens_per_s")})
        return np.asarray(losses, dtype=np.float64)


def run(cfg: Config, inp: Path, out: Path, phase, force: bool = False) -> runner.StageResult:
    c: MixConfig = cfg.mix
    if inp is None:
        raise ConfigError("mix: no input dataset dir; use `curate mix --input DIR`, or run the stage before it too")
    inp, out = Path(inp), Path(out)
    shards = io.shard_files(inp)
    if not shards:
        raise ConfigError(f"mix: {inp} has no part-*.parquet shards; run the stages before it first")
    names = pq.read_schema(shards[0]).names
    if c.domain_column not in names:
        raise ConfigError(f"mix.domain_column: column {c.domain_column!r} is not in {inp} (columns: {', '.join(names)}); "
                          "run the cluster stage first or set domain_column: source")
    fp, h = io.dataset_fingerprint(inp), cfg.stage_hash(STAGE)
    header = {"stage": STAGE, "version": __version__, "config_hash": h, "input_fingerprint": fp}
    runner.refuse_other_output(out, h, fp, force, "mix", hint=" (finished proxy runs of identical mixtures are reused)")
    t0 = time.perf_counter()
    with lock.dir_lock(out):
        io.prepare_dir(out)
        io.write_json({**header, "status": "running"}, out / io.MANIFEST)
        try:
            result = _run(cfg, inp, out, partial(phase, force=False), shards, fp, header)
        except _RoundFailed as e:
            return runner.stopped(STAGE, out, header, e.res)
        if isinstance(result, runner.StageResult):
            return result
        manifest = {**header, "status": "complete", "totals": {}, "outputs": result}
        io.write_json(manifest, out / io.MANIFEST)
        io.write_json({"timings": {"wall_seconds": round(time.perf_counter() - t0, 3)}}, out / io.STATS)
    return runner.StageResult(STAGE, out, manifest, [], time.perf_counter() - t0)


def _run(cfg: Config, inp: Path, out: Path, phase, shards: list[Path], fp: str, header: dict):
    from stages.mix import baselines, constraints, formats, search
    from pipeline.models.train import load_targets

    c: MixConfig = cfg.mix
    seed, work = cfg.run.seed, out / "_work"
    if c.method == "cmr":
        from stages.mix import cmr_run

        cmr_domains = cmr_run.check_domains(c, shards)  # before any work: a wrong name fails at once
    tok = _tokenizer(cfg.run.tokenizer, shards, out, seed, fp)
    tok_sha = io.sha256_file(tok)

    max_tokens = max([c.proxy.train_tokens] + (c.cmr_tokens() if c.method == "cmr" else []))  # cmr: its grid's largest run
    # only what the streams can take is tokenized and kept (sampled in the tasks by id hash): O(sample), not O(corpus)
    r = ts.tokenize_pass(phase, "mix:tokenize", shards, work / "tokens", tok, tok_sha, c.domain_column, cfg.run.docs_per_batch, fp,
                         ts.STREAM_CAP * max_tokens, seed)
    if not r.ok:
        return runner.stopped(STAGE, out, header, r)
    markers = {p.stem: io.read_marker(ts.count_dir(work / "tokens"), p.stem) for p in shards}
    totals = ts.domain_totals(markers)
    dnames = list(totals)
    docs = np.array([totals[d][0] for d in dnames], dtype=np.int64)
    tokens = np.array([totals[d][1] for d in dnames], dtype=np.int64)
    bad = [d for d in dnames if unsafe_domain_name(d)]
    if bad:
        raise ConfigError(f"mix.domain_column: {c.domain_column!r} value {bad[0]!r} cannot name a file of the trainer outputs "
                          "(letters, digits, _ . = + -; no '/', '..' or spaces); map it to another column first")
    if len(dnames) < 2:
        raise ConfigError(f"mix.domain_column: {c.domain_column!r} has {len(dnames)} value(s) in {inp}; a mixture needs at least 2 domains")

    sdir = out / "domains"
    skey = ts.digest(tok_sha, fp, c.domain_column, max_tokens, seed, "hash-order")
    built = ts.cached_streams(work / "tokens", [p.stem for p in shards], dnames, ts.STREAM_CAP * max_tokens, seed, sdir,
                              key=skey, domain_column=c.domain_column)
    streams = [str(sdir / d["file"]) for d in built]

    targets = load_targets(c.targets)
    tinfo = ts.split_targets(targets, str(tok), c.eval_fraction, out / "targets")
    evals = {n: str(out / "targets" / v["search"]["file"]) for n, v in tinfo.items()}

    budget = int(c.budget_tokens or tokens.sum())
    bounds = constraints.Bounds.from_config(c.constraints)
    try:
        base = {b: baselines.baseline(b, tokens, budget, bounds, tau=c.temperature) for b in baselines.BASELINES}
    except ValueError as e:
        raise ConfigError(f"mix.constraints: {e}") from None
    spec = proxy_spec(c, tok)
    if c.method == "cmr":
        return _cmr(cfg, out, phase, header, dnames, tokens, docs, built, skey, cmr_domains, spec, fp, budget, bounds, base, tinfo)
    if c.method == "skillit":
        return _skillit(c, out, work, phase, streams, dnames, evals, spec, seed, fp, tokens, docs, budget, bounds, base, targets, tinfo, header)
    ev = Evaluator(phase, work, streams, evals, spec, seed, fp)
    s = c.search
    n_runs = s.runs if c.method == "regmix" else sum(s.rounds)
    kind = s.predictor if s.predictor != "auto" else ("lightgbm" if n_runs >= 64 else "linear")
    common = dict(candidates=s.candidates, top_k=s.top_k, predictor=kind, seed=seed, conc_range=tuple(s.concentration))
    prior = tokens / tokens.sum()
    predicted, rho, method = None, None, c.method
    if method == "regmix":
        res = search.regmix(ev, prior, tokens, budget, bounds, runs=s.runs, **common)
    elif method == "climb":
        res = search.climb(ev, prior, tokens, budget, bounds, rounds=list(s.rounds), **common)
    else:
        res = None
    predicted_base = None
    ok = [r_ for r_ in (res.runs if res is not None else []) if r_["loss"] is not None]  # runs with a finite loss
    if res is not None:
        from stages.mix.predictor import Predictor

        weights, predicted, rho = np.asarray(res.weights), res.predicted_loss, res.rho
        # the baselines under a predictor fit on every search run: is the choice better than them?
        pr = Predictor(kind, seed).fit(np.array([r_["weights"] for r_ in ok]), np.array([r_["loss"] for r_ in ok]))
        cand = {"chosen": weights, **base}
        predicted_base = {b: float(v) for b, v in zip(cand, pr.predict(np.stack(list(cand.values()))))}
    else:
        weights = base[method]
    # verify: the chosen mixture and two baselines, trained (ids show which is which in search.parquet)
    verify = {"chosen": weights, "uniform": base["uniform"], "proportional": base["proportional"]}
    # the two best mixtures a proxy actually trained on (already trained at this seed: not run again)
    for name, r_ in zip(("best_run", "second_run"), sorted(ok, key=lambda r_: r_["loss"])):
        verify[name] = np.asarray(r_["weights"])
    vl = ev("final", np.stack(list(verify.values())))
    trained = {name: float(v) for name, v in zip(verify, vl)}
    weights, picked, robust = _robust_pick(verify, trained, weights, rho, s, phase, work, streams, evals, spec, seed, fp, ev)
    # The final mixture is the predictor's pick (CLIMB, RegMix), not the best single run: with small,
    # noisy proxies the lowest of ~20 trained losses is partly luck (winner's curse). On the bundled
    # corpus the best run (6.42 on the search split vs 6.53 for the pick) did worse on the held-out
    # eval split: remix -1.6 % vs raw, against -3.75 % for the predictor's pick with 12/6/4 rounds.
    # The best run's trained loss stays in weights.json for comparison (`picked` says which rule chose).

    runs_rows = _search_rows(ev.records, res.runs if res is not None else [])
    _write_search(out / "search.parquet", runs_rows, dnames, list(targets))
    extra = {
        "domain_column": c.domain_column, "tokenizer": "tokenizer.json", "targets": list(targets), "eval_fraction": c.eval_fraction,
        "predicted_loss": None if predicted is None else float(predicted), "predictor_rho": None if rho is None else float(rho),
        "predicted_baselines": predicted_base, "predictor": kind if res is not None else None, "trained_loss": trained,
        "picked": picked if res is not None else method, "verify": robust, "proxy": spec, "seed": seed,
        "baselines": {b: {d: float(x) for d, x in zip(dnames, w)} for b, w in base.items()},
        "streams": "domains/index.json", "target_splits": tinfo,
    }
    formats.write_outputs(out, dnames, weights, tokens, docs, budget, bounds, method, extra)
    return {"weights": "weights.json", "search": "search.parquet", "tokenizer": "tokenizer.json", "proxy_runs": len(ev.records),
            "trained_loss": trained}


def _cmr(cfg: Config, out: Path, phase, header: dict, dnames: list[str], tokens, docs, built: list[dict], skey: str,
         cmr_domains: tuple[str, list[str]], spec: dict, fp: str, budget: int, bounds, base: dict, tinfo: dict):
    """method cmr (stages/mix/cmr_run.py): grid of proxies, law, critical ratio -> cmr.json, weights.json, search.parquet."""
    from stages.mix import cmr_run, constraints, formats

    c: MixConfig = cfg.mix
    seed = cfg.run.seed
    domain, general = cmr_domains
    d = dnames.index(domain)
    shares = np.zeros(len(dnames))
    gi = [dnames.index(g) for g in general]
    shares[gi] = tokens[gi] / tokens[gi].sum()
    info = cmr_run.split(out, built, dnames, domain, general, shares, c.proxy.eval_tokens, c.proxy.ctx, seed, skey)
    res, runs, base_runs = cmr_run.grid(phase, out, out / "_work", c, dnames, built, info, shares, d, spec, seed, fp)
    if not res.ok:
        return runner.stopped(STAGE, out, header, res)
    result = cmr_run.analyse(c, runs, seed)
    ratio = result["ratio"]["value"]
    weights = constraints.project(cmr_run.mixture(shares, d, ratio), tokens, budget, bounds)
    result["ratio"]["realized"] = float(weights[d])  # the domain's weight after mix.constraints (epoch caps)
    result["ratio"]["projected"] = bool(not np.allclose(weights, cmr_run.mixture(shares, d, ratio), atol=1e-9))
    doc = {"domain": domain, "domain_column": c.domain_column, "general": {g: float(shares[i]) for g, i in zip(general, gi)},
           **result, "validation": {n: info[n] for n in ("general", "domain")}, "proxy": spec, "seed": seed,
           "weights": {n: float(x) for n, x in zip(dnames, weights)}, "base": {"tokens": c.cmr_base_tokens(), "runs": base_runs}, "grid": runs}
    io.write_json(doc, out / "cmr.json")
    _write_search(out / "search.parquet", cmr_run.search_rows(runs, result), dnames, ["general", "domain"])
    extra = {
        "domain_column": c.domain_column, "tokenizer": "tokenizer.json", "targets": list(tinfo), "eval_fraction": c.eval_fraction,
        "cmr": "cmr.json", "cmr_domain": domain, "critical_ratio": ratio, "critical_ratio_interval": result["ratio"]["interval"],
        "tolerance": c.cmr.tolerance, "proxy": spec, "seed": seed,
        "baselines": {b: {n: float(x) for n, x in zip(dnames, w)} for b, w in base.items()},
        "streams": "domains/index.json", "target_splits": tinfo,
    }
    formats.write_outputs(out, dnames, weights, tokens, docs, budget, bounds, "cmr", extra)
    return {"weights": "weights.json", "cmr": "cmr.json", "search": "search.parquet", "tokenizer": "tokenizer.json", "proxy_runs": len(runs)}

def _skillit(c: MixConfig, out, work, phase, streams, dnames, evals, spec, seed, fp, tokens, docs, budget, bounds, base, targets, tinfo, header):
    """method skillit: skills graph + per-phase schedule (stages/mix/skillit.py) -> weights.json with
    `phases` (remix uses them) and skillit.json."""
    from stages.mix import formats, skillit

    got = skillit.run(phase, work / "skillit", streams, dnames, evals, spec, c, seed, fp, tokens, budget, bounds)
    if isinstance(got, runner.StageResult):
        return runner.stopped(STAGE, out, header, got)
    record, W = got
    frac = np.array([p["fraction"] for p in record["schedule"]])
    mean = frac @ W / frac.sum()
    extra = {
        "domain_column": c.domain_column, "tokenizer": "tokenizer.json", "targets": list(targets), "eval_fraction": c.eval_fraction,
        "phases": [{"fraction": p["fraction"], "weights": p["weights"]} for p in record["schedule"]], "skillit": "skillit.json",
        "trained_loss": {"skillit_schedule": record["proxy"]["loss"]}, "picked": "skillit", "proxy": spec, "seed": seed,
        "baselines": {b: {d: float(x) for d, x in zip(dnames, w)} for b, w in base.items()},
        "streams": "domains/index.json", "target_splits": tinfo,
    }
    io.write_json(record, out / "skillit.json")
    formats.write_outputs(out, dnames, mean / mean.sum(), tokens, docs, budget, bounds, "skillit", extra)
    return {"weights": "weights.json", "skillit": "skillit.json", "tokenizer": "tokenizer.json", "proxy_runs": len(dnames) + 2,
            "trained_loss": extra["trained_loss"]}


def _robust_pick(verify: dict, trained: dict, weights, rho, s, phase, work, streams, evals, spec, seed, fp, ev):
    """Seed-averaged verification: the candidates trained with s.verify_seeds seeds (seed 0 is the
    verification round itself). Where the predictor is unreliable (held-out rho < s.robust_rho or
    unknown) the final mixture is the candidate (pick, best or second search run) with the lowest
    mean loss; else the predictor's pick. Returns (weights, picked rule, record for weights.json)."""
    from pipeline import intervals

    per_seed = {name: [trained[name]] for name in verify}
    for k in range(1, s.verify_seeds):
        evk = Evaluator(phase, work, streams, evals, spec, seed + k, fp)
        for name, v in zip(verify, evk(f"final-s{k}", np.stack(list(verify.values())))):
            per_seed[name].append(float(v))
        ev.records += [{**r_, "round": "final", "kind": "verify"} for r_ in evk.records]  # own work dir per seed, same round in search.parquet
    mean = {name: float(np.mean(v)) for name, v in per_seed.items()}
    cands = [n for n in ("chosen", "best_run", "second_run") if n in verify]
    by_mean = s.verify_seeds > 1 and (rho is None or not np.isfinite(rho) or rho < s.robust_rho)  # predictor unreliable
    final = min(cands, key=mean.get) if by_mean else "chosen"
    rec = {"seeds": s.verify_seeds, "losses": per_seed, "mean": mean, "final": final,
           "rule": (f"predictor rho {rho if rho is None else round(float(rho), 3)} < {s.robust_rho}: lowest seed-mean loss among {cands}"
                    if by_mean else "the predictor's pick"),
           **{f"vs_{b}": intervals.paired(per_seed[final], per_seed[b]) for b in ("uniform", "proportional")}}
    return (np.asarray(verify[final]) if final != "chosen" else weights), ("predicted" if final == "chosen" else f"seed_mean:{final}"), rec


def _search_rows(records: list[dict], search_runs: list[dict]) -> list[dict]:
    """One row per proxy run (verification runs get the round after the last); the predictor's guess
    made before a run was trained, where the search recorded one."""
    guess = {}
    for r in search_runs:
        if r.get("predicted") is not None:
            guess[(r["round"], tuple(np.round(r["weights"], 9)))] = r["predicted"]
    last = max([r["round"] for r in records if r["kind"] == "search"], default=0)
    rows = []
    for r in records:
        rnd = last + 1 if r["kind"] == "verify" else r["round"]
        rows.append({**r, "round": int(rnd), "predicted": guess.get((r["round"], tuple(np.round(r["weights"], 9))))})
    return rows


def _write_search(path: Path, rows: list[dict], dnames: list[str], tnames: list[str]) -> None:
    cols: dict[str, list] = {"round": [r["round"] for r in rows], "kind": [r["kind"] for r in rows], "run": [r["run"] for r in rows],
                             "loss": [r["loss"] for r in rows], "predicted": [r["predicted"] for r in rows],
                             "seconds": [r["seconds"] for r in rows], "tokens": [r["tokens"] for r in rows]}
    for j, d in enumerate(dnames):
        cols[f"w_{d}"] = [float(r["weights"][j]) for r in rows]
    for t in tnames:
        cols[f"loss_{t}"] = [r["losses"].get(t) for r in rows]
    io.write_parquet(pa.table({k: pa.array(v, pa.float64() if k not in ("round", "kind", "run", "tokens") else None) for k, v in cols.items()}), path)


SPEC = Stage(STAGE, run=run, artifact=True, recompute_on_growth=True)
