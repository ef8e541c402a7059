"""The score stage's driver: models, then the scoring pass (its own config hash: the scorers and their
models only), corpus statistics, then the select pass; `_score.json` (models, thresholds, bucket
cut-offs, decontamination report per benchmark) and the timings of every pass in `_stats.json`.
"""
from __future__ import annotations

import time
from pathlib import Path

from pipeline import io, runner
from pipeline.config import Config, ConfigError, ScoreConfig
from pipeline.registry import Stage
from stages.score.attributes import CODE_VERSION, STAGE, merge_decontam_reports, prepare_models, score_shard
from stages.score.select import plan_summary, select_plan, select_shard
from stages.score.stats import corpus_stats

SCORES = "_scores"
REPORT = "_score.json"


def _scoring_section(s: ScoreConfig) -> dict:
    """What the score columns depend on (not select/quality/buckets)."""
    d = s.model_dump(mode="json", exclude={"select", "quality"})
    if d.get("perplexity"):
        d["perplexity"] = {k: v for k, v in d["perplexity"].items() if k not in ("buckets", "group_by", "min_group_docs")}
    if d.get("decontam"):
        d["decontam"].pop("action", None)
    if d.get("toxicity"):
        d["toxicity"].pop("threshold", None)
    return d


def run(cfg: Config, inp: Path, out: Path, phase, force: bool = False) -> runner.StageResult:
    s = cfg.score
    out = Path(out)
    shards = io.shard_files(inp)
    t0 = time.perf_counter()
    try:
        models = prepare_models(cfg, inp, out)
    except (ValueError, FileNotFoundError) as e:  # e.g. too few documents to train on: one line, exit 2
        raise ConfigError(f"score: cannot prepare the models: {e}") from None
    t_models = time.perf_counter() - t0
    shas = {k: v["sha256"] for k, v in models.items()}
    if "fallback" in models.get("perplexity", {}):
        shas["perplexity_fallback"] = models["perplexity"]["fallback"]["sha256"]
    fp = io.dataset_fingerprint(inp)
    h1 = io.content_hash({"scoring": _scoring_section(s), "models": shas, "backend": models.get("perplexity", {}).get("backend"),
             "embed": models.get("bench_sim", {}).get("resolved"),
             "batch": cfg.run.docs_per_batch, "v": CODE_VERSION})
    sdir = out / SCORES
    score_cfg = s.model_dump(mode="json")
    tasks = [runner.Task(key=p.stem, fn=score_shard,
                         kwargs=dict(path=str(p), out=str(sdir), key=p.stem, score=score_cfg, models=models, batch_size=cfg.run.docs_per_batch,
                                     max_error_fraction=cfg.run.max_error_fraction))
             for p in shards]
    old = io.read_json(sdir / io.MANIFEST) if (sdir / io.MANIFEST).exists() else {}
    same = (old.get("config_hash"), old.get("input_fingerprint")) == (h1, fp)
    r1 = phase(f"{STAGE}:scores", sdir, tasks, config_hash=h1, input_fingerprint=fp, **({"force": False} if same else {}))
    if not r1.ok:
        return r1
    t1 = time.perf_counter()
    markers = {k: io.read_marker(sdir, k) for k in (t.key for t in tasks)}
    pairs = [(str(p), str(sdir / f"{p.stem}.parquet")) for p in shards]
    plan = select_plan(s, corpus_stats(s, pairs, models), models)
    t_stats = time.perf_counter() - t1
    report = merge_decontam_reports([m.get("decontam", {}) for m in markers.values()], models)
    if "perplexity" in models:  # documents scored by the reference LM and by the fallback, over all shards
        models["perplexity"]["docs"] = {k: sum(m.get("perplexity_docs", {}).get(k, 0) for m in markers.values())
                                        for k in ("reference", "fallback")}
    tasks2 = [runner.Task(key=p.stem, fn=select_shard,
                          kwargs=dict(path=str(p), scores_path=sp, out=str(out), key=p.stem, plan=plan, batch_size=cfg.run.docs_per_batch))
              for p, (_, sp) in zip(shards, pairs)]
    h2 = io.content_hash({"stage": cfg.stage_hash(STAGE), "scores": h1})
    fp2 = io.content_hash([fp, io.dataset_fingerprint(sdir)])

    def finalize(o: Path, _markers: dict) -> None:
        io.write_json({"models": models, "plan": plan_summary(plan), "decontamination": report,
                       "scores_dir": SCORES}, Path(o) / REPORT)

    r2 = phase(STAGE, out, tasks2, config_hash=h2, input_fingerprint=fp2, finalize=finalize)
    # The stage's time is all of its passes, not just the last one.
    total = time.perf_counter() - t0
    if (out / io.STATS).exists():
        st = io.read_json(out / io.STATS)
        st["timings"] = {**st.get("timings", {}), "wall_seconds": round(total, 3), "models_seconds": round(t_models, 3),
                         "scores_seconds": round(r1.seconds, 3), "stats_seconds": round(t_stats, 3), "select_seconds": round(r2.seconds, 3)}
        io.write_json(st, out / io.STATS)
    r2.seconds = total
    return r2


SPEC = Stage(STAGE, run=run, recompute_on_growth=True)
