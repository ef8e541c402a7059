"""cluster stage end to end on data/sample_small (1,500 docs, 11 domains) with the session's Ray:
domain recovery, accounting, descriptions, cached embeddings (the model is not called again),
resume, determinism, CLI and `curate stats`."""
from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.metrics import adjusted_rand_score

from pipeline import config, driver, io, runner
from tests.conftest import ROOT, SAMPLE_SMALL, all_ids, clean_env, curate_bin, output_hashes

# Measured on this corpus with the settings below (max_tokens 128, k-means 32 -> ward 11), fp32
# embeddings, run.seed 0..4 (2026-12-02, faiss-cpu 1.15.1, sentence-transformers 6.3.0):
# ARI 0.569 / 0.501 / 0.616 / 0.642 / 0.561 (mean 0.578, range 0.50-0.64), purity 0.71-0.80.
# The old floor 0.58 had been set from one seed (0.639 with older libraries) and sat inside that
# seed spread, so a library update failed it (0.569); the floors sit below the measured minimum.
# Random labels give ARI ~0, so the test still fails on any clustering that ignores the domains.
ARI_FLOOR, PURITY_FLOOR = 0.45, 0.70
CLUSTER = {"embed": {"max_tokens": 128}, "kmeans": {"k_init": 32}, "refine": {"k": 11}}


def write_config(tmp: Path, name: str = "run", cluster: dict | None = None, seed: int = 0) -> Path:
    ingest = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())["ingest"]
    ingest["inputs"][0]["path"] = str(SAMPLE_SMALL)
    cfg = {"run": {"output": str(tmp / name), "seed": seed, "shard": {"target_rows": 400}, "ray": {"num_cpus": 2}},
           "ingest": ingest, "cluster": cluster or CLUSTER}
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def run(cfg_path: Path, only=None, inp=None, out=None, **kw):
    cfg = config.load(cfg_path)
    results = driver.run(cfg, driver.plan(cfg, only, inp, out), show_progress=False, **kw)
    assert all(r.ok for r in results), [r.failed for r in results]
    return cfg, results


def labels(d: Path) -> tuple[list[str], list[int]]:
    rows = duckdb.sql(f"select source, cluster from read_parquet('{d}/part-*.parquet') order by id").fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


def purity(y: list[str], c: list[int]) -> float:
    by = {}
    for s, k in zip(y, c):
        by.setdefault(k, Counter())[s] += 1
    return sum(v.most_common(1)[0][1] for v in by.values()) / len(y)


def mtimes(d: Path, pattern: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(Path(d).glob(pattern))}


