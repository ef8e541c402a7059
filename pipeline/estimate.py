"""`curate run --dry-run`: what would run, on how much data, and roughly how long and how much memory.

Docs are counted by reading the first input file (bounded), then scaled by bytes. Time uses
per-core throughputs measured on the bundled corpus (2-core x86 VM, see README "Benchmarks"), or,
where bench/scale.py wrote them (`--write-rates bench/scale_rates.json`), its measured per-core text
bytes/s of the stages whose cost is bytes (ingest, filter, dedup, score, remix); memory is per task
(one shard in memory, ~3x its bytes while converting) times parallel tasks.
"""
from __future__ import annotations

import os
from pathlib import Path

from rich.table import Table

from pipeline import io
from pipeline.config import Config
from pipeline.driver import StagePlan
from pipeline.readers import input_files

# Per-core throughput in text bytes per second, measured by `make run` on the bundled corpus
# (task_seconds in each stage's _stats.json); a rough guide, not a promise.
BYTES_PER_SEC_PER_CORE = {"ingest": 4.6e6, "filter": 1.1e6, "dedup": 1.4e6, "score": 3e5, "remix": 5e6}
RATES_FILE = Path(__file__).resolve().parents[1] / "bench" / "scale_rates.json"  # bench/scale.py --write-rates
BYTE_STAGES = ("ingest", "filter", "dedup", "score", "remix")  # cluster, mix, evaluate: model work, estimated below
PROXY_TOKENS_PER_SEC_PER_CORE = 6_000  # default proxy spec, one thread (bench/README_proxy.md)
EMBED_DOCS_PER_SEC_PER_CORE_AT_32 = 110  # MiniLM bf16 on CPU (bench/README_cluster.md)


def _model_seconds(cfg: Config, stage: str, docs: int | None, text_bytes: int | None, cpus: int) -> float | None:
    """Stages whose cost is model work, not bytes: embedding, proxy LM training."""
    if stage == "cluster" and docs:
        rate = EMBED_DOCS_PER_SEC_PER_CORE_AT_32 * 32 / max(cfg.cluster.embed.max_tokens, 32)
        return docs / (rate * cpus)
    if stage == "mix":
        m = cfg.mix
        runs = 3 + (m.search.runs if m.method == "regmix" else sum(m.search.rounds) if m.method == "climb" else 0)
        tokenize = (text_bytes or 0) / (2e6 * cpus)
        return tokenize + runs * m.proxy.train_tokens / (PROXY_TOKENS_PER_SEC_PER_CORE * min(cpus, max(runs, 1)))
    if stage == "evaluate":
        e = cfg.evaluate
        n = len(e.arms) * e.seeds
        return n * e.train_tokens / (PROXY_TOKENS_PER_SEC_PER_CORE * min(cpus, n))
    return None
SAMPLE_LIMIT = 20_000


def byte_rates(path: Path = RATES_FILE) -> tuple[dict[str, float], str]:
    """Per-core text bytes/s per stage and where they come from: bench/scale.py's measured rates
    (`path`) for the byte-driven stages it measured, the built-in ones for the rest."""
    rates, src = dict(BYTES_PER_SEC_PER_CORE), "built-in rates"
    if Path(path).exists():
        m = io.read_json(path)
        got = {k: float(v) for k, v in (m.get("bytes_per_sec_per_core") or {}).items() if k in BYTE_STAGES and v and v > 0}
        if got:
            rates.update(got)
            src = f"rates of {Path(path).name} ({m.get('measured', '?')}, {m.get('size', '?'):,} docs)" if isinstance(m.get("size"), int) \
                else f"rates of {Path(path).name}"
    return rates, src


def _count_first(cfg: Config, files: list[tuple]) -> tuple[int, int] | None:
    """(records, text bytes) of the first input file, if it has at most SAMPLE_LIMIT records."""
    from pipeline.readers import Bad, read_records

    if not files:
        return None
    spec, path, _ = files[0]
    n = nbytes = 0
    for rec in read_records(path, spec.format, spec.text_field, spec.id_field):
        n += 1
        nbytes += 0 if isinstance(rec, Bad) else len(rec.text.encode())
        if n > SAMPLE_LIMIT:
            return None
    return n, nbytes


def plan_table(cfg: Config, plans: list[StagePlan], rates_file: Path = RATES_FILE) -> Table:
    cpus = cfg.run.ray.num_cpus or os.cpu_count() or 1
    rates, src_rates = byte_rates(rates_file)
    t = Table(title=f"curate plan: {cfg.run.name} → {cfg.run.output} ({cpus} CPUs; {src_rates})")
    for c in ("stage", "input", "output", "shards", "docs", "text bytes", "est. time", "est. memory"):
        t.add_column(c)
    docs = text_bytes = shards = None
    for p in plans:
        if p.stage == "ingest":
            files = input_files(cfg.ingest.inputs)
            from pipeline import storage

            disk = sum(storage.size(f) for _, f, _ in files if storage.isfile(f))
            first = _count_first(cfg, files)
            first_size = storage.size(files[0][1]) if files and storage.isfile(files[0][1]) else 0
            if first and first_size:
                docs = int(first[0] * disk / first_size)
                text_bytes = int(first[1] * disk / first_size)
            shards = len(files)
            src = f"{len(files)} files, {disk / 1e6:,.1f} MB on disk"
        else:
            first_in_plan = p is plans[0]
            existing = io.shard_files(p.inp) if first_in_plan and p.inp and Path(p.inp).exists() else []
            if not first_in_plan and docs:  # fed by the previous stage of this run: chain its estimate
                shards = max(shards or 1, -(-docs // cfg.run.shard.target_rows))
            if existing:
                man = io.read_json(Path(p.inp) / io.MANIFEST) if (Path(p.inp) / io.MANIFEST).exists() else {}
                tot = man.get("totals", {})
                docs, text_bytes, shards = tot.get("kept", docs), tot.get("bytes_kept", text_bytes), len(existing)
            src = str(p.inp) if p.inp else "previous stage"
        rate = rates.get(p.stage)
        secs = text_bytes / (rate * min(cpus, shards or 1)) if (text_bytes and rate) else None
        if secs is None:
            secs = _model_seconds(cfg, p.stage, docs, text_bytes, cpus)
        per_task = 3 * min(cfg.run.shard.target_bytes, (text_bytes or 0) / max(shards or 1, 1)) + 300e6
        mem = per_task * min(cpus, shards or 1)
        t.add_row(p.stage, src, str(p.out), _n(shards), ("≈" + _n(docs)) if docs else "?",
                  f"≈{text_bytes / 1e6:,.0f} MB" if text_bytes else "?",
                  f"≈{secs:,.0f} s" if secs is not None else "?", f"≈{mem / 1e9:.1f} GB")
    return t


def _n(x) -> str:
    return f"{x:,}" if isinstance(x, int) else "?"
