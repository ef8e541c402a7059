"""The scoring pass of the score stage: the scorers' models (driver) and one task per shard writing the
attribute file `_scores/<shard>.parquet` (`id` + score columns + `score_error`), row-aligned with the
input shard; plus the per-shard decontamination hits and their merge into `_score.json`'s report.

A scorer that raises on a batch is retried document by document; the documents that still raise get
null scores and an error in `score_error` (quarantined later by the select pass), within the shard's
error budget (run.max_error_fraction).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import scorers
from pipeline.config import Config, ScoreConfig
from pipeline.errors import ErrorBudget, describe
from pipeline.taskio import TaskOutput

STAGE = "score"
MODELS = "_models"
ERROR = "score_error"
CODE_VERSION = 1  # bump when a scorer's numbers change


def prepare_models(cfg: Config, inp: Path, out: Path) -> dict:
    """Model entry (path, sha256 ...) of every scorer the config names, training/building what is missing."""
    mdir = Path(out) / MODELS
    mdir.mkdir(parents=True, exist_ok=True)
    ctx = scorers.Context(inp=inp, models_dir=mdir, seed=cfg.run.seed, version=CODE_VERSION)
    return {sp.key: sp.prepare(section, ctx) for sp in scorers.specs() if (section := getattr(cfg.score, sp.key, None))}


def build_scorers(s: ScoreConfig, models: dict) -> list:
    """The scorers of the config, in column order; each loads its model now (ModelError)."""
    return [sp.build(section, models[sp.key]) for sp in scorers.specs() if (section := getattr(s, sp.key, None))]


def _arrow_type(t: str) -> pa.DataType:
    return {"float32": pa.float32(), "int32": pa.int32(), "string": pa.string(), "list<string>": pa.list_(pa.string()),
            "list<int32>": pa.list_(pa.int32())}[t]


def run_scorer(scorer, texts: list[str], errors: dict[int, str], budget: ErrorBudget, rows: str = "",
                columns: dict[str, list] | None = None) -> dict[str, list]:
    """Columns of one scorer over a batch; a batch that raises is retried document by document and
    the documents that still raise get an error (and null scores), within the shard's error budget
    (which fails the task when they are every document of the batch, or too many for the shard).
    `columns`: the input columns the scorer asked for (`input_columns`, e.g. lang), as keywords."""
    names = list(scorer.output_columns)
    columns = columns or {}
    try:
        res = scorer(texts, **columns)
        return {c: list(res[c]) for c in names}
    except Exception:
        name = getattr(scorer, "name", type(scorer).__name__)
        cols: dict[str, list] = {c: [None] * len(texts) for c in names}
        failed, new = [], 0
        for i, t in enumerate(texts):
            try:
                r = scorer([t], **{c: v[i:i + 1] for c, v in columns.items()})
                for c in names:
                    cols[c][i] = r[c][0]
            except Exception as e:
                failed.append(e)
                new += i not in errors  # a document counts once, whatever number of scorers fail on it
                errors.setdefault(i, f"scorer '{name}' raised {describe(e)}")
        budget.add(name, len(texts), failed, rows, new=new)
        return cols


def score_shard(path: str, out: str, key: str, score: dict, models: dict, batch_size: int,
                max_error_fraction: float = 0.01) -> dict:
    """Phase 1: attribute file `<out>/<key>.parquet` (id + score columns + score_error)."""
    s = ScoreConfig.model_validate(score)
    scorers = build_scorers(s, models)  # models load here, before any document (ModelError)
    types = {c: t for sc in scorers for c, t in sc.output_columns.items()}
    res = TaskOutput(Path(out), key, STAGE, target_rows=1 << 62, target_bytes=1 << 62, single=True)
    pf = pq.ParquetFile(path)
    res.rows_in = pf.metadata.num_rows
    budget = ErrorBudget(path, res.rows_in, max_error_fraction, kind="scorer")
    report: dict[str, dict] = {}
    offset = 0
    extra = sorted({c for sc in scorers for c in getattr(sc, "input_columns", ()) if c in pf.schema_arrow.names})
    for rb in pf.iter_batches(batch_size=batch_size, columns=["id", "text", *extra]):
        texts = rb.column("text").to_pylist()
        given = {c: rb.column(c).to_pylist() for c in extra}
        errors: dict[int, str] = {}
        cols: dict[str, list] = {}
        for sc in scorers:
            cols.update(run_scorer(sc, texts, errors, budget, f" (rows {offset}-{offset + len(texts) - 1})",
                                    {c: given[c] for c in getattr(sc, "input_columns", ()) if c in given}))
        offset += len(texts)
        table = pa.table({"id": rb.column("id"),
                          **{c: pa.array(_nulls(v, errors), type=_arrow_type(types[c])) for c, v in cols.items()},
                          ERROR: pa.array([errors.get(i) for i in range(len(texts))], pa.string())})
        res.add_kept(table)
        if "contaminated" in cols:
            add_decontam_hits(report, cols, errors)
    lm_docs = {k: v for sc in scorers if getattr(sc, "name", "") == "perplexity" for k, v in sc.docs.items()}
    return res.finish(inputs=[path], decontam=report, **({"perplexity_docs": lm_docs} if lm_docs else {}))


def _nulls(values: list, errors: dict[int, str]) -> list:
    out = [None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v) for v in values]
    for i in errors:
        out[i] = None
    return out


def add_decontam_hits(report: dict, cols: dict, errors: dict) -> None:
    for i, (names, by, ex) in enumerate(zip(cols["contaminated"], cols["contam_ngrams_by"], cols["contam_examples"])):
        if not names or i in errors:
            continue
        for name, n in zip(names.split(","), by):  # matched windows of this benchmark only
            r = report.setdefault(name, {"docs": 0, "windows": 0, "examples": []})
            r["docs"] += 1
            r["windows"] += int(n)
            r["examples"] = sorted(set(r["examples"]) | {e.split("/", 1)[1] for e in ex if e.startswith(name + "/")})


def merge_decontam_reports(parts: list[dict], models: dict) -> dict:
    if "decontam" not in models:
        return {}
    info = models["decontam"]["index"]
    out = {name: {"docs_hit": 0, "ngram_windows_hit": 0, "examples_hit": 0, "examples": [],
                  "benchmark_examples": info[name]["examples"], "benchmark_ngrams": info[name]["ngrams"]}
           for name in models["decontam"]["names"]}
    ex: dict[str, set] = {n: set() for n in out}
    for part in parts:
        for name, r in part.items():
            out[name]["docs_hit"] += r["docs"]
            out[name]["ngram_windows_hit"] += r["windows"]
            ex[name] |= set(r["examples"])
    for name in out:
        out[name]["examples_hit"] = len(ex[name])
        out[name]["examples"] = sorted(ex[name])[:1000]
    return out
