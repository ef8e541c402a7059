"""Output bytes do not depend on batch composition, and what `auto` means on a machine is chosen
once by the driver, recorded, and never mixed (issue 12, item 2); embedding models load offline
only, a hub name in any model key is a config error naming the key (item 7)."""
from __future__ import annotations

import json
import socket
import subprocess

import numpy as np
import pyarrow as pa
import pytest
import yaml
import zstandard

from pipeline import config, driver, io, runner
from pipeline.models import embedder as E
from pipeline.models import kmeans
from pipeline.schema import BASE_SCHEMA
from tests.conftest import SAMPLE_SMALL, clean_env, curate_bin, output_hashes

HUB = "sentence-transformers/all-MiniLM-L6-v2"


def _docs(n: int) -> list[dict]:
    with open(SAMPLE_SMALL / "shard-00000.jsonl.zst", "rb") as fh:
        lines = zstandard.ZstdDecompressor().stream_reader(fh).read().decode().splitlines()
    return [json.loads(x) for x in lines[:n]]


def _varied_input(tmp, n: int = 160, shards: int = 2):
    """Real documents cut to seeded random word counts: many distinct token lengths below
    max_tokens, so documents of different lengths would share (padded) batches."""
    rng = np.random.default_rng(0)
    docs = _docs(n)
    inp = tmp / "in"
    inp.mkdir()
    texts = [" ".join(d["text"].split()[: int(rng.integers(1, 60))]) for d in docs]
    for s in range(shards):
        part = list(range(s, n, shards))
        rows = {"id": [docs[i]["id"] for i in part], "text": [texts[i] for i in part], "source": [docs[i]["domain"] for i in part],
                "meta": ["{}"] * len(part), "n_tokens": [len(texts[i].split()) for i in part]}
        io.write_parquet(pa.table(rows, schema=BASE_SCHEMA), inp / f"part-{s:05d}.parquet")
    return inp, texts


def _cluster(tmp, inp, out, use_ray=True, force=False, **embed):
    cfg = config.parse({"run": {"output": str(tmp / "run"), "ray": {"num_cpus": 2}, "docs_per_batch": 50},
                        "cluster": {"embed": {"max_tokens": 48, **embed}, "kmeans": {"k_init": 8}, "refine": {"k": 4}}})
    res = driver.run(cfg, [driver.StagePlan("cluster", inp, out)], show_progress=False, use_ray=use_ray, force=force)
    assert all(r.ok for r in res), [r.failed for r in res]
    return cfg


def _labels(d) -> dict[str, int]:
    import pyarrow.parquet as pq

    t = pa.concat_tables([pq.read_table(p, columns=["id", "cluster"]) for p in sorted(d.glob("part-*.parquet"))])
    return dict(zip(t.column("id").to_pylist(), t.column("cluster").to_pylist()))


def test_cluster_stage_with_embed_batch_size_7_and_64_gives_identical_bytes(tmp_path, ray_session):
    inp, texts = _varied_input(tmp_path)
    lengths = {len(x) for x in E.Embedder(max_tokens=48, precision="fp32").tokenize(texts)}
    assert len([n for n in lengths if n < 48]) >= 20  # many lengths: old batches mixed (padded) them
    _cluster(tmp_path, inp, tmp_path / "b7", docs_per_forward=7)
    _cluster(tmp_path, inp, tmp_path / "b64", docs_per_forward=64)
    a, b = _labels(tmp_path / "b7"), _labels(tmp_path / "b64")
    assert len(a) == 160 and a == b
    ea = {p.name: p.read_bytes() for p in sorted((tmp_path / "b7" / "_embeddings").glob("*.npy"))}
    eb = {p.name: p.read_bytes() for p in sorted((tmp_path / "b64" / "_embeddings").glob("*.npy"))}
    assert len(ea) == 2 and ea == eb  # the embedding cache: same names, same bytes
    assert output_hashes(tmp_path / "b7") == output_hashes(tmp_path / "b64")
    assert (tmp_path / "b7" / "clusters.json").read_bytes() == (tmp_path / "b64" / "clusters.json").read_bytes()


