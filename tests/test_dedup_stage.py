"""The dedup stage on the bundled corpus with real Ray: ground truth, accounting, resume after
SIGKILL, independence of shard/partition counts, incremental --against, CLI and stats."""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import config, driver, io
from stages.dedup.text import shingles
from tests.conftest import ROOT, all_ids, clean_env, curate_bin, kill_group, output_hashes

THRESHOLD = 0.8


def run_dedup(inp: Path, out: Path, **dedup) -> list:
    cfg = config.parse({"run": {"output": str(out.parent / "run"), "ray": {"num_cpus": 2}, "docs_per_batch": 500}, "dedup": dedup})
    results = driver.run(cfg, [driver.StagePlan("dedup", inp, out)], show_progress=False)
    assert all(r.ok for r in results), [r.failed for r in results]
    return results


def ingest(src: Path, out: Path, target_rows: int) -> Path:
    cfg = config.parse({"run": {"output": str(out.parent), "ray": {"num_cpus": 2}, "shard": {"target_rows": target_rows}},
                        "ingest": {"inputs": [{"path": str(src), "source_field": "domain"}]}})
    results = driver.run(cfg, [driver.StagePlan("ingest", None, out)], show_progress=False)
    assert all(r.ok for r in results)
    return out


def read_dir(d: Path) -> tuple[pa.Table, pa.Table]:
    rej = pq.read_table(d / io.REJECTED)
    files = io.shard_files(d)
    kept = pa.concat_tables([pq.read_table(p) for p in files], promote_options="permissive") if files else rej.schema.empty_table()
    return kept, rej


def groups_of(d: Path) -> dict[str, int]:
    """id -> dup_group for every document in a group (kept and rejected)."""
    out = {}
    for t in read_dir(d):
        for i, g in zip(t.column("id").to_pylist(), t.column("dup_group").to_pylist()):
            if g is not None:
                out[i] = g
    return out


def texts_of(d: Path) -> dict[str, str]:
    out = {}
    for p in io.shard_files(d):
        t = pq.read_table(p, columns=["id", "text"])
        out.update(zip(t.column("id").to_pylist(), t.column("text").to_pylist()))
    return out