@pytest.fixture(scope="module")
def base(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("cluster")
    cfg, _ = run(write_config(tmp))
    return tmp, cfg.run.output


def test_clusters_recover_the_source_domains(base):
    _, run_dir = base
    y, c = labels(run_dir / "cluster")
    ari, pur = adjusted_rand_score(y, c), purity(y, c)
    print(f"ARI {ari:.3f} purity {pur:.3f}")
    assert ari >= ARI_FLOOR and pur >= PURITY_FLOOR, (ari, pur)
    assert len(set(c)) == 11


def test_accounting_columns_and_descriptions(base):
    _, run_dir = base
    d = run_dir / "cluster"
    man = io.read_json(d / io.MANIFEST)
    assert man["status"] == "complete" and len(man["shards"]) == 4
    for key, s in man["shards"].items():
        assert s["rows_in"] == s["kept"] + s["rejected"] + s["quarantined"], key
        on_disk = sum(pq.ParquetFile(d / f["dir"] / f["name"]).metadata.num_rows for f in s["files"] if f["dir"] == "")
        assert on_disk == s["kept"]
        assert (d / f"{key}.parquet").exists()  # named like the input shard
    assert sorted(all_ids(d)) == sorted(all_ids(run_dir / "ingest"))
    t = pq.read_table(d / "part-00000-0000.parquet")
    assert t.column_names == ["id", "text", "source", "meta", "n_tokens", "cluster"]  # input columns kept, one added
    assert str(t.schema.field("cluster").type) == "int32"
    cj = io.read_json(d / "clusters.json")
    assert cj["k"] == 11 and [c["id"] for c in cj["clusters"]] == list(range(11))
    sizes = [c["docs"] for c in cj["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == man["totals"]["kept"]
    assert sum(c["tokens"] for c in cj["clusters"]) == man["totals"]["tokens_kept"]
    _, cl = labels(d)
    assert Counter(cl) == {c["id"]: c["docs"] for c in cj["clusters"]}
    kept = duckdb.sql(f"select id, cluster from read_parquet('{d}/part-*.parquet')").fetchall()
    where = dict(kept)
    for c in cj["clusters"]:
        assert len(c["top_terms"]) == 12 and len(c["examples"]) == 3
        assert all(where[e["id"]] == c["id"] for e in c["examples"])  # examples come from their cluster
        sims = [e["similarity"] for e in c["examples"]]
        assert sims == sorted(sims, reverse=True)
        assert sum(c["sources"].values()) == c["docs"]
    # the descriptions name what the clusters are: the bible cluster says so
    bible = max(cj["clusters"], key=lambda c: c["sources"].get("religious", 0) / c["docs"])
    assert {"lord", "god", "unto"} & set(bible["top_terms"])
    centroids = np.load(d / "centroids.npy")
    assert centroids.shape == (11, 384) and np.allclose(np.linalg.norm(centroids, axis=1), 1, atol=1e-5)
    assert man["embeddings"]["files"].keys() == man["shards"].keys()  # the cache is referenced from the manifest


def test_recluster_reads_cached_embeddings_and_never_loads_the_model(base, tmp_path, monkeypatch):
    """Another k, quality and size pruning, into another dir, in this process: the model would raise."""
    from pipeline.models import embedder

    tmp, run_dir = base
    cache = run_dir / "cluster" / "_embeddings"
    before = mtimes(cache, "*.npy")

    def boom(*a, **k):
        raise AssertionError("the embedding model was called")

    monkeypatch.setattr(embedder, "_load", boom)
    monkeypatch.setattr(embedder.Embedder, "encode", boom)
    spec = {"embed": {"max_tokens": 128, "cache_dir": str(cache)}, "kmeans": {"k_init": 32},
            # n_tokens stands in for a quality score: clusters of short documents are "low quality"
            "refine": {"k": 8, "min_docs": 60, "quality_column": "n_tokens", "min_quality": 300}}
    out = tmp_path / "again"
    cfg, _ = run(write_config(tmp_path, cluster=spec), only=["cluster"], inp=run_dir / "ingest", out=out, use_ray=False)
    assert mtimes(cache, "*.npy") == before
    for m in (io.read_json(p) for p in (out / "_work" / "embed" / io.DONE).glob("*.json")):
        assert m["cached"] and m["embedded"] == 0 and m["model_loads"] == 0
    cj = io.read_json(out / "clusters.json")
    whys = Counter(p["why"] for p in cj["refine"]["pruned"])
    assert whys["quality"] >= 1, cj["refine"]["pruned"]
    rej = pq.read_table(out / io.REJECTED).to_pydict()
    assert rej["reason"] and set(rej["reason"]) == {"cluster:pruned"} and set(rej["stage"]) == {"cluster"}
    man = io.read_json(out / io.MANIFEST)
    assert man["totals"]["rejected"] == len(rej["id"]) == cj["totals"]["pruned_docs"]
    assert man["totals"]["kept"] + man["totals"]["rejected"] == 1500
    assert all(c["docs"] >= 60 for c in cj["clusters"]) and cj["k"] <= 8
    assert sorted(all_ids(out)) == sorted(all_ids(run_dir / "ingest"))
    short = [p for p in cj["refine"]["pruned"] if p["why"] == "quality"]
    assert all(p["mean_quality"] < 300 for p in short)


def test_force_reclusters_from_the_cache_under_ray(base, tmp_path):
    tmp, run_dir = base
    work = tmp_path / "copy"
    shutil.copytree(run_dir, work / "run")
    cfg_path = write_config(work, cluster={**CLUSTER, "refine": {"k": 6}})
    cache = work / "run" / "cluster" / "_embeddings"
    before = mtimes(cache, "*.npy")
    with pytest.raises(runner.StageConflict, match="--force"):
        run(cfg_path, only=["cluster"], inp=work / "run" / "ingest", out=work / "run" / "cluster")
    run(cfg_path, only=["cluster"], inp=work / "run" / "ingest", out=work / "run" / "cluster", force=True)
    assert mtimes(cache, "*.npy") == before
    markers = [io.read_json(p) for p in (work / "run" / "cluster" / "_work" / "embed" / io.DONE).glob("*.json")]
    assert len(markers) == 4 and all(m["cached"] and m["embedded"] == 0 and m["model_loads"] == 0 for m in markers)
    assert io.read_json(work / "run" / "cluster" / "clusters.json")["k"] == 6


def test_resume_redoes_only_the_missing_shard(base, tmp_path):
    tmp, run_dir = base
    shutil.copytree(run_dir, tmp_path / "run")
    d = tmp_path / "run" / "cluster"
    (d / io.DONE / "part-00001-0000.json").unlink()
    (d / "part-00001-0000.parquet").unlink()
    done_before = mtimes(d / io.DONE, "*.json")
    embed_before = mtimes(d / "_work" / "embed" / io.DONE, "*.json")
    run(write_config(tmp_path), only=["cluster"], inp=tmp_path / "run" / "ingest", out=d)
    done_after = mtimes(d / io.DONE, "*.json")
    assert set(done_after) - set(done_before) == {"part-00001-0000.json"}
    assert all(done_after[k] == v for k, v in done_before.items())  # finished shards were not redone
    assert mtimes(d / "_work" / "embed" / io.DONE, "*.json") == embed_before
    assert output_hashes(d) == output_hashes(run_dir / "cluster")
    assert (d / "clusters.json").read_bytes() == (run_dir / "cluster" / "clusters.json").read_bytes()


@pytest.mark.slow
def test_same_seed_same_assignments_from_scratch(base, tmp_path):
    """A fresh run (embeddings recomputed under Ray) gives byte-identical shards and clusters.json."""
    _, run_dir = base
    cfg, _ = run(write_config(tmp_path))
    assert output_hashes(cfg.run.output / "cluster") == output_hashes(run_dir / "cluster")
    assert (cfg.run.output / "cluster" / "clusters.json").read_bytes() == (run_dir / "cluster" / "clusters.json").read_bytes()


def test_other_seed_other_fit(base, tmp_path):
    tmp, run_dir = base
    spec = {**CLUSTER, "embed": {"max_tokens": 128, "cache_dir": str(run_dir / "cluster" / "_embeddings")}}
    run(write_config(tmp_path, cluster=spec, seed=1), only=["cluster"], inp=run_dir / "ingest", out=tmp_path / "s1")
    a = io.read_json(run_dir / "cluster" / "clusters.json")["kmeans"]
    b = io.read_json(tmp_path / "s1" / "clusters.json")["kmeans"]
    assert a["docs_per_cluster"] != b["docs_per_cluster"]


def test_cli_cluster_and_stats(base, tmp_path):
    tmp, run_dir = base
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"cluster": {"embed": {"max_tokens": 128, "cache_dir": str(run_dir / "cluster" / "_embeddings")}}}))
    out = tmp_path / "c5"
    r = subprocess.run([curate_bin(), "cluster", "-i", str(run_dir / "ingest"), "-o", str(out), "-c", str(cfg),
                        "--k", "5", "--k-init", "24", "--keep-embedding", "--no-ray", "-q"],
                       capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stderr[-2000:]
    cj = io.read_json(out / "clusters.json")
    assert cj["k"] == 5 and cj["kmeans"]["k_init_used"] == 24
    t = pq.read_table(out / "part-00000-0000.parquet", columns=["embedding", "cluster"])
    assert t.schema.field("embedding").type.list_size == 384
    r = subprocess.run([curate_bin(), "stats", str(out)], capture_output=True, text=True, timeout=120, env=clean_env(COLUMNS="200"))
    assert r.returncode == 0 and "clusters: 5" in r.stdout and cj["clusters"][0]["top_terms"][0] in r.stdout, r.stdout
    r = subprocess.run([curate_bin(), "cluster", "-i", str(run_dir / "ingest"), "-o", str(out), "-c", str(cfg), "--k", "99", "--no-ray"],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2 and "refine.k" in r.stderr
    json.dumps(cj)  # plain JSON all the way down


def test_tiny_input_with_an_empty_shard_and_an_empty_document(tmp_path):
    """Fewer documents than k_init, a shard with no rows, an empty text: clusters anyway, in-process."""
    import pyarrow as pa

    from pipeline.schema import BASE_SCHEMA

    inp = tmp_path / "in"
    inp.mkdir()
    texts = ["", "In the beginning God created the heaven and the earth."] + [f"def f{i}(x):\n    return x + {i}" for i in range(5)] + \
            [f"Scene {i}. Enter HAMLET and HORATIO." for i in range(5)]
    rows = {"id": [f"d{i}" for i in range(len(texts))], "text": texts, "source": ["s"] * len(texts),
            "meta": ["{}"] * len(texts), "n_tokens": [len(t.split()) for t in texts]}
    io.write_parquet(pa.table(rows, schema=BASE_SCHEMA), inp / "part-00000.parquet")
    io.write_parquet(pa.table({k: [] for k in rows}, schema=BASE_SCHEMA), inp / "part-00001.parquet")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"run": {"output": str(tmp_path / "run")}, "cluster": {"embed": {"max_tokens": 32}, "refine": {"k": 3}}}))
    run(cfg, only=["cluster"], inp=inp, out=tmp_path / "out", use_ray=False)
    man = io.read_json(tmp_path / "out" / io.MANIFEST)
    assert man["totals"]["rows_in"] == man["totals"]["kept"] == len(texts)
    assert man["shards"]["part-00001"]["rows_in"] == 0
    cj = io.read_json(tmp_path / "out" / "clusters.json")
    assert cj["kmeans"]["k_init_used"] == len(texts) and cj["k"] == 3
    _, c = labels(tmp_path / "out")
    assert sorted(set(c)) == [0, 1, 2]
