"""evaluate: the data-value check. The same proxy LM, trained at equal tokens on

  raw           the ingested corpus as it came in (every document, natural proportions);
  <baseline>    the curated domains (the mix stage's streams) with uniform / proportional /
                temperature / unimax weights;
  mix           the curated domains with the optimizer's weights;
  remix         the remix stage's training shards (its token shards, or its text re-tokenized),
  <name>        more remix dirs (evaluate.remixes), e.g. a curriculum remix and a shuffled one,

and scored on the held-out `eval` part of every target set (the mixture search only saw the
`search` part). `evaluate.proxy` overrides the proxy's lr_schedule / average_last / data_order for
every arm (sequential data order reads a remix in its written order: a curriculum is seen in order),
and its lr / sequences_per_step / ctx / eval_tokens (unset: the mix stage's);
`evaluate.compare` adds paired intervals between named arms. Writes <out>/evaluate.json and prints
the table; each (arm, seed) run is a runner task, so a killed evaluation resumes.
"""
from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import numpy as np

from pipeline import intervals, io, lock, runner
from pipeline.models import tokenstreams as ts
from pipeline.config import Config, ConfigError, EvaluateConfig
from pipeline.registry import Stage
from pipeline.version import __version__

STAGE = "evaluate"
BASELINES = ("uniform", "proportional", "temperature", "unimax")


def _dirs(cfg: Config) -> tuple[Path, Path, Path]:
    c: EvaluateConfig = cfg.evaluate
    root = cfg.run.output
    return Path(c.raw or root / "ingest"), Path(c.mix or root / "mix"), Path(c.remix or root / "remix")


def _single_stream(phase, name: str, src: Path, work: Path, tok: Path, cap: int, seed: int, batch_size: int):
    """A dataset dir's documents as one token stream (seeded document order, at most `cap` tokens)."""
    shards = io.shard_files(src)
    if not shards:
        raise ConfigError(f"evaluate: {src} has no part-*.parquet shards; run the stage that writes it first")
    fp, tok_sha = io.dataset_fingerprint(src), io.sha256_file(tok)
    r = ts.tokenize_pass(phase, f"evaluate:{name}", shards, work / name, tok, tok_sha, None, batch_size, fp, cap, seed)
    if not r.ok:
        return r
    dest = work / f"{name}-stream"
    [built] = ts.cached_streams(work / name, [p.stem for p in shards], [""], cap, seed, dest, key=ts.digest(fp, tok_sha, cap, seed, "hash-order"))
    return str(dest / built["file"]), fp


def _remix_stream(remix: Path, work: Path, name: str = "remix") -> tuple[str, str] | None:
    """The remix's token shards (already in training order) concatenated; None when it wrote none."""
    files = sorted(remix.glob("part-*.tokens.npy"))
    if not files:
        return None
    key = ts.digest(*(io.sha256_file(f) for f in files))
    dest = work / f"{name}-stream.npy"
    meta = work / f"{name}-stream.json"
    if not dest.exists() or not meta.exists() or io.read_json(meta).get("key") != key:
        io.concat_npy(files, dest)  # streamed part by part: never the whole remix in memory
        io.write_json({"key": key, "files": [f.name for f in files]}, meta)
    return str(dest), key


