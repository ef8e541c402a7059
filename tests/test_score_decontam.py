"""Decontamination against every bundled benchmark (24 evaluation sets, real data): planted passages
are caught per benchmark, clean text has no hit, and the HumanEval solutions that the sample's code
domain really contains are flagged with their ids."""
from __future__ import annotations

import json
import random
import re

import numpy as np
import pytest

from scorers.decontam import DecontamScorer, NgramIndex, Tokens, random_span
from pipeline.models import train
from pipeline.config import BUNDLED_TARGETS, bundled_benchmarks, bundled_targets
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "sample_small"
PER_BENCHMARK = 30  # planted examples (and as many 13-word spans) per benchmark


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    path = tmp_path_factory.mktemp("decon") / "index.npz"
    targets = train.load_targets(bundled_benchmarks())
    NgramIndex.build(targets, n=13, min_ngram=8).save(path)
    return str(path), targets


@pytest.fixture(scope="module")
def sample():
    return list(train.iter_docs(SAMPLE, source_field="domain"))


def _raw(doc_id: str) -> dict:
    import zstandard

    for p in sorted(SAMPLE.glob("*.zst")):
        with open(p, "rb") as fh:
            for line in zstandard.ZstdDecompressor().stream_reader(fh).read().decode().splitlines():
                d = json.loads(line)
                if d["id"] == doc_id:
                    return d
    raise KeyError(doc_id)


def _edit(text: str, i: int) -> str:
    """Light edits a copy may carry; matching is on lowercase \\w+ words, so none of them matters."""
    return [lambda t: t.upper().replace("\n", "  ") + " ...",          # re-cased, lines joined
            lambda t: re.sub(r"\s+", " ", t.lower()),                  # whitespace collapsed
            lambda t: re.sub(r"[^\w\s]+", " ", t),                     # punctuation stripped
            lambda t: "\t".join(t.split()).title()][i % 4](text)       # tabs, title case


def test_bundle_and_default_targets():
    """Decontamination defaults to all 24 bundled benchmarks; the search/eval targets stay the four."""
    names = [t.name for t in bundled_benchmarks()]
    assert len(names) == 24 and set(BUNDLED_TARGETS) < set(names)
    assert [t.name for t in bundled_targets()] == sorted(BUNDLED_TARGETS)
    for t in bundled_benchmarks():
        first = json.loads(t.path.open().readline())
        assert set(first) == {"benchmark", "id", "split", "text"} and first["benchmark"] == t.name


def test_catches_planted_passages_per_benchmark(index, sample):
    """Per benchmark: >= 90 % of whole examples (any example, short ones included) and every 13-word
    span planted, with light edits, into clean documents are caught, the example named."""
    path, targets = index
    rng = random.Random(0)
    clean = [d.text.split() for d in sample if d.source != "code"]
    planted, expect = [], []
    for name, rows in targets.items():
        for j, (ex_id, text) in enumerate(rng.sample(rows, PER_BENCHMARK)):
            for kind, passage in (("whole", text), ("span", random_span(text, rng))):
                if passage is None:
                    continue
                host = rng.choice(clean)
                at = rng.randrange(len(host) + 1)
                planted.append(" ".join(host[:at]) + "\n" + _edit(passage, j) + "\n" + " ".join(host[at:]))
                expect.append((name, kind, f"{name}/{ex_id}"))
    res = DecontamScorer(path)(planted)
    rate: dict[tuple[str, str], list[bool]] = {}
    named: dict[str, list[bool]] = {}
    for (name, kind, ex), found, examples in zip(expect, res["contaminated"], res["contam_examples"]):
        rate.setdefault((name, kind), []).append(found is not None and name in found.split(","))
        if kind == "whole":
            named.setdefault(name, []).append(ex in examples)
    for (name, kind), hits in rate.items():
        assert np.mean(hits) >= (0.9 if kind == "whole" else 1.0), (name, kind, np.mean(hits))
    for name, hits in named.items():
        assert np.mean(hits) >= 0.9, (name, np.mean(hits))
    assert len({n for n, _ in rate}) == 24


def test_nothing_in_clean_text(index, sample):
    path, _ = index
    clean = [d for d in sample if d.source != "code"]
    assert len(clean) > 1200
    res = DecontamScorer(path)([d.text for d in clean])
    assert [c for c in res["contaminated"] if c] == []
    assert int(res["contam_ngrams"].sum()) == 0