def truth(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def small(tmp_path_factory, ray_session):
    """data/sample_small ingested into 4 shards, and the same 1500 documents as ONE shard."""
    tmp = tmp_path_factory.mktemp("dedup")
    four = ingest(ROOT / "data" / "sample_small", tmp / "ing" / "ingest", target_rows=400)
    one = tmp / "one"
    one.mkdir()
    pq.write_table(pa.concat_tables([pq.read_table(p) for p in io.shard_files(four)]), one / "part-00000.parquet")
    assert len(io.shard_files(four)) == 4
    return tmp, four, one


@pytest.fixture(scope="module")
def fuzzy_run(small):
    tmp, four, _ = small
    out = tmp / "fuzzy"
    run_dedup(four, out)
    return out


def test_exact_finds_every_exact_and_normalized_copy(small):
    tmp, four, _ = small
    out = tmp / "exact"
    run_dedup(four, out, method="exact")
    kept, rej = read_dir(out)
    groups = groups_of(out)
    copies = [r for r in truth(ROOT / "data" / "injected_small.jsonl") if r["kind"] in ("exact_dup", "norm_dup")]
    assert len(copies) == 44
    for r in copies:
        assert r["id"] in groups and groups[r["id"]] == groups[r["of"][0]], r
    assert set(rej.column("reason").to_pylist()) == {"dup:exact"}
    # One copy kept per group; every rejected row names a kept document of its group.
    kept_ids = set(kept.column("id").to_pylist())
    for i, d, g in zip(rej.column("id").to_pylist(), rej.column("dup_of").to_pylist(), rej.column("dup_group").to_pylist()):
        assert d in kept_ids and groups[d] == g and i not in kept_ids
    kept_groups = [g for g in kept.column("dup_group").to_pylist() if g is not None]
    assert len(kept_groups) == len(set(kept_groups)) == len(set(groups.values()))
    # Exact found no near duplicates: their texts differ.
    near = [r["id"] for r in truth(ROOT / "data" / "injected_small.jsonl") if r["kind"] == "near_dup"]
    assert not set(near) & set(rej.column("id").to_pylist())


def _pair_quality(out: Path, inp: Path, truth_path: Path) -> dict:
    """Recall over injected near duplicates whose true word-5-gram Jaccard (our normalization,
    computed here with plain Python sets) is >= THRESHOLD; precision over every pair of documents
    put in one group, counting a pair correct when both derive from the same original (injected
    copy / near copy) or their true Jaccard is >= THRESHOLD."""
    groups, texts = groups_of(out), texts_of(inp)
    family = {r["id"]: r["of"][0] for r in truth(truth_path) if r["kind"] in ("exact_dup", "norm_dup", "near_dup")}
    cache: dict[str, set] = {}

    def jac(a: str, b: str) -> float:
        x = cache.setdefault(a, set(shingles(texts[a])))
        y = cache.setdefault(b, set(shingles(texts[b])))
        return len(x & y) / len(x | y) if x | y else 1.0

    near = [(r["id"], r["of"][0]) for r in truth(truth_path) if r["kind"] == "near_dup"]
    positives = [(a, b) for a, b in near if jac(a, b) >= THRESHOLD]
    found = [(a, b) for a, b in positives if a in groups and groups.get(a) == groups.get(b)]
    members = defaultdict(list)
    for i, g in groups.items():
        members[g].append(i)
    pairs = [p for m in members.values() for p in itertools.combinations(sorted(m), 2)]
    correct = [(a, b) for a, b in pairs if family.get(a, a) == family.get(b, b) or jac(a, b) >= THRESHOLD]
    below = [(a, b) for a, b in near if (a, b) not in positives and a in groups and groups.get(a) == groups.get(b)]
    return {"positives": len(positives), "recall": len(found) / len(positives), "pairs": len(pairs),
            "precision": len(correct) / len(pairs), "below_threshold_found": len(below), "near": len(near)}


def test_fuzzy_precision_recall_on_injected_near_duplicates(small, fuzzy_run):
    _, four, _ = small
    q = _pair_quality(fuzzy_run, four, ROOT / "data" / "injected_small.jsonl")
    print("sample_small fuzzy quality:", q)
    assert q["positives"] >= 5 and q["recall"] >= 0.9 and q["precision"] >= 0.9, q
    assert q["below_threshold_found"] == 0  # the verify step drops candidates under the threshold
    _, rej = read_dir(fuzzy_run)
    reasons = set(rej.column("reason").to_pylist())
    assert reasons == {"dup:exact", "dup:fuzzy"}


@pytest.mark.slow
def test_fuzzy_precision_recall_full_corpus(tmp_path, ray_session):
    """All 17k documents of data/sample: 518 injected near duplicates (Jaccard 0.42-0.999)."""
    inp = ingest(ROOT / "data" / "sample", tmp_path / "ing" / "ingest", target_rows=2500)
    out = tmp_path / "dedup"
    run_dedup(inp, out)
    q = _pair_quality(out, inp, ROOT / "data" / "injected.jsonl")
    print("full corpus fuzzy quality:", q)
    assert q["positives"] >= 100 and q["recall"] >= 0.9 and q["precision"] >= 0.9, q
    groups = groups_of(out)
    copies = [r for r in truth(ROOT / "data" / "injected.jsonl") if r["kind"] in ("exact_dup", "norm_dup")]
    assert all(groups.get(r["id"]) is not None and groups[r["id"]] == groups.get(r["of"][0]) for r in copies)


def test_accounting_invariant_and_nothing_lost(small, fuzzy_run):
    _, four, _ = small
    man = io.read_json(fuzzy_run / io.MANIFEST)
    assert man["status"] == "complete" and man["stage"] == "dedup"
    assert [k for k in man["shards"]] == [p.stem for p in io.shard_files(four)]  # names follow the input
    for key, s in man["shards"].items():
        assert s["rows_in"] == s["kept"] + s["rejected"] + s["quarantined"], key
        on_disk = {sub: sum(pq.ParquetFile(fuzzy_run / f["dir"] / f["name"]).metadata.num_rows for f in s["files"] if f["dir"] == sub)
                   for sub in ("", io.REJECTED)}
        assert (on_disk[""], on_disk[io.REJECTED]) == (s["kept"], s["rejected"])
    ids = all_ids(fuzzy_run)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(all_ids(four))
    kept, rej = read_dir(fuzzy_run)
    assert {"dup_group"} <= set(kept.column_names) and {"dup_group", "dup_of", "reason", "stage"} <= set(rej.column_names)
    assert set(kept.column_names) - {"dup_group"} == set(pq.read_schema(io.shard_files(four)[0]).names)
    # Every stage's work dir keeps the invariant too (the runner checked it task by task).
    for m in (fuzzy_run / "_work").glob("*/_manifest.json"):
        assert io.read_json(m)["status"] == "complete"


def test_stats_json_and_curate_stats(fuzzy_run):
    s = io.read_json(fuzzy_run / io.STATS)["dedup"]
    man = io.read_json(fuzzy_run / io.MANIFEST)["totals"]
    assert sum(s["docs_removed"].values()) == man["rejected"]
    assert sum(s["tokens_removed"].values()) == man["tokens_rejected"] > 0
    hist = {int(k): v for k, v in s["group_size_histogram"].items()}
    assert sum(hist.values()) == s["groups"] and sum((k - 1) * v for k, v in hist.items()) == man["rejected"]
    assert s["fuzzy"]["verified_pairs"] <= s["fuzzy"]["checked_pairs"] <= s["fuzzy"]["candidate_pairs"]
    r = subprocess.run([curate_bin(), "stats", str(fuzzy_run)], capture_output=True, text=True, timeout=120, env=clean_env(COLUMNS="200"))
    assert r.returncode == 0, r.stderr
    assert "dup:fuzzy" in r.stdout and "group size" in r.stdout, r.stdout


def test_same_kept_ids_with_one_shard_and_other_partitions(small, fuzzy_run):
    tmp, _, one = small
    out = tmp / "one_shard"
    run_dedup(one, out, partitions=3)
    a_kept, a_rej = read_dir(fuzzy_run)
    b_kept, b_rej = read_dir(out)
    assert sorted(a_kept.column("id").to_pylist()) == sorted(b_kept.column("id").to_pylist())
    key = lambda t: sorted(zip(t.column("id").to_pylist(), t.column("dup_of").to_pylist(), t.column("reason").to_pylist()))  # noqa: E731
    assert key(a_rej) == key(b_rej)


def test_rerun_is_a_noop_and_changed_config_is_refused(small, fuzzy_run):
    _, four, _ = small
    before = output_hashes(fuzzy_run)
    marker = next((fuzzy_run / io.DONE).glob("*.json"))
    mtime = marker.stat().st_mtime_ns
    run_dedup(four, fuzzy_run)
    assert marker.stat().st_mtime_ns == mtime and output_hashes(fuzzy_run) == before
    cfg = config.parse({"run": {"output": str(fuzzy_run.parent / "run"), "ray": {"num_cpus": 2}, "docs_per_batch": 500},
                        "dedup": {"fuzzy": {"threshold": 0.7}}})
    from pipeline.runner import StageConflict

    with pytest.raises(StageConflict, match="--force"):
        driver.run(cfg, [driver.StagePlan("dedup", four, fuzzy_run)], show_progress=False)
    # --force recomputes everything (the final pass must not lose the work dir it reads).
    forced = fuzzy_run.parent / "forced"
    run_dedup(four, forced, method="exact")
    res = driver.run(cfg, [driver.StagePlan("dedup", four, forced)], force=True, show_progress=False)
    assert res[-1].ok and io.read_json(forced / io.MANIFEST)["config_hash"] == cfg.stage_hash("dedup")
    assert "dup:fuzzy" in io.read_json(forced / io.STATS)["dedup"]["docs_removed"]
    assert not list((forced / "_work").glob("*/_lock")) and not (forced / "_work" / "_lock").exists()


def test_keep_rule_prefers_score_then_length_then_id(tmp_path, ray_session):
    base = "the quick brown fox jumps over the lazy dog near the river bank today"
    rows = {"id": ["d", "c", "b", "a", "e", "f"], "text": [base, base.upper(), base + " !", base, "unrelated words here and there", base],
            "source": ["s"] * 6, "meta": ["{}"] * 6, "n_tokens": [14] * 6, "quality": [0.1, 0.9, 0.5, 0.1, 0.3, None]}
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table(rows), inp / "part-00000.parquet")
    run_dedup(inp, tmp_path / "best", method="exact")
    kept, rej = read_dir(tmp_path / "best")
    assert sorted(kept.column("id").to_pylist()) == ["b", "c", "e"]  # c: best score; b: "!" differs under exact
    assert set(rej.column("dup_of").to_pylist()) == {"c"}
    run_dedup(inp, tmp_path / "first", method="exact", keep="first")
    kept, _ = read_dir(tmp_path / "first")
    assert sorted(kept.column("id").to_pylist()) == ["a", "b", "e"]
    run_dedup(inp, tmp_path / "fuzzy", method=["exact", "fuzzy"], keep="longest")
    kept, rej = read_dir(tmp_path / "fuzzy")
    assert sorted(kept.column("id").to_pylist()) == ["b", "e"]  # b is the longest text
    assert dict(zip(rej.column("id").to_pylist(), rej.column("reason").to_pylist()))["a"] == "dup:fuzzy"


