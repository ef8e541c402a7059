"""`curate` command line. Exit codes: 0 ok, 1 failed shards remain (re-run resumes), 2 bad usage/config."""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pipeline import driver, io, runner, stats
from pipeline.config import ConfigError, load, parse

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="curate: data curation for LLM pretraining corpora (ingest → filter → …).")
err = Console(stderr=True)
out = stats.console()

RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster address (auto, ray://host:10001); default: RAY_ADDRESS or an embedded local Ray")
RESUME = typer.Option(True, "--resume/--force", help="--resume (default) skips finished shards; --force recomputes and overwrites output of another config")
NO_RAY = typer.Option(False, "--no-ray", help="run tasks in this process, one after another (debugging)")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars or summary")


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _execute(cfg, plans, resume: bool, ray_address: str | None, no_ray: bool, quiet: bool, summary: Path | None = None) -> None:
    started = time.time()
    try:
        results = driver.run(cfg, plans, force=not resume, use_ray=not no_ray, ray_address=ray_address, show_progress=not quiet)
    except (ConfigError, runner.StageConflict, io.Locked) as e:
        _fail(str(e))
    if not quiet:
        stats.print_summary([r.out for r in results], out)
    failed = [f for r in results for f in r.failed]
    for f in failed:
        err.print(f"[red]failed shard[/red] {f['key']}: {f['error']}", highlight=False, soft_wrap=True)
    incomplete = [r for r in results if not r.ok] or len(results) < len(plans)
    code = 1 if (failed or incomplete) else 0
    if summary is not None:  # for schedulers: one JSON file that says how the run went
        io.write_json({
            "status": "ok" if code == 0 else "failed", "exit_code": code, "started": started, "finished": time.time(),
            "stages": [{"stage": r.stage, "out": str(r.out), "status": r.manifest.get("status"), "seconds": round(r.seconds, 3),
                        "totals": r.manifest.get("totals", {}), "failed": r.failed} for r in results],
            "not_run": [p.stage for p in plans[len(results):]],
        }, summary)
    if code:
        err.print("some shards failed; re-run the same command to retry them (finished shards are kept)")
        raise typer.Exit(code)


def _load(config: Path, overrides: dict | None = None):
    try:
        return load(config, overrides)
    except ConfigError as e:
        _fail(str(e))


@app.command()
def run(config: Path = typer.Argument(..., help="YAML config (see configs/default.yaml)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (stages, shards, docs, time and memory estimates) and exit"),
        resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET,
        only: Optional[list[str]] = typer.Option(None, "--stage", help="run only these stages (repeatable)")):
    """Run every stage of CONFIG in order, each into <run.output>/<stage>."""
    cfg = _load(config)
    plans = driver.plan(cfg, only)
    if not plans:
        _fail(f"{config}: no stages to run (add an ingest: or filter: section)")
    if dry_run:
        from pipeline.estimate import plan_table

        out.print(plan_table(cfg, plans))
        return
    _execute(cfg, plans, resume, ray_address, no_ray, quiet, summary=cfg.run.output / "_run_summary.json")


def _single_stage(stage: str, data: dict, config: Path | None, inp: Path | None, output: Path, resume, ray_address, no_ray, quiet):
    import yaml

    base = yaml.safe_load(config.read_text()) if config else {}
    if not isinstance(base, dict):
        _fail(f"{config}: top level must be a mapping")
    base.setdefault("run", {}).setdefault("output", str(output))
    base[stage] = {**(base.get(stage) or {}), **data}
    try:
        cfg = parse(base, str(config or f"curate {stage}"))
    except ConfigError as e:
        _fail(str(e))
    _execute(cfg, [driver.StagePlan(stage, inp, output)], resume, ray_address, no_ray, quiet)


@app.command()
def ingest(input: Path = typer.Option(..., "--input", "-i", help="file, directory or glob"),
           output: Path = typer.Option(..., "--output", "-o"),
           config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with run:/ingest: settings"),
           format: Optional[str] = typer.Option(None, help="jsonl|parquet|hf|warc|html (default: by extension)"),
           text_field: str = typer.Option("text"), id_field: Optional[str] = typer.Option("id"),
           source: Optional[str] = typer.Option(None), source_field: Optional[str] = typer.Option(None),
           pattern: Optional[str] = typer.Option(None, help="glob inside a directory"),
           resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Read raw files into a dataset dir (bad records go to _quarantine/)."""
    spec = {"path": str(input), "format": format, "text_field": text_field, "id_field": id_field,
            "source": source, "source_field": source_field, "pattern": pattern}
    _single_stage("ingest", {"inputs": [spec]}, config, None, output, resume, ray_address, no_ray, quiet)


@app.command(name="filter")
def filter_(input: Path = typer.Option(..., "--input", "-i", help="dataset dir"),
            output: Path = typer.Option(..., "--output", "-o"),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose filter: section lists the filters (default: the standard web chain)"),
            resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Apply document filters to a dataset dir (rejected docs go to _rejected/ with a reason)."""
    _single_stage("filter", {}, config, input, output, resume, ray_address, no_ray, quiet)


@app.command()
def dedup(input: Path = typer.Option(..., "--input", "-i", help="dataset dir"),
          output: Path = typer.Option(..., "--output", "-o"),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose dedup: section sets the method's parameters"),
          method: Optional[list[str]] = typer.Option(None, "--method", "-m", help="exact|fuzzy|semantic, repeatable or comma-separated (default: exact,fuzzy)"),
          against: Optional[list[Path]] = typer.Option(None, "--against", help="earlier dedup output dir: drop documents that duplicate its kept documents (repeatable)"),
          resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Remove duplicate documents (exact, MinHash-LSH fuzzy, semantic); duplicates go to _rejected/ with dup_of."""
    data: dict = {}
    if method:
        data["method"] = [m.strip() for x in method for m in x.split(",") if m.strip()]
    if against:
        data["against"] = [str(p) for p in against]
    _single_stage("dedup", data, config, input, output, resume, ray_address, no_ray, quiet)


@app.command(name="stats")
def stats_(path: Path = typer.Argument(..., help="dataset dir or run dir"),
           sql: Optional[str] = typer.Option(None, "--sql", help="DuckDB SQL over views kept/rejected/quarantine (run dir: <stage>, <stage>_rejected, rejected …)")):
    """Funnel and rejection reasons of a dataset/run dir, or any SQL over it with DuckDB."""
    if not path.exists():
        _fail(f"{path}: no such directory")
    dirs = stats.dataset_dirs(path)
    if not dirs:
        _fail(f"{path}: not a dataset dir or run dir (no _manifest.json found)")
    if sql:
        try:
            out.print(stats.sql_table(stats.connect(path), sql))
        except Exception as e:  # duckdb errors are user errors here
            _fail(f"--sql: {str(e).splitlines()[0]}")
        return
    stats.print_summary(dirs, out)


@app.command(name="config-ref")
def config_ref():
    """Print the config reference (every key, type, default, meaning) as Markdown."""
    from pipeline.config import reference

    print(reference())


def main() -> None:
    logging.basicConfig(level=os.environ.get("CURATE_LOG", "WARNING"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        app(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
