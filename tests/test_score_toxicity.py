"""score.toxicity (alt-profanity-check's classifier) on the bundled sample: planted offensive text
scores above clean bundled text, scores do not depend on the batch, the stage writes the column and
rejects above score.toxicity.threshold with reason `toxicity` (accounting holds, same bytes twice,
re-thresholding never re-scores), bad parameters are one-line errors and a model that cannot load
fails the task."""
from __future__ import annotations

import json
import random
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipeline import config, driver, io, runner
from pipeline.config import ConfigError
from pipeline.errors import ModelError
from pipeline.models import train
from scorers.toxicity import FILES, ToxicityScorer, bundled_dir
from tests.conftest import SAMPLE_SMALL, clean_env, curate_bin, output_hashes, read_table, run_config, small_config

# Short offensive comments, the kind of text the classifier was trained on (planted, not bundled).
OFFENSIVE = ["You are a stupid fucking idiot and everyone hates you.",
             "Shut up, you worthless piece of shit.",
             "Go to hell, you dumb bitch.",
             "What an ugly, pathetic loser, fuck off and die.",
             "This asshole is the biggest moron I have ever met.",
             "Nobody cares about your crap, you retarded bastard."]
CLEAN_DOMAINS = ("technical", "news", "code", "legal")  # the sample's literature, Bible and dictionary do score high


@pytest.fixture(scope="module")
def clean():
    return [d.text for d in train.iter_docs(SAMPLE_SMALL, source_field="domain") if d.source in CLEAN_DOMAINS]


def _plant(texts: list[str], n: int, seed: int = 0) -> list[str]:
    """n clean documents, each with one offensive comment as a line of its own in the middle."""
    rng = random.Random(seed)
    out = []
    for i, t in enumerate(rng.sample(texts, n)):
        lines = t.splitlines()
        at = len(lines) // 2
        out.append("\n".join(lines[:at] + [OFFENSIVE[i % len(OFFENSIVE)]] + lines[at:]))
    return out


def test_planted_offensive_text_scores_above_clean_bundled_text(clean):
    doc = ToxicityScorer(None)
    p_clean = doc(clean)["toxicity"]
    p_off = doc(OFFENSIVE)["toxicity"]
    assert len(clean) > 400 and p_clean.dtype == np.float32 and ((p_clean >= 0) & (p_clean <= 1)).all()
    assert p_off.min() > 0.99 > 0.5 > p_clean.max(), (p_off, p_clean.max())
    # one offensive line inside a long clean document: diluted in the whole-text score, but found by unit: line
    planted = _plant(clean, 60)
    line = ToxicityScorer(None, unit="line")
    assert line(planted)["toxicity"].min() > line(clean)["toxicity"].max()
    assert np.median(doc(planted)["toxicity"]) > np.median(p_clean)


@pytest.mark.parametrize("unit", ["document", "line"])
def test_scores_do_not_depend_on_the_batch(clean, unit):
    sc = ToxicityScorer(None, unit=unit)
    texts = clean[:150] + OFFENSIVE + [""]
    whole = sc(texts)["toxicity"]
    assert np.array_equal(whole, np.concatenate([sc(texts[i:i + 7])["toxicity"] for i in range(0, len(texts), 7)]))
    assert np.array_equal(whole[::-1], sc(texts[::-1])["toxicity"])
    assert sc([])["toxicity"].shape == (0,)


# ---------------------------------------------------------------- the score stage

SCORE = """
score:
  toxicity: {threshold: 0.5}
"""


def _with_planted(tmp, cfg_path, clean):
    """The small config plus a second input: 12 clean documents with an offensive line, and the 6 comments."""
    p = tmp / "planted.jsonl"
    with p.open("w") as f:
        for i, t in enumerate(_plant(clean, 12, seed=1) + OFFENSIVE):
            f.write(json.dumps({"id": f"planted-{i:02d}", "text": t}) + "\n")
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["ingest"]["inputs"].append({"path": str(p), "source": "planted"})
    cfg["filter"]["filters"] = [f for f in cfg["filter"]["filters"] if f["type"] == "length"]  # keep the short comments
    cfg["filter"]["filters"][0]["params"] = {"min_words": 5}
    cfg_path.write_text(yaml.safe_dump(cfg))
    return cfg_path


@pytest.fixture(scope="module")
def scored(tmp_path_factory, ray_session, clean):
    tmp = tmp_path_factory.mktemp("tox")
    cfg_path = _with_planted(tmp, small_config(tmp, extra=SCORE), clean)
    cfg = run_config(cfg_path)
    return cfg_path, cfg.run.output


def test_column_threshold_reason_and_accounting(scored):
    _, run = scored
    kept, rej = read_table(run / "score"), read_table(run / "score", "_rejected/")
    assert str(pq.read_schema(io.shard_files(run / "score")[0]).field("toxicity").type) == "float"
    assert (kept["toxicity"] <= 0.5).all() and kept["toxicity"].notna().all()
    assert set(rej["reason"]) == {"toxicity"} and (rej["toxicity"] > 0.5).all()
    planted = set(kept[kept["source"] == "planted"]["id"]) | set(rej[rej["source"] == "planted"]["id"])
    assert len(planted) == 18
    assert {f"planted-{12 + i:02d}" for i in range(6)} <= set(rej["id"])  # the comments themselves
    assert len(rej) > 6  # and some bundled text (Shakespeare, the Bible) scores above 0.5 too
    man = io.read_json(run / "score" / io.MANIFEST)
    t = man["totals"]
    assert t["rows_in"] == t["kept"] + t["rejected"] + t["quarantined"] and t["quarantined"] == 0
    assert t["rows_in"] == io.read_json(run / "filter" / io.MANIFEST)["totals"]["kept"]
    assert (t["kept"], t["rejected"]) == (len(kept), len(rej))
    assert io.read_json(run / "score" / io.STATS)["reasons"] == {"toxicity": len(rej)}
    rep = io.read_json(run / "score" / "_score.json")
    m = rep["models"]["toxicity"]
    assert m["package"] == "alt-profanity-check 1.9.1" and m["license"] == "MIT"
    assert rep["plan"]["rules"][0]["checks"] == [{"op": "above", "value": 0.5, "reason": "toxicity"}]


