"""filter: apply a list of document filters (from config) to every shard.

Filters run in config order; a document is rejected by the first filter that fails it, with that
filter's precise reason. A filter can be limited to some sources (`sources`/`exclude_sources`), as
web-text thresholds hurt man pages, licences or code.

Failures: filters load their models when a task sets up (before any document), and the driver
checks the model files exist before any task, so a missing or broken model fails the task with one
line naming the filter and the path. A filter that raises on a batch is retried document by
document; documents it still raises on go to `_quarantine/` and the shard goes on, unless they are
more than run.max_error_fraction of the shard or every document of the batch (a broken filter, not
bad documents): then the task fails naming the filter, the count and the first error (exit 1).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

import filters
from filters import Batch
from filters.base import describe
from pipeline import io, runner
from pipeline.config import Config, ConfigError, FilterSpec
from pipeline.registry import Stage
from pipeline.schema import REASON, arrow_type
from pipeline.taskio import TaskOutput
from pipeline.tokens import count_tokens

STAGE = "filter"


def _applies(spec: FilterSpec, source: str, lang: str | None) -> bool:
    return ((spec.sources is None or source in spec.sources) and source not in spec.exclude_sources
            and (spec.languages is None or lang in spec.languages))


def _run_one(f: filters.Filter, batch: Batch, idx: list[int], errors: dict[int, str], budget: filters.ErrorBudget,
             rows: str = ""):
    """Run filter `f` on docs `idx`; on an exception, isolate the failing docs one by one (the
    budget fails the task when they are all of them, or too many for the shard)."""
    try:
        return idx, f(batch.take(idx))
    except Exception:
        ok, results, failed = [], [], []
        for i in idx:
            try:
                results.append(f(batch.take([i])))
                ok.append(i)
            except Exception as e:
                errors[i] = f"filter '{f.name}' raised {describe(e)}"
                failed.append(e)
        budget.add(f.name, len(idx), failed, rows)
        # a column some documents' results lack: their text unchanged, else null
        cols = {c for r in results for c in r.columns}
        merged = filters.FilterResult([r.reasons[0] for r in results],
                                      {c: [r.columns[c][0] if c in r.columns else (batch.texts[i] if c == "text" else None)
                                           for i, r in zip(ok, results)] for c in cols},
                                      dict(sum((Counter(r.counters) for r in results), Counter())))
        return ok, merged


def apply_filters(table: pa.Table, built: list[tuple[FilterSpec, filters.Filter]], budget: filters.ErrorBudget,
                  offset: int = 0, counters: Counter | None = None):
    """-> (reasons, new columns, texts or None if unchanged, errors by row). `offset`: row of the
    table's first document in the shard (for messages); the filters' counters are added to `counters`."""
    texts = table.column("text").to_pylist()
    sources = table.column("source").to_pylist()
    n = len(texts)
    batch = Batch(texts, table)
    reasons: list[str | None] = [None] * n
    errors: dict[int, str] = {}
    added: dict[str, tuple[list, pa.DataType | None]] = {}
    text_changed = False
    for spec, f in built:
        langs = added["lang"][0] if "lang" in added else (table.column("lang").to_pylist() if "lang" in table.column_names else [None] * n)
        idx = [i for i in range(n) if reasons[i] is None and i not in errors and _applies(spec, sources[i], langs[i])]
        if not idx:
            for c, t in f.output_columns.items():
                added.setdefault(c, ([None] * n, arrow_type(t)))
            continue
        done, res = _run_one(f, batch, idx, errors, budget, f" (rows {offset}-{offset + n - 1})")
        if counters is not None:
            counters.update(res.counters)
        for j, i in enumerate(done):
            reasons[i] = res.reasons[j]
        for c, values in res.columns.items():
            if c == "text":
                for j, i in enumerate(done):
                    texts[i] = values[j]
                text_changed = True
                continue
            t = f.output_columns.get(c)
            col = added.setdefault(c, ([None] * n, arrow_type(t) if t else None))[0]
            for j, i in enumerate(done):
                col[i] = values[j]
        if "text" in res.columns:
            batch = Batch(texts, table)  # cached views are stale once text changed
    return reasons, added, (texts if text_changed else None), errors


def filter_shard(path: str, out: str, key: str, specs: list[dict], batch_size: int, tokenizer: str | None,
                 max_error_fraction: float = 0.01) -> dict:
    specs = [FilterSpec.model_validate(s) for s in specs]
    built = [(s, filters.build(s.type, s.params, load=True)) for s in specs]  # models load here, before any document
    res = TaskOutput(Path(out), key, STAGE, target_rows=1 << 62, target_bytes=1 << 62, single=True)
    pf = pq.ParquetFile(path)
    res.rows_in = pf.metadata.num_rows
    budget = filters.ErrorBudget(path, res.rows_in, max_error_fraction)
    offset, counters = 0, Counter()
    for rb in pf.iter_batches(batch_size=batch_size):
        table = pa.Table.from_batches([rb])
        res.tokens_in += int(pa.compute.sum(table.column("n_tokens")).as_py() or 0)
        res.bytes_in += int(pa.compute.sum(pa.compute.binary_length(table.column("text"))).as_py() or 0)
        reasons, added, new_texts, errors = apply_filters(table, built, budget, offset, counters)
        if new_texts is not None:
            table = table.set_column(table.column_names.index("text"), "text", pa.array(new_texts, pa.large_string()))
            table = table.set_column(table.column_names.index("n_tokens"), "n_tokens", pa.array(count_tokens(new_texts, tokenizer)))
        for c, (values, t) in added.items():
            table = table.append_column(c, pa.array(values, type=t))
        keep = np.array([i for i, r in enumerate(reasons) if r is None and i not in errors], dtype=np.int64)
        drop = np.array([i for i, r in enumerate(reasons) if r is not None and i not in errors], dtype=np.int64)
        res.add_kept(table.take(keep))
        rejected = table.take(drop)
        res.add_rejected(rejected.append_column(REASON, pa.array([reasons[i] for i in drop], pa.string())))
        ids = table.column("id")
        res.add_quarantined([
            {"file": path, "pos": offset + i, "id": ids[i].as_py(),
             "raw": orjson.dumps(table.slice(i, 1).to_pylist()[0], default=str)[:65536],
             "error": f"{path}: row {offset + i} (id {ids[i].as_py()!r}): {err}; exclude this filter for the source or report a bug"}
            for i, err in sorted(errors.items())
        ])
        offset += rb.num_rows
    return res.finish(inputs=[path], counters=dict(sorted(counters.items())))


def tasks(cfg: Config, inp: Path, out: Path) -> tuple[list[runner.Task], str]:
    for s in cfg.filter.filters:  # in the driver, before any task: the model files exist (ModelError, exit 1)
        filters.build(s.type, s.params).check()
    shards = io.shard_files(inp)
    fps = io.shard_fingerprints(inp)  # per task: a grown input runs only its new shards
    specs = [s.model_dump(mode="json") for s in cfg.filter.filters]
    ts = [
        runner.Task(key=p.stem, fn=filter_shard,
                    kwargs=dict(path=str(p), out=str(out), key=p.stem, specs=specs,
                                batch_size=cfg.run.docs_per_batch, tokenizer=cfg.run.tokenizer.path,
                                max_error_fraction=cfg.run.max_error_fraction),
                    input_fp=fps[p.name])
        for p in shards
    ]
    return ts, io.dataset_fingerprint(inp)


def check(cfg: Config, path: str) -> None:
    """Every filter type and parameter of the config exists (built without loading models), and
    `languages` follows a langid filter: one line naming the entry, before any work."""
    for i, spec in enumerate(cfg.filter.filters):
        try:
            filters.build(spec.type, spec.params)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{path}: filter.filters[{i}]: {e}") from None
        if spec.languages is not None and not any(s.type == "langid" for s in cfg.filter.filters[:i]):
            raise ConfigError(f"{path}: filter.filters[{i}].languages: needs a langid filter before it in the list")


def reference() -> str:
    """The filters table of the config reference: every registered filter with its parameters."""
    lines = ["Filters (`filter.filters[].type`, parameters with their defaults):", "", "| type | parameters |", "|---|---|"]
    for name, cls in sorted(filters.REGISTRY.items()):
        params = ", ".join(f"`{k}`={v!r}" for k, v in cls.params.items() if k != "stop_words")
        lines.append(f"| `{name}` | {params.replace('|', '/')} |")
    return "\n".join(lines)


SPEC = Stage(STAGE, tasks=tasks, check=check, reference=reference)
