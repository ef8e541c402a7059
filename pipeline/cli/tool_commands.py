"""`curate train-fasttext|train-lm|train-tokenizer` (the models the score and mix stages can use) and the
readers of outputs: `report`, `stats`, `config-ref`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from pipeline import io, stats
from pipeline.cli import (app, fail, out, read_yaml)


def train_section(config: Optional[Path], key: str) -> dict:
    """score.<key>.train of a YAML config (defaults for the train-* commands; none without a config)."""
    base = read_yaml(config)
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
                   max_docs: int = typer.Option(100_000, min=1, help="at most this many documents per --positive/--negative input (deterministic sample; held in memory)"),
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

    from pydantic import ValidationError

    from pipeline.models import train
    from pipeline.config import FastTextTrainConfig

    spec = train_section(config, "fasttext")
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
        fail(f"train-fasttext: {e.errors()[0]['msg']} (give --positive/--negative, --from-column or --preselect)")
    needs_input = (tcfg.preselect is not None or tcfg.from_column is not None
                   or any(s.path is None for s in tcfg.positive + tcfg.negative))
    if needs_input and input is None:
        fail("train-fasttext: --input is required for --preselect, --from-column and --positive-source/--negative-source without a path")
    if input is not None and not input.exists():
        fail(f"--input: {input} does not exist")
    try:
        meta = train.fasttext_from_config(tcfg, output, input, seed)
    except (ValueError, FileNotFoundError) as e:
        fail(f"train-fasttext: {e}")
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
             max_docs: int = typer.Option(100_000, min=1, help="deterministic sample of at most this many documents (held in memory)"),
             min_count: int = typer.Option(1, help="rarer words become <unk> (KenLM's lmplz keeps all: 1)"),
             arpa: bool = typer.Option(True, "--arpa/--no-arpa", help="also write the ARPA file (for kenlm)"),
             seed: int = typer.Option(0)):
    """Train a modified Kneser-Ney n-gram LM (lmplz-equivalent) for the perplexity scorer."""

    from pipeline.models import train

    if not input.exists():
        fail(f"--input: {input} does not exist")
    if not 2 <= order <= 6:
        fail("--order: use 2..6 (KenLM loads order >= 2)")
    docs = train.sample_docs(train.iter_docs(input, text_field, source_field, sources=source), max_docs, seed)
    if not docs:
        fail(f"--input: no documents in {input}" + (f" with sources {source}" if source else ""))
    meta = train.train_lm(docs, output, order=order, min_count=min_count, arpa=arpa,
                          data_info={"path": str(input.resolve()), "sources": source, "max_docs": max_docs, "seed": seed})
    out.print_json(json.dumps({k: meta[k] for k in ("order", "tokens", "vocab", "ngrams", "discounts", "files")}))




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
        fail(f"--input: {input} has no part-*.parquet shards")
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
        fail(f"{run_dir}: no such run directory")
    path = registry.command("report")(run_dir, output)
    out.print(f"wrote {path}")


@app.command(name="stats")
def stats_(path: Path = typer.Argument(..., help="dataset dir or run dir"),
           sql: Optional[str] = typer.Option(None, "--sql", help="DuckDB SQL over views kept/rejected/quarantine (run dir: <stage>, <stage>_rejected, rejected …)"),
           allow_external: bool = typer.Option(False, "--allow-external", help="let --sql read and write other files (COPY TO, read_csv), the network and extensions")):
    """Funnel and rejection reasons of a dataset/run dir, or any SQL over it with DuckDB."""
    if not path.exists():
        fail(f"{path}: no such directory")
    dirs = stats.dataset_dirs(path)
    if not dirs:
        fail(f"{path}: not a dataset dir or run dir (no _manifest.json found)")
    if sql:
        try:
            out.print(stats.sql_table(stats.connect(path, allow_external=allow_external), sql))
        except Exception as e:  # duckdb errors are user errors here
            hint = "" if allow_external or not stats.refused(e) else \
                " (--sql reads only the views: no other files, network or extensions; --allow-external lifts that)"
            fail(f"--sql: {str(e).splitlines()[0]}{hint}")
        return
    stats.print_summary(dirs, out)


@app.command(name="config-ref")
def config_ref():
    """Print the config reference (every key, type, default, meaning) as Markdown."""
    from pipeline.config import reference

    print(reference())


