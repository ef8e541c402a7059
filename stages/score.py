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
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import scorers
from pipeline import io, runner
from pipeline.errors import ErrorBudget, describe
from pipeline.config import Config, ConfigError, ScoreConfig
from pipeline.registry import Stage
from pipeline.schema import REASON
from pipeline.taskio import TaskOutput

STAGE = "score"
SCORES, MODELS = "_scores", "_models"
REPORT = "_score.json"
SKETCH = 2049  # points per shard and group: exact below this many values, rank error < 1/2048 above
BUCKETS = ("head", "middle", "tail")
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


def _run_scorer(scorer, texts: list[str], errors: dict[int, str], budget: ErrorBudget, rows: str = "",
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
            cols.update(_run_scorer(sc, texts, errors, budget, f" (rows {offset}-{offset + len(texts) - 1})",
                                    {c: given[c] for c in getattr(sc, "input_columns", ()) if c in given}))
        offset += len(texts)
        table = pa.table({"id": rb.column("id"),
                          **{c: pa.array(_nulls(v, errors), type=_arrow_type(types[c])) for c, v in cols.items()},
                          ERROR: pa.array([errors.get(i) for i in range(len(texts))], pa.string())})
        res.add_kept(table)
        if "contaminated" in cols:
            _report_add(report, cols, errors)
    lm_docs = {k: v for sc in scorers if getattr(sc, "name", "") == "perplexity" for k, v in sc.docs.items()}
    return res.finish(inputs=[path], decontam=report, **({"perplexity_docs": lm_docs} if lm_docs else {}))


def _nulls(values: list, errors: dict[int, str]) -> list:
    out = [None if isinstance(v, float) and np.isnan(v) else (v.item() if hasattr(v, "item") else v) for v in values]
    for i in errors:
        out[i] = None
    return out


def _report_add(report: dict, cols: dict, errors: dict) -> None:
    for i, (names, by, ex) in enumerate(zip(cols["contaminated"], cols["contam_ngrams_by"], cols["contam_examples"])):
        if not names or i in errors:
            continue
        for name, n in zip(names.split(","), by):  # matched windows of this benchmark only
            r = report.setdefault(name, {"docs": 0, "windows": 0, "examples": []})
            r["docs"] += 1
            r["windows"] += int(n)
            r["examples"] = sorted(set(r["examples"]) | {e.split("/", 1)[1] for e in ex if e.startswith(name + "/")})


# ---------------------------------------------------------------- corpus statistics


def _sketch(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.sort(values[~np.isnan(values)])
    if len(v) <= SKETCH:
        return v, np.ones(len(v))
    idx = np.linspace(0, len(v) - 1, SKETCH).round().astype(np.int64)
    return v[idx], np.full(SKETCH, len(v) / SKETCH)


class Dist:
    """Merged sketches of one column (and group): quantiles and mid-rank percentiles."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]]):
        pts = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0)
        w = np.concatenate([w for _, w in parts]) if parts else np.zeros(0)
        o = np.argsort(pts, kind="stable")
        self.pts, self.w = pts[o], w[o]
        if len(self.pts) > 4 * SKETCH:  # compress: weighted quantiles at evenly spaced levels
            lv = np.linspace(0, 1, 4 * SKETCH)
            total = self.w.sum()
            self.pts, self.w = self.quantile(lv), np.full(len(lv), total / len(lv))
        self.cw = np.concatenate([[0.0], np.cumsum(self.w)])
        self.n = float(self.w.sum())

    def quantile(self, q) -> np.ndarray:
        if not len(self.pts):
            return np.full(np.shape(q), np.nan)
        W = self.w.sum()
        ranks = np.cumsum(self.w) - (self.w + 1) / 2  # 0..W-1 for unit weights (= numpy's linear rule)
        return np.interp(np.asarray(q) * (W - 1), ranks, self.pts)

    def table(self) -> dict:
        return {"pts": self.pts.tolist(), "cw": self.cw.tolist()}


def percentile(table: dict, x: np.ndarray) -> np.ndarray:
    """Mid-rank percentile in [0, 1] of each value among the corpus values (NaN stays NaN)."""
    pts, cw = np.asarray(table["pts"]), np.asarray(table["cw"])
    if not len(pts):
        return np.full(len(x), np.nan)
    left = cw[np.searchsorted(pts, x, side="left")]
    right = cw[np.searchsorted(pts, x, side="right")]
    return np.where(np.isnan(x), np.nan, (left + right) / (2 * cw[-1]))


def _column_values(inp_path: str, scores_path: str, column: str) -> np.ndarray | list | None:
    for p in (scores_path, inp_path):
        names = pq.ParquetFile(p).schema_arrow.names
        if column in names:
            return pq.read_table(p, columns=[column]).column(column).to_pylist()
    return None


def corpus_stats(s: ScoreConfig, pairs: list[tuple[str, str]], models: dict) -> dict:
    """Quantile thresholds, bucket cut-offs and percentile tables over all shards (driver side:
    reads only the columns it needs, one shard at a time, and keeps bounded sketches)."""
    needs: dict[tuple[str, str | None], list] = {}  # (column, group-by column) -> per-shard sketches by group
    for r in s.select:
        if r.min_quantile is not None or r.max_quantile is not None:
            needs[(r.column, r.by)] = []
            needs[(r.column, None)] = []
    for q in s.quality:
        needs[(q.column, None)] = []
    if s.perplexity:
        needs[("perplexity", None)] = []
        if s.perplexity.group_by:
            needs[("perplexity", s.perplexity.group_by)] = []
    groups: dict[tuple, dict[str, list]] = {k: ({} if k[1] else {"": []}) for k in needs}
    for inp_path, scores_path in pairs:
        cache: dict[str, list | None] = {}
        for (col, by) in needs:
            for c in (col, by):
                if c is not None and c not in cache:
                    cache[c] = _column_values(inp_path, scores_path, c)
            vals = cache[col]
            if vals is None:
                raise ConfigError(f"score: column {col!r} (used by score.select / score.quality) is neither a score column nor in the input {inp_path}")
            v = np.array([np.nan if x is None else float(x) for x in vals], dtype=np.float64)
            if by is None:
                groups[(col, by)].setdefault("", []).append(_sketch(v))
                continue
            g = cache[by]
            keys = ["" if x is None else str(x) for x in g] if g is not None else [""] * len(v)
            ka = np.array(keys, dtype=object)
            for key in sorted(set(keys)):
                groups[(col, by)].setdefault(key, []).append(_sketch(v[ka == key]))
    return {k: {g: Dist(parts) for g, parts in gs.items()} for k, gs in groups.items()}


def select_plan(s: ScoreConfig, dists: dict, models: dict) -> dict:
    """Everything the select tasks need, resolved to numbers (also written to _score.json)."""
    rules = []
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


# ---------------------------------------------------------------- select


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


# ---------------------------------------------------------------- stage


def _scoring_section(s: ScoreConfig) -> dict:
    """What the score columns depend on (not select/quality/buckets)."""
    d = s.model_dump(mode="json", exclude={"select", "quality"})
    if d.get("perplexity"):
        d["perplexity"] = {k: v for k, v in d["perplexity"].items() if k not in ("buckets", "group_by", "min_group_docs")}
    if d.get("decontam"):
        d["decontam"].pop("action", None)
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
    report = _merge_reports([m.get("decontam", {}) for m in markers.values()], models)
    if "perplexity" in models:  # documents scored by the reference LM and by the fallback, over all shards
        models["perplexity"]["docs"] = {k: sum(m.get("perplexity_docs", {}).get(k, 0) for m in markers.values())
                                        for k in ("reference", "fallback")}
    tasks2 = [runner.Task(key=p.stem, fn=select_shard,
                          kwargs=dict(path=str(p), scores_path=sp, out=str(out), key=p.stem, plan=plan, batch_size=cfg.run.docs_per_batch))
              for p, (_, sp) in zip(shards, pairs)]
    h2 = io.content_hash({"stage": cfg.stage_hash(STAGE), "scores": h1})
    fp2 = io.content_hash([fp, io.dataset_fingerprint(sdir)])

    def finalize(o: Path, _markers: dict) -> None:
        io.write_json({"models": models, "plan": _plan_summary(plan), "decontamination": report,
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


def _merge_reports(parts: list[dict], models: dict) -> dict:
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


def _plan_summary(plan: dict) -> dict:
    """The plan without the percentile tables (they can be large)."""
    p = dict(plan)
    if p.get("quality"):
        p["quality"] = [{k: v for k, v in t.items() if k != "table"} | {"corpus_values": len(t["table"]["pts"])} for t in p["quality"]]
    return p


SPEC = Stage(STAGE, run=run, recompute_on_growth=True)
