"""The remix driver: census -> plan -> scatter -> write -> export, each pass resumable.

Accounting: remix is a sampler, not a filter. A write task's `rows_in` is the number of samples the
plan gives its output shard, all of them kept (rows_in = kept, rejected = quarantined = 0); a
document repeated for several epochs counts once per sample, a document of a zero-weight domain or
left out by the budget is simply not sampled (see `accounting` in `_remix.json`). A repeated
document's id gets the suffix `#e<epoch>` (epoch >= 1), so ids stay unique.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io, lock, runner
from pipeline.config import Config, ConfigError, RemixConfig
from pipeline.registry import Stage
from pipeline.schema import ID, TEXT
from pipeline.version import __version__
from stages.remix import export, passes
from stages.remix import plan as planner
from stages.remix.weights import load_weights, resolve, resolve_phases

STAGE = "remix"
REMIX_JSON = "_remix.json"
CENSUS_DIR = "_census"
EXPORT_DIR = "_export"
EXPORTS = ("megatron", "mds", "hf")
RECIPES = ("README.md", "megatron_data_path.txt", "mosaic_streams.yaml", "hf_interleave.json")


class ExportFailed(RuntimeError):
    def __init__(self, result: runner.StageResult):
        super().__init__("remix: the export pass left failed tasks")
        self.result = result


def resolve_formats(formats: list[str] | None, has_tokens: bool) -> tuple[list[str], list[str]]:
    """(formats written, formats of the default left out). Token formats need token ids."""
    if formats is None:
        return (["parquet", "megatron"], []) if has_tokens else (["parquet"], ["megatron"])
    need = [f for f in formats if f in export.FORMATS_WITH_TOKENS]
    if need and not has_tokens:
        raise ConfigError(f"remix.formats: {need} need token ids; set remix.tokenized: true and a tokenizer "
                          "(remix.tokenizer, the mix stage's, or run.tokenizer.path), or drop them")
    return (["parquet"] + [f for f in formats if f != "parquet"]), []


def _clear(out: Path) -> None:
    """--force: the stage's own files besides the contract's (token files, exports, recipes)."""
    import shutil

    io.clear_dir(out)
    for p in list(out.glob("part-*.tokens.npy")) + list(out.glob("part-*.index.npy")) + [out / REMIX_JSON]:
        p.unlink(missing_ok=True)
    for d in EXPORTS + (EXPORT_DIR,):
        shutil.rmtree(out / d, ignore_errors=True)
    for name in RECIPES:
        (out / name).unlink(missing_ok=True)


def finalize(out: Path, markers: dict[str, dict], *, info: dict, formats: list[str], dtype: str | None,
             phase, seed: int) -> None:
    """Realised tokens per domain and phase (checked against the plan), the export pass, the recipes,
    the HF card and _remix.json; the scatter copy of the sample is deleted."""
    out = Path(out)
    names = [d["name"] for d in info["domains"]]
    keys = [f"part-{j:05d}" for j in range(info["shards"])]
    doc = json.loads(json.dumps(info))
    realised = np.zeros((len(doc["phases"]), len(names)), np.int64)
    prefix_tok = np.zeros(len(names), np.int64)
    for ph in doc["phases"]:
        for key in keys[ph["shards"][0]:ph["shards"][1]]:
            m = markers[key]
            realised[ph["index"]] += np.asarray(m.get("domain_tokens", [0] * len(names)), np.int64)
            prefix_tok += np.asarray(m.get("prefix_tokens", [0] * len(names)), np.int64)
    for d, r, pt in zip(doc["domains"], realised.sum(axis=0).tolist(), prefix_tok.tolist()):
        if r - pt != d["tokens"]:
            raise RuntimeError(f"remix: domain {d['name']!r}: shards hold {r - pt} document tokens, the plan {d['tokens']}")
        if pt:
            d["planned_tokens"], d["prefix_tokens"], d["tokens"] = d["tokens"], pt, r
    for ph in doc["phases"]:
        ph["domain_tokens"] = {n: int(x) for n, x in zip(names, realised[ph["index"]])}
        ph["tokens"] = int(realised[ph["index"]].sum())
    total = int(realised.sum())
    for d in doc["domains"]:
        d["share"] = round(d["tokens"] / total, 8) if total else 0.0
    doc["tokens"] = total
    doc["samples"] = int(sum(m["kept"] for m in markers.values()))
    doc["prefixed_docs"] = int(sum(m.get("prefixed_docs", 0) for m in markers.values()))
    doc["shard_files"] = sorted(f["name"] for m in markers.values() for f in m.get("kept_files", []))
    doc["formats"] = formats
    doc["accounting"] = ("sampler: per output shard rows_in = kept = samples written; documents of zero-weight or "
                         "unknown domains and those beyond the budget are not sampled; repeats count once per sample")
    doc.pop("shard_starts", None)
    if any(f in formats for f in EXPORTS):
        doc["outputs"] = _export(out, doc, keys, names, formats, dtype, phase, seed)
    io.atomic_write(out / "README.md", lambda tmp: tmp.write_text(export.hf_card(len(doc["phases"]), doc["phases"], names, formats, [f"{k}.parquet" for k in keys], doc.get("order"))))
    io.write_json(doc, out / REMIX_JSON)
    for p in (out / "_work" / "scatter").glob("scatter-*.parquet"):  # a copy of every sample: free the disk
        p.unlink()
    keep = {f for m in markers.values() for f in m.get("token_files", [])}
    for p in list(out.glob("part-*.tokens.npy")) + list(out.glob("part-*.index.npy")):
        if p.name not in keep:
            p.unlink()


def _export(out: Path, doc: dict, keys: list[str], names: list[str], formats: list[str], dtype: str, phase, seed: int) -> dict:
    """Trainer outputs (export pass, resumable by its markers in _export/) and the recipes; every
    format's token total per domain must equal the stream's."""
    fmts = [f for f in formats if f in EXPORTS]
    n_ph = len(doc["phases"])
    for d in EXPORTS:  # temp files of a killed writer
        for p in (out / d).rglob(".*.tmp-*") if (out / d).exists() else []:
            p.unlink(missing_ok=True)
    for m in [io.read_marker(out / EXPORT_DIR, k) for k in [f"phase-{ph['index']}" for ph in doc["phases"]] + ["mixed"]]:
        if m and any(not (out / f"{name}.idx").exists() and not (out / name / "index.json").exists()
                     and not (out / name / "part.arrow").exists() for name in m["files"]):
            io.marker_path(out / EXPORT_DIR, m["key"]).unlink()  # an output that went away is written again
    tasks = [runner.Task(f"phase-{ph['index']}", export.export_phase, dict(
        out=str(out), phase=ph["index"], n_phases=n_ph, keys=keys[ph["shards"][0]:ph["shards"][1]], names=names,
        formats=fmts, dtype=dtype)) for ph in doc["phases"]]
    if "megatron" in fmts:
        tasks.append(runner.Task("mixed", export.export_mixed, dict(out=str(out), keys=keys, dtype=dtype)))
    r = runner.work_phase(partial(phase, force=False), "remix:export", out / EXPORT_DIR, tasks,
                          io.content_hash([doc["shard_files"], fmts, dtype]), io.dataset_fingerprint(out))
    if not r.ok:
        raise ExportFailed(r)
    exported = {ph["index"]: io.read_marker(out / EXPORT_DIR, f"phase-{ph['index']}") for ph in doc["phases"]}
    for ph in doc["phases"]:
        m = exported[ph["index"]]
        got = dict(zip(names, m["domain_tokens"]))
        want = {n: ph["domain_tokens"][n] + ph["domain_samples"][n] * (dtype is not None) for n in names}  # + one EOS per doc
        if got != want:
            raise RuntimeError(f"remix: export of phase {ph['index']} holds {got} tokens per domain, the stream {want}")
    rec = export.recipes(out, doc["phases"], names, fmts, seed, doc.get("order"))
    rec["token_ids"] = {"dtype": dtype, "eos": "one EOS id appended to every document, in every format",
                        "per_phase_domain_tokens_with_eos": {ph["index"]: exported[ph["index"]]["domain_tokens"] for ph in doc["phases"]}}
    return rec


def check_order(order: dict, schema, inp: Path) -> None:
    """remix.order: a known direction and a numeric column of the input (one-line ConfigError)."""
    import pyarrow as pa

    if order.get("direction") not in ("ascending", "descending"):
        raise ConfigError(f"remix.order.direction: {order.get('direction')!r}; use ascending or descending")
    by = order.get("by")
    if by not in schema.names:
        raise ConfigError(f"remix.order.by: input {inp} has no column {by!r}; run the score stage first or choose one of {schema.names}")
    ty = schema.field(by).type
    if not (pa.types.is_integer(ty) or pa.types.is_floating(ty) or pa.types.is_boolean(ty)):
        raise ConfigError(f"remix.order.by: column {by!r} of {inp} is {ty}, not a number; choose a score column")


def run(cfg: Config, inp: Path, out: Path, phase, force: bool = False) -> runner.StageResult:
    c: RemixConfig = cfg.remix
    if inp is None:
        raise ConfigError("remix: no input dataset dir; use `curate remix --input DIR`, or run the stage before it too")
    weights = Path(c.weights) if c.weights is not None else Path(cfg.run.output) / "mix" / "weights.json"
    return remix(inp, out, weights, c.budget_tokens, seed=cfg.run.seed, max_epochs=c.max_epochs, tokenized=c.tokenized,
                 tokenizer=c.tokenizer, target_rows=cfg.run.shard.target_rows, phase=phase,
                 run_tokenizer=cfg.run.tokenizer.path, batch_size=cfg.run.docs_per_batch, base_hash=cfg.stage_hash(STAGE),
                 formats=c.formats, phases=c.phases, metadata_prefix=c.metadata_prefix,
                 select=c.select.model_dump() if c.select else None, order=c.order.model_dump() if c.order else None, force=force)


def remix(inp: Path, out: Path, weights_path: Path, tokens: int | None = None, *, seed: int = 0,
          max_epochs: float | None = None, tokenized: bool = True, tokenizer: str | Path | None = None,
          target_rows: int = 50_000, phase=None, run_tokenizer: str | None = None, batch_size: int = 2_000,
          base_hash: str = "", formats: list[str] | None = None, phases: list | None = None,
          metadata_prefix=None, select: dict | None = None, order: dict | None = None, force: bool = False) -> runner.StageResult:
    """The stage without a Config (CLI). `phase` as in `pipeline.driver` (default: local, no Ray);
    `force`: replace output made with another config or input (--force)."""
    if phase is None:
        phase = partial(runner.run_stage, use_ray=False)
    inp, out, weights_path = Path(inp), Path(out), Path(weights_path)
    w = load_weights(weights_path)
    budget, cap, tok = resolve(weights_path, w, tokens, max_epochs, tokenizer, run_tokenizer)
    fmts, skipped = resolve_formats(formats, bool(tokenized and tok))
    ph_spec = resolve_phases(phases, w, metadata_prefix)
    col = w.get("domain_column", "cluster")
    shards = io.shard_files(inp)
    if not shards:
        raise ConfigError(f"remix: input {inp} has no part-*.parquet shards")
    schema = pq.read_schema(shards[0])
    missing = [x for x in (ID, TEXT, col) if x not in schema.names]
    if missing:
        raise ConfigError(f"remix: input {inp} lacks column(s) {missing} (domain_column {col!r} of {weights_path}); run the cluster stage first or fix the weights")
    pre = metadata_prefix.model_dump() if hasattr(metadata_prefix, "model_dump") else metadata_prefix
    if pre is not None:
        field = passes.prefix_column(pre["field"])[0]
        if field not in schema.names:
            raise ConfigError(f"remix.metadata_prefix.field: {pre['field']!r}: input {inp} has no column {field!r} ({schema.names}); choose one")
    if select is not None and select["column"] not in schema.names:
        raise ConfigError(f"remix.select.column: input {inp} has no column {select['column']!r}; run the score stage first or choose one of {schema.names}")
    if order is not None:
        check_order(order, schema, inp)
    tok_sha = io.sha256_file(tok) if tok else None
    fp = io.dataset_fingerprint(inp)
    h = io.content_hash([base_hash, io.sha256_file(weights_path), budget, cap, seed, tok_sha, bool(tokenized and tok), target_rows,
                         fmts, ph_spec, pre, select, *([order] if order else [])])
    header = {"stage": STAGE, "version": __version__, "config_hash": h, "input_fingerprint": fp}
    runner.refuse_other_output(out, h, fp, force, "remix", what_config="config or weights")
    work = out / "_work"
    with lock.dir_lock(out):
        if force:
            _clear(out)
        cdir = out / CENSUS_DIR  # outside _work: --force (new weights) keeps it; its own hash says when it is stale
        for p in shards:  # a census file that went away is recomputed
            m = io.read_marker(cdir, p.stem)
            if m and not (cdir / m["census"]).exists():
                io.marker_path(cdir, p.stem).unlink()
        tasks = [runner.Task(p.stem, passes.census_shard, dict(path=str(p), key=p.stem, work=str(cdir), domain_column=col,
                                                              tokenizer=str(tok) if tok else None, batch_size=batch_size,
                                                              score_column=select["column"] if select else None,
                                                              order_column=order["by"] if order else None)) for p in shards]
        chash = io.content_hash([col, tok_sha, *([select["column"]] if select else []), *([("order", order["by"])] if order else [])])
        r = runner.work_phase(partial(phase, force=False), "remix:census", cdir, tasks, chash, fp)
        if not r.ok:
            return runner.stopped(STAGE, out, header, r)
        census = [(str(cdir / m["census"]), m["rows"]) for m in (io.read_marker(cdir, p.stem) for p in shards)]
        ph = io.content_hash([h, fp])
        plan_file, info_file = work / f"plan-{ph}.npy", work / f"plan-{ph}.json"
        if plan_file.exists() and info_file.exists():
            info = io.read_json(info_file)
        else:
            samples, info = planner.plan(census, w, budget, cap, seed, target_rows, ph_spec, select, order)
            grouped, bounds = passes.by_shard(samples, len(shards))
            info = {"stage": STAGE, "version": __version__, "weights": str(weights_path), "weights_sha256": io.sha256_file(weights_path),
                    "method": w.get("method"), "domain_column": col, "tokenizer": tok.name if tok else None,
                    "tokenizer_sha256": tok_sha, "tokenized": bool(tokenized and tok), **info, "shard_bounds": bounds,
                    "formats_skipped": skipped, "metadata_prefix": pre}
            io.write_npy(grouped, plan_file)
            io.write_json(info, info_file)
        for p in work.glob("plan-*"):
            if ph not in p.name:
                p.unlink(missing_ok=True)
        names, bounds, starts = [d["name"] for d in info["domains"]], info["shard_bounds"], info["shard_starts"]
        keys = [f"part-{j:05d}" for j in range(info["shards"])]
        for key in keys:  # an output shard whose token files went away is written again
            m = io.read_marker(out, key)
            if m and any(not (out / f).exists() for f in m.get("token_files", [])):
                io.marker_path(out, key).unlink()
        spans = [p["samples"] for p in info["phases"] if p["metadata_prefix"]]
        prefix = {**pre, "seed": seed, "spans": spans} if pre is not None else None
        parts: list[list] | str = [[] for _ in keys]
        # each phase's samples [lo, hi) and its first output shard: O(phases) task arguments, not the shard starts
        spans = [[p["samples"][0], p["samples"][1], p["shards"][0]] for p in info["phases"]]
        if any(io.read_marker(out, key) is None for key in keys):  # else the scatter files are not needed (and deleted)
            sdir = work / "scatter"
            for p in shards:
                m = io.read_marker(sdir, p.stem)
                if m and m["scatter"] and not (sdir / m["scatter"]).exists():
                    io.marker_path(sdir, p.stem).unlink()
            tasks = [runner.Task(p.stem, passes.scatter_shard, dict(
                path=str(p), key=p.stem, work=str(sdir), plan_file=str(plan_file), lo=bounds[i], hi=bounds[i + 1],
                domain_column=col, names=names, spans=spans, target_rows=info["target_rows"], prefix=prefix)) for i, p in enumerate(shards)]
            r = runner.work_phase(partial(phase, force=False), "remix:scatter", sdir, tasks, ph, fp)
            if not r.ok:
                return runner.stopped(STAGE, out, header, r)
            rows = [(j, str(sdir / m["scatter"]), g) for m in (io.read_marker(sdir, p.stem) for p in shards) for j, g, _ in m["groups"]]
            # which scatter row groups each output shard gathers: one index file, not a list per task
            parts = io.write_part_index(pa.table({"part": pa.array([r[0] for r in rows], pa.int64()), "file": [r[1] for r in rows],
                                                  "group": pa.array([r[2] for r in rows], pa.int64())}), sdir / "_index-write.parquet")
    dtype = None
    if tokenized and tok:
        from pipeline.tokens import load_tokenizer

        dtype = passes.token_dtype(load_tokenizer(str(tok)))[1].name
    tasks = [runner.Task(key, passes.write_shard, dict(
        out=str(out), key=key, parts=parts if isinstance(parts, str) else parts[j], part=j, rows=starts[j + 1] - starts[j], names=names,
        tokenizer=str(tok) if tok else None, tokenized=bool(tokenized), batch_size=batch_size, prefix=pre is not None))
        for j, key in enumerate(keys)]
    fin = partial(finalize, info=info, formats=fmts, dtype=dtype, phase=phase, seed=seed)
    try:
        return phase(STAGE, out, tasks, config_hash=h, input_fingerprint=fp, force=False, finalize=fin)
    except ExportFailed as e:
        return runner.stopped(STAGE, out, header, e.result)


SPEC = Stage(STAGE, run=run, artifact=True, recompute_on_growth=True)
