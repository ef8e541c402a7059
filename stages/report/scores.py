"""The report's score section: histograms of every score column (<= MAX_SCORE_ROWS sampled rows, kept
and rejected) with the select thresholds of _score.json, the scorers' models, and the
decontamination hits per benchmark.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from pipeline import io
from stages.report.charts import figure, hbar_chart, img, style
from stages.report.context import SEED, RunContext
from stages.report.markup import fmt, note, pct, problem, read_json, table

MAX_SCORE_ROWS = 50_000
NON_SCORE_FLOATS = {"seconds"}  # float columns that are not scores


def scores(ctx: RunContext) -> str:
    score_dir = ctx.stage_dir("score")
    out = []
    report = None
    if (score_dir / "_score.json").exists():
        try:
            report = read_json(score_dir / "_score.json")
        except Exception as e:  # noqa: BLE001
            out.append(note(problem("score/_score.json", e), "error"))
    else:
        out.append(note("score/_score.json is missing: no thresholds or decontamination report."))
    files = sorted(score_dir.glob("part-*.parquet")) + sorted((score_dir / io.REJECTED).glob("part-*.parquet"))
    if not files:
        out.append(note("score/ has no part-*.parquet shards: no score histograms."))
    else:
        out.append(score_histograms(files, report or {}))
    if report is not None:
        out.append(models(report))
        out.append(decontamination(report))
    return "\n".join(out)


def score_histograms(files: list[Path], report: dict) -> str:
    """Stacked kept/rejected histograms of the float columns of `files`, with the thresholds of
    `report` (_score.json), and the table of select thresholds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    metas = [(p, pq.ParquetFile(p)) for p in files]
    cols: list[str] = []
    for _, pf in metas:
        for f in pf.schema_arrow:
            if pa.types.is_floating(f.type) and f.name not in cols and f.name not in NON_SCORE_FLOATS:
                cols.append(f.name)
    if not cols:
        return note("The score shards have no float (score) columns.")
    total = sum(pf.metadata.num_rows for _, pf in metas)
    frac = min(1.0, MAX_SCORE_ROWS / total) if total else 1.0
    rng = np.random.default_rng(SEED)
    vals: dict[str, dict[str, list[np.ndarray]]] = {c: {"kept": [], "rejected": []} for c in cols}
    sampled = 0
    for p, pf in metas:
        n = pf.metadata.num_rows
        have = [c for c in cols if c in pf.schema_arrow.names]
        if not n or not have:
            continue
        t = pq.read_table(p, columns=have)  # column projection: no text is read
        take = np.sort(rng.choice(n, math.ceil(n * frac), replace=False)) if frac < 1 else None
        if take is not None:
            t = t.take(take)
        sampled += t.num_rows
        part = "rejected" if p.parent.name == io.REJECTED else "kept"
        for c in have:
            vals[c][part].append(t.column(c).cast(pa.float64()).to_numpy(zero_copy_only=False))
    rules = ((report.get("plan") or {}).get("rules")) or []
    ppl = (report.get("plan") or {}).get("ppl") or {}
    charts = []
    ncol = 2
    nrow = math.ceil(len(cols) / ncol)
    with style():
        fig, axs = figure(10, 2.6 * nrow, nrow, ncol)
        for i, c in enumerate(cols):
            ax = axs[i // ncol, i % ncol]
            kept = np.concatenate(vals[c]["kept"]) if vals[c]["kept"] else np.zeros(0)
            rej = np.concatenate(vals[c]["rejected"]) if vals[c]["rejected"] else np.zeros(0)
            kept, rej = kept[np.isfinite(kept)], rej[np.isfinite(rej)]
            both = np.concatenate([kept, rej])
            if not len(both):
                ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
                ax.set_title(c)
                continue
            logx = "perplexity" in c and both.min() > 0 and both.max() / both.min() > 50
            lo, hi = float(both.min()), float(both.max())
            if hi == lo:
                hi = lo + 1.0
            bins = np.geomspace(lo, hi, 41) if logx else np.linspace(lo, hi, 41)
            ax.hist([kept, rej], bins=bins, stacked=True, color=["#2e86c1", "#e67e22"], label=["kept", "rejected"])
            if logx:
                ax.set_xscale("log")
            lines = thresholds(c, rules, ppl)
            for j, (x, label, linestyle) in enumerate(lines[:24]):
                ax.axvline(x, color="#c0392b" if linestyle == "-" else "#7f8c8d", linestyle=linestyle, linewidth=1,
                           label=label if label not in [line[1] for line in lines[:j]] else None)
            ax.set_title(f"{c} ({fmt(len(both))} sampled docs)")
            ax.set_ylabel("docs")
            ax.legend(loc="best")
        for j in range(len(cols), nrow * ncol):
            axs[j // ncol, j % ncol].set_visible(False)
        charts.append(img(fig, "score histograms"))
    cap = (f"{fmt(sampled)} of {fmt(total)} rows sampled (seed {SEED})" if frac < 1 else f"all {fmt(total)} rows") + \
        " of score/ (kept) and score/_rejected/; solid red lines: select thresholds of _score.json; dashed grey: perplexity bucket cut-offs."
    rows = []
    for rule in rules:
        for check in rule.get("checks", []):
            thr = check.get("value")
            if thr is None:
                per = check.get("per_group") or {}
                thr = ", ".join(f"{g or 'all'}: {fmt(v)}" for g, v in sorted(per.items())[:12]) + (" …" if len(per) > 12 else "")
            rows.append([rule.get("column", "?"), check.get("op", "?"), fmt(check.get("quantile")) if check.get("quantile") is not None else "–",
                         str(rule.get("by") or "–"), thr if isinstance(thr, str) else fmt(thr), check.get("reason", "")])
    tbl = table(["column", "rejects", "quantile", "by", "threshold", "reason"], rows, numeric=set()) if rows else note("No select rules in _score.json.")
    return "\n".join(charts) + note(cap, "caption") + "<h3>select thresholds</h3>" + tbl


def thresholds(column: str, rules: list[dict], ppl: dict) -> list[tuple[float, str, str]]:
    """(x, legend label, line style) of _score.json's select thresholds (and perplexity bucket cut-offs) on a column."""
    out = []
    for rule in rules:
        if rule.get("column") != column:
            continue
        for check in rule.get("checks", []):
            op = "min" if check.get("op") == "below" else "max"
            if check.get("value") is not None:
                out.append((float(check["value"]), f"{op} {fmt(check['value'])}", "-"))
            for group, value in sorted((check.get("per_group") or {}).items()):
                if value is None or not math.isfinite(float(value)):
                    continue
                quantile = check.get("quantile")
                label = f"{op} q{fmt(quantile)}" + (f" by {rule['by']}" if rule.get("by") else "")
                out.append((float(value), label, "-"))
    if column == "perplexity" and ppl:
        for value in ppl.get("global") or []:
            if value is not None and math.isfinite(float(value)):
                out.append((float(value), "bucket cut-offs", "--"))
    return out


def models(report: dict) -> str:
    """The scorers' model files and their sha256, from _score.json."""
    entries = report.get("models") or {}
    if not entries:
        return ""
    rows = []
    for name, entry in sorted(entries.items()):
        entry = entry if isinstance(entry, dict) else {"path": entry}
        rows.append([name, Path(str(entry.get("path", ""))).name or "–", str(entry.get("sha256", ""))[:16] or "–"])
    return "<h3>models</h3>" + table(["scorer", "file", "sha256"], rows, numeric=set())


def decontamination(report: dict) -> str:
    """Documents, examples and n-gram windows hit per benchmark, from _score.json."""
    benchmarks = report.get("decontamination") or {}
    if not benchmarks:
        return "<h3>decontamination</h3>" + note("No decontamination report (decontam not configured).")
    rows, names, hits = [], [], []
    for name, hit in sorted(benchmarks.items()):
        rows.append([name, hit.get("docs_hit", 0), hit.get("examples_hit", 0), hit.get("benchmark_examples", 0),
                     pct(hit.get("examples_hit", 0), hit.get("benchmark_examples", 0)), hit.get("ngram_windows_hit", 0), hit.get("benchmark_ngrams", 0)])
        names.append(name)
        hits.append(hit.get("docs_hit", 0))
    out = ["<h3>decontamination</h3>",
           table(["benchmark", "docs hit", "examples hit", "benchmark examples", "% examples hit", "n-gram windows hit", "benchmark n-grams"],
                 rows, numeric={1, 2, 3, 4, 5, 6})]
    out.append(hbar_chart(names, hits, "documents containing benchmark n-grams", "docs", color="#8e44ad"))
    return "\n".join(out)