def test_incremental_against_an_earlier_run(small, fuzzy_run):
    """Dedup shards 2-3 against the output of shards 0-1: no old document is read again except
    the few matched ones, and the result agrees with deduplicating everything at once."""
    tmp, four, _ = small
    shards = io.shard_files(four)
    old_in, new_in = tmp / "inc_old_in", tmp / "inc_new_in"
    for d, part in ((old_in, shards[:2]), (new_in, shards[2:])):
        d.mkdir()
        for p in part:
            os.link(p, d / p.name)
    old_out, new_out = tmp / "inc_old", tmp / "inc_new"
    run_dedup(old_in, old_out)
    assert (old_out / "_index" / "index.json").exists()
    run_dedup(new_in, new_out, against=[str(old_out)])
    old_kept = set(read_dir(old_out)[0].column("id").to_pylist())
    new_kept, new_rej = read_dir(new_out)
    against = [(i, d) for i, d in zip(new_rej.column("id").to_pylist(), new_rej.column("dup_of").to_pylist()) if d in old_kept]
    assert against, "no document of the new batch matched the old output"
    assert len(list((new_out / "_work" / "sig" / io.DONE).glob("*.json"))) == 2  # only the new shards were signed
    all_kept = old_kept | set(new_kept.column("id").to_pylist())
    joint_kept = set(read_dir(fuzzy_run)[0].column("id").to_pylist())
    assert len(all_kept) == len(joint_kept)
    # Each group of the joint run keeps exactly one document across the two incremental outputs.
    joint_groups = groups_of(fuzzy_run)
    per_group = defaultdict(int)
    for i in all_kept:
        if i in joint_groups:
            per_group[joint_groups[i]] += 1
    assert set(per_group.values()) == {1}
    st = io.read_json(new_out / io.STATS)["dedup"]
    assert st["groups_with_against_doc"] > 0 and st["against"] == [str(old_out.resolve())]
    # A third batch against the second one also sees the first (indexes chain).
    third = tmp / "inc_third"
    run_dedup(old_in, third, against=[str(new_out)])
    kept3, rej3 = read_dir(third)
    assert kept3.num_rows == 0 and rej3.num_rows == sum(pq.ParquetFile(p).metadata.num_rows for p in io.shard_files(old_in))
    assert set(rej3.column("dup_of").to_pylist()) <= old_kept


