"""The bundled English reference LM (data/reference_lm, score.perplexity.reference: bundled): real text
beats its word-shuffled twin on held-out documents, the files are the ones its metadata names, the
config spells the choice one way, and the score stage routes, records and fails loudly."""
from __future__ import annotations

import importlib.util

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from filters import ModelError
from pipeline.models.lm import kenlm_available
from scorers.perplexity import PerplexityScorer
from pipeline import config, io
from pipeline.schema import BASE_SCHEMA
from tests.conftest import ROOT

REF = ROOT / "data" / "reference_lm"


def _build_module():
    spec = importlib.util.spec_from_file_location("reference_lm_build", REF / "build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def build():
    return _build_module()


@pytest.fixture(scope="module")
def real(build):
    return build.real_docs()


@pytest.fixture(scope="module")
def scorer():
    return PerplexityScorer(REF / "en", backend="auto")


def real_beats_shuffled(build, score, docs: list[dict]) -> tuple[float, dict[str, float]]:
    real = score([d["text"] for d in docs])["perplexity"]
    shuf = score([build.shuffled_twin(d["text"], i) for i, d in enumerate(docs)])["perplexity"]
    win = real < shuf
    doms = sorted({d["domain"] for d in docs})
    return float(win.mean()), {dom: float(win[[d["domain"] == dom for d in docs]].mean()) for dom in doms}


def test_reference_lm_ranks_real_text_below_its_shuffled_twin(build, real, scorer):
    docs = build.eval_docs(real)
    assert len(docs) > 1000 and all(build.held_out(d) for d in docs if d["domain"] in build.DOMAINS)
    rate, per_domain = real_beats_shuffled(build, scorer, docs)
    print(f"real < shuffled in {rate:.1%} of {len(docs)} pairs; per domain {per_domain}")
    assert rate >= 0.95
    for dom in build.DOMAINS:  # held-out files of the domains it was trained on
        assert per_domain[dom] >= 0.95, (dom, per_domain)


def test_held_out_files_are_whole_and_the_metadata_matches(build, real):
    meta = io.read_json(REF / "en.json")
    for name, f in meta["files"].items():
        assert io.sha256_file(REF / name) == f["sha256"], f"{name} differs from en.json: rebuild with python data/reference_lm/build.py"
    docs = [d for d in real if d["domain"] in build.DOMAINS]
    train = [d for d in docs if not build.held_out(d)]
    assert meta["data"]["docs"] == len(train) and meta["data"]["held_out_docs"] == len(docs) - len(train)
    assert 0.15 < 1 - len(train) / len(docs) < 0.3
    for dom in ("technical", "literature"):  # a file is either all in or all out
        split = {}
        for d in docs:
            if d["domain"] == dom:
                split.setdefault(d["source_detail"], set()).add(build.held_out(d))
        assert all(len(v) == 1 for v in split.values()) and any(v == {True} for v in split.values())
    assert (meta["order"], meta["prune"], meta["lang"]) == (build.ORDER, build.PRUNE, "en")
    sizes = sum(f["bytes"] for f in meta["files"].values())
    assert sizes < 10e6


def test_npz_and_arpa_files_give_the_same_perplexity(build, real):
    texts = [d["text"] for d in build.eval_docs(real, per_other_domain=5)[:40]] + ["", "zzqx qqzz"]
    a = PerplexityScorer(REF / "en.npz", backend="numpy")(texts)["perplexity"]
    if kenlm_available():
        b = PerplexityScorer(REF / "en.arpa.gz", backend="kenlm")(texts)["perplexity"]
        assert np.allclose(a[:-2], b[:-2], rtol=1e-4) and np.isclose(a[-1], b[-1], rtol=1e-4)
    assert np.isnan(a[-2]) and (a[:-2] > 1).all()


def test_clean_rst_keeps_prose_only(build):
    text = ("Title\n=====\n\nUse :func:`~os.path.join` and ``x + 1`` with *care*.\n\n.. code-block:: python\n\n   x = 1\n\n"
            "Example::\n\n    print(1)\n\n.. note::\n   Indented prose stays.\n\n+---+---+\n| a | b |\n+---+---+\n")
    out = build.clean_rst(text)
    assert "Use join and x + 1 with care." in out and "Indented prose stays." in out and "Example:" in out
    assert "x = 1" not in out and "print" not in out and "===" not in out and "+---" not in out and "code-block" not in out


# ---------------------------------------------------------------- config


def _pp(**kw) -> config.PerplexityConfig:
    return config.ScoreConfig.model_validate({"perplexity": kw}).perplexity


def test_config_reference_spellings():
    assert (_pp().reference, _pp().reference_lang, _pp().train) == ("bundled", "en", None)  # the default: the bundled reference
    assert _pp(model="x/lm").reference == "x/lm" and _pp(model="x/lm").model is None  # the older spelling
    assert _pp(reference="none", train={"order": 2}).train.order == 2  # the LM trained on the input: only when asked
    assert _pp(train={}).reference == "bundled"  # train: alone = the fallback for other languages
    for bad, msg in (({"model": "a", "reference": "b"}, "not both"), ({"reference": "none"}, "needs train"),
                     ({"reference_lang": "de"}, "is English")):
        with pytest.raises(ValueError, match=msg):
            _pp(**bad)


def test_config_missing_reference_path_names_the_key(tmp_path):
    from tests.conftest import small_config

    p = small_config(tmp_path, extra="score:\n  perplexity: {reference: nowhere/lm}\n")
    with pytest.raises(config.ConfigError, match=r"score\.perplexity\.reference: no \.npz/\.arpa/\.bin model at .*nowhere/lm"):
        config.load(p)


# ---------------------------------------------------------------- score stage pieces


def _dataset(tmp_path, texts, langs):
    d = tmp_path / "in"
    d.mkdir()
    t = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": texts, "source": ["s"] * len(texts),
                  "meta": ["{}"] * len(texts), "n_tokens": [1] * len(texts)}, schema=BASE_SCHEMA)
    if langs is not None:
        t = t.append_column("lang", pa.array(langs, pa.string()))
    pq.write_table(t, d / "part-00000.parquet")
    return d


