"""dedup: exact, MinHash-LSH fuzzy and semantic deduplication as a chain of Ray passes.

    sig ─ buckets ─ [verify_a ─ verify_b] ─ [kmeans ─ assign ─ sem_pairs] ─ cc (rounds) ─ groups ─ elect ─ write

Every pass is one `phase` (runner.run_stage) into `<out>/_work/<pass>`, with its own markers, so a
killed run resumes at the first unfinished task. Tasks are per input shard ("homes": signatures,
verification, components, groups, the final write) or per hash partition (LSH buckets, the
election of keepers, semantic clusters); rows move between them through Parquet shuffle files
(`stages.dedup.shuffle`), so no task holds more than its shard or partition.

The output keeps the input's shard names. Rejected rows carry `reason` (dup:exact when the text
equals the kept document's after the exact normalization, else dup:fuzzy / dup:semantic), `dup_of`
(id of the kept document) and `dup_group`; kept rows carry `dup_group` (null when unique).
`_index/` holds the band hashes of the kept documents, for `--against` in a later run.
"""
from __future__ import annotations

import hashlib
import math
import shutil
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from pipeline import io, lock, runner
from pipeline.config import Config, ConfigError
from pipeline.registry import Stage
from stages.dedup import passes, passes_groups, passes_semantic, shuffle
from stages.dedup.tables import home_shards

STAGE = "dedup"
WORK, INDEX = "_work", "_index"
MIN_TASKS = 16  # partitions and homes of a run with at least this many shards, however few its documents


class _PassFailed(Exception):
    def __init__(self, result: runner.StageResult):
        self.result = result


def _pass_markers(directory: Path, keys: list[str]) -> dict:
    """A finished pass's markers, read one at a time: the `parts` of each shuffle file go into one
    index file per file-name prefix (`_index-<prefix>.parquet`, shuffle.write_index, in task
    order), and the markers are kept without them, so the driver never holds the pass's
    O(tasks x partitions) row-group map as Python objects."""
    for stale in directory.glob("_index-*.parquet"):
        stale.unlink()
    tables: dict[str, list] = {}
    markers = {}
    for k in keys:
        m = io.read_marker(directory, k)
        for f in m.get("kept_files", []):
            parts = f.pop("parts", None)
            if parts is not None:
                tables.setdefault(f["name"].split("-")[0], []).append(shuffle.index_rows(str(directory / f["name"]), parts))
        markers[k] = m
    for prefix, ts in tables.items():
        shuffle.write_index(directory / f"_index-{prefix}.parquet", ts)
    return markers


def _srcs(directory: Path, prefix: str) -> list[str]:
    """The pass's shuffle files of `prefix` (e.g. "bands"), as its one index file (`_pass_markers`;
    an empty one when no task wrote such a file): a one-item list, so sources of several passes add
    up to a few paths, never O(files)."""
    path = directory / f"_index-{prefix}.parquet"
    if not path.exists():
        shuffle.write_index(path, [])
    return [str(path)]


def _for_part(srcs: list, p: int) -> list:
    """What partition p reads: index files as they are (the task reads p's rows), (path, parts)
    items cut to p. Each task's arguments stay O(1) in the number of files and partitions."""
    k = str(p)
    return [s if isinstance(s, str) else (s[0], {k: s[1][k]}) for s in srcs if isinstance(s, str) or k in s[1]]


# ---------------------------------------------------------------------------- --against indexes


def against_closure(dirs: list[Path]) -> list[tuple[Path, dict]]:
    """The --against dirs and, transitively, the dirs their indexes include (in that order)."""
    out, seen, todo = [], set(), [Path(d) for d in dirs]
    while todo:
        d = todo.pop(0).resolve()
        if d in seen:
            continue
        seen.add(d)
        meta_path = d / INDEX / "index.json"
        if not meta_path.exists():
            raise ConfigError(f"dedup.against: {d} has no {INDEX}/index.json (was it written with write_index: true?)")
        meta = io.read_json(meta_path)
        out.append((d, meta))
        todo.extend(Path(x) for x in meta.get("includes", []))
    return out


def _index_params(cfg: Config) -> dict:
    d = cfg.dedup
    p = {"exact": d.exact.model_dump(mode="json")}
    if "fuzzy" in d.method:
        f = d.fuzzy.model_dump(mode="json")
        p["fuzzy"] = {k: f[k] for k in ("shingle", "ngram", "num_perm", "bands", "rows", "seed", "hash", "scheme", "normalize")}
    return p