@pytest.mark.slow
def test_resume_after_sigkill_is_byte_identical(small, fuzzy_run, tmp_path):
    _, four, _ = small
    out = tmp_path / "killed"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"run: {{output: {tmp_path / 'run'}, docs_per_batch: 500, ray: {{num_cpus: 2}}}}\n")
    cmd = [curate_bin(), "dedup", "-i", str(four), "-o", str(out), "-c", str(cfg), "-q"]
    p = subprocess.Popen(cmd, start_new_session=True, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "_work" / "buckets" / io.DONE
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None and not (done.exists() and any(done.glob("*.json"))):
        time.sleep(0.02)
    killed_mid_run = p.poll() is None
    kill_group(p)
    assert killed_mid_run, "dedup finished before it could be killed"
    assert not (out / io.MANIFEST).exists() or io.read_json(out / io.MANIFEST)["status"] != "complete"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert output_hashes(out) == output_hashes(fuzzy_run)  # kept, rejected, index and every pass file


def test_cli_dedup_method_and_bad_config(small, tmp_path):
    _, four, _ = small
    out = tmp_path / "cli"
    r = subprocess.run([curate_bin(), "dedup", "-i", str(four), "-o", str(out), "--method", "exact", "-q"],
                       capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stderr[-2000:]
    assert set(pq.read_table(out / io.REJECTED).column("reason").to_pylist()) == {"dup:exact"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("dedup:\n  fuzzy: {bands: 10, rows: 8}\n")
    r = subprocess.run([curate_bin(), "dedup", "-i", str(four), "-o", str(tmp_path / "x"), "-c", str(bad)],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2 and "dedup.fuzzy" in r.stderr and "num_perm" in r.stderr, r.stderr
    r = subprocess.run([curate_bin(), "dedup", "-i", str(four), "-o", str(tmp_path / "y"), "--method", "fuzy"],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2 and "fuzy" in r.stderr


def test_semantic_dedup_cpu(small, tmp_path):
    """SemDeDup on 300 documents with the bundled MiniLM on CPU: copies and light edits group."""
    _, four, _ = small
    t = pa.concat_tables([pq.read_table(p) for p in io.shard_files(four)])
    ids = t.column("id").to_pylist()
    near = {r["id"]: r for r in truth(ROOT / "data" / "injected_small.jsonl") if r["kind"] in ("near_dup", "exact_dup", "norm_dup")}
    pick = [i for i, x in enumerate(ids) if x in near and near[x]["of"][0] in ids][:24]
    pick += [ids.index(near[ids[i]]["of"][0]) for i in pick]
    pick = sorted(set(pick) | set(range(60)))
    inp = tmp_path / "sem_in"
    inp.mkdir()
    pq.write_table(t.take(pick), inp / "part-00000.parquet")
    out = tmp_path / "sem"
    run_dedup(inp, out, method="semantic", semantic={"threshold": 0.95, "docs_per_cluster": 50, "max_tokens": 128})
    _, rej = read_dir(out)
    reasons = dict(zip(rej.column("id").to_pylist(), rej.column("reason").to_pylist()))
    assert "dup:semantic" in reasons.values()
    sem = io.read_json(out / io.STATS)["dedup"]["semantic"]
    assert sem["clusters"] >= 2 and sem["pairs"] > 0
    # Most injected copies are found (a copy and its original may land in different clusters).
    picked = {ids[i] for i in pick}
    copies = [x for x in picked if x in near and near[x]["of"][0] in picked]
    assert len(copies) >= 10
    found = [c for c in copies if c in reasons or near[c]["of"][0] in reasons]
    assert len(found) >= 0.8 * len(copies), (found, copies)
    exact_copies = [c for c in copies if near[c]["kind"] != "near_dup"]
    assert all(c in reasons or near[c]["of"][0] in reasons for c in exact_copies)  # identical text: always


def _split_corpus(d: Path, n_shards: int) -> Path:
    """The same 480 documents (every 4th an exact copy of another, every 6th a near copy) cut into n shards."""
    import numpy as np

    r = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    base = [" ".join(r.choice(words, 60).tolist()) for _ in range(360)]
    texts = base + [base[i] for i in range(0, 360, 4)] + [base[i] + " extra" for i in range(1, 360, 6)][:30]
    ids = [f"doc{i:04d}" for i in range(len(texts))]
    d.mkdir(parents=True)
    per = -(-len(texts) // n_shards)
    for s in range(n_shards):
        sl = slice(s * per, (s + 1) * per)
        pq.write_table(pa.table({"id": ids[sl], "text": texts[sl], "source": ["x"] * len(ids[sl])}), d / f"part-{s:05d}.parquet")
    return d


def test_task_arguments_do_not_grow_with_the_number_of_shards(tmp_path):
    """Reducers read their sources from per-pass index files: the largest task argument is the same
    size with 4 and 16 shards (= 4 and 16 partitions), where lists of every shard's files grew 4x;
    and the kept documents are the same."""
    import pickle
    from functools import partial

    from pipeline import runner
    from stages.dedup import stage as dedup_stage

    sizes, kept = {}, {}
    for n in (4, 16):
        inp = _split_corpus(tmp_path / f"in{n}", n)
        seen: list[int] = []

        def phase(name, out, tasks, **kw):
            seen.extend(len(pickle.dumps(t.kwargs)) for t in tasks)
            return runner.run_stage(name, out, tasks, use_ray=False, show_progress=False, max_retries=0, **kw)

        cfg = config.parse({"run": {"output": str(tmp_path / f"run{n}")}, "dedup": {"method": ["exact", "fuzzy"]}})
        res = dedup_stage.run(cfg, inp, tmp_path / f"out{n}", partial(phase))
        assert res.ok, res.failed
        sizes[n] = max(seen)
        kept[n] = sorted(i for p in io.shard_files(tmp_path / f"out{n}") for i in pq.read_table(p, columns=["id"]).column("id").to_pylist())
    assert kept[4] == kept[16] and len(kept[4]) < 480
    assert sizes[16] < 1.2 * sizes[4], sizes


def _decisions(d: Path) -> list:
    kept, rej = read_dir(d)
    return sorted([*((i, None, None, g) for i, g in zip(*(kept.column(c).to_pylist() for c in ("id", "dup_group")))),
                   *zip(*(rej.column(c).to_pylist() for c in ("id", "dup_of", "reason", "dup_group")))], key=lambda r: r[0])


def test_homes_group_small_shards_and_decisions_do_not_change(tmp_path):
    """40 small shards: the per-document passes run one task per home of 3 shards and the global
    ones 16 partitions (not 40 x 40 shuffle blocks), and every decision (kept ids, dup_of, reason,
    dup_group) equals the one-shard run's and that of a run whose docs_per_partition makes every
    shard its own home (40 partitions)."""
    from pipeline import runner
    from stages.dedup import stage as dedup_stage

    runs = {}
    for name, n, dedup in (("one", 1, {}), ("homes", 40, {}), ("per_shard", 40, {"docs_per_partition": 12})):
        inp = _split_corpus(tmp_path / f"in-{name}", n)
        tasks: dict[str, int] = {}

        def phase(stage, out, ts, **kw):
            tasks[stage] = len(ts)
            return runner.run_stage(stage, out, ts, use_ray=False, show_progress=False, max_retries=0, **kw)

        cfg = config.parse({"run": {"output": str(tmp_path / f"run-{name}")}, "dedup": {"method": ["exact", "fuzzy"], **dedup}})
        res = dedup_stage.run(cfg, inp, tmp_path / f"out-{name}", phase)
        assert res.ok, res.failed
        runs[name] = (tasks, _decisions(tmp_path / f"out-{name}"))
    assert runs["homes"][0]["dedup:verify_a"] == 14 and runs["homes"][0]["dedup:buckets"] == 16 and runs["homes"][0]["dedup"] == 40
    assert runs["per_shard"][0]["dedup:verify_a"] == 40 and runs["per_shard"][0]["dedup:buckets"] == 40
    one = runs["one"][1]
    assert len(one) == 480 and sum(r[1] is not None for r in one) > 100
    assert runs["homes"][1] == one and runs["per_shard"][1] == one


def _cluster_corpus() -> tuple[list[str], list[str]]:
    """~500 documents in shuffled order: unique texts, exact copies (clusters of 2-4), near copies
    (1-3 last words replaced) and one cluster of 61 near copies each one word off the same original
    (each >= 0.8 Jaccard to it, many pairs of copies < 0.8 to each other: which pairs a big LSH
    bucket checks decides the group). The first and the last document have exact copies (uid 0,
    last row of the last shard). -> (ids, texts)."""
    import numpy as np

    r = np.random.default_rng(0)
    words = [str(i).translate(str.maketrans("0123456789", "abcdefghij")) + "x" for i in range(2000)]  # no digits: fuzzy maps them to 0
    base = [" ".join(r.choice(words, 80).tolist()) for _ in range(300)]
    texts, of = list(base), list(range(300))
    for i in range(40):
        texts += [base[i]] * int(r.integers(1, 4))
        of += [i] * (len(texts) - len(of))
    for i in range(40, 80):
        for k in range(int(r.integers(1, 4))):
            w = base[i].split()
            w[-1 - k] = f"z{k}"
            texts.append(" ".join(w))
            of.append(i)
    for k in range(60):
        w = base[299].split()
        w[k] = f"y{k}"
        texts.append(" ".join(w))
        of.append(299)
    ids = [f"d{i:05d}" for i in range(len(texts))]
    perm = r.permutation(len(texts)).tolist()
    ends = [i for i in perm if of[i] < 40][:2]
    perm = [ends[0], *(i for i in perm if i not in ends), ends[1]]
    return [ids[i] for i in perm], [texts[i] for i in perm]


def _write_shards(d: Path, ids: list[str], texts: list[str], n_shards: int) -> list[int]:
    """The documents dealt over n shards in another random order, cut at random places (so some
    shards hold 0 or 1 documents), the first and last staying first (uid 0) and last; -> rows per shard."""
    import numpy as np

    r = np.random.default_rng(n_shards)
    order = np.r_[0, 1 + r.permutation(len(ids) - 2), len(ids) - 1] if n_shards > 1 else np.arange(len(ids))
    cuts = [0, *np.sort(r.integers(1, len(ids), n_shards - 1)).tolist(), len(ids)]
    d.mkdir(parents=True)
    for s in range(n_shards):
        sel = order[cuts[s]:cuts[s + 1]].tolist()
        pq.write_table(pa.table({"id": pa.array([ids[i] for i in sel], pa.string()), "text": pa.array([texts[i] for i in sel], pa.string()),
                                 "source": pa.array(["x"] * len(sel), pa.string())}), d / f"part-{s:05d}.parquet")
    return [b - a for a, b in zip(cuts, cuts[1:])]


@pytest.mark.slow
def test_decisions_do_not_depend_on_the_sharding(tmp_path, ray_session):
    """The same corpus as 1 shard and as 64 shards (empty and one-row shards among them, clusters
    spread over many shards; default partitions = 64, and 5): the same kept ids, the same dup_of,
    dup_group and reason for every document, and rows in = kept + rejected + quarantined per shard.
    Regressions: an empty shard failed the final write; a bucket over max_pairs_bucket was verified
    as a star around its smallest uid, so its group followed the shard layout."""
    ids, texts = _cluster_corpus()
    sizes = _write_shards(tmp_path / "in64", ids, texts, 64)
    assert sizes.count(0) >= 2 and 1 in sizes and len(ids) == sum(sizes)
    _write_shards(tmp_path / "in1", ids, texts, 1)
    fuzzy = {"max_pairs_bucket": 8}
    runs = {"1": ("in1", {}), "64": ("in64", {}), "64/5": ("in64", {"partitions": 5})}
    decisions = {}
    for name, (inp, extra) in runs.items():
        out = tmp_path / f"out{name.replace('/', '_')}"
        run_dedup(tmp_path / inp, out, fuzzy=fuzzy, **extra)
        man = io.read_json(out / io.MANIFEST)
        assert list(man["shards"]) == [p.stem for p in io.shard_files(tmp_path / inp)]
        for key, s in man["shards"].items():
            assert s["rows_in"] == s["kept"] + s["rejected"] + s["quarantined"], (name, key)
        assert man["totals"]["rows_in"] == len(ids) and man["totals"]["quarantined"] == 0
        kept, rej = read_dir(out)
        assert kept.num_rows + rej.num_rows == len(ids)
        decisions[name] = ({i: (None, g, None) for i, g in zip(kept.column("id").to_pylist(), kept.column("dup_group").to_pylist())}
                           | {i: (d, g, r) for i, d, g, r in zip(*(rej.column(c).to_pylist() for c in ("id", "dup_of", "dup_group", "reason")))})
    one = decisions["1"]
    assert set(one) == set(ids)
    assert {i for i, (d, g, _) in one.items() if g is not None} >= {ids[0], ids[-1]}  # uid 0 and the last row are grouped
    assert sum(d is not None for d, _, _ in one.values()) > 150 and {r for *_, r in one.values()} == {None, "dup:exact", "dup:fuzzy"}
    for name in ("64", "64/5"):
        diff = {i: (one[i], decisions[name][i]) for i in ids if one[i] != decisions[name][i]}
        assert not diff, (name, len(diff), list(diff.items())[:5])
