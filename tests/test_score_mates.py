"""MATES data-influence scoring on real bundled data (data/sample_small): the score stage trains the
proxy, probes a sample, distils the influences into fastText and writes `mates_influence`; the same
input gives the same bytes; the cheap scorer ranks held-out documents like the probe does; the
first-order estimate ranks like the exact SGD probe; bad parameters and unbuildable models fail in
one line."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import config, io, runner
from pipeline.config import ConfigError
from pipeline.errors import ModelError
from pipeline.models import train
from tests.conftest import SAMPLE_SMALL, output_hashes

# small enough for a 2-core CI box (~15 s per training), large enough that 80 held-out documents
# make rho > 0.3 a real signal (a random scorer exceeds it with probability < 0.5 %)
MATES = {"sample_docs": 400, "warmup_docs": 300, "warmup_tokens": 16_000, "doc_tokens": 128, "target_tokens": 512,
         "check_docs": 20, "params": {"epoch": 25, "lr": 0.5, "wordNgrams": 2, "dim": 32, "minCount": 1}}


def real_input(d):
    """data/sample_small (1500 real documents, 11 domains) as a dataset dir of two Parquet shards."""
    docs = list(train.iter_docs(SAMPLE_SMALL, source_field="domain"))
    d.mkdir(parents=True)
    half = len(docs) // 2
    for i, part in enumerate((docs[:half], docs[half:])):
        pq.write_table(pa.table({"id": [x.id for x in part], "text": pa.array([x.text for x in part], pa.large_string()),
                                 "source": [x.source for x in part]}), d / f"part-{i:05d}.parquet")
    return d


def run_score(tmp, inp, name, section=None):
    from stages import score as S

    cfg = config.parse({"run": {"output": str(tmp / "run")}, "score": {"mates": section or MATES}})
    out = tmp / name
    res = S.run(cfg, inp, out, lambda *a, **kw: runner.run_stage(*a, **{**kw, "use_ray": False, "show_progress": False}))
    assert res.ok
    return out


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mates")
    inp = real_input(tmp / "inp")
    return inp, run_score(tmp, inp, "a"), run_score(tmp, inp, "b")


def test_column_written_and_deterministic(scored):
    inp, a, b = scored
    t = pq.read_table(io.shard_files(a)[0])
    x = t.column("mates_influence").to_numpy()
    assert t.num_rows > 0 and np.all((x >= 0) & (x <= 1)) and np.unique(x).size > 10
    # trained twice from scratch (proxy, probes, fastText): the same bytes
    ha = {k: v for k, v in output_hashes(a).items() if "_models" not in k}
    assert ha and ha == {k: v for k, v in output_hashes(b).items() if "_models" not in k}
    ra, rb = (json.loads((o / "_score.json").read_text())["models"]["mates"] for o in (a, b))
    assert ra["sha256"] == rb["sha256"]
    ia, ib = (pq.read_table(next((o / "_models").glob("mates-*")) / "influences.parquet") for o in (a, b))
    assert ia.equals(ib)


def test_distilled_scorer_follows_the_influences(scored):
    _, a, _ = scored
    entry = json.loads((a / "_score.json").read_text())["models"]["mates"]
    # on 80 held-out probed documents the fastText score ranks like the probe influences (measured 0.57; random: ~0 +- 0.11)
    assert entry["spearman_vs_influence_held_out"] > 0.3, entry
    # the first-order estimate g_doc . g_target ranks like the exact one-SGD-step probe (measured 0.76 on these 20
    # documents; 0.99 on 50 with a longer warm-up and target batch; random: ~0 +- 0.23)
    assert entry["influence"]["method"] == "gradient" and entry["influence"]["check"]["spearman_first_order_vs_probe"] > 0.5, entry


def test_influence_prefers_target_like_domains(scored):
    """The targets are ARC, GSM8K, HumanEval, MBPP: code helps them more than Shakespeare does."""
    _, a, _ = scored
    dom = {d.id: d.source for d in train.iter_docs(SAMPLE_SMALL, source_field="domain")}
    t = pq.read_table(next((a / "_models").glob("mates-*")) / "influences.parquet").to_pylist()
    by: dict[str, list[float]] = {}
    for r in t:
        by.setdefault(dom[r["id"]], []).append(r["influence"])
    assert np.nanmean(by["code"]) > np.nanmean(by["literature"]), {k: np.nanmean(v) for k, v in by.items()}
    # and the distilled scorer carries that to the whole corpus
    s = pq.read_table(io.shard_files(a)[0], columns=["id", "mates_influence"]).to_pylist()
    sc: dict[str, list[float]] = {}
    for r in s:
        sc.setdefault(dom[r["id"]], []).append(r["mates_influence"])
    assert np.mean(sc["code"]) > np.mean(sc["literature"]), {k: np.mean(v) for k, v in sc.items()}


@pytest.mark.parametrize("bad, key", [({"n_head": 3}, "d_model"), ({"method": "adam"}, "method"), ({"vocab_size": 100}, "vocab_size"),
                                      ({"top": 0.6, "bottom": 0.6}, "top"), ({"sample_docs": 5}, "sample_docs")])
def test_bad_parameters_are_one_line_config_errors(tmp_path, bad, key):
    with pytest.raises(ConfigError) as e:
        config.parse({"run": {"output": str(tmp_path / "run")}, "score": {"mates": bad}})
    assert "\n" not in str(e.value) and key in str(e.value) and "mates" in str(e.value), str(e.value)


def test_too_small_corpus_is_one_line_error(tmp_path):
    from tests.test_remix import make_input

    inp = make_input(tmp_path / "inp", n_per=10, shards=1)  # 30 documents, sample_docs 1000 by default
    with pytest.raises(ConfigError) as e:
        run_score(tmp_path, inp, "out", {"warmup_tokens": 1000})
    assert "\n" not in str(e.value) and "score.mates" in str(e.value) and "sample_docs" in str(e.value), str(e.value)


def test_model_that_cannot_be_built_fails_loudly(tmp_path):
    from scorers.mates import build

    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a fasttext model")
    sec = config.MatesConfig()
    for path in (bad, tmp_path / "missing.bin"):
        with pytest.raises(ModelError) as e:
            build(sec, {"path": str(path)})
        assert "\n" not in str(e.value) and "mates" in str(e.value) and str(path) in str(e.value), str(e.value)


def _tiny_influence(weighting="mean"):
    import torch

    from pipeline.models import influence, proxy_lm as P

    spec = P.ProxySpec(vocab_size=300, n_layer=1, n_head=2, d_model=32, ctx=16)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    targets = {"a": rng.integers(0, 300, (4, 17)), "b": rng.integers(0, 50, (3, 17))}
    ids = rng.integers(0, 300, 200)
    wins = influence.doc_windows(ids, np.array([1, 40, 10, 149]), 64, 16)
    return influence.Influence(P.TinyGPT(spec), targets, weighting), wins


def test_first_order_is_the_probes_linear_term():
    """(L_T(theta) - L_T(theta - lr g_x)) / lr -> g_x . g_T as lr -> 0, and the probe restores the model."""
    infl, wins = _tiny_influence()
    assert wins[0] is None and wins[1].shape == (2, 17) and wins[2].shape == (1, 10) and wins[3].shape == (3, 17)
    before = [p.detach().clone() for p in infl.params]
    for w in wins[1:]:
        fo = infl.first_order(w)
        errs = [abs(infl.probe(w, lr) - fo) / abs(fo) for lr in (1e-2, 1e-3)]
        assert errs[1] < 0.03, (fo, errs)  # measured 0.2-1.3 % (13 % at lr 1e-2: curvature; below 1e-3 fp32 rounding)
    assert all(np.array_equal(a.numpy(), b.detach().numpy()) for a, b in zip(before, infl.params))
    assert np.isnan(infl.first_order(wins[0]))


def test_influences_do_not_depend_on_the_thread_count():
    import torch

    from pipeline.models import influence

    old = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            infl, wins = _tiny_influence("balanced")
            out.append(influence.influences(infl, wins, "gradient", 0.05)[0])
    finally:
        torch.set_num_threads(old)
    assert np.array_equal(out[0], out[1], equal_nan=True) and np.isnan(out[0][0]) and not np.isnan(out[0][1:]).any()