def _check_compatible(cfg: Config, closure: list[tuple[Path, dict]]) -> int | None:
    """The partition count the indexes impose (None without --against); errors name the mismatch."""
    mine = _index_params(cfg)
    parts = {m["partitions"] for _, m in closure}
    if len(parts) > 1:
        raise ConfigError(f"dedup.against: indexes have different partition counts {sorted(parts)}; they cannot be combined")
    for d, meta in closure:
        theirs = meta.get("params", {})
        if theirs.get("exact") != mine["exact"]:
            raise ConfigError(f"dedup.against: {d} used exact normalization {theirs.get('exact')}, this run {mine['exact']}; use the same settings")
        if "fuzzy" in mine and "fuzzy" in theirs and theirs["fuzzy"] != mine["fuzzy"]:
            diff = sorted(k for k in mine["fuzzy"] if mine["fuzzy"][k] != theirs["fuzzy"].get(k))
            raise ConfigError(f"dedup.against: {d} was built with other MinHash settings ({', '.join('fuzzy.' + k for k in diff)}); use the same")
    p = parts.pop() if parts else None
    if p is not None and cfg.dedup.partitions not in (None, p):
        raise ConfigError(f"dedup.partitions: {cfg.dedup.partitions} differs from the --against index's {p}; leave it null")
    return p


