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


LOG_FORMAT = typer.Option(None, "--log-format", help="text (progress bars, tables) or json (one event per line on stderr, for schedulers); default: CURATE_LOG_FORMAT or text")


def _fail(msg: str, code: int = 2) -> None:
    from pipeline import logs

    if logs.json_mode():
        logs.event("error", level="error", message=msg, exit_code=code)
    else:
        err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _log_format(value: str | None) -> None:
    from pipeline import logs

    if value is not None:
        try:
            logs.configure(value)
        except ValueError as e:
            _fail(str(e))


@app.callback()
def _main(log_format: Optional[str] = LOG_FORMAT):
    """curate: data curation for LLM pretraining corpora."""
    _log_format(log_format)


def _execute(cfg, plans, resume: bool, ray_address: str | None, no_ray: bool, quiet: bool, summary: Path | None = None) -> None:
    started = time.time()
    try:
        results = driver.run(cfg, plans, force=not resume, use_ray=not no_ray, ray_address=ray_address, show_progress=not quiet)
    except (ConfigError, runner.StageConflict, io.Locked) as e:
        _fail(str(e))
    except OSError as e:  # e.g. disk full outside a task (io.DiskFull is one line already)
        _fail(str(e).splitlines()[0] if str(e) else repr(e), code=1)
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
        _write_summary(summary, {
            "status": "ok" if code == 0 else "failed", "exit_code": code, "started": started, "finished": time.time(),
            "stages": [{"stage": r.stage, "out": str(r.out), "status": r.manifest.get("status"), "seconds": round(r.seconds, 3),
                        "totals": r.manifest.get("totals", {}), "failed": r.failed} for r in results],
            "not_run": [p.stage for p in plans[len(results):]],
        })
    logs.event("run_end", status="ok" if code == 0 else "failed", exit_code=code, stages=[r.stage for r in results],
               seconds=round(time.time() - started, 3))
    if code:
        if not logs.json_mode():
            err.print("some shards failed; re-run the same command to retry them (finished shards are kept)")
        raise typer.Exit(code)


def _write_summary(path: Path, data: dict) -> None:
    try:
        io.write_json(data, path)
    except OSError as e:
        err.print(f"[yellow]warning:[/yellow] could not write {path}: {str(e).splitlines()[0]}", highlight=False, soft_wrap=True)


def _yaml(config: Path | None) -> dict:
    """A --config file of a stage verb: safe_load, one-line errors (exit 2)."""
    import yaml

    if config is None:
        return {}
    if not config.exists():
        _fail(f"{config}: config file not found")
    try:
        data = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        _fail(f"{config}{f':{mark.line + 1}' if mark else ''}: invalid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]})")
    if not isinstance(data, dict):
        _fail(f"{config}: top level must be a mapping of sections (run, ingest, filter ...)")
    return data


def _load(config: Path, overrides: dict | None = None):
    try:
        return load(config, overrides)
    except ConfigError as e:
        _fail(str(e))