def test_other_languages_go_to_the_fallback_lm(build, real, tmp_path):
    """English documents get the reference LM's numbers, the rest (and lang null) the fallback's."""
    from pipeline.models import train

    en = [d["text"] for d in build.eval_docs(real, per_other_domain=3)[:6]]
    other = ["Der Hund läuft schnell über die Straße.\nEr ist müde.", "def f(x):\n    return x + 1\n"]
    fb_stem = tmp_path / "fb"
    train.train_lm([train.Doc(str(i), t, None) for i, t in enumerate(other * 3)], fb_stem, order=2, arpa=False)
    routed = PerplexityScorer(REF / "en", backend="numpy", fallback=(fb_stem, "numpy"), lang="en")
    assert routed.input_columns == ("lang",)
    texts, langs = en + other, ["en"] * len(en) + ["de", None]
    got = routed(texts, lang=langs)["perplexity"]
    want_ref = PerplexityScorer(REF / "en", backend="numpy")(en)["perplexity"]
    want_fb = PerplexityScorer(fb_stem, backend="numpy")(other)["perplexity"]
    assert np.array_equal(got, np.concatenate([want_ref, want_fb]))
    assert routed.docs == {"reference": len(en), "fallback": 2}
    assert np.array_equal(routed(texts)["perplexity"][:len(en)], want_ref)  # no lang column: every document gets the reference


def test_score_json_records_the_reference_and_a_missing_one_fails_in_one_line(tmp_path, monkeypatch):
    from stages import score as S

    inp = _dataset(tmp_path, ["The cat sat on the mat.\nIt was warm.", "Der Hund schläft.", "def f(): pass"], ["en", "de", None])
    cfg = config.Config.model_validate({"run": {"output": str(tmp_path / "run")}, "score": {"perplexity": {"backend": "numpy"}}})
    models = S.prepare_models(cfg, inp, tmp_path / "out")
    m = models["perplexity"]
    assert m["reference"] == "bundled" and m["path"] == str(REF / "en") and m["lang"] == "en" and "fallback" not in m
    assert m["sha256"] == io.sha256_file(REF / "en.npz") and set(m["files"]) == {"en.npz", "en.arpa.gz"} and m["file"] == str(REF / "en.npz")
    assert "whatever its language" in m["note"]
    res = S.score_shard(str(inp / "part-00000.parquet"), str(tmp_path / "scores"), "part-00000",
                        cfg.score.model_dump(mode="json"), models, batch_size=10)
    assert res["perplexity_docs"] == {"reference": 3, "fallback": 0}

    monkeypatch.setattr(config, "BUNDLED_REFERENCE_LM", tmp_path / "gone" / "en")
    with pytest.raises(ModelError, match=r"^scorer 'perplexity': the bundled reference LM is missing .*gone/en") as e:
        S.prepare_models(cfg, inp, tmp_path / "out")
    assert "\n" not in str(e.value)


def test_reference_with_fallback_in_the_stage(tmp_path):
    from stages import score as S

    texts = ["The cat sat on the mat.\nIt was warm."] * 20 + ["Der Hund schläft im Haus."] * 20
    inp = _dataset(tmp_path, texts, ["en"] * 20 + ["de"] * 20)
    cfg = config.Config.model_validate({"run": {"output": str(tmp_path / "run")},
                                        "score": {"perplexity": {"backend": "numpy", "train": {"order": 2}}}})
    models = S.prepare_models(cfg, inp, tmp_path / "out")
    m = models["perplexity"]
    assert m["fallback"]["path"].startswith(str(tmp_path / "out" / "_models" / "lm-")) and "fallback" in m["note"]
    res = S.score_shard(str(inp / "part-00000.parquet"), str(tmp_path / "scores"), "part-00000",
                        cfg.score.model_dump(mode="json"), models, batch_size=16)
    assert res["perplexity_docs"] == {"reference": 20, "fallback": 20}
    ppl = pq.read_table(tmp_path / "scores" / "part-00000.parquet").column("perplexity").to_numpy()
    assert ppl[20:].max() < ppl[:20].min()  # the German line is the fallback's own training text