def _fingerprint(inp: Path, closure: list[tuple[Path, dict]]) -> str:
    h = hashlib.sha256(io.dataset_fingerprint(inp).encode())
    for d, meta in closure:
        h.update(f"\0{d}\0".encode())
        h.update("".join(f["sha256"] for f in meta.get("files", [])).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- the stage


def run(cfg: Config, inp: Path, out: Path, phase, force: bool = False) -> runner.StageResult:
    d = cfg.dedup
    if inp is None:
        raise ConfigError("dedup: no input dataset dir; use `curate dedup --input DIR`, or run the stage before it too")
    inp, out = Path(inp), Path(out)
    shards = io.shard_files(inp)
    fps = io.shard_fingerprints(inp)
    # semantic: the embedder's precision/device, resolved here once for every task, in the hash
    resolved = resolved_embedder() if "semantic" in d.method else None
    chash = cfg.stage_hash(STAGE, {"embed": resolved} if resolved else None)
    finished = [] if force else _finished_shards(cfg, out, chash, shards, fps)
    if finished is None:  # complete, and its input is what it was made from: nothing to do
        return runner.StageResult(STAGE, out, io.read_json(out / io.MANIFEST))
    if finished:  # incremental: dedup the new shards against everything this dir kept before
        done = {t.key for t in finished}
        shards = [p for p in shards if p.stem not in done]
    stems = [p.stem for p in shards]
    n = len(shards)
    closure = against_closure([*d.against, *([out] if finished else [])])
    by_docs = max(1, min(n, MIN_TASKS), math.ceil(io.shard_rows(shards) / d.docs_per_partition))
    n_parts = _check_compatible(cfg, closure) or d.partitions or by_docs
    per_home = max(1, math.ceil(n / by_docs))  # input shards per home: a home holds ~docs_per_partition documents
    fp = _fingerprint(inp, closure)
    if not finished:
        runner.refuse_other_output(out, chash, fp, force, "dedup")
    work = out / WORK / (f"inc-{stems[0]}" if finished and stems else "")
    if force:  # clear everything once, here: a forced final pass would delete _work under our feet
        with lock.dir_lock(out):
            io.clear_dir(out)
            shutil.rmtree(out / WORK, ignore_errors=True)
            shutil.rmtree(out / INDEX, ignore_errors=True)
    phase = partial(phase, force=False)
    with lock.dir_lock(work):  # one dedup run per output dir (each pass also locks its own dir)
        return _run(cfg, d, shards, stems, closure, n_parts, per_home, chash, fp, out, work, phase, fps, finished, resolved)


def resolved_embedder() -> dict:
    from pipeline.models import embedder

    return embedder.resolve()


def _finished_shards(cfg: Config, out: Path, chash: str, shards: list[Path], fps: dict[str, str]) -> list[runner.Task] | None:
    """A complete earlier output of this config whose input has since grown by new shards only: its
    finished shards (as tasks that never run again). Empty when there is no such output (the normal
    path decides), None when it is complete and its input unchanged (and its files intact). A shard
    it was made from that changed or disappeared is refused, naming it."""
    old = io.read_json(out / io.MANIFEST) if (out / io.MANIFEST).exists() else None
    if not old or old.get("config_hash") != chash or old.get("status") != "complete":
        return []
    prev = old.get("shards") or {}
    now = {p.stem: fps[p.name] for p in shards}
    diff = runner.input_diff(old, now)
    if diff is None:  # an output without per-shard fingerprints: the normal path decides
        return []
    changed, gone = diff
    if gone or changed:
        what = "; ".join(f"input shard {w}: {', '.join(ks[:3])}" for w, ks in (("changed", changed), ("removed", gone)) if ks)
        raise runner.StageConflict(f"{out}: holds dedup output made from {what}; re-run with --force to recompute it, "
                                   "or choose another output dir")
    if set(now) == set(prev):
        return None if all(io.read_marker(out, k) is not None for k in prev) else []
    if not cfg.dedup.write_index or not (out / INDEX / "index.json").exists():
        raise runner.StageConflict(f"{out}: its input grew, but it has no {INDEX}/index.json to dedup the new shards against "
                                   "(dedup.write_index: false); re-run with --force to recompute it all")
    return [runner.Task(k, _lost_finished_shard, dict(key=k, out=str(out)), input_fp=prev[k]["input_fp"]) for k in sorted(prev)]


def _lost_finished_shard(key: str, out: str) -> dict:
    raise RuntimeError(f"{out}: the output of shard {key}, finished by an earlier run, is missing or damaged; "
                       "re-run with --force to recompute the stage")


def _run(cfg: Config, d, shards: list[Path], stems: list[str], closure, n_parts: int, per: int, chash: str, fp: str, out: Path,
         work: Path, phase, fps: dict[str, str], finished: list[runner.Task], resolved: dict | None) -> runner.StageResult:
    n = len(shards)
    params = d.model_dump(mode="json")
    if resolved:
        params["semantic"]["resolved"] = resolved
    timings: dict[str, float] = {}

    def run_pass(name: str, tasks: list[runner.Task]) -> dict:
        res = phase(f"{STAGE}:{name}", work / name, tasks, config_hash=chash, input_fingerprint=fp)
        timings[name] = round(res.seconds, 3)
        if not res.ok:
            raise _PassFailed(res)
        return _pass_markers(work / name, [t.key for t in tasks])

    n_homes = -(-n // per)

    def per_home(name: str, fn, **kw) -> dict:
        return run_pass(name, [runner.Task(f"h{h:05d}", fn, dict(out=str(work / name), key=f"h{h:05d}", h=h, **{k: (v(h) if callable(v) else v) for k, v in kw.items()}))
                               for h in range(n_homes)])

    def per_part(name: str, fn, count: int, **kw) -> dict:
        return run_pass(name, [runner.Task(f"p{p:05d}", fn, dict(out=str(work / name), key=f"p{p:05d}", p=p, **{k: (v(p) if callable(v) else v) for k, v in kw.items()}))
                               for p in range(count)])

    try:
        signature_markers = run_pass("sig", [runner.Task(stems[i], passes.sig_task, dict(
            path=str(shards[i]), out=str(work / "sig"), key=stems[i], shard=i, n_parts=n_parts, batch_size=cfg.run.docs_per_batch,
            params=params)) for i in range(n)])
        sig_path = lambda h: str(work / "sig" / f"sig-{stems[h]}.parquet")  # noqa: E731
        band_srcs = _srcs(work / "sig", "bands")
        old_srcs = [(j, str(against / INDEX / f["name"]), f["parts"]) for j, (against, meta) in enumerate(closure) for f in meta["files"]]
        old_index = [shuffle.write_index(work / "_index-against.parquet", old_srcs)] if old_srcs else []
        bucket_markers = per_part("buckets", passes.buckets_task, n_parts, band_srcs=lambda p: _for_part(band_srcs, p),
                                  old_srcs=old_index,
                                  n_homes=n_homes, per_home=per, params=params)
        edge_srcs = _srcs(work / "buckets", "edges")
        oldmatch_srcs = _srcs(work / "buckets", "oldmatch")
        verify_a_markers = verify_b_markers = {}
        if "fuzzy" in d.method and d.fuzzy.verify:
            pairs, cands = _srcs(work / "buckets", "pairs"), _srcs(work / "buckets", "oldcand")
            inputs = lambda h: {i: str(shards[i]) for i in home_shards(h, per, n)}  # noqa: E731
            verify_a_markers = per_home("verify_a", passes.verify_a_task, inputs=inputs,
                                        pair_srcs=lambda h: _for_part(pairs, h), cand_srcs=lambda h: _for_part(cands, h),
                                        old_dirs=[str(against) for against, _ in closure], n_homes=n_homes, per_home=per, params=params)
            oldmatch_srcs += _srcs(work / "verify_a", "oldmatch")
            carry = _srcs(work / "verify_a", "carry")
            verify_b_markers = per_home("verify_b", passes.verify_b_task, inputs=inputs,
                                        carry_srcs=lambda h: _for_part(carry, h), n_homes=n_homes, per_home=per, params=params)
            edge_srcs += _srcs(work / "verify_b", "edges")
        semantic_markers = {}
        if "semantic" in d.method and sum(m["docs"] for m in signature_markers.values()):  # k-means needs documents
            semantic_markers = _semantic(d, cfg, work, run_pass, per_part, signature_markers, sig_path, stems, n_parts, n_homes, per)
            edge_srcs += _srcs(work / "sem_pairs", "edges")
        label_srcs, kind_srcs, rounds = [], [], 0
        srcs = edge_srcs
        while srcs:
            rounds += 1
            large_markers = per_home(f"cc{rounds:02d}_large", passes_groups.cc_large_task, srcs=lambda h, s=srcs: _for_part(s, h),
                                     n_homes=n_homes, per_home=per, first=rounds == 1)
            if rounds == 1:
                kind_srcs = _srcs(work / f"cc{rounds:02d}_large", "kinds")
            star = _srcs(work / f"cc{rounds:02d}_large", "star")
            small_markers = per_home(f"cc{rounds:02d}_small", passes_groups.cc_small_task, srcs=lambda h, s=star: _for_part(s, h),
                                     n_homes=n_homes, per_home=per)
            srcs = _srcs(work / f"cc{rounds:02d}_small", "star")
            if sum(m["changes"] for m in (*large_markers.values(), *small_markers.values())) == 0:
                label_srcs = srcs
                break
            if rounds >= 64:
                raise RuntimeError("connected components did not converge in 64 rounds")
        per_home("groups", passes_groups.groups_task, sig_paths=lambda h: {i: sig_path(i) for i in home_shards(h, per, n)}, label_srcs=lambda h: _for_part(label_srcs, h),
                 kind_srcs=lambda h: _for_part(kind_srcs, h), old_srcs=lambda h: _for_part(oldmatch_srcs, h), n_parts=n_parts)
        members = _srcs(work / "groups", "members")
        elect_markers = per_part("elect", passes_groups.elect_task, n_parts, member_srcs=lambda p: _for_part(members, p), n_homes=n_homes,
                                 per_home=per,
                                 keep=d.keep)
        decisions = _srcs(work / "elect", "decisions")
    except _PassFailed as e:
        return e.result

    tasks = [runner.Task(stems[h], passes_groups.final_task, dict(
        path=str(shards[h]), out=str(out), key=stems[h], h=h, decision_srcs=_for_part(decisions, h // per),
        bands_file=str(work / "sig" / f"bands-{stems[h]}.parquet"), sig_path=sig_path(h),
        n_parts=n_parts, per_home=per, batch_size=cfg.run.docs_per_batch, write_index=d.write_index), input_fp=fps[shards[h].name]) for h in range(n)]
    res = phase(STAGE, out, [*finished, *tasks], config_hash=chash, input_fingerprint=fp)
    timings["write"] = round(res.seconds, 3)
    if res.ok:
        final = {t.key: io.read_marker(out, t.key) for t in [*finished, *tasks]}
        if d.write_index:
            io.write_json({"version": 1, "partitions": n_parts, "params": _index_params(cfg), "method": d.method,
                           "files": [{"name": m["index_file"]["name"], "parts": m["index_file"]["parts"],
                                      "sha256": m["index_file"]["sha256"]} for m in final.values()],
                           "includes": [str(against) for against, _ in closure if against != out.resolve()]}, out / INDEX / "index.json")
        stats = io.read_json(out / io.STATS)
        stats["dedup"] = _stats(cfg, signature_markers, bucket_markers, verify_a_markers, verify_b_markers, semantic_markers,
                                elect_markers, final, rounds, closure, timings)
        io.write_json(stats, out / io.STATS)
    return res


def _semantic(d, cfg: Config, work: Path, run_pass, per_part, signature_markers: dict, sig_path, stems: list[str],
              n_parts: int, n_homes: int, per: int) -> dict:
    s = d.semantic
    sizes = [signature_markers[k]["docs"] for k in stems]
    total = sum(sizes)
    k = s.n_clusters or max(1, math.ceil(total / s.docs_per_cluster))
    # the sample: documents picked by a hash of their text (passes_semantic.sample_rows), so the
    # centroids, and the clusters pairs are searched in, do not change with the sharding
    fraction = s.sample_size / total if total else 1.0
    kmeans_markers = run_pass("kmeans", [runner.Task("kmeans", passes_semantic.kmeans_task, dict(
        out=str(work / "kmeans"), key="kmeans", sig_paths=[sig_path(h) for h in range(len(stems))], fraction=fraction,
        k=k, seed=cfg.run.seed, iters=s.kmeans_iters))])
    centroids = str(work / "kmeans" / "centroids.parquet")
    run_pass("assign", [runner.Task(stems[h], passes_semantic.assign_task, dict(
        out=str(work / "assign"), key=stems[h], sig_path=sig_path(h), centroids_path=centroids, n_parts=n_parts))
        for h in range(len(stems))])
    assign_srcs = _srcs(work / "assign", "assign")
    pairs = per_part("sem_pairs", passes_semantic.sem_pairs_task, n_parts, assign_srcs=lambda p: _for_part(assign_srcs, p),
                     n_homes=n_homes, per_home=per, threshold=s.threshold)
    return {"kmeans": kmeans_markers, "pairs": pairs}


def _stats(cfg: Config, signature_markers, bucket_markers, verify_a_markers, verify_b_markers, semantic_markers, elect_markers,
           final, rounds, closure, timings) -> dict:
    def total(markers: dict, key: str) -> int:
        return sum(int(m.get(key, 0)) for m in markers.values())

    sizes, tokens, docs = Counter(), Counter(), Counter()
    for m in elect_markers.values():
        sizes.update({int(k): v for k, v in m.get("sizes", {}).items()})
    for m in final.values():
        docs.update({k: v for k, v in m.get("reasons", {}).items() if k.startswith("dup:")})
        tokens.update(m.get("tokens_by_reason", {}))
    out = {
        "methods": cfg.dedup.method,
        "docs_in": total(final, "rows_in"), "docs_kept": total(final, "kept"),
        "docs_removed": dict(sorted(docs.items())), "tokens_removed": dict(sorted(tokens.items())),
        "tokens_in": total(final, "tokens_in"),
        "groups": total(elect_markers, "groups"), "groups_with_against_doc": total(elect_markers, "groups_against"),
        "group_size_histogram": {str(k): sizes[k] for k in sorted(sizes)},
        "exact_pairs": total(bucket_markers, "exact_pairs"), "cc_rounds": rounds,
        "pass_seconds": timings,
    }
    if "fuzzy" in cfg.dedup.method:
        hist = np.sum([m.get("jaccard_hist", [0] * 10) for m in verify_b_markers.values()], axis=0).tolist() if verify_b_markers else []
        out["fuzzy"] = {"candidate_pairs": total(bucket_markers, "fuzzy_pairs"),
                        "candidate_pairs_against": total(bucket_markers, "fuzzy_old_pairs"),
                        "verified_pairs": total(verify_b_markers, "verified") if verify_b_markers else None,
                        "checked_pairs": total(verify_b_markers, "checked") if verify_b_markers else None,
                        "candidate_jaccard_histogram": hist, "docs_without_shingles": total(signature_markers, "no_shingles")}
    if semantic_markers:
        out["semantic"] = {"clusters": semantic_markers["kmeans"]["kmeans"]["k"], "pairs": total(semantic_markers["pairs"], "pairs")}
    if closure:
        out["against"] = [str(d) for d, _ in closure]
        fuzzy_matches = total(verify_a_markers, "old_matched") if verify_a_markers else total(bucket_markers, "fuzzy_old_pairs")
        out["against_matches"] = total(bucket_markers, "exact_old_pairs") + fuzzy_matches
    return out


SPEC = Stage(STAGE, run=run)