def test_embeddings_are_the_bits_of_each_document_alone():
    texts = _varied_texts()
    emb = {bs: E.Embedder(max_tokens=48, batch_size=bs, precision="fp32").encode(texts) for bs in (1, 7, 64)}
    alone = np.concatenate([E.Embedder(max_tokens=48, precision="fp32").encode([t]) for t in texts[:30]])
    assert np.array_equal(emb[7], emb[64]) and np.array_equal(emb[1], emb[7])
    assert np.array_equal(alone, emb[64][:30])
    e = E.Embedder(max_tokens=48, batch_size=8, device="cpu")
    lengths = np.array([len(x) for x in e.tokenize(texts)])
    assert all(len(set(lengths[b])) == 1 for b in e.batches(lengths))  # CPU batches never pad


def _varied_texts() -> list[str]:
    rng = np.random.default_rng(1)
    return [" ".join(d["text"].split()[: int(rng.integers(1, 60))]) for d in _docs(90)]


def test_auto_resolves_once_in_the_driver_to_fp32_even_with_native_bf16(tmp_path, monkeypatch):
    """A CPU with native bf16 (cpuinfo says so): auto is still fp32, and the manifest says what ran."""
    monkeypatch.setattr(E, "cpu_has_bf16", lambda: True)
    inp, _ = _varied_input(tmp_path, n=40)
    _cluster(tmp_path, inp, tmp_path / "out", use_ray=False)
    man = io.read_json(tmp_path / "out" / io.MANIFEST)
    assert man["resolved"] == {"precision": "fp32", "device": "cpu", "cpu_bf16": True, "batch_invariant": True,
                               "batching": E.BATCHING["cpu"], "kmeans_backend": kmeans.resolve_backend("auto")}
    assert io.read_json(tmp_path / "out" / io.STATS)["resolved"] == man["resolved"]
    markers = [io.read_json(p) for p in (tmp_path / "out" / "_work" / "embed" / io.DONE).glob("*.json")]
    assert {m["precision"] for m in markers} == {"fp32"} and {m["device"] for m in markers} == {"cpu"}
    assert io.read_json(tmp_path / "out" / "clusters.json")["embedding"]["precision"] == "fp32"
    assert E.resolve_precision("auto", "cpu") == "fp32" and E.resolve_precision("auto", "cuda:0") == "fp16"


def test_a_task_never_resolves_auto():
    with pytest.raises(ValueError, match="driver must resolve"):
        E.for_task(None, 32, 8, {"precision": "auto", "device": "cpu"})
    with pytest.raises(ValueError, match="driver must resolve"):
        E.for_task(None, 32, 8, {"precision": "fp32"})
    with pytest.raises(RuntimeError, match="native bf16"):
        E.for_task(None, 32, 8, {"precision": "bf16", "device": "cpu", "cpu_bf16": not E.cpu_has_bf16()})
    assert E.for_task(None, 32, 8, {"precision": "fp32", "device": "cpu"}).precision == "fp32"


def test_explicit_bf16_is_recorded_and_hashed_apart_from_fp32(tmp_path):
    inp, _ = _varied_input(tmp_path, n=12, shards=1)
    _cluster(tmp_path, inp, tmp_path / "fp32", use_ray=False, precision="fp32")
    _cluster(tmp_path, inp, tmp_path / "bf16", use_ray=False, precision="bf16")
    a, b = (io.read_json(tmp_path / d / io.MANIFEST) for d in ("fp32", "bf16"))
    assert b["resolved"]["precision"] == "bf16" and b["resolved"]["cpu_bf16"] == E.cpu_has_bf16()
    assert a["resolved"]["precision"] == "fp32" and a["config_hash"] != b["config_hash"]
    na = {p.name for p in (tmp_path / "fp32" / "_embeddings").glob("*.npy")}
    nb = {p.name for p in (tmp_path / "bf16" / "_embeddings").glob("*.npy")}
    assert na and nb and not na & nb  # cache keys differ: never read for the other precision


