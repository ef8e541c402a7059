"""`curate` command line. Exit codes: 0 ok, 1 failed shards remain (re-run resumes), 2 bad usage/config.

This module holds the app, `curate run` and what every command shares; `stage_commands` has one
verb per stage (`curate ingest|filter|…`), `tool_commands` the model trainers and the readers of
outputs (`train-*`, `report`, `stats`, `config-ref`).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from pipeline import driver, io, lock, remote, runner, stats
from pipeline.config import ConfigError, load, parse

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="curate: data curation for LLM pretraining corpora (ingest → filter → …).")
err = Console(stderr=True)
out = stats.console()

RAY_ADDRESS = typer.Option(None, "--ray-address", help="Ray cluster address (auto, ray://host:10001); default: RAY_ADDRESS or an embedded local Ray")
RESUME = typer.Option(True, "--resume/--force", help="--resume (default) skips finished shards; --force recomputes and overwrites output of another config")
NO_RAY = typer.Option(False, "--no-ray", help="run tasks in this process, one after another (debugging)")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars or summary")


LOG_FORMAT = typer.Option(None, "--log-format", help="text (progress bars, tables) or json (one event per line on stderr, for schedulers); default: CURATE_LOG_FORMAT or text")


def fail(msg: str, code: int = 2) -> None:
    from pipeline import logs

    if logs.json_mode():
        logs.event("error", level="error", message=msg, exit_code=code)
    else:
        err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def set_log_format(value: str | None) -> None:
    from pipeline import logs

    if value is not None:
        try:
            logs.configure(value)
        except ValueError as e:
            fail(str(e))


@app.callback()
def _main(log_format: Optional[str] = LOG_FORMAT):
    """curate: data curation for LLM pretraining corpora."""
    set_log_format(log_format)


def execute(cfg, plans, resume: bool, ray_address: str | None, no_ray: bool, quiet: bool, summary: Path | None = None) -> None:
    started = time.time()
    try:
        results = driver.run(cfg, plans, force=not resume, use_ray=not no_ray, ray_address=ray_address, show_progress=not quiet)
    except (ConfigError, runner.StageConflict, lock.Locked) as e:
        fail(str(e))
    except OSError as e:  # e.g. disk full outside a task (io.DiskFull is one line already)
        fail(str(e).splitlines()[0] if str(e) else repr(e), code=1)
    from pipeline import logs

    if not quiet and not logs.json_mode():
        stats.print_summary([r.out for r in results], out)
    failed = [f for r in results for f in r.failed]
    for f in failed:
        if not logs.json_mode():
            err.print(f"[red]failed shard[/red] {f['key']}: {f['error']}", highlight=False, soft_wrap=True)
    incomplete = [r for r in results if not r.ok] or len(results) < len(plans)
    code = 1 if (failed or incomplete) else 0
    if summary is not None:  # for schedulers: one JSON file that says how the run went
        write_summary(summary, {
            "status": "ok" if code == 0 else "failed", "exit_code": code, "started": started, "finished": time.time(),
            "stages": [{"stage": r.stage, "out": str(r.out), "status": r.manifest.get("status"), "seconds": round(r.seconds, 3),
                        "totals": r.manifest.get("totals", {}), "failed": r.failed} for r in results],
            "not_run": [p.stage for p in plans[len(results):]],
        })
        mirror = remote.mirror_for(summary)
        if mirror is not None and summary.exists():  # run.output is a URL: the summary goes to the bucket too
            try:
                mirror.put(summary)
            except OSError as e:
                err.print(f"[yellow]warning:[/yellow] could not put {summary.name} to {mirror.url}: {str(e).splitlines()[0]}",
                          highlight=False, soft_wrap=True)
    logs.event("run_end", status="ok" if code == 0 else "failed", exit_code=code, stages=[r.stage for r in results],
               seconds=round(time.time() - started, 3))
    if code:
        if not logs.json_mode():
            err.print("some shards failed; re-run the same command to retry them (finished shards are kept)")
        raise typer.Exit(code)


def write_summary(path: Path, data: dict) -> None:
    try:
        io.write_json(data, path)
    except OSError as e:
        err.print(f"[yellow]warning:[/yellow] could not write {path}: {str(e).splitlines()[0]}", highlight=False, soft_wrap=True)


def read_yaml(config: Path | None) -> dict:
    """A --config file of a stage verb: safe_load, one-line errors (exit 2)."""
    import yaml

    if config is None:
        return {}
    if not config.exists():
        fail(f"{config}: config file not found")
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        fail(f"{config}{f':{mark.line + 1}' if mark else ''}: invalid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]})")
    if not isinstance(data, dict):
        fail(f"{config}: top level must be a mapping of sections (run, ingest, filter ...)")
    return data


def load_config(config: Path, overrides: dict | None = None):
    try:
        return load(config, overrides)
    except ConfigError as e:
        fail(str(e))


@app.command()
def run(config: Path = typer.Argument(..., help="YAML config (see configs/default.yaml)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (stages, shards, docs, time and memory estimates) and exit"),
        resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET,
        only: Optional[list[str]] = typer.Option(None, "--stage", help="run only these stages (repeatable)"),
        log_format: Optional[str] = LOG_FORMAT):
    """Run every stage of CONFIG in order, each into <run.output>/<stage>."""
    set_log_format(log_format)
    cfg = load_config(config)
    plans = driver.plan(cfg, only)
    if not plans:
        fail(f"{config}: no stages to run (add an ingest: or filter: section)")
    if dry_run:
        from pipeline.estimate import plan_table

        out.print(plan_table(cfg, plans))
        return
    execute(cfg, plans, resume, ray_address, no_ray, quiet, summary=cfg.run.output / "_run_summary.json")


def single_stage(stage: str, data: dict, config: Path | None, inp: Path | None, output: Path, resume, ray_address, no_ray, quiet):
    base = read_yaml(config)
    base.setdefault("run", {}).setdefault("output", str(output))
    base[stage] = {**(base.get(stage) or {}), **data}
    try:
        cfg = parse(base, str(config or f"curate {stage}"))
    except ConfigError as e:
        fail(str(e))
    execute(cfg, [driver.StagePlan(stage, inp, output)], resume, ray_address, no_ray, quiet)




# The commands of the other modules register on `app` when imported.
from pipeline.cli import ngram_commands, stage_commands, tool_commands  # noqa: E402,F401

app.add_typer(ngram_commands.app, name="ngram")  # curate ngram: the ∞-gram index


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
