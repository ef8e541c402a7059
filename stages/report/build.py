"""`curate report RUN_DIR`: one self-contained report.html with the run's plots and tables.

Sections (each only for the stages present in the run dir; a missing or unreadable file makes its
section say so, and the report is still written):

  1. summary     run dir, stages, documents/tokens in and out, when the report was made
  2. funnel      docs and tokens per stage, rejections per reason (top 20) per stage
  3. score       histograms of every score column (<= 50k sampled rows, kept and rejected) with the
                 select thresholds of _score.json; decontamination hits per benchmark
  4. clusters    sizes with top terms; a 2-D PCA map of <= 5k document embeddings from the cache,
                 coloured by cluster (centroids scaled by size when the cache is gone)
  5. mixture     final weights vs the uniform/proportional baselines; the search trace
  6. evaluate    target loss per arm; remix realised shares vs weights

Plots are PNGs from matplotlib's Agg canvas (no pyplot, so the host's backend is untouched),
embedded as base64 data URIs; CSS is inline; there is no JavaScript and no external URL. All text
from data goes through html.escape. Same run dir -> same bytes, except the timestamp line.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io as _bio
import json
import math
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pipeline import intervals, io

REPORT_NAME = "report.html"
MAX_SCORE_ROWS = 50_000
MAX_MAP_POINTS = 5_000
TOP_REASONS = 20
SEED = 0
NON_SCORE_FLOATS = {"seconds"}  # float columns that are not scores


# ---------------------------------------------------------------- small helpers


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(x: Any, digits: int = 4) -> str:
    """Numbers for tables: thousands separators for ints, a few significant digits for floats."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if not math.isfinite(x):
            return str(x)
        if abs(x) >= 10 ** digits:
            return f"{x:,.0f}"
        if x != 0 and abs(x) < 1e-4:
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def pct(a: float, b: float) -> str:
    return f"{100 * a / b:.1f}%" if b else "–"


def table(headers: list[str], rows: list[list[Any]], numeric: set[int] | None = None, cls: str = "") -> str:
    """An HTML table; cells are escaped (pass already formatted strings or numbers)."""
    if numeric is None:
        numeric = {i for i, _ in enumerate(headers) if rows and all(isinstance(r[i], (int, float, np.number)) or r[i] is None for r in rows)}

    def cell(tag: str, i: int, v: Any) -> str:
        attr = ' class="num"' if i in numeric else ""
        return f"<{tag}{attr}>{esc(v if isinstance(v, str) else fmt(v))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{esc(text)}</p>'


