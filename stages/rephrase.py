"""rephrase: rewrite selected documents with a small local LM into a chosen style (WRAP,
"Rephrasing the Web", Maini et al. 2024), as new documents next to the originals.

Optional stage between score and cluster (absent from a config, it does not run). One task per
shard: documents picked by `select` (a score column below a threshold, and/or a deterministic
fraction by hash of id and seed), at most `max_docs` per shard, are rewritten greedily in batches of
`docs_per_forward`. Each rewrite is a new row: id `<orig id>#rephrase-<style>`, `rephrased_from` =
the original id, `rephrase_style`, other columns copied from the original. Originals are kept
(`keep_originals: true`) or rejected with reason `rephrase:replaced`.

Accounting: the task states the rows it created (`created`), and the runner checks
rows in + created = kept + rejected + quarantined on counters and files. Resume: per-shard done
markers (the engine's one-pass stages). A model that cannot load fails the task (ModelError, one line).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import io, runner
from pipeline.config import Config, ConfigError
from pipeline.models.rephraser import Rephraser, require_model
from pipeline.registry import Stage
from pipeline.schema import REASON
from pipeline.taskio import TaskOutput
from pipeline.tokens import count_tokens

STAGE = "rephrase"


def _selected(table: pa.Table, sel: dict, seed: int) -> np.ndarray:
    n = table.num_rows
    mask = np.ones(n, dtype=bool)
    if sel.get("column"):
        vals = table.column(sel["column"]).to_numpy(zero_copy_only=False).astype(float)
        mask &= ~np.isnan(vals) & (vals < sel["below"])
    if sel.get("fraction") is not None and sel["fraction"] < 1:
        ids = table.column("id").to_pylist()
        h = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "big") for i in ids],
                     dtype=np.float64) / 2.0 ** 64
        mask &= h < sel["fraction"]
    return np.flatnonzero(mask)


_MODELS: dict = {}


def _model(path: str | None, threads: int | None, device: str):
    """The rephraser, loaded once per worker process (loading de-quantizes the GGUF: ~15 s on CPU)."""
    key = (path, threads, device)
    if key not in _MODELS:
        _MODELS.clear()
        _MODELS[key] = Rephraser(path, threads=threads, device=device)
    return _MODELS[key]


def rephrase_shard(path: str, out: str, key: str, section: dict, seed: int, tokenizer: str | None) -> dict:
    cfg = section
    model = _model(cfg["model"], cfg["threads"], cfg["device"])  # ModelError before any document
    res = TaskOutput(Path(out), key, STAGE, target_rows=1 << 62, target_bytes=1 << 62, single=True)
    table = pq.read_table(path)
    res.rows_in = table.num_rows
    res.tokens_in = int(pc.sum(table.column("n_tokens")).as_py() or 0) if "n_tokens" in table.column_names else 0
    res.bytes_in = int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)
    idx = _selected(table, cfg["select"], seed)
    if cfg["max_docs"] is not None:
        idx = idx[:cfg["max_docs"]]
    texts = table.column("text").to_pylist()
    new, out_tokens = model.generate([texts[i] for i in idx], cfg["style"], cfg["max_new_tokens"],
                                     cfg["docs_per_forward"], cfg["max_input_chars"])
    orig = table.append_column("rephrased_from", pa.nulls(table.num_rows, pa.string())) \
                .append_column("rephrase_style", pa.nulls(table.num_rows, pa.string()))
    made = orig.take(pa.array(idx, pa.int64()))
    ids = [f"{i}#rephrase-{cfg['style']}" for i in made.column("id").to_pylist()]
    made = made.set_column(made.column_names.index("rephrased_from"), "rephrased_from", made.column("id").cast(pa.string()))
    made = made.set_column(made.column_names.index("rephrase_style"), "rephrase_style", pa.array([cfg["style"]] * len(idx), pa.string()))
    made = made.set_column(made.column_names.index("id"), "id", pa.array(ids, made.schema.field("id").type))
    made = made.set_column(made.column_names.index("text"), "text", pa.array(new, made.schema.field("text").type))
    if "n_tokens" in made.column_names:
        made = made.set_column(made.column_names.index("n_tokens"), "n_tokens",
                               pa.array(count_tokens(new, tokenizer), made.schema.field("n_tokens").type))
    made = made.cast(orig.schema)  # same columns and nullability as the originals
    if cfg["keep_originals"]:
        res.add_kept(pa.concat_tables([orig, made]))
    else:
        rest = np.setdiff1d(np.arange(table.num_rows), idx)
        res.add_kept(pa.concat_tables([orig.take(pa.array(rest, pa.int64())), made]))
        rej = orig.take(pa.array(idx, pa.int64()))
        res.add_rejected(rej.append_column(REASON, pa.array(["rephrase:replaced"] * len(idx), pa.string())))
    return res.finish(inputs=[path], created=len(idx),
                      counters={"rephrased": len(idx), "output_tokens": out_tokens})


def tasks(cfg: Config, inp: Path, out: Path) -> tuple[list[runner.Task], str]:
    require_model(cfg.rephrase.model)  # in the driver, before any task (ModelError, exit 1)
    fps = io.shard_fingerprints(inp)
    col = cfg.rephrase.select.column
    shards = io.shard_files(inp)
    if col is not None and shards and col not in (names := pq.read_schema(shards[0]).names):
        raise ConfigError(f"rephrase.select.column: input {inp} has no column {col!r}; run the score stage first or choose one of {names}")
    section = cfg.rephrase.model_dump(mode="json")
    ts = [runner.Task(key=p.stem, fn=rephrase_shard,
                      kwargs=dict(path=str(p), out=str(out), key=p.stem, section=section, seed=cfg.run.seed,
                                  tokenizer=cfg.run.tokenizer.path),
                      input_fp=fps[p.name])
          for p in shards]
    return ts, io.dataset_fingerprint(inp)


def check(cfg: Config, path: str) -> None:
    """The select column is one an earlier stage of this config writes (score columns need score)."""
    col = cfg.rephrase.select.column
    if col is not None and cfg.score is None and col not in ("n_tokens",):
        raise ConfigError(f"{path}: rephrase.select.column: {col!r} needs the score stage in the config "
                          "(or use n_tokens, or select.fraction)")


SPEC = Stage(STAGE, tasks=tasks, check=check)
