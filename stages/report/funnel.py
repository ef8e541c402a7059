"""The report's summary and funnel sections: documents and tokens into and out of the run, and per
stage (ingest, filter, dedup, ...) with the rejections per reason and the sources each reason hits
hardest, from every stage's _manifest.json and _stats.json.
"""
from __future__ import annotations

from pipeline import io
from stages.report.charts import figure, grouped_bars, hbar_chart, img, style
from stages.report.context import RunContext
from stages.report.markup import esc, fmt, note, pct, problem, read_json, table

TOP_REASONS = 20


def summary(ctx: RunContext, generated: str) -> str:
    rows = []
    first = last = None
    for stage in ctx.manifest_stages:
        try:
            manifest = read_json(ctx.stage_dir(stage) / io.MANIFEST)
        except Exception:  # noqa: BLE001 - reported in the funnel section
            continue
        totals = manifest.get("totals", {})
        if first is None and totals.get("rows_in"):
            first = (stage, totals)
        if totals:
            last = (stage, totals)
    if first:
        rows.append(["input", f"{fmt(first[1].get('rows_in', 0))} docs, {fmt(first[1].get('tokens_in', 0))} tokens (into {first[0]})"])
    if last:
        kept, tokens = last[1].get("kept", 0), last[1].get("tokens_kept", 0)
        rows.append(["output", f"{fmt(kept)} docs, {fmt(tokens)} tokens (kept by {last[0]}; "
                               f"{pct(kept, first[1].get('rows_in', 0))} of docs, {pct(tokens, first[1].get('tokens_in', 0))} of tokens)"])
    from pipeline.config import STAGES

    rows = [["run", ctx.run.name], ["directory", str(ctx.run.resolve())],
            ["stages", ", ".join(ctx.stages) or "none"],
            ["not run", ", ".join(s for s in STAGES if s not in ctx.stages) or "–"]] + rows + [["generated", generated]]
    return table(["", ""], rows, numeric=set(), cls="kv")


def funnel(ctx: RunContext) -> str:
    if not ctx.manifest_stages:
        return note("No stage dir with a _manifest.json: nothing to count.")
    rows, names, docs_in, docs_kept, tok_in, tok_kept, problems = [], [], [], [], [], [], []
    files = {}  # stage -> (manifest, stats)
    for stage in ctx.manifest_stages:
        stage_dir = ctx.stage_dir(stage)
        try:
            manifest = read_json(stage_dir / io.MANIFEST)
        except Exception as e:  # noqa: BLE001
            problems.append(problem(f"{stage}/{io.MANIFEST}", e))
            continue
        try:
            stats = read_json(stage_dir / io.STATS) if (stage_dir / io.STATS).exists() else {}
        except Exception as e:  # noqa: BLE001
            problems.append(problem(f"{stage}/{io.STATS}", e))
            stats = {}
        files[stage] = (manifest, stats)
        totals = manifest.get("totals", {})
        rows_in = totals.get("rows_in", 0)
        rows.append([stage, str(manifest.get("status", "?")), rows_in, totals.get("kept", 0), totals.get("rejected", 0),
                     totals.get("quarantined", 0), totals.get("tokens_in", 0), totals.get("tokens_kept", 0), pct(totals.get("kept", 0), rows_in),
                     round(float(stats.get("timings", {}).get("wall_seconds", 0.0)), 1)])
        names.append(stage)
        docs_in.append(rows_in)
        docs_kept.append(totals.get("kept", 0))
        tok_in.append(totals.get("tokens_in", 0))
        tok_kept.append(totals.get("tokens_kept", 0))
    out = [table(["stage", "status", "docs in", "kept", "rejected", "quarantined", "tokens in", "tokens kept", "kept %", "seconds"],
                 rows, numeric={2, 3, 4, 5, 6, 7, 8, 9})]
    out += [note(p, "error") for p in problems]
    if names:
        with style():
            fig, axs = figure(10, 3.2, 1, 2)
            grouped_bars(names, {"in": docs_in, "kept": docs_kept}, "documents per stage", "docs", ax=axs[0, 0])
            grouped_bars(names, {"in": tok_in, "kept": tok_kept}, "tokens per stage", "tokens", ax=axs[0, 1])
            out.append(img(fig, "documents and tokens per stage"))
    for stage, (manifest, stats) in files.items():
        reasons = stats.get("reasons", {})
        if not reasons:
            continue
        top = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
        rows_in = manifest.get("totals", {}).get("rows_in", 0)
        out.append(f"<h3>{esc(stage)}: rejections by reason</h3>")
        more = f" (top {TOP_REASONS} of {len(reasons)})" if len(reasons) > TOP_REASONS else ""
        out.append(hbar_chart([r for r, _ in top], [n for _, n in top], f"{stage}: rejected docs per reason{more}", "docs"))
        by_source = stats.get("by_source", {})
        reason_rows = []
        for reason, n in top:
            rates = sorted(((v.get("reasons", {}).get(reason, 0) / v["rows_in"], src) for src, v in by_source.items() if v.get("rows_in")),
                           key=lambda rate_src: (-rate_src[0], rate_src[1]))
            worst = ", ".join(f"{src} {100 * rate:.0f}%" for rate, src in rates[:3] if rate > 0)
            reason_rows.append([reason, n, pct(n, rows_in), worst])
        out.append(table(["reason", "docs", "% of stage input", "worst sources (drop rate)"], reason_rows, numeric={1, 2}))
    return "\n".join(out)