def _cluster_where_auto_meant_sklearn(tmp_path, monkeypatch):
    """A finished cluster stage run where k-means `auto` resolved to sklearn (faiss hidden)."""
    if kmeans._faiss() is None:
        pytest.skip("needs faiss-cpu (a dependency of the project) to make auto resolve two ways")
    inp, _ = _varied_input(tmp_path, n=40)
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(kmeans, "_faiss", lambda: None)
        _cluster(tmp_path, inp, out, use_ray=False)
    return inp, out


def test_resume_under_another_resolution_is_refused_never_mixed(tmp_path, monkeypatch):
    """Started where auto meant sklearn (no faiss), resumed where it means faiss: refused, naming the
    choice; setting the recorded choice explicitly resumes it (the same run: nothing is redone)."""
    inp, out = _cluster_where_auto_meant_sklearn(tmp_path, monkeypatch)
    assert io.read_json(out / io.MANIFEST)["resolved"]["kmeans_backend"] == "sklearn"
    before = output_hashes(out)
    with pytest.raises(runner.StageConflict, match="kmeans_backend sklearn -> faiss.*cluster.kmeans.backend: sklearn"):
        _cluster(tmp_path, inp, out, use_ray=False)
    assert output_hashes(out) == before


def test_resume_with_the_recorded_choice_set_explicitly(tmp_path, monkeypatch):
    inp, out = _cluster_where_auto_meant_sklearn(tmp_path, monkeypatch)
    done = {p.name: p.stat().st_mtime_ns for p in (out / io.DONE).glob("*.json")}
    cfg = config.parse({"run": {"output": str(tmp_path / "run"), "ray": {"num_cpus": 2}, "docs_per_batch": 50},
                        "cluster": {"embed": {"max_tokens": 48}, "kmeans": {"k_init": 8, "backend": "sklearn"}, "refine": {"k": 4}}})
    res = driver.run(cfg, [driver.StagePlan("cluster", inp, out)], show_progress=False, use_ray=False)
    assert res[-1].ok
    assert {p.name: p.stat().st_mtime_ns for p in (out / io.DONE).glob("*.json")} == done  # resumed, nothing redone


@pytest.mark.parametrize("section", [
    {"cluster": {"embed": {"model": HUB}}},
    {"dedup": {"method": ["semantic"], "semantic": {"model": HUB}}},
    {"score": {"bench_sim": {"model": HUB}}},
], ids=["cluster.embed.model", "dedup.semantic.model", "score.bench_sim.model"])
def test_a_hub_model_name_is_a_config_error_naming_the_key(tmp_path, monkeypatch, section, request):
    key = request.node.callspec.id
    line = f"{key}: '{HUB}' is not a local directory; models load offline only"

    def no_network(*a, **k):
        raise AssertionError("network attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(config.ConfigError, match=line.replace(".", r"\.")):
        config.parse({"run": {"output": str(tmp_path / "run")}, **section})
    monkeypatch.undo()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"run": {"output": str(tmp_path / "run")}, **section}))
    r = subprocess.run([curate_bin(), "run", str(cfg), "--dry-run"], capture_output=True, text=True, timeout=120,
                       env=clean_env(HF_HUB_OFFLINE="0"))
    assert r.returncode == 2 and line in r.stderr, r.stderr[-2000:]
    assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1


def test_embedder_refuses_a_hub_name_before_loading():
    loads = E.COUNTERS["model_loads"]
    with pytest.raises(ValueError, match="not a local directory; models load offline only"):
        E.Embedder(model=HUB)
    assert E.COUNTERS["model_loads"] == loads


def test_mkl_code_path_is_pinned_before_torch_uses_mkl():
    """The AVX-512/AMX bits bug: without MKL_CBWR=AVX2 a batch of 7 embeds differently from one
    document alone on such CPUs. `import pipeline` must pin it (a user's own value is kept)."""
    import os
    import subprocess
    import sys

    code = "import os, pipeline; print(os.environ['MKL_CBWR'])"
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "AVX2"
    env["MKL_CBWR"] = "COMPATIBLE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "COMPATIBLE"
