"""ingest: raw files (JSONL/.gz/.zst, Parquet, HF dataset dirs, WARC, HTML) -> dataset dir.

One task per input file. Readers never raise on bad records: they yield `Bad` items that go to
`_quarantine/` with a one-line error naming file and line. Ids come from the configured id field
or, when there is none, from source + file + position (stable, never random).
"""
from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa

from pipeline import io, runner, storage
from pipeline.config import Config, InputConfig
from pipeline.io import fingerprint
from pipeline.readers import Bad, input_files, read_records
from pipeline.registry import Stage
from pipeline.schema import BASE_SCHEMA, make_id
from pipeline.taskio import TaskOutput, quarantine_table
from pipeline.tokens import count_tokens

STAGE = "ingest"
DUPID_MEMORY = "64MB"  # DuckDB memory cap of the cross-file duplicate-id check (it spills beyond)


def ingest_file(path: str, relpath: str, spec: dict, out: str, key: str, target_rows: int, target_bytes: int,
                batch_size: int, tokenizer: str | None, max_text_bytes: int | None) -> dict:
    spec = InputConfig.model_validate(spec)
    default_source = spec.source or storage.basename(str(spec.path)).split(".")[0] or "input"
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

    # an IO error of the input (EIO, timeout) propagates out of read_records: the task fails and is retried
    for rec in read_records(path, spec.format, spec.text_field, spec.id_field, max_text_bytes):
        if isinstance(rec, Bad):  # may stand for many rows (a corrupt row group) or for a byte range
            res.rows_in += rec.rows
            bad.append({"file": path, "pos": rec.pos, "raw": rec.raw, "error": rec.error, "rows": rec.rows,
                        "byte_offset": rec.offset, "byte_length": rec.length})
            continue
        res.rows_in += 1
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


def task_keys(paths: list[str], out: Path) -> list[str]:
    """Shard key of each input file: `part-<n>` in sorted input order on a first run. A file that an
    earlier run of this output dir already ingested keeps its key (read from the finished tasks'
    markers); files new since then get the next numbers, in sorted order. So a scheduled re-run over
    a grown input adds shards after the existing ones and never renames or rewrites a finished one
    (the cross-file duplicate-id rule keeps the first shard's copy: the old one)."""
    done = Path(out) / io.DONE
    known: dict[str, str] = {}
    if done.is_dir():
        for p in sorted(done.glob("part-*.json")):
            try:
                m = io.read_json(p)
            except (OSError, ValueError):
                continue
            for f in m.get("inputs", [])[:1]:
                known.setdefault(f, p.stem)
    used = {int(k.split("-")[1]) for k in known.values() if k.split("-")[1].isdigit()}
    nxt = max(used) + 1 if used else 0
    keys = []
    for f in paths:
        if f in known:
            keys.append(known[f])
        else:
            keys.append(f"part-{nxt:05d}")
            nxt += 1
    return keys


def tasks(cfg: Config, inp: Path | None, out: Path) -> tuple[list[runner.Task], str]:
    """One task per input file (`inp` is unused: ingest reads `cfg.ingest.inputs`). Each task carries
    its file's fingerprint (size, mtime): a re-run ingests new files only, and refuses a changed or
    removed one by name (see runner.task_input_change)."""
    files = input_files(cfg.ingest.inputs)
    r = cfg.run
    keys = task_keys([f for _, f, _ in files], out)
    stats = {f: storage.stat_key(f) for _, f, _ in files}  # one stat per file: the task's and the stage's fingerprint
    ts = [
        runner.Task(
            key=key,
            fn=ingest_file,
            kwargs=dict(path=f, relpath=rel, spec=spec.model_dump(mode="json"), out=str(out), key=key,
                        target_rows=r.shard.target_rows, target_bytes=r.shard.target_bytes, batch_size=r.docs_per_batch,
                        tokenizer=r.tokenizer.path, max_text_bytes=cfg.ingest.max_text_bytes),
            input_fp=stats[f].replace("\0", ":"),
        )
        for key, (spec, f, rel) in zip(keys, files)
    ]
    return ts, fingerprint([f for _, f, _ in files], stats)


