"""score: quality scores as columns, thresholds in a separate cheap pass (Dolma's "score, then mix").

    models ─ score (<out>/_scores) ─ stats ─ select (<out>)

- models (driver): load or train what the config names, each cached in `<out>/_models/` under a
  content hash: the fastText classifier (`pipeline.models.train`, PreSelect labels included), the n-gram LM,
  the embeddings of the benchmark targets, the decontamination n-gram index.
- score (one task per shard): attribute files `_scores/<shard>.parquet` = `id` + score columns,
  row-aligned with the input shard. Its config hash covers the scorers and the models' sha256 only,
  so changing a threshold, a bucket or the quality weights never re-scores (not even with --force).
- stats (driver): corpus-level quantiles from bounded per-shard sketches of the score columns (and
  per group, e.g. per language for CCNet's perplexity buckets).
- select (one task per shard): input columns + scores + `ppl_bucket` + `quality`; rejects with
  `contaminated:<benchmark>` or `score:<column>_below_…`/`_above_…` in rule order; writes
  `_score.json` (models, thresholds, bucket cut-offs, decontamination report per benchmark).

Scorers load their models when a task sets up (before any document): one that cannot load fails the
task, naming the scorer and the path. Rows a scorer raised on (after a per-document retry) are
quarantined by the select pass with the scorer's error, up to run.max_error_fraction of a shard;
above it, or when a scorer raises on every document of a batch, the task fails (exit 1).

Modules:

- `stage`       the driver: models, the two passes and the statistics between them, `_score.json`
- `attributes`  the scorers' models and the scoring task (attribute files), decontamination hits
- `stats`       bounded sketches -> corpus quantiles and percentile tables
- `select`      the plan (thresholds as numbers) and the select task (kept / rejected / quarantined)
"""
from stages.score.attributes import ERROR, add_decontam_hits, build_scorers, merge_decontam_reports, prepare_models, run_scorer, score_shard
from stages.score.select import select_plan, select_shard
from stages.score.stage import SPEC, STAGE, run

__all__ = ["SPEC", "STAGE", "run", "ERROR", "add_decontam_hits", "build_scorers", "merge_decontam_reports", "prepare_models", "run_scorer",
           "score_shard", "select_plan", "select_shard"]
