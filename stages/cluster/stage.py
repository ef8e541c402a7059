"""The cluster stage's driver: resolves `auto` (precision, device, k-means backend) once for every
task, runs the passes of `stages.cluster` in order (embed, census and write as resumable runner
phases with their own markers; fit and refine here), refuses output made with other choices for
`auto`, and records the embedding cache, those choices and the time of every pass in the manifest and
_stats.json. Passes 1, 3 and 5 ask Ray for a GPU when this machine has one (see `_task`).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline import io, lock, runner
from pipeline.config import ClusterConfig, Config, ConfigError
from pipeline.models import kmeans
from pipeline.registry import Stage
from pipeline.version import __version__
from stages.cluster.describe import finalize
from stages.cluster.passes import STAGE, census_shard, embed_shard, fit, npy_rows, write_shard

RESOLVED = "resolved.json"  # in _work/: the driver's choices for `auto` when the run started


def _task(key: str, fn, kwargs: dict) -> runner.Task:
    """A runner task that asks Ray for a GPU when there is one. runner.Task has no resource field
    yet; when it gets `num_gpus`, this passes it (until then tasks are scheduled on CPUs)."""
    t = runner.Task(key=key, fn=fn, kwargs=kwargs)
    if hasattr(t, "num_gpus"):
        import torch

        t.num_gpus = 1 if torch.cuda.is_available() else 0
    return t


def resolve(c: ClusterConfig) -> dict:
    """Driver: what `auto` means on this machine, chosen once for every task of the run (config hash,
    manifest): embedding precision and device (+ cpu_bf16 for bf16) and the k-means backend."""
    from pipeline.models import embedder as E

    return {**E.resolve(c.embed.precision), "kmeans_backend": kmeans.resolve_backend(c.kmeans.backend)}


def as_run(cfg: Config, resolved: dict) -> tuple[Config, str]:
    """The config as this run executes it (auto replaced by the driver's choices) and its hash, which
    also covers the device and, for bf16, cpu_bf16: `precision: auto` that resolved to fp32 and an
    explicit `precision: fp32` are the same run; the same config resolved otherwise is not."""
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.cluster.embed.precision = resolved["precision"]
    run_cfg.cluster.kmeans.backend = resolved["kmeans_backend"]
    hw = {k: v for k, v in resolved.items() if k not in ("precision", "kmeans_backend")}
    return run_cfg, run_cfg.stage_hash(STAGE, hw)


def _refuse_other_resolution(out: Path, plain_hash: str, fp: str, resolved: dict, force: bool) -> None:
    """Same config and input, but this machine resolves `auto` differently from the one that started
    <out>: refused (never mixed), naming the choices and how to resume."""
    old = io.read_json(out / "_work" / RESOLVED) if (out / "_work" / RESOLVED).exists() else None
    if force or not old or (old.get("config_hash"), old.get("input_fingerprint")) != (plain_hash, fp) or old.get("resolved") == resolved:
        return
    was, now = old["resolved"], resolved
    diff = ", ".join(f"{k} {was.get(k)} -> {now.get(k)}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k))
    if any(was.get(k) != now.get(k) for k in ("device", "cpu_bf16")):
        how = f"resume it on a machine like the first (device {was.get('device')}, cpu_bf16 {was.get('cpu_bf16', 'n/a')})"
    else:
        how = f"set cluster.embed.precision: {was['precision']} and cluster.kmeans.backend: {was['kmeans_backend']} to resume it"
    raise runner.StageConflict(f"{out}: holds cluster output made with other choices for `auto` than this machine makes ({diff}); "
                               f"{how}, or re-run with --force to recompute (cached embeddings are kept)")


def _input_shas(inp: Path) -> dict[str, str]:
    m = inp / io.MANIFEST
    if not m.exists():
        return {}
    man = io.read_json(m)
    return {f["name"]: f["sha256"] for s in man.get("shards", {}).values() for f in s.get("files", []) if f.get("dir") == "" and f.get("sha256")}


def run(cfg: Config, inp: Path, out: Path, phase, force: bool = False) -> runner.StageResult:
    c: ClusterConfig = cfg.cluster
    if inp is None:
        raise ConfigError("cluster: no input dataset dir; use `curate cluster --input DIR`, or run the stage before it too")
    inp, out = Path(inp), Path(out)
    resolved = resolve(c)  # once, here: every task gets these values, never "auto"
    plain_hash, fp = cfg.stage_hash(STAGE), io.dataset_fingerprint(inp)
    cfg, h = as_run(cfg, resolved)
    c = cfg.cluster
    header = {"stage": STAGE, "version": __version__, "config_hash": h, "input_fingerprint": fp}
    _refuse_other_resolution(out, plain_hash, fp, resolved, force)
    runner.refuse_other_output(out, h, fp, force, "cluster", hint=" (cached embeddings are kept)")
    shards = io.shard_files(inp)
    q = c.refine.quality_column
    if q and shards and q not in pq.read_schema(shards[0]).names:
        raise ConfigError(f"cluster.refine.quality_column: column {q!r} is not in {inp} (run the score stage first, or unset it)")
    with lock.dir_lock(out):  # passes 1-4; the runner locks <out> again for pass 5
        if force:
            io.clear_dir(out)  # contract files and _work/; the embedding cache stays
        io.write_json({"config_hash": plain_hash, "input_fingerprint": fp, "resolved": resolved}, out / "_work" / RESOLVED)
        prep = _prepare(cfg, inp, out, partial(phase, force=False), shards, fp, header, resolved)
    if isinstance(prep, runner.StageResult):
        return prep
    tasks, info, fitted, seconds = prep
    work = out / "_work"
    res = phase(STAGE, out, tasks, config_hash=h, input_fingerprint=fp, force=False,
                finalize=partial(finalize, work=work, info=info, vocab=fitted["vocab"], top_terms=c.describe.top_terms))
    seconds["write"] = res.seconds
    _annotate(out, res, info["embedding"], seconds, resolved)
    return res


def _prepare(cfg: Config, inp: Path, out: Path, phase, shards: list[Path], fp: str, header: dict, resolved: dict):
    """Passes 1-4. Returns the write tasks and what finalize needs, or a StageResult if a pass failed."""
    c: ClusterConfig = cfg.cluster
    q = c.refine.quality_column
    work = out / "_work"
    cache = Path(c.embed.cache_dir or out / "_embeddings")
    cache.mkdir(parents=True, exist_ok=True)
    shas, seconds = _input_shas(inp), {}

    embed = c.embed.model_dump(mode="json", exclude={"cache_dir"})  # precision: the resolved one
    embed["resolved"] = {k: v for k, v in resolved.items() if k != "kmeans_backend"}
    for p in shards:  # a finished shard whose cache file went away (or moved with the dir) is embedded again
        m = io.read_marker(work / "embed", p.stem)
        if m and npy_rows(cache / m["embeddings"]) != m["rows_in"]:
            io.marker_path(work / "embed", p.stem).unlink()
    tasks = [_task(p.stem, embed_shard, dict(path=str(p), sha=shas.get(p.name), key=p.stem, work=str(work / "embed"),
                                             cache_dir=str(cache), embed=embed, batch_size=cfg.run.docs_per_batch)) for p in shards]
    r = runner.work_phase(phase, "cluster:embed", work / "embed", tasks, io.content_hash([embed]), fp)
    seconds["embed"] = r.seconds
    if not r.ok:
        return runner.stopped(STAGE, out, header, r)
    emarkers = {p.stem: io.read_marker(work / "embed", p.stem) for p in shards}
    files = [(str(p), str(cache / emarkers[p.stem]["embeddings"]), emarkers[p.stem]["rows_in"]) for p in shards]

    fitted = fit(files, c, cfg.run.seed, work, resolved["kmeans_backend"])
    seconds["fit"] = fitted["seconds"]

    tasks = [_task(p.stem, census_shard, dict(path=str(p), key=p.stem, work=str(work / "census"), embeddings=f,
                                              centroids=fitted["centroids"], spherical=c.kmeans.spherical, quality_column=q))
             for p, (_, f, _) in zip(shards, files)]
    r = runner.work_phase(phase, "cluster:census", work / "census", tasks, io.content_hash([fitted["hash"], q]), fp)
    seconds["census"] = r.seconds
    if not r.ok:
        return runner.stopped(STAGE, out, header, r)
    k0 = fitted["k_init"]
    counts, qsum, qn = np.zeros(k0, np.int64), np.zeros(k0), np.zeros(k0)
    for p in shards:
        cen = io.read_marker(work / "census", p.stem)["census"]
        counts += np.asarray(cen["docs"], np.int64)
        if q:
            qsum += cen["quality_sum"]
            qn += cen["quality_n"]
    quality = np.where(qn > 0, qsum / np.maximum(qn, 1), np.nan) if q else None
    init_c = np.load(fitted["centroids"])
    rf = c.refine
    ref = kmeans.refine(init_c, counts, k=rf.k, method=rf.method, distance=rf.distance, min_docs=rf.min_docs,
                        quality=quality, min_quality=rf.min_quality, spherical=c.kmeans.spherical)
    refined = work / "refined.npz"

    def save_refined(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, init_centroids=init_c, mapping=ref.mapping, final_centroids=ref.centroids)

    io.atomic_write(refined, save_refined)

    from pipeline.models.embedder import default_model_path

    info = {
        "stage": STAGE, "version": __version__, "seed": cfg.run.seed, "examples": c.describe.examples,
        "embedding": {"model": c.embed.model or f"all-MiniLM-L6-v2 ({Path(default_model_path()).parent.name})",
                      "max_tokens": c.embed.max_tokens, "precision": resolved["precision"], "device": resolved["device"],
                      "dtype": "float16", "cache_dir": str(cache), "files": {k_: m["embeddings"] for k_, m in sorted(emarkers.items())}},
        "kmeans": {"k_init": c.kmeans.k_init, "k_init_used": k0, "sample_rows": fitted["sample_rows"], "rows": fitted["rows"],
                   "niter": c.kmeans.niter, "spherical": c.kmeans.spherical, "backend": fitted["backend"], "objective": fitted["objective"],
                   "docs_per_cluster": counts.tolist(),
                   **({"mean_quality": [round(float(v), 6) if np.isfinite(v) else None for v in quality]} if q else {})},
        "refine": {**rf.model_dump(mode="json"), "pruned": ref.pruned},
    }
    tasks = [_task(p.stem, write_shard, dict(path=str(p), out=str(out), key=p.stem, work=str(work), embeddings=f,
                                             refined=str(refined), vocab=fitted["vocab"], cfg=c.model_dump(mode="json"),
                                             batch_size=cfg.run.docs_per_batch))
             for p, (_, f, _) in zip(shards, files)]
    (work / "terms").mkdir(parents=True, exist_ok=True)
    return tasks, info, fitted, seconds


def _annotate(out: Path, res: runner.StageResult, embedding: dict, seconds: dict, resolved: dict) -> None:
    """Reference the embedding cache from the manifest, record the driver's choices for `auto` (and
    this machine's cpu_bf16) in manifest and _stats.json, and time every pass in _stats.json."""
    from pipeline.models.embedder import describe

    numerics = {**describe({k: v for k, v in resolved.items() if k != "kmeans_backend"}), "kmeans_backend": resolved["kmeans_backend"]}
    res.manifest["embeddings"] = embedding
    res.manifest["resolved"] = numerics
    io.write_json(res.manifest, out / io.MANIFEST)
    st = io.read_json(out / io.STATS) if (out / io.STATS).exists() else {}
    st["resolved"] = numerics
    st.setdefault("timings", {})["passes"] = {k: round(v, 3) for k, v in seconds.items()}
    st["timings"]["wall_seconds"] = round(sum(seconds.values()), 3)
    io.write_json(st, out / io.STATS)


SPEC = Stage(STAGE, run=run, recompute_on_growth=True)
