"""The select pass of the score stage: thresholds resolved to numbers (the plan, also written to
`_score.json`), and one task per shard that joins the input rows with their attribute file, adds
`ppl_bucket` and `quality`, and writes kept rows, `_rejected/` (`contaminated:<benchmark>`, `toxicity`
(score.toxicity.threshold) or `score:<column>_below_…`/`_above_…`, in rule order) and `_quarantine/`
(rows a scorer raised on).
Changing a threshold re-runs only this pass, never the scoring.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.config import ScoreConfig
from pipeline.schema import REASON
from pipeline.taskio import TaskOutput
from stages.score.attributes import ERROR, STAGE
from stages.score.stats import percentile

BUCKETS = ("head", "middle", "tail")


def select_plan(s: ScoreConfig, dists: dict, models: dict) -> dict:
    """Everything the select tasks need, resolved to numbers (also written to _score.json)."""
    rules = []
    if s.toxicity and s.toxicity.threshold is not None:  # score.toxicity.threshold: a fixed rule, reason `toxicity`
        rules.append({"column": s.toxicity.column, "sources": None, "exclude": [], "by": None,
                      "checks": [{"op": "above", "value": s.toxicity.threshold, "reason": "toxicity"}]})
    for i, r in enumerate(s.select):
        rule = {"column": r.column, "sources": r.sources, "exclude": r.exclude_sources, "by": r.by, "checks": []}
        for bound, q, op in (("min", r.min_quantile, "below"), ("max", r.max_quantile, "above")):
            fixed = getattr(r, bound)
            if fixed is not None:
                rule["checks"].append({"op": op, "value": fixed, "reason": f"score:{r.column}_{op}_{fixed:g}"})
            if q is not None:
                d = dists[(r.column, r.by)]
                every = float(dists[(r.column, None)][""].quantile(q))
                per = {g: float(dist.quantile(q)) if (r.by is None or dist.n >= r.min_group_docs) else every for g, dist in d.items()}
                rule["checks"].append({"op": op, "per_group": per, "quantile": q,
                                       "reason": f"score:{r.column}_{op}_q{q:g}" + (f"_by_{r.by}" if r.by else "")})
        rules.append(rule)
    plan = {"rules": rules, "quality": None, "ppl": None,
            "decontam_reject": bool(s.decontam and s.decontam.action == "reject")}
    if s.quality:
        plan["quality"] = [{"column": q.column, "weight": q.weight, "lower_is_better": q.lower_is_better,
                            "table": dists[(q.column, None)][""].table()} for q in s.quality]
    if s.perplexity:
        pp = s.perplexity
        glob = dists[("perplexity", None)].get("")
        cut_all = glob.quantile(pp.buckets).tolist() if glob is not None else [np.nan, np.nan]
        per = {}
        if pp.group_by:
            for g, d in dists[("perplexity", pp.group_by)].items():
                per[g] = d.quantile(pp.buckets).tolist() if d.n >= pp.min_group_docs else cut_all
        plan["ppl"] = {"group_by": pp.group_by, "global": cut_all, "per_group": per, "quantiles": pp.buckets}
    return plan


def plan_summary(plan: dict) -> dict:
    """The plan without the percentile tables (they can be large)."""
    p = dict(plan)
    if p.get("quality"):
        p["quality"] = [{k: v for k, v in t.items() if k != "table"} | {"corpus_values": len(t["table"]["pts"])} for t in p["quality"]]
    return p


def _source_ok(rule: dict, src: str) -> bool:
    return (rule["sources"] is None or src in rule["sources"]) and src not in rule["exclude"]


def select_shard(path: str, scores_path: str, out: str, key: str, plan: dict, batch_size: int) -> dict:
    """Phase 2: input rows + scores -> kept / _rejected (reason) / _quarantine (scorer errors)."""
    res = TaskOutput(Path(out), key, STAGE, target_rows=1 << 62, target_bytes=1 << 62, single=True)
    pf, sf = pq.ParquetFile(path), pq.ParquetFile(scores_path)
    res.rows_in = pf.metadata.num_rows
    if sf.metadata.num_rows != res.rows_in:
        raise RuntimeError(f"{scores_path}: {sf.metadata.num_rows} score rows for {res.rows_in} input rows; re-run with --force")
    offset = 0
    for rb, sb in zip(pf.iter_batches(batch_size=batch_size), sf.iter_batches(batch_size=batch_size)):
        table, scores = pa.Table.from_batches([rb]), pa.Table.from_batches([sb])
        if table.column("id") != scores.column("id"):
            raise RuntimeError(f"{scores_path}: ids differ from {path} near row {offset}; re-run with --force")
        res.tokens_in += int(pc.sum(table.column("n_tokens")).as_py() or 0) if "n_tokens" in table.column_names else 0
        res.bytes_in += int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)
        for c in scores.column_names:
            if c in ("id", ERROR):
                continue
            if c in table.column_names:  # re-scoring a scored dataset: our columns are replaced
                table = table.drop_columns([c])
            table = table.append_column(c, scores.column(c))
        table = _derived(table, plan)
        n = table.num_rows
        reasons: list[str | None] = [None] * n
        if plan["decontam_reject"] and "contaminated" in table.column_names:
            for i, c in enumerate(table.column("contaminated").to_pylist()):
                if c:
                    reasons[i] = f"contaminated:{c.split(',')[0]}"
        srcs = table.column("source").to_pylist() if "source" in table.column_names else [""] * n
        for rule in plan["rules"]:
            vals = table.column(rule["column"]).to_pylist() if rule["column"] in table.column_names else [None] * n
            groups = table.column(rule["by"]).to_pylist() if rule["by"] and rule["by"] in table.column_names else [None] * n
            for chk in rule["checks"]:
                for i in range(n):
                    v = vals[i]
                    if reasons[i] is not None or v is None or (isinstance(v, float) and np.isnan(v)) or not _source_ok(rule, srcs[i]):
                        continue
                    t = chk["value"] if "value" in chk else chk["per_group"].get("" if groups[i] is None else str(groups[i]))
                    if t is None:
                        continue
                    if (chk["op"] == "below" and v < t) or (chk["op"] == "above" and v > t):
                        reasons[i] = chk["reason"]
        errors = scores.column(ERROR).to_pylist()
        bad = [i for i, e in enumerate(errors) if e]
        keep = np.array([i for i in range(n) if reasons[i] is None and not errors[i]], dtype=np.int64)
        drop = np.array([i for i in range(n) if reasons[i] is not None and not errors[i]], dtype=np.int64)
        res.add_kept(table.take(keep))
        res.add_rejected(table.take(drop).append_column(REASON, pa.array([reasons[i] for i in drop], pa.string())))
        ids = table.column("id").to_pylist()
        res.add_quarantined([{"file": path, "pos": offset + i, "id": ids[i],
                              "raw": json.dumps(table.slice(i, 1).drop_columns([c for c in table.column_names if c.startswith("contam_")]).to_pylist()[0], default=str).encode()[:65536],
                              "error": f"{path}: row {offset + i} (id {ids[i]!r}): {errors[i]}; remove the scorer for this data or report a bug"}
                             for i in bad])
        offset += rb.num_rows
    return res.finish(inputs=[path, scores_path])


def _derived(table: pa.Table, plan: dict) -> pa.Table:
    """ppl_bucket (CCNet head/middle/tail per group) and quality (weighted mean of percentiles)."""
    n = table.num_rows
    if plan["ppl"] and "perplexity" in table.column_names:
        pp = plan["ppl"]
        ppl = np.array([np.nan if x is None else x for x in table.column("perplexity").to_pylist()], dtype=np.float64)
        g = table.column(pp["group_by"]).to_pylist() if pp["group_by"] and pp["group_by"] in table.column_names else [None] * n
        out = []
        for v, key in zip(ppl, g):
            lo, hi = pp["per_group"].get("" if key is None else str(key), pp["global"])
            out.append(None if np.isnan(v) or lo is None or np.isnan(lo) else BUCKETS[0] if v <= lo else BUCKETS[1] if v <= hi else BUCKETS[2])
        table = _set(table, "ppl_bucket", pa.array(out, pa.string()))
    if plan["quality"]:
        num, den = np.zeros(n), np.zeros(n)
        for term in plan["quality"]:
            col = term["column"]
            x = np.array([np.nan if v is None else float(v) for v in table.column(col).to_pylist()], dtype=np.float64) if col in table.column_names else np.full(n, np.nan)
            p = percentile(term["table"], x)
            if term["lower_is_better"]:
                p = 1 - p
            ok = ~np.isnan(p)
            num[ok] += term["weight"] * p[ok]
            den[ok] += term["weight"]
        with np.errstate(invalid="ignore", divide="ignore"):
            q = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
        table = _set(table, "quality", pa.array([None if np.isnan(v) else float(v) for v in q], pa.float32()))
    return table


def _set(table: pa.Table, name: str, arr: pa.Array) -> pa.Table:
    if name in table.column_names:
        table = table.drop_columns([name])
    return table.append_column(name, arr)
