"""`curate ngram …`: build an ∞-gram index (suffix arrays) of a dataset dir and query it.

    curate ngram build DATASET_DIR -o INDEX [--tokenizer tok.json | --config cfg.yaml]
    curate ngram count INDEX "some text"          (or --ids "12 873 5")
    curate ngram contains INDEX "some text"
    curate ngram prob INDEX "context and next"    P(last token | longest occurring suffix before it)
    curate ngram contamination INDEX [-b bench.jsonl …] [-o report.json]

Exit codes as `curate`: 0 ok, 1 failed shards remain (re-run resumes), 2 bad usage.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="∞-gram index (Infini-gram): exact counts of n-grams of any length, ∞-gram probabilities, benchmark spans.")
err = Console(stderr=True)
out = Console(width=160)

INDEX = typer.Argument(..., help="index dir (from curate ngram build)")
QUERY = typer.Argument(None, help="query text (tokenized with the index's tokenizer)")
IDS = typer.Option(None, "--ids", help="token ids instead of text: '12 873 5' or '12,873,5'")
JSON = typer.Option(False, "--json", help="print one JSON object")


def _fail(msg: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _open(index: Path):
    from pipeline.models.infini_gram import InfiniGram, NgramError

    if not index.exists():
        _fail(f"ngram: index dir {index} does not exist; build it with curate ngram build DATASET_DIR -o {index}")
    try:
        return InfiniGram(index)
    except NgramError as e:
        _fail(str(e))


def _query(ix, text: str | None, ids: str | None) -> np.ndarray:
    from pipeline.models.infini_gram import NgramError

    if (text is None) == (ids is None):
        _fail("ngram: give a query: text as an argument, or --ids (not both)")
    try:
        if ids is not None:
            try:
                q = np.array([int(x) for x in ids.replace(",", " ").split()], np.int64)
            except ValueError:
                _fail(f"ngram: --ids {ids!r}: not a list of integers; write e.g. --ids '12 873 5'")
        else:
            q = ix.encode([text])[0]
        if len(q) == 0:
            _fail("ngram: empty query (no tokens); give some text or ids")
        return ix.check(q)
    except NgramError as e:
        _fail(str(e))


def _too_long(ix, q: np.ndarray) -> None:
    longest = ix.meta.get("max_doc_tokens")
    if longest is not None and len(q) > longest:
        err.print(f"note: the query has {len(q)} tokens, more than the longest document of the index ({longest}): it cannot occur",
                  highlight=False, soft_wrap=True)


def _resolve_tokenizer(src: Path, tokenizer: Path | None, config: Path | None) -> Path | None:
    """--tokenizer; else the config's (run.tokenizer.path, remix.tokenizer, <run.output>/mix/tokenizer.json);
    else for a remix dir the mix stage's tokenizer beside it whose sha256 _remix.json records."""
    if tokenizer is not None:
        return tokenizer
    if config is not None:
        from pipeline.config import ConfigError, load

        try:
            cfg = load(config)
        except ConfigError as e:
            _fail(str(e))
        remix = getattr(cfg, "remix", None)
        for p in (cfg.run.tokenizer.path, getattr(remix, "tokenizer", None), cfg.run.output / "mix" / "tokenizer.json"):
            if p is not None and Path(p).is_file():
                return Path(p)
        _fail(f"{config}: names no tokenizer that exists (run.tokenizer.path, remix.tokenizer, {cfg.run.output}/mix/tokenizer.json); give --tokenizer")
    meta = src / "_remix.json"
    if meta.exists():
        from pipeline import io

        m = io.read_json(meta)
        cand = src.parent / "mix" / str(m.get("tokenizer") or "tokenizer.json")
        if cand.is_file() and io.sha256_file(cand) == m.get("tokenizer_sha256"):
            return cand
    return None


