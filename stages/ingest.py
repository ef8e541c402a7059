"""ingest: raw files (JSONL/.gz/.zst, Parquet, HF dataset dirs, WARC, HTML) -> dataset dir.

One task per input file. Readers never raise on bad records: they yield `Bad` items that go to
`_quarantine/` with a one-line error naming file and line. Ids come from the configured id field
or, when there is none, from source + file + position (stable, never random).
"""
from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa

from pipeline import runner
from pipeline.config import Config, InputConfig
from pipeline.io import fingerprint
from pipeline.readers import Bad, list_inputs, read_records
from pipeline.schema import BASE_SCHEMA, make_id
from pipeline.taskio import TaskOutput
from pipeline.tokens import count_tokens

STAGE = "ingest"


def plan(cfg: Config) -> list[tuple[InputConfig, str, str]]:
    """(input spec, file path, path relative to the input root) for every input file, in a stable order."""
    files = []
    for spec in cfg.ingest.inputs:
        root = Path(spec.path)
        for f in list_inputs(str(root), spec.pattern):
            rel = Path(f).relative_to(root).as_posix() if root.is_dir() and Path(f) != root else Path(f).name
            files.append((spec, f, rel))
    return files


def ingest_file(path: str, relpath: str, spec: dict, out: str, key: str, target_rows: int, target_bytes: int,
                batch_size: int, tokenizer: str | None, max_text_bytes: int | None) -> dict:
    spec = InputConfig.model_validate(spec)
    default_source = spec.source or Path(spec.path).name.split(".")[0] or "input"
    res = TaskOutput(Path(out), key, STAGE, target_rows, target_bytes)
    seen: dict[str, int] = {}
    buf: dict[str, list] = {"id": [], "text": [], "source": [], "meta": []}
    bad: list[dict] = []

    def flush() -> None:
        if buf["id"]:
            n_tok = count_tokens(buf["text"], tokenizer)
            res.tokens_in += int(n_tok.sum())
            res.add_kept(pa.table({**buf, "n_tokens": n_tok}, schema=BASE_SCHEMA))
            for v in buf.values():
                v.clear()
        res.add_quarantined(bad)
        bad.clear()

    for rec in read_records(path, spec.format, spec.text_field, spec.id_field, max_text_bytes):
        res.rows_in += 1
        if isinstance(rec, Bad):
            bad.append({"file": path, "pos": rec.pos, "raw": rec.raw, "error": rec.error})
            continue
        source = spec.source
        if source is None and spec.source_field:
            source = _str(rec.meta.get(spec.source_field))
        source = source or default_source
        doc_id = rec.id if rec.id is not None else make_id(source, relpath, rec.pos)
        if doc_id in seen:
            bad.append({"file": path, "pos": rec.pos, "id": doc_id, "raw": rec.text.encode()[:65536],
                        "error": f"{path}:{rec.pos}: duplicate id {doc_id!r} (first at position {seen[doc_id]}); ids must be unique, or unset id_field to derive them"})
            continue
        seen[doc_id] = rec.pos
        res.bytes_in += len(rec.text.encode())
        buf["id"].append(doc_id)
        buf["text"].append(rec.text)
        buf["source"].append(source)
        buf["meta"].append(orjson.dumps(rec.meta, option=orjson.OPT_SORT_KEYS, default=str).decode())
        if len(buf["id"]) >= batch_size:
            flush()
    flush()
    return res.finish(inputs=[path])


def _str(v) -> str | None:
    return None if v is None else str(v)


def tasks(cfg: Config, inp: Path | None, out: Path) -> tuple[list[runner.Task], str]:
    """One task per input file (`inp` is unused: ingest reads `cfg.ingest.inputs`)."""
    files = plan(cfg)
    r = cfg.run
    ts = [
        runner.Task(
            key=f"part-{i:05d}",
            fn=ingest_file,
            kwargs=dict(path=f, relpath=rel, spec=spec.model_dump(mode="json"), out=str(out), key=f"part-{i:05d}",
                        target_rows=r.shard.target_rows, target_bytes=r.shard.target_bytes, batch_size=r.batch_size,
                        tokenizer=r.tokens.tokenizer, max_text_bytes=cfg.ingest.max_text_bytes),
        )
        for i, (spec, f, rel) in enumerate(files)
    ]
    return ts, fingerprint([f for _, f, _ in files])