def finalize(out: Path, markers: dict[str, dict]) -> None:
    """Global step: an id seen in more than one input file is kept in the first file (shard order)
    and quarantined elsewhere. Each task already dropped duplicates within its own file.

    Idempotent, so a kill at any point is repaired by re-running: the evicted rows of shard F go to
    `_quarantine/<F>-dupid.parquet` (written before F is rewritten, from F's content), and the
    counters of the task are then re-derived from the files on disk."""
    import duckdb
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = Path(out)
    owner = {f["name"]: k for k, m in markers.items() for f in m["kept_files"]}
    files = [str(out / name) for name in sorted(owner)]
    evict: dict[str, list[int]] = {}
    if files:
        # One connection with a memory cap: the id hash table spills to a temp dir in the output dir
        # instead of growing with the corpus (the driver stays O(1) in corpus size; 1.6M ids: 7 s).
        con = duckdb.connect()
        tmp = out / ".tmp-dupid"  # left by a killed run: removed before and after
        shutil.rmtree(tmp, ignore_errors=True)
        for setting in ("threads=1", f"memory_limit='{DUPID_MEMORY}'", f"temp_directory='{tmp}'", "preserve_insertion_order=false"):
            con.execute(f"SET {setting}")
        rows = con.execute(
            "WITH t AS (SELECT id, filename, file_row_number AS r FROM read_parquet($files, filename=true, file_row_number=true)) "
            "SELECT id, filename, r, row_number() OVER (PARTITION BY id ORDER BY filename, r) AS k "
            "FROM t WHERE id IN (SELECT id FROM t GROUP BY id HAVING count(*) > 1) ORDER BY filename, r",
            {"files": files},
        ).fetchall()
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
        first = {i: f for i, f, _, k in rows if k == 1}
        for i, f, r, k in rows:
            if k > 1:
                evict.setdefault(f, []).append(r)
        for f, rs in evict.items():
            table = pq.read_table(f)
            dropped = table.take(rs)
            key = owner[Path(f).name]
            src = markers[key]["inputs"][0]
            qrows = [{"file": src, "pos": r, "id": i, "raw": t.encode()[:65536],
                      "error": f"{src}: row {r} of {Path(f).name} (id {i!r}): duplicate id, first seen in {markers[owner[Path(first[i]).name]]['inputs'][0]}; ids must be unique across files, or unset id_field to derive them"}
                     for r, i, t in zip(rs, dropped.column("id").to_pylist(), dropped.column("text").to_pylist())]
            io.write_parquet(quarantine_table(qrows, STAGE), out / io.QUARANTINE / f"{Path(f).stem}-dupid.parquet")
            mask = pc.invert(pc.is_in(pa.array(range(table.num_rows)), pa.array(rs)))
            io.write_parquet(table.filter(mask), Path(f))
    for key, m in markers.items():  # re-derive counters of tasks touched now or by a killed earlier attempt
        extra = [out / io.QUARANTINE / f"{Path(f['name']).stem}-dupid.parquet" for f in m["kept_files"]]
        extra = [p for p in extra if p.exists()]
        if not extra:
            continue
        kept_files, kept, tokens, nbytes, by_source = [], 0, 0, 0, Counter()
        for f in m["kept_files"]:
            p = out / f["name"]
            t = pq.read_table(p, columns=["n_tokens", "text", "source"])
            by_source.update(t.column("source").to_pylist())
            kept += t.num_rows
            tokens += int(pc.sum(t.column("n_tokens")).as_py() or 0)
            nbytes += int(pc.sum(pc.binary_length(t.column("text"))).as_py() or 0)
            kept_files.append({"name": f["name"], "rows": t.num_rows, "bytes": p.stat().st_size, "sha256": io.sha256_file(p)})
        qfiles = [f for f in m["quarantine_files"] if not f["name"].endswith("-dupid.parquet")]
        qfiles += [{"name": p.name, "rows": pq.ParquetFile(p).metadata.num_rows, "bytes": p.stat().st_size, "sha256": io.sha256_file(p)} for p in extra]
        m["by_source"] = {s: {"rows_in": n, "kept": n, "rejected": 0, "reasons": {}} for s, n in sorted(by_source.items())}
        m.update(kept=kept, tokens_kept=tokens, bytes_kept=nbytes, kept_files=kept_files, quarantine_files=qfiles,
                 quarantined=m["rows_in"] - kept - m["rejected"])
        n_dup = sum(f["rows"] for f in qfiles if f["name"].endswith("-dupid.parquet"))
        m["reasons"] = {**{k: v for k, v in m["reasons"].items() if k != "quarantine:duplicate id across files"},
                        "quarantine:duplicate id across files": n_dup}
        io.write_json(m, io.marker_path(out, key))


SPEC = Stage(STAGE, tasks=tasks, finalize=finalize)
