"""The remix's trainer outputs, read by the trainers' own libraries: megatron-core's IndexedDataset,
MosaicML's StreamingDataset, HF datasets (load_dataset on the dir, interleave recipe) and Ray Data;
token ids identical across formats; phase order; metadata prefixes; bad input refused (exit 2)."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import config, io, runner
from pipeline.loader import hf_mixture
from stages import remix as R
from tests.test_remix import make_input, train_bpe, write_weights
from tests.trainer_libs import import_megatron_indexed, import_streaming, streaming_dataset

PHASE = partial(runner.run_stage, use_ray=False, show_progress=False, max_retries=0)
PHASES = [{"fraction": 0.7, "weights": "mix"}, {"fraction": 0.3, "weights": {"2": 0.8, "0": 0.2}}]


def remix_run(d: Path, inp: Path, **section) -> Path:
    (d / "mix").mkdir(parents=True, exist_ok=True)
    train_bpe(d / "mix" / "tokenizer.json", inp)
    wp = write_weights(d / "mix" / "weights.json", [0.5, 0.2, 0.3], 40_000, tokenizer="tokenizer.json")
    cfg = config.parse({"run": {"output": str(d / "run"), "seed": 0, "shard": {"target_rows": 90}},
                        "remix": {"weights": str(wp), **section}})
    out = d / "out"
    assert R.run(cfg, inp, out, PHASE).ok
    return out


@pytest.fixture(scope="module")
def inp(tmp_path_factory) -> Path:
    return make_input(tmp_path_factory.mktemp("outputs") / "inp", n_per=200)


@pytest.fixture(scope="module")
def phased(tmp_path_factory, inp) -> Path:
    return remix_run(tmp_path_factory.mktemp("phased"), inp, formats=["parquet", "megatron", "mds", "hf"], phases=PHASES)


def stream(out: Path) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """The mixed stream: rows, token ids, offsets (all shards in order)."""
    t = pa.concat_tables([pq.read_table(p) for p in io.shard_files(out)])
    toks, offs, base = [], [0], 0
    for p in io.shard_files(out):
        a, o = np.load(p.with_name(p.stem + ".tokens.npy")), np.load(p.with_name(p.stem + ".index.npy"))
        toks.append(a)
        offs += (o[1:] + base).tolist()
        base += len(a)
    return t, np.concatenate(toks), np.asarray(offs)


def test_megatron_reads_every_prefix_and_sums_match(phased):
    idx = import_megatron_indexed()
    rep = io.read_json(phased / R.REMIX_JSON)
    t, toks, offs = stream(phased)
    lines = (phased / "megatron_data_path.txt").read_text().splitlines()
    assert len(lines) == 2 == len(rep["phases"])
    for ph, line in zip(rep["phases"], lines):
        f = line.split()
        weights, prefixes = [float(x) for x in f[0::2]], f[1::2]
        assert abs(sum(weights) - 1) < 1e-6 and all(Path(p + ".bin").exists() and Path(p + ".idx").exists() for p in prefixes)
        assert (phased / "megatron" / f"phase-{ph['index']}" / "data_path.txt").read_text().strip() == line
        lo, hi = ph["samples"]
        for p in prefixes:
            name = Path(p).name
            ds = idx.IndexedDataset(p)
            rows = [j for j in range(lo, hi) if t.column("domain")[j].as_py() == name]
            assert len(ds) == len(rows) == ph["domain_samples"][name]
            assert int(ds.sequence_lengths.sum()) == ph["domain_tokens"][name] + len(rows)  # + one EOS per document
            for k in (0, len(rows) // 2, len(rows) - 1):  # the same ids, in stream order
                assert np.array_equal(ds[k], toks[offs[rows[k]]:offs[rows[k] + 1]])
            del ds
    mixed = idx.IndexedDataset(str(phased / "megatron" / "mixed"))
    assert len(mixed) == t.num_rows and int(mixed.sequence_lengths.sum()) == len(toks) == rep["tokens"] + t.num_rows
    # the phase order is visible: documents of phase 1 (domains 2 and 0 only) come after phase 0's
    lo, hi = rep["phases"][1]["samples"]
    assert lo > 0 and hi == t.num_rows
    last = set(t.column("domain").to_pylist()[lo:hi])
    assert last == {"0", "2"} and "1" in set(t.column("domain").to_pylist()[:lo])
    for k in (0, lo - 1, lo, hi - 1):
        assert np.array_equal(mixed[k], toks[offs[k]:offs[k + 1]])


def test_mds_streams_load_with_the_mixture_proportions(phased, tmp_path):
    streaming = import_streaming()
    doc = yaml.safe_load((phased / "mosaic_streams.yaml").read_text())
    rep = io.read_json(phased / R.REMIX_JSON)
    t, toks, offs = stream(phased)
    by_id = {i: j for j, i in enumerate(t.column("id").to_pylist())}
    for ph in doc["phases"]:
        streams = [streaming.Stream(local=s["local"], proportion=s["proportion"]) for s in ph["streams"].values()]
        got, tokens = Counter(), Counter()
        with streaming_dataset(tmp_path, streams=streams, batch_size=1, shuffle=False) as ds:
            for x in ds:
                got[x["domain"]] += 1
                tokens[x["domain"]] += len(x["tokens"])
                j = by_id[x["id"]]
                assert np.array_equal(x["tokens"], toks[offs[j]:offs[j + 1]])
        n = sum(got.values())
        want = rep["phases"][ph["index"]]["domain_samples"]
        assert n == sum(want.values())
        for name, s in ph["streams"].items():
            # Mosaic truncates proportion x epoch size and hands the shortfall to random streams: a
            # stream may get one sample more or less than the plan (by the counts' float rounding)
            assert abs(got[name] - s["proportion"] * n) <= 1 + 1e-6 and abs(got[name] - want[name]) <= 1
            if got[name] == want[name]:
                assert tokens[name] == want[name] + rep["phases"][ph["index"]]["domain_tokens"][name]


def test_load_dataset_and_ray_data_read_only_kept_rows(phased, ray_session, tmp_path):
    import datasets

    cache = str(tmp_path / "hf-cache")  # not ~/.cache: an earlier run's cache of a same-named dir must not answer

    t, _, _ = stream(phased)
    assert (phased / "_census").is_dir() and (phased / "_work").is_dir() and (phased / "megatron").is_dir()
    ds = datasets.load_dataset(str(phased), split="train", cache_dir=cache)
    assert ds.num_rows == t.num_rows and sorted(ds["id"]) == sorted(t.column("id").to_pylist())
    ph1 = datasets.load_dataset(str(phased), "phase-1", split="train", cache_dir=cache)
    lo, hi = io.read_json(phased / R.REMIX_JSON)["phases"][1]["samples"]
    assert ph1["id"] == t.column("id").to_pylist()[lo:hi]
    rd = ray_session.data.read_parquet(str(phased))
    assert rd.count() == t.num_rows
    assert sorted(r["id"] for r in rd.select_columns(["id"]).take_all()) == sorted(t.column("id").to_pylist())


def test_hf_mixture_builds_the_interleave_recipe(phased):
    rep = io.read_json(phased / R.REMIX_JSON)
    recipe = io.read_json(phased / "hf_interleave.json")
    assert [len(p["datasets"]) for p in recipe["phases"]] == [3, 2]
    t, toks, offs = stream(phased)
    ds = hf_mixture(phased)
    ids = ds["id"]
    assert Counter(ids) == Counter(t.column("id").to_pylist())  # every sample exactly once
    lo = rep["phases"][1]["samples"][0]
    assert set(ids[:lo]) == set(t.column("id").to_pylist()[:lo])  # phases in order
    by_id = {i: j for j, i in enumerate(t.column("id").to_pylist())}
    for row in ds.select(range(0, len(ds), 97)):
        j = by_id[row["id"]]
        assert row["input_ids"] == toks[offs[j]:offs[j + 1]].tolist()
    one = hf_mixture(phased, phase=1)
    assert sorted(one["id"]) == sorted(t.column("id").to_pylist()[lo:])


def test_token_totals_agree_across_formats(phased):
    rep = io.read_json(phased / R.REMIX_JSON)
    per = rep["outputs"]["token_ids"]["per_phase_domain_tokens_with_eos"]
    names = [d["name"] for d in rep["domains"]]
    for d in rep["domains"]:
        i = names.index(d["name"])
        assert sum(p[i] for p in per.values()) == d["tokens"] + d["samples"]
    t, toks, _ = stream(phased)
    assert len(toks) == rep["tokens"] + t.num_rows == sum(sum(p) for p in per.values())


def test_single_phase_default_formats(tmp_path, inp):
    out = remix_run(tmp_path, inp)
    rep = io.read_json(out / R.REMIX_JSON)
    assert rep["formats"] == ["parquet", "megatron"] and len(rep["phases"]) == 1
    assert not (out / "mds").exists() and not (out / "hf").exists()
    line = (out / "megatron_data_path.txt").read_text().strip()
    assert [Path(p).name for p in line.split()[1::2]] == ["0", "1", "2"]
    assert all(Path(p + ".idx").exists() for p in line.split()[1::2])


def test_text_only_run_skips_megatron(tmp_path, inp):
    wp = write_weights(tmp_path / "w.json", [0.3, 0.3, 0.4], 20_000)
    cfg = config.parse({"run": {"output": str(tmp_path / "run")}, "remix": {"weights": str(wp), "tokenized": False}})
    assert R.run(cfg, inp, tmp_path / "out", PHASE).ok
    rep = io.read_json(tmp_path / "out" / R.REMIX_JSON)
    assert rep["formats"] == ["parquet"] and rep["formats_skipped"] == ["megatron"]
    cfg = config.parse({"run": {"output": str(tmp_path / "run")}, "remix": {"weights": str(wp), "tokenized": False, "formats": ["mds"]}})
    with pytest.raises(config.ConfigError, match=r"remix.formats: \['mds'\] need token ids"):
        R.run(cfg, inp, tmp_path / "out2", PHASE)


def test_metadata_prefix_with_cooldown(tmp_path, inp):
    out = remix_run(tmp_path, inp, metadata_prefix={"field": "source", "fraction": 0.5, "template": "source: {value}\n", "cooldown": 0.25})
    rep = io.read_json(out / R.REMIX_JSON)
    assert [p["metadata_prefix"] for p in rep["phases"]] == [True, False]
    assert [round(p["fraction"], 2) for p in rep["phases"]] == [0.75, 0.25]
    t, toks, offs = stream(out)
    pre, text = t.column("prefix").to_pylist(), t.column("text").to_pylist()
    lo = rep["phases"][1]["samples"][0]
    assert all(p is None for p in pre[lo:])  # the cooldown has none
    share = sum(p is not None for p in pre[:lo]) / lo
    assert 0.4 < share < 0.6 and rep["prefixed_docs"] == sum(p is not None for p in pre)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "mix" / "tokenizer.json"))
    for j in [k for k, p in enumerate(pre) if p is not None][:20]:
        assert pre[j] == "source: synthetic\n" and text[j].startswith(pre[j])
        assert tok.decode(toks[offs[j]:offs[j + 1] - 1].tolist()) == text[j]
    gained = sum(d.get("prefix_tokens", 0) for d in rep["domains"])
    assert gained > 0 and rep["tokens"] == int(sum(t.column("n_tokens").to_pylist()))
    assert rep["tokens"] + t.num_rows == len(toks)


@pytest.mark.parametrize("section,weights_names,needle", [
    ({"formats": ["parquet", "tfrecord"]}, ("0", "1", "2"), "remix.formats: Value error, unknown format(s) ['tfrecord']"),
    ({"phases": [{"fraction": 0.5}, {"fraction": 0.4}]}, ("0", "1", "2"), "phase fractions sum to 0.9, not 1"),
    ({"phases": [{"fraction": 1.0, "weights": {"../x": 1}}]}, ("0", "1", "2"), "domain name '../x' cannot name a file"),
    ({}, ("0", "a/b", "2"), "domain name 'a/b' cannot name a file"),
    ({}, ("0", "..", "2"), "domain name '..' cannot name a file"),
])
def test_bad_input_is_one_line_exit_2_before_any_work(tmp_path, inp, section, weights_names, needle):
    wp = write_weights(tmp_path / "w.json", [0.3, 0.3, 0.4], 20_000, names=weights_names)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"remix": section}))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "pipeline.cli", "remix", "--input", str(inp), "--output", str(out),
                        "--weights", str(wp), "--config", str(cfg), "--no-ray", "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not out.exists() or not any(out.glob("part-*"))


def test_failed_export_leaves_the_stage_incomplete_and_resumes(tmp_path, inp, monkeypatch):
    from stages.remix import export

    real = export.export_mixed

    def boom(**kw):
        raise OSError("disk went away")

    monkeypatch.setattr(export, "export_mixed", boom)
    d = tmp_path / "a"
    (d / "mix").mkdir(parents=True)
    train_bpe(d / "mix" / "tokenizer.json", inp)
    wp = write_weights(d / "mix" / "weights.json", [0.5, 0.2, 0.3], 40_000, tokenizer="tokenizer.json")
    cfg = config.parse({"run": {"output": str(d / "run"), "shard": {"target_rows": 90}}, "remix": {"weights": str(wp)}})
    res = R.run(cfg, inp, d / "out", PHASE)
    assert not res.ok and io.read_json(d / "out" / "_manifest.json")["status"] == "incomplete"
    assert "disk went away" in res.failed[0]["error"] and not (d / "out" / "megatron" / "mixed.idx").exists()
    monkeypatch.setattr(export, "export_mixed", real)
    written = {p.name: p.stat().st_mtime_ns for p in (d / "out").glob("part-*.parquet")}
    res = R.run(cfg, inp, d / "out", PHASE)
    assert res.ok and (d / "out" / "megatron" / "mixed.idx").exists()
    assert {p.name: p.stat().st_mtime_ns for p in (d / "out").glob("part-*.parquet")} == written  # shards not rewritten
    (d / "out" / "megatron" / "0.idx").unlink()  # a lost export file is written again on the next run
    assert R.run(cfg, inp, d / "out", PHASE).ok and (d / "out" / "megatron" / "0.idx").exists()
