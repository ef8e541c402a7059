"""Summaries of dataset dirs: the per-stage funnel table, reasons by source, and DuckDB SQL."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline import io

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


def print_summary(dirs: list[Path], out: Console | None = None) -> None:
    out = out or console()
    out.print(funnel_table(dirs))
    out.print(reasons_table(dirs))


def connect(path: Path):
    """DuckDB connection with views over the dataset dir(s): kept/rejected/quarantine for one
    dataset dir; <stage>, <stage>_rejected, <stage>_quarantine plus union views rejected and
    quarantine for a run dir."""
    import duckdb

    con = duckdb.connect()
    dirs = dataset_dirs(path)
    single = len(dirs) == 1 and Path(path) == dirs[0]
    unions: dict[str, list[str]] = {"rejected": [], "quarantine": []}
    for d in dirs:
        for view, sub in VIEWS.items():
            files = sorted((d / sub).glob("part-*.parquet"))
            if not files:
                continue
            name = view if single else (d.name if view == "kept" else f"{d.name}_{view}")
            lst = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
            con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM read_parquet([{lst}], union_by_name=true)')
            if not single and view in unions:
                unions[view].append(f'SELECT * FROM "{name}"')
    for view, parts in unions.items():
        if parts:
            con.execute(f"CREATE VIEW {view} AS " + " UNION ALL BY NAME ".join(parts))
    return con


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