@app.command()
def run(config: Path = typer.Argument(..., help="YAML config (see configs/default.yaml)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="print the plan (stages, shards, docs, time and memory estimates) and exit"),
        resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET,
        only: Optional[list[str]] = typer.Option(None, "--stage", help="run only these stages (repeatable)"),
        log_format: Optional[str] = LOG_FORMAT):
    """Run every stage of CONFIG in order, each into <run.output>/<stage>."""
    _log_format(log_format)
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
    base = _yaml(config)
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


@app.command()
def cluster(input: Path = typer.Option(..., "--input", "-i", help="dataset dir"),
            output: Path = typer.Option(..., "--output", "-o"),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose cluster: section sets embed/kmeans/refine/describe"),
            k: Optional[int] = typer.Option(None, "--k", help="final number of clusters (refine.k)"),
            k_init: Optional[int] = typer.Option(None, "--k-init", help="k-means clusters before merging (kmeans.k_init)"),
            max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="tokens per document the embedder reads (embed.max_tokens)"),
            keep_embedding: bool = typer.Option(False, "--keep-embedding", help="also write the `embedding` column"),
            resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Embed, k-means and refine clusters: adds `cluster` to every document and writes clusters.json
    (documents of pruned clusters go to _rejected/). Re-clustering reuses the cached embeddings."""
    base = _yaml(config)
    section = dict(base.get("cluster") or {})
    for sub, key, value in (("refine", "k", k), ("kmeans", "k_init", k_init), ("embed", "max_tokens", max_tokens)):
        if value is not None:
            section[sub] = {**(section.get(sub) or {}), key: value}
    if keep_embedding:
        section["keep_embedding"] = True
    _single_stage("cluster", section, config, input, output, resume, ray_address, no_ray, quiet)


@app.command()
def score(input: Path = typer.Option(..., "--input", "-i", help="dataset dir"),
          output: Path = typer.Option(..., "--output", "-o"),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose score: section names the scorers, quality weights and select rules"),
          fasttext_model: Optional[Path] = typer.Option(None, "--fasttext-model", help="fastText .bin (from train-fasttext) -> fasttext_score"),
          lm: Optional[Path] = typer.Option(None, "--lm", help="n-gram LM (.npz/.arpa stem from train-lm) -> perplexity, ppl_bucket"),
          bench_sim: bool = typer.Option(False, "--bench-sim", help="embedding similarity to the bundled benchmarks -> bench_sim_<name>, bench_sim_max"),
          decontam: Optional[str] = typer.Option(None, "--decontam", help="reject|flag: 13-gram overlap with the bundled benchmarks -> contaminated"),
          resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Add quality score columns, then apply the score.select thresholds in a second pass (changing
    them never re-scores). Rejected docs go to _rejected/ (contaminated:<benchmark>, score:<column>_below_…)."""
    data: dict = {}
    if fasttext_model:
        data["fasttext"] = {"model": str(fasttext_model)}
    if lm:
        data["perplexity"] = {"model": str(lm)}
    if bench_sim:
        data["bench_sim"] = {}
    if decontam:
        if decontam not in ("reject", "flag"):
            _fail(f"--decontam: use reject or flag, not {decontam!r}")
        data["decontam"] = {"action": decontam}
    if config is None and not data:
        _fail("nothing to score: give --config with a score: section, or --fasttext-model / --lm / --bench-sim / --decontam")
    _single_stage("score", data, config, input, output, resume, ray_address, no_ray, quiet)


def _train_section(config: Optional[Path], key: str) -> dict:
    """score.<key>.train of a YAML config (defaults for the train-* commands; none without a config)."""
    base = _yaml(config)
    sec = ((base.get("score") or {}).get(key) or {}).get("train") or {}
    return dict(sec)


@app.command(name="train-fasttext")
def train_fasttext(output: Path = typer.Option(..., "--output", "-o", help="directory for model.bin + model.json"),
                   input: Optional[Path] = typer.Option(None, "--input", "-i", help="dataset dir (or JSONL/Parquet) the labels come from when no --positive/--negative path is given"),
                   positive: Optional[list[Path]] = typer.Option(None, "--positive", help="positive documents: dataset dir, JSONL or Parquet (repeatable)"),
                   negative: Optional[list[Path]] = typer.Option(None, "--negative", help="negative documents (repeatable)"),
                   positive_source: Optional[list[str]] = typer.Option(None, "--positive-source", help="only these sources count as positive (repeatable)"),
                   negative_source: Optional[list[str]] = typer.Option(None, "--negative-source", help="only these sources count as negative (repeatable)"),
                   source_field: str = typer.Option("source", help="field holding the source in raw JSONL (e.g. domain)"),
                   max_docs: Optional[int] = typer.Option(None, help="at most this many documents per --positive/--negative input (deterministic sample)"),
                   from_column: Optional[str] = typer.Option(None, "--from-column", help="labels from the top/bottom quantiles of this score column of --input"),
                   preselect: bool = typer.Option(False, "--preselect", help="PreSelect labels from --input: documents whose n-gram LM losses rank the LMs like the targets do"),
                   target: Optional[list[Path]] = typer.Option(None, "--target", help="PreSelect target set (JSONL/Parquet with a text field; repeatable; default: data/benchmarks)"),
                   top: Optional[float] = typer.Option(None, help="--from-column/--preselect: top fraction -> positive (default 0.2)"),
                   bottom: Optional[float] = typer.Option(None, help="--from-column/--preselect: bottom fraction -> negative (default 0.5)"),
                   max_per_class: Optional[int] = typer.Option(None, help="balanced classes of at most this many documents"),
                   dim: Optional[int] = typer.Option(None), epoch: Optional[int] = typer.Option(None), lr: Optional[float] = typer.Option(None),
                   word_ngrams: Optional[int] = typer.Option(None, "--word-ngrams"),
                   config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose score.fasttext.train gives the defaults"),
                   seed: int = typer.Option(0, help="seed of sampling, splitting and training")):
    """Train a fastText quality classifier (labels from datasets, a score column or PreSelect); writes model.bin + model.json (data, params, validation precision/recall)."""
    import json

    from pydantic import ValidationError

    from pipeline.models import train
    from pipeline.config import FastTextTrainConfig

    spec = _train_section(config, "fasttext")
    ab = lambda p: str(Path(p).resolve())  # noqa: E731
    if positive or negative or positive_source or negative_source:
        def srcs(paths, sources):
            return [{"path": ab(p), "sources": sources or None, "source_field": source_field, "max_docs": max_docs} for p in paths] \
                if paths else [{"path": None, "sources": sources or None, "source_field": source_field, "max_docs": max_docs}]
        spec.update(positive=srcs(positive, positive_source), negative=srcs(negative, negative_source), from_column=None, preselect=None)
    if from_column:
        spec.update(from_column={"column": from_column}, positive=[], negative=[], preselect=None)
    if preselect:
        ps = dict(spec.get("preselect") or {})
        if target:
            ps["targets"] = [{"name": Path(t).name.split(".")[0].lower().replace("-", "_"), "path": ab(t)} for t in target]
        spec.update(preselect=ps, positive=[], negative=[], from_column=None)
    for k, v in (("top", top), ("bottom", bottom), ("max_per_class", max_per_class)):
        if v is not None:
            spec[k] = v
    params = dict(spec.get("params") or {})
    for k, v in (("dim", dim), ("epoch", epoch), ("lr", lr), ("wordNgrams", word_ngrams)):
        if v is not None:
            params[k] = v
    spec["params"] = params
    try:
        tcfg = FastTextTrainConfig.model_validate(spec)
    except ValidationError as e:
        _fail(f"train-fasttext: {e.errors()[0]['msg']} (give --positive/--negative, --from-column or --preselect)")
    needs_input = (tcfg.preselect is not None or tcfg.from_column is not None
                   or any(s.path is None for s in tcfg.positive + tcfg.negative))
    if needs_input and input is None:
        _fail("train-fasttext: --input is required for --preselect, --from-column and --positive-source/--negative-source without a path")
    if input is not None and not input.exists():
        _fail(f"--input: {input} does not exist")
    try:
        meta = train.fasttext_from_config(tcfg, output, input, seed)
    except (ValueError, FileNotFoundError) as e:
        _fail(f"train-fasttext: {e}")
    out.print_json(json.dumps({"model": str(output / "model.bin"), "validation": meta.get("validation"),
                               "per_class": meta["data"]["per_class"], "positive_sources": meta["data"]["positive_sources"],
                               "negative_sources": meta["data"]["negative_sources"]}))


@app.command(name="train-lm")
def train_lm(input: Path = typer.Option(..., "--input", "-i", help="reference documents: dataset dir, JSONL or Parquet (file or dir)"),
             output: Path = typer.Option(..., "--output", "-o", help="model path stem: writes <stem>.npz, <stem>.arpa (KenLM), <stem>.json"),
             order: int = typer.Option(3, help="n-gram order (2..6)"),
             source: Optional[list[str]] = typer.Option(None, "--source", help="only these sources (repeatable)"),
             source_field: str = typer.Option("source", help="field holding the source in raw JSONL (e.g. domain)"),
             text_field: str = typer.Option("text", help="text field in raw JSONL/Parquet"),
             max_docs: Optional[int] = typer.Option(None, help="deterministic sample of at most this many documents"),
             min_count: int = typer.Option(1, help="rarer words become <unk> (KenLM's lmplz keeps all: 1)"),
             arpa: bool = typer.Option(True, "--arpa/--no-arpa", help="also write the ARPA file (for kenlm)"),
             seed: int = typer.Option(0)):
    """Train a modified Kneser-Ney n-gram LM (lmplz-equivalent) for the perplexity scorer."""
    import json

    from pipeline.models import train

    if not input.exists():
        _fail(f"--input: {input} does not exist")
    if not 2 <= order <= 6:
        _fail("--order: use 2..6 (KenLM loads order >= 2)")
    docs = train.sample_docs(train.iter_docs(input, text_field, source_field, sources=source), max_docs, seed)
    if not docs:
        _fail(f"--input: no documents in {input}" + (f" with sources {source}" if source else ""))
    meta = train.train_lm(docs, output, order=order, min_count=min_count, arpa=arpa,
                          data_info={"path": str(input.resolve()), "sources": source, "max_docs": max_docs, "seed": seed})
    out.print_json(json.dumps({k: meta[k] for k in ("order", "tokens", "vocab", "ngrams", "discounts", "files")}))


@app.command()
def mix(input: Path = typer.Option(..., "--input", "-i", help="dataset dir whose domain column the weights are over (e.g. the cluster stage's output)"),
        output: Path = typer.Option(..., "--output", "-o"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose mix: section sets proxy, search, constraints"),
        method: Optional[str] = typer.Option(None, "--method", "-m", help="climb|regmix|uniform|proportional|temperature|unimax (default: climb)"),
        target: Optional[list[Path]] = typer.Option(None, "--target", "-t", help="target set the mixture should be good at: JSONL/Parquet with a text field (repeatable; default: data/benchmarks)"),
        domain_column: Optional[str] = typer.Option(None, "--domain-column", help="column holding the domain (default: cluster)"),
        budget: Optional[int] = typer.Option(None, "--budget", help="training tokens the weights are for (epoch caps)"),
        max_epochs: Optional[float] = typer.Option(None, "--max-epochs", help="repeat a domain at most this often within the budget"),
        rounds: Optional[str] = typer.Option(None, "--rounds", help="CLIMB proxies per round, e.g. 16,8,4"),
        proxy_tokens: Optional[int] = typer.Option(None, "--proxy-tokens", help="training tokens per proxy run"),
        resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Choose mixture weights over domains for a target set: baselines, RegMix, or CLIMB's iterative
    search with proxy LMs. Writes weights.json (+ Megatron/HF/MosaicML forms) and search.parquet."""
    base = _yaml(config)
    section = dict(base.get("mix") or {})
    for key, value in (("method", method), ("domain_column", domain_column), ("budget_tokens", budget)):
        if value is not None:
            section[key] = value
    if target:
        section["targets"] = [{"name": "".join(ch if ch.isalnum() else "_" for ch in Path(t).name.split(".")[0].lower()), "path": str(Path(t).resolve())}
                              for t in target]
    if max_epochs is not None:
        section["constraints"] = {**(section.get("constraints") or {}), "max_epochs": max_epochs}
    if rounds:
        try:
            section["search"] = {**(section.get("search") or {}), "rounds": [int(x) for x in rounds.split(",") if x.strip()]}
        except ValueError:
            _fail(f"--rounds: use comma-separated integers like 16,8,4, not {rounds!r}")
    if proxy_tokens is not None:
        section["proxy"] = {**(section.get("proxy") or {}), "train_tokens": proxy_tokens}
    _single_stage("mix", section, config, input, output, resume, ray_address, no_ray, quiet)


@app.command()
def remix(input: Path = typer.Option(..., "--input", "-i", help="dataset dir the weights' domains come from"),
          output: Path = typer.Option(..., "--output", "-o"),
          weights: Path = typer.Option(..., "--weights", "-w", help="weights.json from `curate mix`"),
          tokens: Optional[int] = typer.Option(None, "--tokens", "-n", help="token budget of the training shards (default: the weights' budget)"),
          max_epochs: Optional[float] = typer.Option(None, "--max-epochs", help="repeat a domain at most this often (default: the weights')"),
          tokenized: bool = typer.Option(True, "--tokenized/--text-only", help="also write token-id shards (.npy + index)"),
          formats: Optional[str] = typer.Option(None, "--formats", help="comma-separated trainer outputs: parquet,megatron,mds,hf (default: parquet,megatron)"),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with run: settings (seed, shard size)"),
          resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Sample documents per domain by weight under a token budget (repeating up to the epoch cap),
    shuffle globally by seed and write training shards (Parquet: id, text, domain, n_tokens)."""
    if not weights.exists():
        _fail(f"--weights: {weights} does not exist; run `curate mix` first")
    data = {"weights": str(weights.resolve()), "budget_tokens": tokens, "max_epochs": max_epochs, "tokenized": tokenized}
    if formats is not None:
        data["formats"] = [f.strip() for f in formats.split(",") if f.strip()]
    _single_stage("remix", data, config, input, output, resume, ray_address, no_ray, quiet)


@app.command()
def evaluate(output: Path = typer.Option(..., "--output", "-o"),
             mix_dir: Path = typer.Option(..., "--mix", help="output dir of `curate mix` (weights, tokenizer, domain streams, target splits)"),
             raw: Optional[Path] = typer.Option(None, "--raw", help="dataset dir of the raw arm (e.g. the ingest output)"),
             remix_dir: Optional[Path] = typer.Option(None, "--remix", help="output dir of `curate remix`"),
             tokens: Optional[int] = typer.Option(None, "--tokens", "-n", help="training tokens of every arm"),
             arms: Optional[str] = typer.Option(None, "--arms", help="comma-separated: raw,uniform,proportional,temperature,unimax,mix,remix"),
             seeds: Optional[int] = typer.Option(None, "--seeds", help="proxy runs per arm"),
             config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML with run:/evaluate: settings"),
             resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Train the same proxy LM at equal tokens on the raw corpus, the baselines, the optimizer's mixture
    and the remix shards; print target-set loss per arm (the data-value table)."""
    chosen = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    if chosen is None:
        chosen = [a for a in ("raw", "proportional", "uniform", "temperature", "unimax", "mix", "remix")
                  if (a != "raw" or raw) and (a != "remix" or remix_dir)]
    data = {"mix": str(mix_dir.resolve()), "raw": str(raw.resolve()) if raw else None,
            "remix": str(remix_dir.resolve()) if remix_dir else None, "arms": chosen}
    for k, v in (("train_tokens", tokens), ("seeds", seeds)):
        if v is not None:
            data[k] = v
    _single_stage("evaluate", data, config, None, output, resume, ray_address, no_ray, quiet)


@app.command(name="train-tokenizer")
def train_tokenizer(input: Path = typer.Option(..., "--input", "-i", help="dataset dir (Parquet shards)"),
                    output: Path = typer.Option(..., "--output", "-o", help="tokenizers JSON to write"),
                    vocab_size: int = typer.Option(4096, "--vocab-size"),
                    docs: int = typer.Option(20_000, "--docs", help="documents sampled to train on"),
                    seed: int = typer.Option(0)):
    """Train a byte-level BPE on a dataset dir; set run.tokenizer.path to it to use it for the run (n_tokens, proxies, token shards)."""
    from pipeline.models import tokenstreams
    from pipeline.models import bpe

    shards = io.shard_files(input) if input.is_dir() else []
    if not shards:
        _fail(f"--input: {input} has no part-*.parquet shards")
    texts = tokenstreams.sample_texts(shards, docs, seed)
    bpe.train_bpe(texts, vocab_size, output)
    out.print(f"wrote {output} (vocab {bpe.load(str(output)).get_vocab_size()}, trained on {len(texts):,} documents)")


@app.command()
def report(run_dir: Path = typer.Argument(..., help="run dir (holds one dir per stage)"),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="HTML file (default: RUN_DIR/report.html)")):
    """Write one self-contained report.html: funnel, rejection reasons, score histograms, clusters,
    mixture weights and search trace, evaluation."""
    from pipeline import registry

    if not run_dir.is_dir():
        _fail(f"{run_dir}: no such run directory")
    path = registry.command("report")(run_dir, output)
    out.print(f"wrote {path}")


@app.command(name="stats")
def stats_(path: Path = typer.Argument(..., help="dataset dir or run dir"),
           sql: Optional[str] = typer.Option(None, "--sql", help="DuckDB SQL over views kept/rejected/quarantine (run dir: <stage>, <stage>_rejected, rejected …)"),
           allow_external: bool = typer.Option(False, "--allow-external", help="let --sql read and write other files (COPY TO, read_csv), the network and extensions")):
    """Funnel and rejection reasons of a dataset/run dir, or any SQL over it with DuckDB."""
    if not path.exists():
        _fail(f"{path}: no such directory")
    dirs = stats.dataset_dirs(path)
    if not dirs:
        _fail(f"{path}: not a dataset dir or run dir (no _manifest.json found)")
    if sql:
        try:
            out.print(stats.sql_table(stats.connect(path, allow_external=allow_external), sql))
        except Exception as e:  # duckdb errors are user errors here
            hint = "" if allow_external or not stats.refused(e) else \
                " (--sql reads only the views: no other files, network or extensions; --allow-external lifts that)"
            _fail(f"--sql: {str(e).splitlines()[0]}{hint}")
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