def test_flags_the_humaneval_problems_the_sample_contains(index, sample):
    path, _ = index
    code = [d for d in sample if d.source == "code"]
    res = DecontamScorer(path)([d.text for d in code])
    hits = {d.id: (c, ex) for d, c, ex in zip(code, res["contaminated"], res["contam_examples"]) if c}
    truth = {d.id: _raw(d.id)["source_detail"] for d in code if d.id.startswith("code-")}
    humaneval = {i for i, s in truth.items() if s.startswith("human-eval/")}
    assert humaneval and set(hits) == humaneval  # every HumanEval doc, and no CPython file
    for i in humaneval:  # (HumanEval/78's docstring also quotes SQuAD's Wikipedia paragraph on primes)
        c, ex = hits[i]
        assert c.split(",")[0] == "humaneval" and [e for e in ex if e.startswith("humaneval/")] == ["humaneval/" + truth[i].removeprefix("human-eval/")]


def test_short_examples_numbers_and_thresholds(tmp_path):
    idx = NgramIndex.build({"b": [("q1", "one two three four five six seven eight nine"),  # 9 words: one 9-gram
                                  ("q2", "too short to index"),
                                  ("q3", " ".join(str(i) for i in range(40)))]}, n=13, min_ngram=8)
    assert idx.info["b"]["skipped_short"] == 1 and idx.info["b"]["lengths"] == [9, 13]
    assert idx.info["b"]["ngrams"] == 1  # q3 is numbers only: left out
    idx.save(tmp_path / "i.npz")
    sc = DecontamScorer(str(tmp_path / "i.npz"))
    res = sc(["x One, two; THREE four five six seven eight nine! y", "one two three four five six seven eight",
              " ".join(str(i) for i in range(40)), ""])
    assert res["contaminated"] == ["b", None, None, None]
    assert res["contam_examples"][0] == ["b/q1"] and res["contam_ngrams_by"] == [[1], [], [], []]
    assert DecontamScorer(str(tmp_path / "i.npz"), min_matches=2)(["one two three four five six seven eight nine"])["contaminated"] == [None]


def test_windows_stay_in_their_document_and_keys_do_not_depend_on_position():
    tok = Tokens([["a", "b", "c"], ["x", "a", "b", "c"], ["b", "c"]])
    k3, at = tok.windows(3)
    assert at.tolist() == [0, 3, 4]  # no window across a document boundary
    assert k3[0] == k3[2] != k3[1]  # "a b c" at position 0 of doc 0 and 1 of doc 1
    k2, _ = tok.windows(2)
    assert len(k2) == 6 and len(set(k2.tolist())) == 3  # a b (x2), b c (x3), x a
    assert tok.windows(2, np.array([1]))[0][0] == tok.windows(2, np.array([7]))[0][0]


def test_shared_ngram_counts_per_benchmark():
    """A window in two benchmarks counts for each; per-benchmark counts follow `contaminated`."""
    from stages.score import _merge_reports, _report_add

    shared = "the quick brown fox jumps over the lazy dog near the river bank today"  # 14 words: 2 windows
    idx = NgramIndex.build({"a": [("a1", shared)], "b": [("b1", "zero " + shared), ("b2", "one two three four five six seven eight nine ten eleven twelve")]})
    assert idx.info["a"]["ngrams"] == 2 and idx.info["b"]["ngrams"] == 4  # b1: 3 windows, b2: one 12-gram
    docs = [shared.upper(), "x one two three four five six seven eight nine ten eleven twelve y", "nothing here"]
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        idx.save(os.path.join(d, "i.npz"))
        res = DecontamScorer(os.path.join(d, "i.npz"))(docs)
    assert res["contaminated"] == ["a,b", "b", None]
    assert res["contam_ngrams_by"] == [[2, 2], [1], []] and res["contam_ngrams"].tolist() == [4, 1, 0]
    assert res["contam_examples"] == [["a/a1", "b/b1"], ["b/b2"], []]
    report: dict = {}
    _report_add(report, res, errors={})
    models = {"decontam": {"names": idx.names, "index": idx.info}}
    merged = _merge_reports([report, report], models)
    assert merged["a"] | {"examples": None} == {"docs_hit": 2, "ngram_windows_hit": 4, "examples_hit": 1, "examples": None,
                                                "benchmark_examples": 1, "benchmark_ngrams": 2}
    assert merged["b"]["docs_hit"] == 4 and merged["b"]["ngram_windows_hit"] == 6 and merged["b"]["examples"] == ["b1", "b2"]


def test_stats_table_lists_benchmarks_hit(tmp_path):
    from pipeline.stats import decontam_table

    assert decontam_table(tmp_path) is None
    (tmp_path / "_score.json").write_text(json.dumps({"decontamination": {
        "humaneval": {"docs_hit": 9, "ngram_windows_hit": 900, "examples_hit": 9, "benchmark_examples": 164},
        "mmlu": {"docs_hit": 0, "ngram_windows_hit": 0, "examples_hit": 0, "benchmark_examples": 3000}}}))
    t = decontam_table(tmp_path)
    assert t.row_count == 1 and "1 of 2 benchmarks hit" in t.title and "mmlu" in t.caption