def run(cfg: Config, inp: Path | None, out: Path, phase, force: bool = False) -> runner.StageResult:
    c: EvaluateConfig = cfg.evaluate
    raw, mixd, remixd = _dirs(cfg)
    wpath = mixd / "weights.json"
    if not wpath.exists():
        raise ConfigError(f"evaluate: {wpath} not found; run the mix stage first (or set evaluate.mix)")
    weights = io.read_json(wpath)
    tok = mixd / "tokenizer.json"
    unknown = [a for a in c.arms if a not in ("raw", "mix", "remix", *BASELINES, *c.remixes)]
    if unknown:
        raise ConfigError(f"evaluate.arms: unknown arm(s) {unknown}; choose from raw, mix, remix, {', '.join(BASELINES)}"
                          + (f", {', '.join(c.remixes)} (evaluate.remixes)" if c.remixes else ""))
    _check_extra(c)
    out = Path(out)
    t0 = time.perf_counter()
    h = cfg.stage_hash(STAGE)
    wsha = io.sha256_file(wpath)
    with lock.dir_lock(out):
        if force:
            io.clear_dir(out)
        io.prepare_dir(out)
        work = out / "_work"
        ph = partial(phase, force=False)
        cap = ts.STREAM_CAP * c.train_tokens
        streams: dict[str, tuple[list[str], list[float]]] = {}
        fps = [wsha]
        index = io.read_json(mixd / weights.get("streams", "domains/index.json"))
        dstreams = [str(mixd / "domains" / d["file"]) for d in index["domains"]]
        dnames = [d["name"] for d in index["domains"]]
        for arm in c.arms:
            if arm == "raw":
                r = _single_stream(ph, "raw", raw, work, tok, cap, cfg.run.seed, cfg.run.docs_per_batch)
                if isinstance(r, runner.StageResult):
                    return r
                streams[arm], fps = ([r[0]], [1.0]), fps + [r[1]]
            elif arm == "remix" or arm in c.remixes:
                src = remixd if arm == "remix" else Path(c.remixes[arm])
                r = _remix_stream(src, work, arm)
                if r is None and (src / "_remix.json").exists() and io.read_json(src / "_remix.json").get("order"):
                    raise ConfigError(f"evaluate: remix {src} is ordered (remix.order) but has no token shards, and re-tokenizing "
                                      "its text would reorder it; re-run remix with tokenized: true")
                if r is None:
                    r = _single_stream(ph, arm, src, work, tok, cap, cfg.run.seed, cfg.run.docs_per_batch)
                    if isinstance(r, runner.StageResult):
                        return r
                streams[arm], fps = ([r[0]], [1.0]), fps + [r[1]]
            else:
                w = weights["baselines"][arm] if arm in BASELINES else {d["name"]: d["weight"] for d in weights["domains"]}
                streams[arm] = (dstreams, [float(w.get(n, 0.0)) for n in dnames])
        evals = {n: str(mixd / "targets" / v["eval"]["file"]) for n, v in weights["target_splits"].items()}
        spec = {**weights["proxy"], "tokens": c.train_tokens, **(c.proxy.spec_overrides() if c.proxy else {})}
        # arms with the same data and weights (e.g. unimax = uniform when no epoch cap binds) share one run
        same: dict[str, str] = {}
        run_of = {arm: same.setdefault(ts.digest(st, [round(x, 12) for x in w]), arm) for arm, (st, w) in streams.items()}
        tasks = [runner.Task(f"{arm}-s{s}", ts.proxy_task, dict(streams=st, weights=w, evals=evals, spec=spec, seed=cfg.run.seed + s))
                 for arm, (st, w) in streams.items() if run_of[arm] == arm for s in range(c.seeds)]
        header = {"stage": STAGE, "version": __version__, "config_hash": h, "input_fingerprint": ts.digest(*fps)}
        res = runner.work_phase(ph, "evaluate:arms", work / "arms", tasks, ts.digest(h, spec, *fps), header["input_fingerprint"])
        if not res.ok:
            manifest = {**header, "status": "incomplete", "totals": {}, "failed": res.failed}
            io.write_json(manifest, out / io.MANIFEST)
            return runner.StageResult(STAGE, out, manifest, res.failed, res.seconds)
        table = _table(work / "arms", c, run_of, list(evals))
        result = {"tokens": c.train_tokens, "seeds": c.seeds, "targets": list(evals), "split": "eval" if weights.get("eval_fraction") else "search",
                  "method": weights.get("method"), "proxy": spec, "arms": table}
        if c.compare:
            result["comparisons"] = compare(table, c.compare)
        io.write_json(result, out / "evaluate.json")
        manifest = {**header, "status": "complete", "totals": {}, "outputs": {"evaluate": "evaluate.json"}}
        io.write_json(manifest, out / io.MANIFEST)
        io.write_json({"timings": {"wall_seconds": round(time.perf_counter() - t0, 3)}}, out / io.STATS)
    return runner.StageResult(STAGE, out, manifest, [], time.perf_counter() - t0)


def _check_extra(c: EvaluateConfig) -> None:
    """evaluate.remixes names and evaluate.compare pairs: one-line ConfigErrors."""
    from pipeline.config import unsafe_domain_name

    for name in c.remixes:
        if name in ("raw", "mix", "remix", *BASELINES) or unsafe_domain_name(name):
            raise ConfigError(f"evaluate.remixes: name {name!r} is a built-in arm or cannot name a file; use letters, digits, _ . = + -")
    for pair in c.compare:
        if len(pair) != 2 or any(a not in c.arms for a in pair):
            raise ConfigError(f"evaluate.compare: {pair} must be [arm, reference], both in evaluate.arms {c.arms}")


def compare(table: list[dict], pairs: list[list[str]]) -> list[dict]:
    """Per pair [arm, reference]: the paired relative loss difference (arm - ref) / ref over seeds with
    its 95 % interval (pipeline.intervals), and the text ('... n.s.' when the interval crosses 0)."""
    by = {r["arm"]: r for r in table}
    out = []
    for a, b in pairs:
        x = intervals.paired(by[a]["seed_losses"], by[b]["seed_losses"])
        out.append({"arm": a, "reference": b, **x, "text": intervals.describe(x)})
    return out


def _table(d: Path, c: EvaluateConfig, run_of: dict[str, str], targets: list[str]) -> list[dict]:
    """Per arm: mean loss over seeds, its std, the per-seed losses, and the paired relative difference
    to raw and to the best baseline (lowest mean loss of uniform/proportional/temperature/unimax)
    with its 95 % interval (pipeline.intervals)."""
    rows = []
    for arm, ran in run_of.items():
        ms = [io.read_marker(d, f"{ran}-s{s}") for s in range(c.seeds)]
        per_seed = [float(m["loss"]) for m in ms]
        losses = {t: float(np.mean([m["losses"][t] for m in ms])) for t in targets}
        rows.append({"arm": arm, "same_run_as": ran if ran != arm else None, "loss": float(np.mean(per_seed)), "losses": losses,
                     "seed_losses": per_seed, "std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None,
                     "seconds": round(sum(m.get("seconds", 0.0) for m in ms), 3),
                     "tokens_per_s": float(np.mean([m.get("tokens_per_s") or 0 for m in ms]))})
    by = {r["arm"]: r for r in rows}
    base = [r for r in rows if r["arm"] in BASELINES]
    best = min(base, key=lambda r: r["loss"]) if base else None
    for r in rows:
        r["vs_raw"] = None if "raw" not in by else (r["loss"] - by["raw"]["loss"]) / by["raw"]["loss"]
        r["vs_raw_paired"] = None if "raw" not in by or r["arm"] == "raw" else intervals.paired(r["seed_losses"], by["raw"]["seed_losses"])
        if best is not None and r["arm"] not in BASELINES and r["arm"] != "raw":
            r["vs_best_baseline"] = {"baseline": best["arm"], **intervals.paired(r["seed_losses"], best["seed_losses"])}
    return rows


SPEC = Stage(STAGE, run=run, artifact=True, recompute_on_growth=True)