def read_json(path: Path) -> Any:
    """JSON of a file; raises BadFile naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadFile(f"{path.parent.name}/{path.name} could not be read: not valid JSON ({e})") from None


class BadFile(ValueError):
    """A run file that exists but cannot be used; the message names it."""


def problem(what: str, e: Exception) -> str:
    """The message of a section part that failed on file `what` (stage/name)."""
    return str(e) if isinstance(e, BadFile) else f"{what} could not be read: {type(e).__name__}: {e}"


def short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


# ---------------------------------------------------------------- figures


def _figure(w: float, h: float, nrows: int = 1, ncols: int = 1, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def _rc():
    import matplotlib

    return matplotlib.rc_context({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False, "axes.spines.right": False,
                                  "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 8, "legend.frameon": False,
                                  "svg.hashsalt": "curate", "path.simplify": True})


def img(fig, alt: str) -> str:
    """The figure as a base64 PNG <img class="chart">."""
    buf = _bio.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img class="chart" alt="{esc(alt)}" src="data:image/png;base64,{data}"></figure>'


def _colors(n: int) -> list:
    import matplotlib

    if n <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return [cmap(i) for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _truncate_label(s: str, n: int = 40) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def hbar_chart(labels: list[str], values: list[float], title: str, xlabel: str, color: str = "#c0392b") -> str:
    with _rc():
        fig, ax = _figure(8, 0.5 + 0.24 * max(len(labels), 1))
        ax = ax[0, 0]
        y = np.arange(len(labels))
        ax.barh(y, values, color=color)
        ax.set_yticks(y, [_truncate_label(str(lb), 50) for lb in labels])
        ax.invert_yaxis()
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        for yi, v in zip(y, values):
            ax.annotate(fmt(v), (v, yi), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        return img(fig, title)


def grouped_bars(categories: list[str], series: dict[str, list[float]], title: str, ylabel: str, ax=None, rotate: bool = False,
                 zoom: bool = False):
    """Grouped vertical bars on `ax`, or a new figure returned as an <img>. zoom: the y axis starts
    near the smallest value instead of 0 (losses differ in the second digit)."""
    own = ax is None
    ctx = _rc()
    ctx.__enter__()
    try:
        if own:
            fig, axs = _figure(max(6, min(14, 1.2 + 0.45 * len(categories) * max(len(series), 1))), 3.4)
            ax = axs[0, 0]
        x = np.arange(len(categories))
        width = 0.8 / max(len(series), 1)
        for i, (name, vals) in enumerate(series.items()):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, label=name, color=_colors(max(len(series), 1))[i])
        ax.set_xticks(x, [_truncate_label(c, 24) for c in categories], rotation=45 if rotate or len(categories) > 8 else 0,
                      ha="right" if rotate or len(categories) > 8 else "center")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(axis="x", visible=False)
        vals = np.array([v for vs in series.values() for v in vs], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if zoom and len(vals) and vals.min() > 0:
            lo, hi = float(vals.min()), float(vals.max())
            span = (hi - lo) or abs(hi) * 0.1 or 1.0
            ax.set_ylim(max(0.0, lo - 0.6 * span), hi + 0.15 * span)
        if len(series) > 1:
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0)) if own else ax.legend()
        return img(fig, title) if own else ""
    finally:
        ctx.__exit__(None, None, None)


# ---------------------------------------------------------------- sections


class Report:
    def __init__(self, run_dir: Path):
        from pipeline.config import STAGES

        self.run = Path(run_dir)
        self.stages = [s for s in STAGES if (self.run / s).is_dir()]
        self.dataset = [s for s in self.stages if (self.run / s / io.MANIFEST).exists()]
        self.sections: list[tuple[str, str, str]] = []  # (anchor, title, html)
        self._clusters_json: dict | None = None

    def d(self, stage: str) -> Path:
        return self.run / stage

    def add(self, anchor: str, title: str, fn: Callable[[], str]) -> None:
        """Run one section builder; an exception becomes a message in that section."""
        try:
            body = fn()
        except Exception as e:  # noqa: BLE001 - a broken file must not cost the whole report
            msg = str(e) if isinstance(e, BadFile) else traceback.format_exception_only(type(e), e)[-1].strip()
            body = note(f"This section could not be built: {msg}", "error")
        self.sections.append((anchor, title, body))

    # -- 1. summary

    def summary(self, generated: str) -> str:
        rows = []
        first = last = None
        for s in self.dataset:
            try:
                m = read_json(self.d(s) / io.MANIFEST)
            except Exception:  # noqa: BLE001 - reported in the funnel section
                continue
            tot = m.get("totals", {})
            if first is None and tot.get("rows_in"):
                first = (s, tot)
            if tot:
                last = (s, tot)
        if first:
            rows.append(["input", f"{fmt(first[1].get('rows_in', 0))} docs, {fmt(first[1].get('tokens_in', 0))} tokens (into {first[0]})"])
        if last:
            k, t = last[1].get("kept", 0), last[1].get("tokens_kept", 0)
            rows.append(["output", f"{fmt(k)} docs, {fmt(t)} tokens (kept by {last[0]}; "
                                   f"{pct(k, first[1].get('rows_in', 0))} of docs, {pct(t, first[1].get('tokens_in', 0))} of tokens)"])
        from pipeline.config import STAGES

        rows = [["run", self.run.name], ["directory", str(self.run.resolve())],
                ["stages", ", ".join(self.stages) or "none"],
                ["not run", ", ".join(s for s in STAGES if s not in self.stages) or "–"]] + rows + [["generated", generated]]
        return table(["", ""], rows, numeric=set(), cls="kv")

    # -- 2. funnel

    def funnel(self) -> str:
        if not self.dataset:
            return note("No stage dir with a _manifest.json: nothing to count.")
        rows, names, docs_in, docs_kept, tok_in, tok_kept, problems = [], [], [], [], [], [], []
        stats = {}
        for s in self.dataset:
            try:
                m = read_json(self.d(s) / io.MANIFEST)
            except Exception as e:  # noqa: BLE001
                problems.append(problem(f"{s}/{io.MANIFEST}", e))
                continue
            try:
                st = read_json(self.d(s) / io.STATS) if (self.d(s) / io.STATS).exists() else {}
            except Exception as e:  # noqa: BLE001
                problems.append(problem(f"{s}/{io.STATS}", e))
                st = {}
            stats[s] = (m, st)
            t = m.get("totals", {})
            rin = t.get("rows_in", 0)
            rows.append([s, str(m.get("status", "?")), rin, t.get("kept", 0), t.get("rejected", 0), t.get("quarantined", 0),
                         t.get("tokens_in", 0), t.get("tokens_kept", 0), pct(t.get("kept", 0), rin),
                         round(float(st.get("timings", {}).get("wall_seconds", 0.0)), 1)])
            names.append(s)
            docs_in.append(rin)
            docs_kept.append(t.get("kept", 0))
            tok_in.append(t.get("tokens_in", 0))
            tok_kept.append(t.get("tokens_kept", 0))
        out = [table(["stage", "status", "docs in", "kept", "rejected", "quarantined", "tokens in", "tokens kept", "kept %", "seconds"],
                     rows, numeric={2, 3, 4, 5, 6, 7, 8, 9})]
        out += [note(p, "error") for p in problems]
        if names:
            with _rc():
                fig, axs = _figure(10, 3.2, 1, 2)
                grouped_bars(names, {"in": docs_in, "kept": docs_kept}, "documents per stage", "docs", ax=axs[0, 0])
                grouped_bars(names, {"in": tok_in, "kept": tok_kept}, "tokens per stage", "tokens", ax=axs[0, 1])
                out.append(img(fig, "documents and tokens per stage"))
        for s, (m, st) in stats.items():
            reasons = st.get("reasons", {})
            if not reasons:
                continue
            top = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_REASONS]
            rin = m.get("totals", {}).get("rows_in", 0)
            out.append(f"<h3>{esc(s)}: rejections by reason</h3>")
            more = f" (top {TOP_REASONS} of {len(reasons)})" if len(reasons) > TOP_REASONS else ""
            out.append(hbar_chart([r for r, _ in top], [n for _, n in top], f"{s}: rejected docs per reason{more}", "docs"))
            by_src = st.get("by_source", {})
            trows = []
            for reason, n in top:
                rates = sorted(((v.get("reasons", {}).get(reason, 0) / v["rows_in"], src) for src, v in by_src.items() if v.get("rows_in")),
                               key=lambda t: (-t[0], t[1]))
                worst = ", ".join(f"{src} {100 * r:.0f}%" for r, src in rates[:3] if r > 0)
                trows.append([reason, n, pct(n, rin), worst])
            out.append(table(["reason", "docs", "% of stage input", "worst sources (drop rate)"], trows, numeric={1, 2}))
        return "\n".join(out)

    # -- 3. score

    def score(self) -> str:
        d = self.d("score")
        out = []
        report = None
        if (d / "_score.json").exists():
            try:
                report = read_json(d / "_score.json")
            except Exception as e:  # noqa: BLE001
                out.append(note(problem("score/_score.json", e), "error"))
        else:
            out.append(note("score/_score.json is missing: no thresholds or decontamination report."))
        files = sorted(d.glob("part-*.parquet")) + sorted((d / io.REJECTED).glob("part-*.parquet"))
        if not files:
            out.append(note("score/ has no part-*.parquet shards: no score histograms."))
        else:
            out.append(self._score_hists(files, report or {}))
        if report is not None:
            out.append(self._models(report))
            out.append(self._decontam(report))
        return "\n".join(out)

    def _score_hists(self, files: list[Path], report: dict) -> str:
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
        with _rc():
            fig, axs = _figure(10, 2.6 * nrow, nrow, ncol)
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
                lines = _thresholds(c, rules, ppl)
                for j, (x, label, style) in enumerate(lines[:24]):
                    ax.axvline(x, color="#c0392b" if style == "-" else "#7f8c8d", linestyle=style, linewidth=1,
                               label=label if label not in [ln[1] for ln in lines[:j]] else None)
                ax.set_title(f"{c} ({fmt(len(both))} sampled docs)")
                ax.set_ylabel("docs")
                ax.legend(loc="best")
            for j in range(len(cols), nrow * ncol):
                axs[j // ncol, j % ncol].set_visible(False)
            charts.append(img(fig, "score histograms"))
        cap = (f"{fmt(sampled)} of {fmt(total)} rows sampled (seed {SEED})" if frac < 1 else f"all {fmt(total)} rows") + \
            " of score/ (kept) and score/_rejected/; solid red lines: select thresholds of _score.json; dashed grey: perplexity bucket cut-offs."
        rows = []
        for r in rules:
            for chk in r.get("checks", []):
                thr = chk.get("value")
                if thr is None:
                    per = chk.get("per_group") or {}
                    thr = ", ".join(f"{g or 'all'}: {fmt(v)}" for g, v in sorted(per.items())[:12]) + (" …" if len(per) > 12 else "")
                rows.append([r.get("column", "?"), chk.get("op", "?"), fmt(chk.get("quantile")) if chk.get("quantile") is not None else "–",
                             str(r.get("by") or "–"), thr if isinstance(thr, str) else fmt(thr), chk.get("reason", "")])
        tbl = table(["column", "rejects", "quantile", "by", "threshold", "reason"], rows, numeric=set()) if rows else note("No select rules in _score.json.")
        return "\n".join(charts) + note(cap, "caption") + "<h3>select thresholds</h3>" + tbl

    def _models(self, report: dict) -> str:
        models = report.get("models") or {}
        if not models:
            return ""
        rows = []
        for name, m in sorted(models.items()):
            m = m if isinstance(m, dict) else {"path": m}
            rows.append([name, Path(str(m.get("path", ""))).name or "–", str(m.get("sha256", ""))[:16] or "–"])
        return "<h3>models</h3>" + table(["scorer", "file", "sha256"], rows, numeric=set())

    def _decontam(self, report: dict) -> str:
        dec = report.get("decontamination") or {}
        if not dec:
            return "<h3>decontamination</h3>" + note("No decontamination report (decontam not configured).")
        rows, names, hits = [], [], []
        for name, r in sorted(dec.items()):
            rows.append([name, r.get("docs_hit", 0), r.get("examples_hit", 0), r.get("benchmark_examples", 0),
                         pct(r.get("examples_hit", 0), r.get("benchmark_examples", 0)), r.get("ngram_windows_hit", 0), r.get("benchmark_ngrams", 0)])
            names.append(name)
            hits.append(r.get("docs_hit", 0))
        out = ["<h3>decontamination</h3>",
               table(["benchmark", "docs hit", "examples hit", "benchmark examples", "% examples hit", "n-gram windows hit", "benchmark n-grams"],
                     rows, numeric={1, 2, 3, 4, 5, 6})]
        out.append(hbar_chart(names, hits, "documents containing benchmark n-grams", "docs", color="#8e44ad"))
        return "\n".join(out)

    # -- 4. clusters

    def clusters_json(self) -> dict:
        if self._clusters_json is None:
            self._clusters_json = read_json(self.d("cluster") / "clusters.json")
        return self._clusters_json

    def cluster_label(self, cid: Any, n_terms: int = 3) -> str:
        try:
            cl = {str(c["id"]): c for c in self.clusters_json().get("clusters", [])}.get(str(cid))
        except Exception:  # noqa: BLE001
            cl = None
        terms = ", ".join((cl or {}).get("top_terms", [])[:n_terms])
        return f"{cid}: {terms}" if terms else str(cid)

    def clusters(self) -> str:
        d = self.d("cluster")
        if not (d / "clusters.json").exists():
            return note("cluster/clusters.json is missing: no cluster sizes or map.")
        cj = self.clusters_json()
        cls = cj.get("clusters", [])
        if not cls:
            return note("clusters.json lists no clusters.")
        out = []
        km, rf = cj.get("kmeans", {}), cj.get("refine", {})
        out.append(note(f"{cj.get('k', len(cls))} clusters: k-means with k={km.get('k_init_used', '?')} on {fmt(km.get('sample_rows'))} sampled "
                        f"docs, merged by {rf.get('method', '?')}; {fmt(cj.get('totals', {}).get('pruned_docs', 0))} docs pruned.", "caption"))
        labels = [_truncate_label(self.cluster_label(c["id"]), 45) for c in cls]
        with _rc():
            fig, axs = _figure(11, 0.8 + 0.26 * len(cls), 1, 2, sharey=True)
            y = np.arange(len(cls))
            colors = _colors(len(cls))
            for ax, key, title in ((axs[0, 0], "docs", "documents per cluster"), (axs[0, 1], "tokens", "tokens per cluster")):
                ax.barh(y, [c.get(key, 0) for c in cls], color=colors)
                ax.set_title(title)
                ax.grid(axis="y", visible=False)
            axs[0, 0].set_yticks(y, labels)
            axs[0, 0].invert_yaxis()
            out.append(img(fig, "cluster sizes"))
        rows = []
        for c in cls:
            n = c.get("docs", 0) or 1
            src = sorted(c.get("sources", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            ex = (c.get("examples") or [{}])[0]
            rows.append([str(c["id"]), c.get("docs", 0), f"{100 * c.get('share_docs', 0):.1f}", f"{100 * c.get('share_tokens', 0):.1f}",
                         ", ".join(c.get("top_terms", [])[:8]), ", ".join(f"{s} {100 * v / n:.0f}%" for s, v in src),
                         ", ".join(f"{k} {fmt(v, 3)}" for k, v in sorted(c.get("scores", {}).items())), short(ex.get("snippet", ""), 120)])
        out.append(table(["id", "docs", "% docs", "% tokens", "top terms", "main sources", "mean scores", "closest example"], rows,
                         numeric={0, 1, 2, 3}))
        out.append("<h3>2-D map (PCA)</h3>")
        try:
            out.append(self._cluster_map(cj))
        except Exception as e:  # noqa: BLE001
            out.append(note(f"The map could not be drawn: {type(e).__name__}: {e}", "error"))
        return "\n".join(out)

    def _embedding_sample(self, cj: dict) -> tuple[np.ndarray, np.ndarray, str] | None:
        """<= MAX_MAP_POINTS rows of the embedding cache with their final cluster (-1: pruned)."""
        import pyarrow.parquet as pq

        d = self.d("cluster")
        man = read_json(d / io.MANIFEST) if (d / io.MANIFEST).exists() else {}
        emb = man.get("embeddings") or cj.get("embedding") or {}
        files = emb.get("files") or {}
        caches = [Path(p) for p in (emb.get("cache_dir"),) if p] + [d / "_embeddings"]
        shards = man.get("shards", {})
        parts = []  # (key, npy path, rows)
        for key, name in sorted(files.items()):
            path = next((c / name for c in caches if (c / name).exists()), None)
            if path is None:
                continue
            parts.append((key, path, int(np.load(path, mmap_mode="r").shape[0])))
        if not parts:
            return None
        total = sum(n for *_, n in parts)
        rng = np.random.default_rng(SEED)
        take = np.sort(rng.choice(total, MAX_MAP_POINTS, replace=False)) if total > MAX_MAP_POINTS else np.arange(total)
        xs, ys, how, start = [], [], set(), 0
        for key, path, n in parts:
            local = take[(take >= start) & (take < start + n)] - start
            start += n
            if not len(local):
                continue
            lab = self._row_labels(key, n, shards.get(key, {}), pq)
            if lab is None:
                continue
            how.add("ids")
            xs.append(np.asarray(np.load(path, mmap_mode="r")[local], dtype=np.float32))
            ys.append(lab[local])
        if not xs:
            return None
        return np.concatenate(xs), np.concatenate(ys), f"{fmt(sum(len(x) for x in xs))} of {fmt(total)} documents (seed {SEED})"

    def _row_labels(self, key: str, n: int, shard: dict, pq) -> np.ndarray | None:
        """Cluster of each row of input shard `key` (the embedding file's row order); -1 = pruned.
        Rows are matched by id: the input shard's ids (manifest `inputs`) against the kept shards'
        `id, cluster`; when the input is gone and nothing was pruned, the kept rows are the rows."""
        d = self.d("cluster")
        kept = [d / f["name"] for f in shard.get("files", []) if f.get("dir") == "" and (d / f["name"]).exists()]
        if not kept and (d / f"{key}.parquet").exists():
            kept = [d / f"{key}.parquet"]
        if not kept:
            return None
        t = [pq.read_table(p, columns=["id", "cluster"]) for p in kept]
        ids = [i for x in t for i in x.column("id").to_pylist()]
        cl = np.concatenate([x.column("cluster").to_numpy(zero_copy_only=False) for x in t]).astype(np.int64)
        inputs = [Path(p) for p in shard.get("inputs", [])]
        if len(inputs) == 1 and not inputs[0].exists():  # the run dir was moved: the same stage dir here
            inputs = [self.run / inputs[0].parent.name / inputs[0].name]
        if len(inputs) == 1 and inputs[0].exists():
            in_ids = pq.read_table(inputs[0], columns=["id"]).column("id").to_pylist()
            if len(in_ids) == n:
                where = dict(zip(ids, cl.tolist()))
                return np.array([where.get(i, -1) for i in in_ids], dtype=np.int64)
        if len(ids) == n:
            return cl
        return None

    def _cluster_map(self, cj: dict) -> str:
        d = self.d("cluster")
        cls = cj.get("clusters", [])
        k = max([c["id"] for c in cls] + [cj.get("k", 0) - 1]) + 1
        colors = _colors(k)
        sample = self._embedding_sample(cj)
        cent = np.load(d / "centroids.npy").astype(np.float32) if (d / "centroids.npy").exists() else None
        with _rc():
            fig, axs = _figure(8, 6)
            ax = axs[0, 0]
            if sample is not None:
                x, lab, what = sample
                mean = x.mean(0)
                comps = _pca(x - mean)
                p = (x - mean) @ comps.T
                pruned = lab < 0
                if pruned.any():
                    ax.scatter(p[pruned, 0], p[pruned, 1], s=4, color="#bbbbbb", label="pruned", alpha=0.6, linewidths=0)
                for i in range(k):
                    m = lab == i
                    if m.any():
                        ax.scatter(p[m, 0], p[m, 1], s=5, color=colors[i], alpha=0.7, linewidths=0, label=_truncate_label(self.cluster_label(i, 2), 28))
                if cent is not None and cent.shape[1] == x.shape[1]:
                    pc_ = (cent - mean) @ comps.T
                    for i, (a, b) in enumerate(pc_[:, :2]):
                        ax.annotate(str(i), (a, b), ha="center", va="center", fontsize=8, fontweight="bold",
                                    bbox=dict(boxstyle="circle,pad=0.15", fc="white", ec=colors[i % len(colors)], alpha=0.85))
                caption = f"PCA of the embeddings of {what}, coloured by cluster; numbers mark the cluster centroids."
            elif cent is not None and len(cent) >= 2:
                mean = cent.mean(0)
                comps = _pca(cent - mean)
                p = (cent - mean) @ comps.T
                docs = np.array([next((c.get("docs", 0) for c in cls if c["id"] == i), 0) for i in range(len(cent))], dtype=np.float64)
                size = 30 + 1500 * docs / max(docs.max(), 1)
                for i in range(len(cent)):
                    ax.scatter(p[i, 0], p[i, 1], s=size[i], color=colors[i % len(colors)], alpha=0.6)
                    ax.annotate(_truncate_label(self.cluster_label(i, 2), 28), (p[i, 0], p[i, 1]), ha="center", va="center", fontsize=8)
                ax.margins(0.15)
                caption = "The embedding cache is absent: PCA of the cluster centroids, areas proportional to documents."
            else:
                return note("Neither the embedding cache nor centroids.npy is readable: no map.")
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
            ax.set_title("clusters in embedding space")
            if sample is not None and k <= 24:
                ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=2.5)
            return img(fig, "cluster map") + note(caption, "caption")

    # -- 5. mixture

    def mixture(self) -> str:
        d = self.d("mix")
        out = []
        if (d / "weights.json").exists():
            try:
                out.append(self._weights(read_json(d / "weights.json")))
            except Exception as e:  # noqa: BLE001
                out.append(note(problem("mix/weights.json", e), "error"))
        else:
            out.append(note("mix/weights.json is missing: no mixture weights."))
        if (d / "search.parquet").exists():
            try:
                out.append(self._search(d / "search.parquet"))
            except Exception as e:  # noqa: BLE001
                out.append(note(problem("mix/search.parquet", e), "error"))
        else:
            out.append(note("mix/search.parquet is missing: no search trace."))
        return "\n".join(out)

    def _domain_label(self, name: str, column: str | None) -> str:
        if column == "cluster" and (self.d("cluster") / "clusters.json").exists():
            return self.cluster_label(name, 2)
        return str(name)

    def _weights(self, w: dict) -> str:
        col = w.get("domain_column")
        doms = w.get("domains", [])
        out = [table(["method", "domain column", "budget tokens", "max epochs", "predicted loss"],
                     [[str(w.get("method", "?")), str(col or "?"), w.get("budget_tokens"), w.get("max_epochs"), w.get("predicted_loss")]],
                     numeric={2, 3, 4}, cls="kv")]
        if not doms:
            return "\n".join(out) + note("weights.json lists no domains.")
        names = [str(x.get("name")) for x in doms]
        base = w.get("baselines") or {}
        series = {"final": [float(x.get("weight", 0)) for x in doms]}
        for b, ws in sorted(base.items()):
            series[b] = [float((ws or {}).get(n, 0.0)) for n in names]
        out.append(grouped_bars([self._domain_label(n, col) for n in names], series, "mixture weights per domain vs baselines", "weight", rotate=True))
        rows = [[self._domain_label(n, col), x.get("weight"), x.get("tokens"), x.get("docs"), x.get("epochs")]
                + [(base.get(b) or {}).get(n) for b in sorted(base)] for n, x in zip(names, doms)]
        out.append(table(["domain", "weight", "tokens", "docs", "epochs"] + [f"{b} weight" for b in sorted(base)], rows,
                         numeric=set(range(1, 5 + len(base)))))
        return "\n".join(out)

    def _search(self, path: Path) -> str:
        import pyarrow.parquet as pq

        t = pq.read_table(path).to_pydict()
        n = len(t.get("loss", []))
        if not n:
            return note("mix/search.parquet has no rows.")
        rnd = np.array([int(r) if r is not None else 0 for r in t.get("round", [0] * n)])
        loss = np.array([np.nan if v is None else float(v) for v in t["loss"]])
        pred = np.array([np.nan if v is None else float(v) for v in t.get("predicted", [None] * n)])
        rounds = sorted(set(rnd.tolist()))
        colors = _colors(len(rounds))
        with _rc():
            fig, axs = _figure(10, 3.6, 1, 2)
            ax = axs[0, 0]
            for i, r in enumerate(rounds):
                m = rnd == r
                ax.scatter(np.flatnonzero(m), loss[m], s=16, color=colors[i], label=f"round {r}")
            best = np.fmin.accumulate(np.where(np.isfinite(loss), loss, np.inf))
            ax.step(np.arange(n), np.where(np.isfinite(best), best, np.nan), where="post", color="#555555", linewidth=1, label="best so far")
            ax.set_xlabel("proxy run (in order)")
            ax.set_ylabel("loss")
            ax.set_title("search trace: loss per proxy run")
            ax.legend()
            ax = axs[0, 1]
            ok = np.isfinite(pred) & np.isfinite(loss)
            if ok.any():
                for i, r in enumerate(rounds):
                    m = ok & (rnd == r)
                    if m.any():
                        ax.scatter(pred[m], loss[m], s=16, color=colors[i], label=f"round {r}")
                lo, hi = float(min(pred[ok].min(), loss[ok].min())), float(max(pred[ok].max(), loss[ok].max()))
                ax.plot([lo, hi], [lo, hi], color="#999999", linestyle="--", linewidth=1, label="predicted = actual")
                ax.legend()
            else:
                ax.text(0.5, 0.5, "no predictions (round 1 only)", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("predicted loss")
            ax.set_ylabel("actual loss")
            ax.set_title("predictor: predicted vs actual")
            out = [img(fig, "mixture search trace")]
        if ok.sum() >= 2:
            corr = float(np.corrcoef(pred[ok], loss[ok])[0, 1]) if np.std(pred[ok]) > 0 and np.std(loss[ok]) > 0 else float("nan")
            mae = float(np.mean(np.abs(pred[ok] - loss[ok])))
            out.append(note(f"{n} proxy runs in {len(rounds)} rounds; predictor on {int(ok.sum())} runs: mean |error| {fmt(mae)}, "
                            f"Pearson r {fmt(corr, 3)}.", "caption"))
        else:
            out.append(note(f"{n} proxy runs in {len(rounds)} rounds.", "caption"))
        targets = [c for c in t if c.startswith("loss_")]
        wcols = [c for c in t if c.startswith("w_")]
        order = sorted(range(n), key=lambda i: (np.inf if not np.isfinite(loss[i]) else loss[i], i))[:10]
        rows = [[str(t.get("run", [""] * n)[i]), int(rnd[i]), float(loss[i]), None if not np.isfinite(pred[i]) else float(pred[i])]
                + [t[c][i] for c in targets]
                + [", ".join(f"{c[2:]} {t[c][i]:.2f}" for c in sorted(wcols, key=lambda c: -(t[c][i] or 0))[:4] if t[c][i])]
                for i in order]
        out.append(f"<h3>best {len(order)} proxy runs</h3>")
        out.append(table(["run", "round", "loss", "predicted"] + [c[5:] for c in targets] + ["largest weights"], rows,
                         numeric=set(range(1, 4 + len(targets)))))
        return "\n".join(out)

    # -- 6. evaluate

    def evaluate(self) -> str:
        out = []
        if "evaluate" in self.stages:
            p = self.d("evaluate") / "evaluate.json"
            if p.exists():
                try:
                    out.append(self._arms(read_json(p)))
                except Exception as e:  # noqa: BLE001
                    out.append(note(problem("evaluate/evaluate.json", e), "error"))
            else:
                out.append(note("evaluate/evaluate.json is missing: no evaluation."))
        if "remix" in self.stages:
            out.append("<h3>remix: realised shares vs weights</h3>")
            p = self.d("remix") / "_remix.json"
            if p.exists():
                try:
                    out.append(self._remix(read_json(p)))
                except Exception as e:  # noqa: BLE001
                    out.append(note(problem("remix/_remix.json", e), "error"))
            else:
                out.append(note("remix/_remix.json is missing: no realised shares."))
        return "\n".join(out)

    def _arms(self, ev: dict) -> str:
        arms = ev.get("arms", [])
        if not arms:
            return note("evaluate.json lists no arms.")
        targets = list(ev.get("targets") or sorted({t for a in arms for t in (a.get("losses") or {})}))
        out = [note(f"Proxy models trained on {fmt(ev.get('tokens'))} tokens per arm; loss on each target set (lower is better).", "caption")]
        out.append(note(f"{ev.get('seeds', 1)} seed(s) per arm; differences are paired by seed with a 95 % t interval "
                        "(n.s. = the interval crosses 0: not significant).", "caption"))
        rows = [[str(a.get("arm", "?")), a.get("loss"), a.get("std")] + [(a.get("losses") or {}).get(t) for t in targets]
                + [intervals.describe(a.get("vs_raw_paired")) if a.get("vs_raw_paired") else a.get("vs_raw"),
                   (intervals.describe(a["vs_best_baseline"]) + f" ({a['vs_best_baseline']['baseline']})") if a.get("vs_best_baseline") else "-",
                   a.get("seconds")] for a in arms]
        out.append(table(["arm", "mean loss", "seed std"] + targets + ["vs raw", "vs best baseline", "seconds"], rows,
                         numeric=set(range(1, 3 + len(targets)))))
        cats = targets + ["mean"]
        series = {str(a.get("arm", "?")): [_num((a.get("losses") or {}).get(t)) for t in targets] + [_num(a.get("loss"))] for a in arms}
        out.append(grouped_bars(cats, series, "target loss per arm (y axis does not start at 0)", "loss", zoom=True))
        return "\n".join(out)

    def _remix(self, r: dict) -> str:
        doms = r.get("domains") or {}
        if isinstance(doms, list):  # the remix stage writes a list of {"name": ..., ...}
            doms = {str(d.get("name")): d for d in doms if isinstance(d, dict)}
        if not doms:
            return note("_remix.json lists no domains.")
        names = sorted(doms, key=lambda n: (-float(doms[n].get("weight", 0) or 0), str(n)))
        col = None
        if (self.d("mix") / "weights.json").exists():
            try:
                col = read_json(self.d("mix") / "weights.json").get("domain_column")
            except Exception:  # noqa: BLE001 - reported in the mixture section
                pass
        labels = [self._domain_label(n, col) for n in names]
        out = [grouped_bars(labels, {"weight": [float(doms[n].get("weight", 0) or 0) for n in names],
                                     "realised share": [float(doms[n].get("share", 0) or 0) for n in names]},
                            "remix: target weight vs realised token share", "share", rotate=True)]
        out.append(note(f"budget {fmt(r.get('budget_tokens'))} tokens; max |share - weight| = {fmt(r.get('max_share_error'))}", "caption"))
        rows = [[lb, doms[n].get("weight"), doms[n].get("share"), doms[n].get("tokens"), doms[n].get("epochs"), doms[n].get("samples")]
                for n, lb in zip(names, labels)]
        out.append(table(["domain", "weight", "realised share", "tokens", "epochs", "samples"], rows, numeric={1, 2, 3, 4, 5}))
        return "\n".join(out)

    # -- the page

    def build(self, generated: str) -> str:
        self.add("summary", "Summary", lambda: self.summary(generated))
        if self.dataset:
            self.add("funnel", "Funnel: documents, tokens and rejections per stage", self.funnel)
        if "score" in self.stages:
            self.add("score", "Scores", self.score)
        if "cluster" in self.stages:
            self.add("clusters", "Clusters", self.clusters)
        if "mix" in self.stages:
            self.add("mixture", "Mixture", self.mixture)
        if "evaluate" in self.stages or "remix" in self.stages:
            self.add("evaluate", "Evaluation and remix", self.evaluate)
        nav = " · ".join(f'<a href="#{a}">{esc(t.split(":")[0])}</a>' for a, t, _ in self.sections)
        body = "\n".join(f'<section id="{a}"><h2>{esc(t)}</h2>\n{b}\n</section>' for a, t, b in self.sections)
        title = f"curate report: {self.run.name}"
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{esc(title)}</title><style>{CSS}</style></head>\n"
                f'<body><header><h1>{esc(title)}</h1><nav>{nav}</nav></header>\n<main>\n{body}\n</main>'
                f'<footer>generated by curate</footer></body></html>\n')


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _thresholds(column: str, rules: list[dict], ppl: dict) -> list[tuple[float, str, str]]:
    """(x, legend label, line style) of _score.json's select thresholds (and perplexity bucket cut-offs) on a column."""
    out = []
    for r in rules:
        if r.get("column") != column:
            continue
        for chk in r.get("checks", []):
            op = "min" if chk.get("op") == "below" else "max"
            if chk.get("value") is not None:
                out.append((float(chk["value"]), f"{op} {fmt(chk['value'])}", "-"))
            for g, v in sorted((chk.get("per_group") or {}).items()):
                if v is None or not math.isfinite(float(v)):
                    continue
                q = chk.get("quantile")
                lab = f"{op} q{fmt(q)}" + (f" by {r['by']}" if r.get("by") else "")
                out.append((float(v), lab, "-"))
    if column == "perplexity" and ppl:
        for v in ppl.get("global") or []:
            if v is not None and math.isfinite(float(v)):
                out.append((float(v), "bucket cut-offs", "--"))
    return out


def _pca(x: np.ndarray, n: int = 2) -> np.ndarray:
    """Top-n principal directions of centred rows (numpy SVD), sign-fixed so the output is deterministic."""
    if len(x) < 2:
        return np.eye(n, x.shape[1], dtype=x.dtype)
    _, _, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    comps = vt[:n]
    if len(comps) < n:
        comps = np.vstack([comps, np.zeros((n - len(comps), x.shape[1]))])
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    return (comps * np.where(signs == 0, 1, signs)[:, None]).astype(np.float32)


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa;font-size:14px}
header{background:#1f3a56;color:#fff;padding:12px 24px}header h1{margin:0 0 4px;font-size:20px}
nav a{color:#cfe3f5;margin-right:4px;text-decoration:none}nav a:hover{text-decoration:underline}
main{padding:8px 24px;max-width:1200px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 16px 16px;margin:16px 0}
h2{font-size:17px;border-bottom:1px solid #eee;padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f0f3f6}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv td:first-child{font-weight:600;background:#f7f7f7}
figure{margin:8px 0}img.chart{max-width:100%;height:auto;display:block}
p.note{color:#555}p.caption{color:#666;font-size:12.5px;margin:2px 0 10px}
p.error{color:#a94442;background:#f9eaea;border:1px solid #ebcccc;padding:6px 10px;border-radius:4px}
footer{color:#888;font-size:12px;padding:8px 24px 24px}
"""


def build_report(run_dir: Path, generated: str | None = None) -> str:
    """The report's HTML for a run dir."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run dir")
    generated = generated or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    return Report(run_dir).build(generated)


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    """Write <run_dir>/report.html (or `output`) atomically; returns its path."""
    run_dir = Path(run_dir)
    text = build_report(run_dir)
    out = Path(output) if output is not None else run_dir / REPORT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