@app.command()
def build(input: Path = typer.Argument(..., help="dataset dir: part-*.parquet (tokenized here) or remix token files part-*.tokens.npy"),
          output: Path = typer.Option(..., "--output", "-o", help="index dir"),
          tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", "-t", help="tokenizers JSON (default: from --config, or the remix's)"),
          config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config whose tokenizer to use"),
          resume: bool = typer.Option(True, "--resume/--force", help="--resume (default) keeps finished shards; --force rebuilds all"),
          no_ray: bool = typer.Option(False, "--no-ray", help="build shards in this process, one after another"),
          batch_size: int = typer.Option(2000, min=1, help="documents tokenized per batch"),
          quiet: bool = typer.Option(False, "--quiet", "-q")):
    """Index a dataset dir: one suffix array per shard, resumable after a crash."""
    from pipeline import io, runner
    from pipeline.lock import Locked
    from pipeline.models import infini_gram as ig

    if not input.exists():
        _fail(f"ngram build: input {input} does not exist; give a curate dataset dir (e.g. runs/default/dedup)")
    tok = _resolve_tokenizer(input, tokenizer, config)
    try:
        if not no_ray:
            runner.init_ray()
        res = ig.build(input, output, tok, force=not resume, use_ray=not no_ray, batch_size=batch_size, show_progress=not quiet)
    except (ig.NgramError, runner.StageConflict, Locked) as e:
        _fail(str(e))
    for f in res.failed:
        err.print(f"[red]failed shard[/red] {f['key']}: {f['error']}", highlight=False, soft_wrap=True)
    if not res.ok:
        err.print("some shards failed; re-run the same command to retry them (finished shards are kept)")
        raise typer.Exit(1)
    if not quiet:
        m = io.read_json(output / ig.INDEX_JSON)
        out.print(f"{output}: {len(m['shards'])} shards, {m['docs']:,} documents, {m['tokens']:,} tokens ({res.seconds:.1f} s)")


@app.command()
def count(index: Path = INDEX, query: Optional[str] = QUERY, ids: Optional[str] = IDS, as_json: bool = JSON):
    """Exact number of occurrences of the query's token sequence (any length), summed over shards."""
    ix = _open(index)
    q = _query(ix, query, ids)
    _too_long(ix, q)
    n = int(ix.count([q])[0])
    print(json.dumps({"count": n, "tokens": q.tolist()}) if as_json else n)


@app.command()
def contains(index: Path = INDEX, query: Optional[str] = QUERY, ids: Optional[str] = IDS, as_json: bool = JSON):
    """Whether the query's token sequence occurs in the corpus (true/false)."""
    ix = _open(index)
    q = _query(ix, query, ids)
    _too_long(ix, q)
    found = bool(ix.count([q])[0] > 0)
    print(json.dumps({"contains": found, "tokens": q.tolist()}) if as_json else str(found).lower())


@app.command()
def prob(index: Path = INDEX, query: Optional[str] = QUERY, ids: Optional[str] = IDS, as_json: bool = JSON,
         each: bool = typer.Option(False, "--each", help="every token of the query, not only the last"),
         top: int = typer.Option(0, min=0, help="also list the K most frequent next tokens after the whole query")):
    """∞-gram probability of the query's last token given the tokens before it: P = cnt(c w) / cnt(c)
    with c the longest suffix of the context that occurs (Infini-gram); `ctx` = its length."""
    ix = _open(index)
    q = _query(ix, query, ids)
    if each:
        r = ix.infgram([q])
        stats = [{k: r[k][i] for k in ("prob", "ctx", "ctx_count", "count")} for i in range(len(q))]
    else:
        stats = [ix.prob_next(q[:-1], int(q[-1]))]
    rows = [{"token": int(t), "text": ix.decode([t]), "prob": float(x["prob"]), "ctx": int(x["ctx"]), "ctx_count": int(x["ctx_count"]),
             "count": int(x["count"])} for t, x in zip(q[-len(stats):], stats)]
    nxt = None
    if top:
        used, pairs = ix.next_tokens(q, top)
        nxt = {"ctx": used, "next": [{"token": t, "text": ix.decode([t]), "count": c} for t, c in pairs]}
    if as_json:
        print(json.dumps({"tokens": rows, **({"next": nxt} if nxt else {})}))
        return
    t = Table(title=f"∞-gram P(token | longest occurring context) in {index}")
    for c in ("token", "text", "prob", "ctx", "cnt(ctx)", "cnt(ctx+token)"):
        t.add_column(c, justify="left" if c == "text" else "right")
    for x in rows:
        t.add_row(str(x["token"]), repr(x["text"]), f"{x['prob']:.4g}", str(x["ctx"]), str(x["ctx_count"]), str(x["count"]))
    out.print(t)
    if nxt:
        out.print(f"next tokens after the last {nxt['ctx']} tokens: " + ", ".join(f"{n['text']!r} x{n['count']}" for n in nxt["next"]))


@app.command()
def contamination(index: Path = INDEX,
                  benchmark: Optional[list[Path]] = typer.Option(None, "--benchmark", "-b", help="JSONL/Parquet of examples (id, text); repeatable; default: every bundled benchmark (data/benchmarks)"),
                  output: Optional[Path] = typer.Option(None, "--output", "-o", help="write the full report (every example) as JSON here"),
                  min_span: int = typer.Option(20, "--min-span", min=1, help="the table counts examples with a span of at least this many tokens"),
                  limit: Optional[int] = typer.Option(None, "--limit", min=1, help="only the first N examples of each benchmark")):
    """For each benchmark example: the longest token span that occurs in the corpus, and where."""
    from pipeline.config import TargetSpec, bundled_benchmarks
    from pipeline.models import infini_contam
    from pipeline.models.infini_gram import NgramError
    from pipeline.models.train import load_targets

    ix = _open(index)
    specs = bundled_benchmarks() if not benchmark else []
    for p in benchmark or []:
        if not p.exists():
            _fail(f"ngram contamination: benchmark file {p} does not exist; give a JSONL/Parquet file of examples with a text field")
        specs.append(TargetSpec(name="".join(c if c.isalnum() else "_" for c in p.name.split(".")[0].lower()), path=p))
    try:
        targets = load_targets(specs)
        if limit:
            targets = {k: v[:limit] for k, v in targets.items()}
        rep = infini_contam.report(ix, targets, min_span)
    except (NgramError, ValueError) as e:
        _fail(str(e).splitlines()[0])
    if output is not None:
        infini_contam.save(rep, output)
    out.print(infini_contam.table(rep))
