"""One `curate` verb per stage: the stage alone on --input into --output (settings from --config and options)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pipeline.cli import (NO_RAY, QUIET, RAY_ADDRESS, RESUME, app, fail, read_yaml,
                          single_stage)


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
    single_stage("ingest", {"inputs": [spec]}, config, None, output, resume, ray_address, no_ray, quiet)


@app.command(name="filter")
def filter_(input: Path = typer.Option(..., "--input", "-i", help="dataset dir"),
            output: Path = typer.Option(..., "--output", "-o"),
            config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose filter: section lists the filters (default: the standard web chain)"),
            resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Apply document filters to a dataset dir (rejected docs go to _rejected/ with a reason)."""
    single_stage("filter", {}, config, input, output, resume, ray_address, no_ray, quiet)


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
    single_stage("dedup", data, config, input, output, resume, ray_address, no_ray, quiet)


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
    base = read_yaml(config)
    section = dict(base.get("cluster") or {})
    for sub, key, value in (("refine", "k", k), ("kmeans", "k_init", k_init), ("embed", "max_tokens", max_tokens)):
        if value is not None:
            section[sub] = {**(section.get(sub) or {}), key: value}
    if keep_embedding:
        section["keep_embedding"] = True
    single_stage("cluster", section, config, input, output, resume, ray_address, no_ray, quiet)


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
            fail(f"--decontam: use reject or flag, not {decontam!r}")
        data["decontam"] = {"action": decontam}
    if config is None and not data:
        fail("nothing to score: give --config with a score: section, or --fasttext-model / --lm / --bench-sim / --decontam")
    single_stage("score", data, config, input, output, resume, ray_address, no_ray, quiet)




@app.command()
def mix(input: Path = typer.Option(..., "--input", "-i", help="dataset dir whose domain column the weights are over (e.g. the cluster stage's output)"),
        output: Path = typer.Option(..., "--output", "-o"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML whose mix: section sets proxy, search, constraints"),
        method: Optional[str] = typer.Option(None, "--method", "-m", help="climb|regmix|uniform|proportional|temperature|unimax|cmr (default: climb; cmr: set mix.cmr.domain in --config)"),
        target: Optional[list[Path]] = typer.Option(None, "--target", "-t", help="target set the mixture should be good at: JSONL/Parquet with a text field (repeatable; default: data/benchmarks)"),
        domain_column: Optional[str] = typer.Option(None, "--domain-column", help="column holding the domain (default: cluster)"),
        budget: Optional[int] = typer.Option(None, "--budget", help="training tokens the weights are for (epoch caps)"),
        max_epochs: Optional[float] = typer.Option(None, "--max-epochs", help="repeat a domain at most this often within the budget"),
        rounds: Optional[str] = typer.Option(None, "--rounds", help="CLIMB proxies per round, e.g. 16,8,4"),
        proxy_tokens: Optional[int] = typer.Option(None, "--proxy-tokens", help="training tokens per proxy run"),
        resume: bool = RESUME, ray_address: Optional[str] = RAY_ADDRESS, no_ray: bool = NO_RAY, quiet: bool = QUIET):
    """Choose mixture weights over domains for a target set: baselines, RegMix, or CLIMB's iterative
    search with proxy LMs. Writes weights.json (+ Megatron/HF/MosaicML forms) and search.parquet."""
    base = read_yaml(config)
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
            fail(f"--rounds: use comma-separated integers like 16,8,4, not {rounds!r}")
    if proxy_tokens is not None:
        section["proxy"] = {**(section.get("proxy") or {}), "train_tokens": proxy_tokens}
    single_stage("mix", section, config, input, output, resume, ray_address, no_ray, quiet)


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
        fail(f"--weights: {weights} does not exist; run `curate mix` first")
    data = {"weights": str(weights.resolve()), "budget_tokens": tokens, "max_epochs": max_epochs, "tokenized": tokenized}
    if formats is not None:
        data["formats"] = [f.strip() for f in formats.split(",") if f.strip()]
    single_stage("remix", data, config, input, output, resume, ray_address, no_ray, quiet)


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
    single_stage("evaluate", data, config, None, output, resume, ray_address, no_ray, quiet)