def test_same_bytes_twice_and_rethreshold_without_rescoring(scored, tmp_path):
    cfg_path, run = scored
    r = subprocess.run([curate_bin(), "score", "-i", str(run / "filter"), "-o", str(tmp_path / "again"), "-c", str(cfg_path), "--toxicity", "0.5", "-q"],
                       capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr
    before = output_hashes(run / "score")
    assert before and output_hashes(tmp_path / "again") == before
    scores = {p: p.stat().st_mtime_ns for p in (run / "score" / "_scores").glob("part-*.parquet")}
    changed = cfg_path.with_name("changed.yaml")
    changed.write_text(cfg_path.read_text().replace("threshold: 0.5", "threshold: 0.9"))
    run_config(changed, only=["score"], force=True)
    assert {p: p.stat().st_mtime_ns for p in scores} == scores  # the threshold never re-scores
    rej = read_table(run / "score", "_rejected/")
    assert len(rej) and (rej["toxicity"] > 0.9).all() and (read_table(run / "score")["toxicity"] <= 0.9).all()
    run_config(cfg_path, only=["score"], force=True)
    assert output_hashes(run / "score") == before


def test_select_rule_on_an_unknown_column_is_one_line(scored):
    cfg_path, run = scored
    bad = cfg_path.with_name("typo.yaml")
    bad.write_text(cfg_path.read_text().replace("score:\n", "score:\n  select: [{column: toxicty, max: 0.5}]\n"))
    cfg = config.load(bad)
    with pytest.raises(ConfigError, match=r"score.select: column 'toxicty' is neither a score column nor in the input .*toxicity") as e:
        driver.run(cfg, driver.plan(cfg, ["score"]), show_progress=False, force=True)
    assert "\n" not in str(e.value)


def test_cli_with_a_broken_model_exits_1_naming_it(scored, tmp_path):
    """`curate score` with a model dir whose files do not load: exit 1, one line naming the scorer and
    the dir, no shard marked done (not a run that quarantines every document and exits 0)."""
    cfg_path, run = scored
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in FILES:
        (broken / f).write_bytes(b"not a joblib pickle" * 10)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["score"]["toxicity"]["model"] = str(broken)
    bad = tmp_path / "broken.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    r = subprocess.run([curate_bin(), "score", "-i", str(run / "filter"), "-o", str(out), "-c", str(bad), "-q"],
                       capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 1, r.stderr
    assert [ln for ln in r.stderr.splitlines() if "scorer 'toxicity': cannot load model" in ln and str(broken) in ln], r.stderr
    done = out / "_scores" / io.DONE
    assert not done.exists() or not any(done.iterdir())


# ---------------------------------------------------------------- bad parameters, missing model


@pytest.mark.parametrize("section, needle", [
    ({"threshold": 1.5}, "score.toxicity.threshold: Input should be less than or equal to 1"),
    ({"threshold": -0.1}, "score.toxicity.threshold: Input should be greater than or equal to 0"),
    ({"unit": "paragraph"}, "score.toxicity.unit"),
    ({"column": "tox-score"}, "score.toxicity.column"),
    ({"model": "no/such/dir"}, "score.toxicity.model: "),
])
def test_bad_parameters_are_one_line(tmp_path, section, needle):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"run": {"output": str(tmp_path / "run")}, "ingest": {"inputs": [{"path": str(SAMPLE_SMALL)}]},
                                 "score": {"toxicity": section}}))
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_threshold_outside_0_1_is_one_line(tmp_path):
    r = subprocess.run([curate_bin(), "score", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "--toxicity", "1.5"],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "score.toxicity.threshold" in lines[0], r.stderr


def test_missing_or_broken_model_fails_loudly(tmp_path):
    from stages import score as S
    from pipeline.schema import BASE_SCHEMA

    assert all((bundled_dir() / f).is_file() for f in FILES)
    with pytest.raises(ModelError, match=r"^scorer 'toxicity': model file .*nope/vectorizer.joblib does not exist; give a dir"):
        ToxicityScorer(tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in FILES:
        (broken / f).write_bytes(b"not a joblib pickle" * 10)
    with pytest.raises(ModelError, match=r"^scorer 'toxicity': cannot load model .*broken"):
        ToxicityScorer(broken)
    # in a task: it fails before any document (no attribute file, no marker), not one quarantine per document
    inp = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["some text here", "and more text"], "source": ["s"] * 2,
                             "meta": ["{}"] * 2, "n_tokens": [3, 3]}, schema=BASE_SCHEMA), inp)
    out = tmp_path / "scores"
    task = runner.Task(key="part-00000", fn=S.score_shard,
                       kwargs=dict(path=str(inp), out=str(out), key="part-00000", score={"toxicity": {"model": str(broken)}},
                                   models={"toxicity": {"path": str(broken), "sha256": "x"}}, batch_size=10))
    res = runner.run_stage("score:scores", out, [task], config_hash="h", input_fingerprint="f", use_ray=False,
                           max_retries=0, show_progress=False)
    (f,) = res.failed
    assert "scorer 'toxicity'" in f["error"] and str(broken) in f["error"] and "\n" not in f["error"]
    assert io.read_marker(out, "part-00000") is None and not list(out.glob("part-*.parquet"))
