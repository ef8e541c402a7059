"""Summaries of dataset dirs: the per-stage funnel table, reasons by source, and DuckDB SQL."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline import intervals, io

VIEWS = {"kept": "", "rejected": io.REJECTED, "quarantine": io.QUARANTINE}


def dataset_dirs(path: Path) -> list[Path]:
    """`path` itself if it is a dataset dir, else its stage subdirs (a run dir), in pipeline order."""
    from pipeline.config import STAGES

    path = Path(path)
    if (path / io.MANIFEST).exists():
        return [path]
    subs = [p for p in path.iterdir() if (p / io.MANIFEST).exists()] if path.is_dir() else []
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(subs, key=lambda p: (order.get(p.name, 99), p.name))


def _fmt(n) -> str:
    return f"{n:,}" if isinstance(n, int) else str(n)


def funnel_table(dirs: list[Path]) -> Table:
    t = Table(title="curate: documents and tokens per stage")
    for col in ("stage", "status", "docs in", "kept", "rejected", "quarantined", "tokens in", "tokens kept", "kept %", "seconds"):
        t.add_column(col, justify="left" if col in ("stage", "status") else "right")
    for d in dirs:
        m = io.read_json(d / io.MANIFEST)
        s = io.read_json(d / io.STATS) if (d / io.STATS).exists() else {}
        tot = m.get("totals", {})
        rin = tot.get("rows_in", 0)
        pct = f"{100 * tot.get('kept', 0) / rin:.1f}" if rin else "-"
        t.add_row(m.get("stage", d.name), m.get("status", "?"), *(_fmt(tot.get(k, 0)) for k in ("rows_in", "kept", "rejected", "quarantined", "tokens_in", "tokens_kept")),
                  pct, f"{s.get('timings', {}).get('wall_seconds', 0):.1f}")
    return t


def reasons_table(dirs: list[Path], top: int = 25) -> Table:
    """Rejections by reason, with the drop rate per source (a web-text rule eating man pages shows up here)."""
    t = Table(title="rejected / quarantined by reason (drop rate per source)")
    for col in ("stage", "reason", "docs", "% of stage input", "worst sources (drop rate)"):
        t.add_column(col, justify="right" if col in ("docs", "% of stage input") else "left")
    for d in dirs:
        m = io.read_json(d / io.MANIFEST)
        s = io.read_json(d / io.STATS) if (d / io.STATS).exists() else {}
        rin = m.get("totals", {}).get("rows_in", 0) or 1
        by_src = s.get("by_source", {})
        for reason, n in sorted(s.get("reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
            rates = sorted(((v["reasons"].get(reason, 0) / v["rows_in"], src) for src, v in by_src.items() if v.get("rows_in")), reverse=True)
            worst = ", ".join(f"{src} {100 * r:.0f}%" for r, src in rates[:3] if r > 0)
            t.add_row(m.get("stage", d.name), reason, _fmt(n), f"{100 * n / rin:.2f}", worst)
    return t


def console() -> Console:
    """Wide enough for the tables when stdout is a pipe or a CI log (rich would assume 80)."""
    import shutil

    return Console(width=max(shutil.get_terminal_size((160, 40)).columns, 120))


def dedup_table(d: Path) -> Table | None:
    """Docs/tokens removed per dedup method, groups and their sizes (a dedup dir's `dedup` stats)."""
    s = (io.read_json(d / io.STATS) if (d / io.STATS).exists() else {}).get("dedup")
    if not s:
        return None
    t = Table(title=f"dedup ({', '.join(s['methods'])}): {_fmt(s['groups'])} groups, {s['cc_rounds']} component rounds")
    for col in ("reason", "docs removed", "% of docs", "tokens removed", "% of tokens"):
        t.add_column(col, justify="left" if col == "reason" else "right")
    docs_in, tok_in = s.get("docs_in") or 1, s.get("tokens_in") or 1
    for reason, n in s["docs_removed"].items():
        tok = s["tokens_removed"].get(reason, 0)
        t.add_row(reason, _fmt(n), f"{100 * n / docs_in:.2f}", _fmt(tok), f"{100 * tok / tok_in:.2f}")
    hist = s.get("group_size_histogram", {})
    t.caption = "group size: docs  " + "  ".join(f"{k}: {_fmt(v)}" for k, v in hist.items())
    f = s.get("fuzzy")
    if f:
        t.caption += (f"\nfuzzy: {_fmt(f['candidate_pairs'])} LSH candidate pairs, "
                      f"{_fmt(f['verified_pairs']) if f['verified_pairs'] is not None else 'unverified'} verified")
    return t


def print_summary(dirs: list[Path], out: Console | None = None) -> None:
    out = out or console()
    out.print(funnel_table(dirs))
    out.print(reasons_table(dirs))
    for d in dirs:
        t = dedup_table(d)
        if t is not None:
            out.print(t)
        for table in (decontam_table, clusters_table, mix_table, evaluate_table):
            t = table(d)
            if t is not None:
                out.print(t)


def decontam_table(d: Path) -> Table | None:
    """A score dir's decontamination report (_score.json): per benchmark, documents and n-gram
    windows hit; benchmarks nothing hit are summed up in the caption."""
    p = Path(d) / "_score.json"
    dec = (io.read_json(p) if p.exists() else {}).get("decontamination") or {}
    if not dec:
        return None
    hit = {k: v for k, v in dec.items() if v.get("docs_hit")}
    t = Table(title=f"decontamination: {len(hit)} of {len(dec)} benchmarks hit, {_fmt(sum(v['docs_hit'] for v in hit.values()))} document hits")
    for col in ("benchmark", "docs hit", "n-gram windows hit", "examples hit", "benchmark examples", "% examples hit"):
        t.add_column(col, justify="left" if col == "benchmark" else "right")
    for name, v in sorted(hit.items(), key=lambda kv: (-kv[1]["docs_hit"], kv[0])):
        n = v.get("benchmark_examples") or 0
        t.add_row(name, _fmt(v["docs_hit"]), _fmt(v.get("ngram_windows_hit", 0)), _fmt(v.get("examples_hit", 0)), _fmt(n),
                  f"{100 * v.get('examples_hit', 0) / n:.2f}" if n else "-")
    clean = sorted(set(dec) - set(hit))
    if clean:
        t.caption = f"no hits: {', '.join(clean)}"
    return t


def mix_table(d: Path) -> Table | None:
    """A mix dir's weights.json: weight, tokens, epochs per domain next to the baselines."""
    p = Path(d) / "weights.json"
    if not p.exists():
        return None
    w = io.read_json(p)
    trained = w.get("trained_loss") or {}
    extra = ", ".join(f"{k} {v:.4f}" for k, v in trained.items())
    t = Table(title=f"mixture ({w.get('method')}, budget {_fmt(w.get('budget_tokens'))} tokens, max {w.get('max_epochs')} epochs)"
                    + (f"; trained proxy loss: {extra}" if extra else ""))
    base = w.get("baselines") or {}
    for col in ("domain", "weight", "tokens", "docs", "epochs", *base):
        t.add_column(col, justify="left" if col == "domain" else "right")
    for dom in w.get("domains", []):
        t.add_row(str(dom["name"]), f"{dom['weight']:.4f}", _fmt(dom.get("tokens")), _fmt(dom.get("docs")), f"{dom.get('epochs', 0):.2f}",
                  *(f"{base[b].get(str(dom['name']), 0):.4f}" for b in base))
    return t


def evaluate_table(d: Path) -> Table | None:
    """An evaluate dir's evaluate.json: target-set loss per arm at equal training tokens."""
    p = Path(d) / "evaluate.json"
    if not p.exists():
        return None
    e = io.read_json(p)
    targets = e.get("targets", [])
    t = Table(title=f"evaluate: proxy LM target loss ({e.get('split')} split) at {_fmt(e.get('tokens'))} training tokens per arm")
    t.caption = (f"{e.get('seeds', 1)} seed(s) per arm; vs raw / vs best baseline: mean relative difference paired by seed "
                 "[95 % t interval]; n.s. = the interval crosses 0")
    for c in e.get("comparisons", []):  # evaluate.compare
        t.caption += f"\n{c['arm']} vs {c['reference']} (paired): {c['text']}"
    for col in ("arm", "loss", "seed std", "vs raw", "vs best baseline", *targets):
        t.add_column(col, justify="left" if col == "arm" else "right")
    for a in e.get("arms", []):
        vs = a.get("vs_raw_paired") or ({"mean": a["vs_raw"]} if a.get("vs_raw") is not None and a["arm"] != "raw" else None)
        best = a.get("vs_best_baseline")
        std = "-" if a.get("std") is None else f"{a['std']:.4f}"
        t.add_row(a["arm"], f"{a['loss']:.4f}", std, intervals.describe(vs) if vs and "n" in vs else ("-" if not vs else f"{100 * vs['mean']:+.2f} %"),
                  f"{intervals.describe(best)} ({best['baseline']})" if best else "-",
                  *(f"{a['losses'].get(x, float('nan')):.4f}" for x in targets))
    return t


def clusters_table(d: Path, terms: int = 8) -> Table | None:
    """A cluster dir's clusters.json: size, top distinctive terms, main sources, mean scores."""
    p = Path(d) / "clusters.json"
    if not p.exists():
        return None
    c = io.read_json(p)
    km, rf = c.get("kmeans", {}), c.get("refine", {})
    t = Table(title=f"clusters: {c.get('k')} (k-means {km.get('k_init_used')} on {_fmt(km.get('sample_rows'))} sampled docs, "
                    f"{rf.get('method')} merge), {_fmt(c.get('totals', {}).get('pruned_docs', 0))} docs pruned")
    for col in ("id", "docs", "% docs", "% tokens", "top terms", "main sources", "mean scores"):
        t.add_column(col, justify="right" if col in ("id", "docs", "% docs", "% tokens") else "left")
    for cl in c.get("clusters", []):
        src = sorted(cl.get("sources", {}).items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        n = cl["docs"] or 1
        t.add_row(str(cl["id"]), _fmt(cl["docs"]), f"{100 * cl['share_docs']:.1f}", f"{100 * cl['share_tokens']:.1f}",
                  ", ".join(cl.get("top_terms", [])[:terms]), ", ".join(f"{s} {100 * v / n:.0f}%" for s, v in src),
                  ", ".join(f"{k} {v:.3g}" for k, v in cl.get("scores", {}).items()))
    return t


# DuckDB without access outside the views: no file reads or writes (COPY TO, read_csv, ATTACH),
# no network, no extension installs or loads, and none of this can be SET back by the query.
SANDBOX = {"enable_external_access": False, "autoinstall_known_extensions": False, "autoload_known_extensions": False,
           "allow_community_extensions": False, "python_enable_replacements": False, "lock_configuration": True}


def connect(path: Path, allow_external: bool = False):
    """DuckDB connection with views over the dataset dir(s): kept/rejected/quarantine for one
    dataset dir; <stage>, <stage>_rejected, <stage>_quarantine plus union views rejected and
    quarantine for a run dir. Sandboxed (SANDBOX) unless `allow_external`: the views then read the
    Parquet files through pyarrow datasets (lazily, with column and filter pushdown), since DuckDB
    itself may touch no file (its `allowed_paths` would also let a COPY overwrite those shards)."""
    import duckdb

    con = duckdb.connect() if allow_external else duckdb.connect(config=SANDBOX)
    dirs = dataset_dirs(path)
    single = len(dirs) == 1 and Path(path) == dirs[0]
    unions: dict[str, list[str]] = {"rejected": [], "quarantine": []}
    for d in dirs:
        for view, sub in VIEWS.items():
            files = sorted((d / sub).glob("part-*.parquet"))
            if not files:
                continue
            name = view if single else (d.name if view == "kept" else f"{d.name}_{view}")
            if allow_external:
                lst = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
                con.execute(f'CREATE VIEW {_quote(name)} AS SELECT * FROM read_parquet([{lst}], union_by_name=true)')
            else:
                _arrow_view(con, name, files)
            if not single and view in unions:
                unions[view].append(f"SELECT * FROM {_quote(name)}")
    for view, parts in unions.items():
        if parts:
            con.execute(f"CREATE VIEW {view} AS " + " UNION ALL BY NAME ".join(parts))
    return con


def refused(e: BaseException) -> bool:
    """A DuckDB error raised by the sandbox (file, network or extension access, or a locked setting)."""
    import duckdb

    return isinstance(e, duckdb.PermissionException) or "configuration has been locked" in str(e)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _arrow_view(con, name: str, files: list[Path]) -> None:
    """View `name` over Parquet `files` read by pyarrow, columns united by name like DuckDB's
    union_by_name (missing ones null, types widened); files whose types cannot be united become one
    dataset each, joined by DuckDB's UNION ALL BY NAME."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    try:
        schema = pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="permissive")
        con.register(name, ds.dataset([str(f) for f in files], schema=schema, format="parquet"))
        return
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    parts = []
    for i, f in enumerate(files):
        con.register(f"{name}#{i}", ds.dataset(str(f), format="parquet"))
        parts.append(f"SELECT * FROM {_quote(f'{name}#{i}')}")
    con.execute(f"CREATE VIEW {_quote(name)} AS " + " UNION ALL BY NAME ".join(parts))


def sql_table(con, query: str, limit: int = 200) -> Table:
    cur = con.execute(query)
    t = Table()
    for c in cur.description:
        t.add_column(c[0])
    for row in cur.fetchmany(limit):
        t.add_row(*(_short(v) for v in row))
    return t


def _short(v) -> str:
    s = str(v)
    return s if len(s) <= 120 else s[:117] + "..."
