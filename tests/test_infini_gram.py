"""∞-gram index (pipeline/models/infini_gram.py) on data/sample_small: counts, longest matches and
∞-gram probabilities equal brute force; token files and text give the same index; a SIGKILLed build
resumes to the same bytes; the CLI's one-line errors; the scorer and the contamination report."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import io
from pipeline.errors import ModelError
from pipeline.models import bpe
from pipeline.models import infini_gram as ig
from pipeline.models import train
from tests.conftest import ROOT, clean_env, curate_bin

SAMPLE = ROOT / "data" / "sample_small"
SHARDS, DOCS_PER_SHARD = 3, 120


def _write_ds(d: Path, docs) -> None:
    for i in range(SHARDS):
        part = docs[i * DOCS_PER_SHARD:(i + 1) * DOCS_PER_SHARD]
        io.write_parquet(pa.table({"id": [x.id for x in part], "text": pa.array([x.text for x in part], pa.large_string())}),
                         d / f"part-{i:05d}.parquet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ig")
    docs = train.sample_docs(train.iter_docs(SAMPLE, source_field="domain"), 10**6, seed=0)
    docs = [d for d in docs if len(d.text) < 20_000][:SHARDS * DOCS_PER_SHARD]
    docs[5] = train.Doc(docs[5].id, "", docs[5].source)  # the empty document
    tok = bpe.train_bpe([d.text for d in docs], 600, tmp / "tok.json")
    _write_ds(tmp / "ds", docs)
    res = ig.build(tmp / "ds", tmp / "idx", tok, use_ray=False)
    assert res.ok, res.failed
    ix = ig.InfiniGram(tmp / "idx")
    seqs = ix.encode([d.text for d in docs])
    flat = np.concatenate([x for s in seqs for x in (s, [-1])])  # brute-force corpus: -1 between documents
    return tmp, docs, ix, seqs, flat


def _brute_count(flat: np.ndarray, q: np.ndarray) -> int:
    if len(q) == 0:
        return len(flat)
    if len(q) > len(flat):
        return 0
    w = np.lib.stride_tricks.sliding_window_view(flat, len(q))
    return int((w == q).all(axis=1).sum())


def _queries(seqs, rng) -> list[np.ndarray]:
    qs = []
    for _ in range(150):  # n-grams of the corpus, lengths 1..60
        s = seqs[int(rng.integers(len(seqs)))]
        if len(s) < 2:
            continue
        n = int(rng.integers(1, min(60, len(s)) + 1))
        a = int(rng.integers(0, len(s) - n + 1))
        qs.append(s[a:a + n])
    qs += [rng.integers(0, 600, int(rng.integers(1, 6))) for _ in range(50)]  # random ids: mostly absent
    qs.append(np.concatenate([seqs[0][-3:], seqs[1][:3]]))  # across a document boundary: never counted
    return qs


def test_counts_equal_brute_force(corpus):
    _, _, ix, seqs, flat = corpus
    qs = _queries(seqs, np.random.default_rng(1))
    got = ix.count(qs)  # one call: the vectorized search
    want = np.array([_brute_count(flat, q) for q in qs])
    assert np.array_equal(got, want)
    assert [int(ix.count([q])[0]) for q in qs[::5]] == want[::5].tolist()  # one by one: the scalar search
    assert ix.count([np.zeros(0, np.int64)])[0] == len(flat)
    assert want[:150].min() >= 1 and got[-1] == 0
    assert ix.meta["tokens"] == int((flat >= 0).sum()) and ix.meta["docs"] == len(seqs)


def test_longest_match_and_location_equal_brute_force(corpus):
    _, docs, ix, seqs, flat = corpus
    rng = np.random.default_rng(2)
    # keys: a corpus n-gram followed by random ids, so the longest occurring prefix is >= the n-gram
    keys = [np.concatenate([s[:k], rng.integers(0, 600, 5)]) for s in seqs[:40] for k in (min(len(s), 25),)]
    buf = np.concatenate(keys).astype(np.int64)
    lens = np.array([len(k) for k in keys])
    pos = np.concatenate([[0], np.cumsum(lens)[:-1]])
    best, shard, where = ix.longest(buf, pos, lens)
    few = ix.longest(buf, pos[:5], lens[:5])  # few keys: the scalar search
    assert np.array_equal(few[0], best[:5]) and np.array_equal(few[2], where[:5])
    for k, b, sh, w in zip(keys, best, shard, where):
        assert _brute_count(flat, k[:b]) > 0 and (b == len(k) or _brute_count(flat, k[:b + 1]) == 0)
        if b:
            loc = ix.locate(int(sh), int(w))
            doc = next(i for i, d in enumerate(docs) if d.id == loc["doc_id"])
            assert np.array_equal(seqs[doc][loc["doc_offset"]:loc["doc_offset"] + b], k[:b])


def test_infgram_prob_equals_definition(corpus):
    _, _, ix, seqs, flat = corpus
    rng = np.random.default_rng(3)
    # a corpus document's start with a changed token in the middle, and a random sequence
    q1 = seqs[7][:40].copy()
    q1[20] = (q1[20] + 1) % 600
    for q in (q1, rng.integers(0, 600, 12)):
        r = ix.infgram([q])
        for i in range(len(q)):
            n = max(k for k in range(i + 1) if _brute_count(flat, q[i - k:i]) > 0)  # longest occurring context
            ctx = q[i - n:i]
            c_ctx = len(flat) if n == 0 else _brute_count(flat, ctx)
            assert (r["ctx"][i], r["ctx_count"][i]) == (n, c_ctx)
            assert r["count"][i] == _brute_count(flat, q[i - n:i + 1])
            assert r["prob"][i] == pytest.approx(r["count"][i] / c_ctx)
            one = ix.prob_next(q[:i], int(q[i]))  # one token: binary search on the context length
            assert (one["ctx"], one["ctx_count"], one["count"]) == (n, c_ctx, r["count"][i])


def test_token_files_give_the_same_index(corpus, tmp_path):
    """The remix's token files (its own writer) index to the same bytes as the text they came from."""
    from pipeline.tokens import count_tokens
    from stages.remix.passes import _token_files

    tmp = corpus[0]
    part = pq.read_table(tmp / "ds" / "part-00001.parquet")
    texts = part.column("text").to_pylist()
    table = part.append_column("n_tokens", pa.array(count_tokens(texts, str(tmp / "tok.json")), pa.int64()))
    d = tmp_path / "remix"
    io.write_parquet(part, d / "part-00001.parquet")
    _token_files(table, d, "part-00001", str(tmp / "tok.json"), 64)
    assert ig.build(d, tmp_path / "idx", None, use_ray=False).ok
    for f in ("tokens", "sa", "starts", "ids"):
        ext = "parquet" if f == "ids" else "npy"
        assert io.sha256_file(tmp_path / "idx" / f"{f}-part-00001.{ext}") == io.sha256_file(tmp / "idx" / f"{f}-part-00001.{ext}")
    ix = ig.InfiniGram(tmp_path / "idx")
    assert ix.tok is None and ix.count([np.array([5, 6])])[0] >= 0
    with pytest.raises(ig.NgramError, match="--ids"):
        ix.encode(["text"])


def _curate(*args, **kw):
    return subprocess.run([curate_bin(), *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=clean_env(PYTHONPATH=str(ROOT)), **kw)


def _index_files(d: Path) -> dict[str, str]:
    return {p.name: io.sha256_file(p) for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith("_")}


def test_sigkill_mid_build_then_resume_gives_the_same_bytes(corpus, tmp_path):
    tmp = corpus[0]
    out = tmp_path / "idx"
    cmd = [curate_bin(), "ngram", "build", str(tmp / "ds"), "-o", str(out), "--tokenizer", str(tmp / "tok.json"), "--no-ray", "-q"]
    p = subprocess.Popen(cmd, env=clean_env(PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not io.marker_path(out, "part-00000").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.005)
    p.kill()  # SIGKILL while shard part-00001 is being built
    p.wait()
    done = [k for k in ("part-00000", "part-00001", "part-00002") if io.marker_path(out, k).exists()]
    assert done == ["part-00000"] and not (out / ig.INDEX_JSON).exists()
    r = _curate("ngram", "count", out, "the")
    assert r.returncode == 2 and "unfinished build" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    first = io.read_json(io.marker_path(out, "part-00000"))
    r = _curate("ngram", "build", tmp / "ds", "-o", out, "--tokenizer", tmp / "tok.json", "--no-ray", "-q")
    assert r.returncode == 0, r.stderr
    assert _index_files(out) == _index_files(tmp / "idx")
    assert io.read_json(io.marker_path(out, "part-00000")) == first  # the finished shard was not built again


def test_cli_queries_and_one_line_errors(corpus, tmp_path):
    tmp, docs, ix, seqs, flat = corpus
    idx = tmp / "idx"
    q = seqs[3][10:16]
    sp = [i for i, c in enumerate(docs[3].text) if c == " "]
    text = docs[3].text[sp[5]:sp[12]]  # words of a document: tokenized as in it
    assert _brute_count(flat, ix.encode([text])[0]) >= 1
    r = _curate("ngram", "count", idx, "--ids", " ".join(map(str, q.tolist())), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["count"] == _brute_count(flat, q)
    r = _curate("ngram", "contains", idx, text)
    assert r.returncode == 0 and r.stdout.strip() == "true"
    r = _curate("ngram", "prob", idx, "--ids", " ".join(map(str, q.tolist())), "--json", "--top", "3")
    got = json.loads(r.stdout)
    assert got["tokens"][0]["prob"] == pytest.approx(float(ix.infgram([q])["prob"][-1])) and got["next"]["next"]
    too_long = " ".join(["1"] * (ix.meta["max_doc_tokens"] + 1))
    r = _curate("ngram", "count", idx, "--ids", too_long)
    assert r.returncode == 0 and r.stdout.strip() == "0" and "longest document" in r.stderr
    for args, words in ((("count", tmp_path / "none", "x"), "does not exist"), (("count", idx, ""), "empty query"),
                        (("count", idx, "--ids", "1 x"), "not a list of integers"), (("count", idx, "--ids", "70000"), "outside"),
                        (("count", idx), "give a query"), (("count", tmp / "ds", "x"), "not an index"),
                        (("build", tmp / "ds", "-o", tmp_path / "i2", "--no-ray"), "--tokenizer"),
                        (("build", tmp_path / "none", "-o", tmp_path / "i2"), "does not exist"),
                        (("build", tmp / "ds", "-o", tmp_path / "i2", "-t", tmp_path / "no.json", "--no-ray"), "tokenizer"),
                        (("contamination", idx, "-b", tmp_path / "no.jsonl"), "does not exist")):
        r = _curate("ngram", *args)
        err = r.stderr.strip()
        assert r.returncode == 2 and words in err and len(err.splitlines()) == 1, (args, err)


def test_contamination_report_finds_a_planted_example(corpus, tmp_path):
    tmp, docs, _, _, _ = corpus
    bench = [json.loads(x) for x in (ROOT / "data" / "benchmarks" / "arc_easy.jsonl").read_text().splitlines()[:30]]
    planted = bench[4]
    moved = list(docs)
    moved[200] = train.Doc(moved[200].id, moved[200].text[:300] + " " + planted["text"] + " " + moved[200].text[300:], moved[200].source)
    _write_ds(tmp_path / "ds", moved)
    assert ig.build(tmp_path / "ds", tmp_path / "idx", tmp / "tok.json", use_ray=False).ok
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(b) + "\n" for b in bench))
    r = _curate("ngram", "contamination", tmp_path / "idx", "-b", tmp_path / "b.jsonl", "-o", tmp_path / "rep.json", "--min-span", "15")
    assert r.returncode == 0, r.stderr
    rep = io.read_json(tmp_path / "rep.json")["benchmarks"]["b"]
    assert rep["examples"] == 30 and rep["top"][0]["id"] == planted["id"]
    top = rep["top"][0]
    # the example's tokens all occur (its first token may merge with the space before it in the doc)
    assert top["longest"] >= top["tokens"] - 1 and top["doc_id"] == moved[200].id and top["shard"] == "part-00001.parquet"
    assert sum(row["longest"] >= 15 for row in rep["rows"]) == rep["span_at_least_15"] >= 1
    assert "b" in r.stdout and planted["id"] in r.stdout


def test_scorer_and_score_stage_task(corpus, tmp_path):
    from pipeline.config import ScoreConfig
    from scorers.infini_gram import InfiniGramScorer
    from stages.score import score_shard

    tmp, docs, _, _, _ = corpus
    ref = tmp_path / "ref"  # reference: shards 0 and 1; scored: a doc of shard 0 (in the reference) and held-out docs of shard 2
    ref.mkdir()
    for i in (0, 1):
        (ref / f"part-{i:05d}.parquet").symlink_to(tmp / "ds" / f"part-{i:05d}.parquet")
    assert ig.build(ref, tmp_path / "idx", tmp / "tok.json", use_ray=False).ok
    sc = InfiniGramScorer(str(tmp_path / "idx"), max_tokens=300)
    seen, held = docs[1].text, docs[2 * DOCS_PER_SHARD + 1].text
    out = sc([seen, held, ""])
    lp = out["infini_gram_logprob"]
    assert set(out) == set(sc.output_columns) and np.isnan(lp[2]) and np.isnan(out["infini_gram_ctx"][2])
    assert lp[0] > -0.05 and lp[1] < lp[0] and out["infini_gram_ctx"][0] > out["infini_gram_ctx"][1]
    with pytest.raises(ModelError, match="curate ngram build") as e:
        InfiniGramScorer(str(tmp_path / "missing"))
    assert "\n" not in str(e.value)
    from pipeline.config import ConfigError, parse

    with pytest.raises(ConfigError, match="score.infini_gram.index") as e:
        parse({"run": {"output": str(tmp_path / "run")}, "score": {"infini_gram": {"index": str(tmp_path / "nope")}}}, "cfg.yaml")
    assert "\n" not in str(e.value)
    s = ScoreConfig.model_validate({"infini_gram": {"index": str(tmp_path / "idx"), "max_tokens": 300}})
    models = {"infini_gram": {"path": str(tmp_path / "idx"), "sha256": io.sha256_file(tmp_path / "idx" / "index.json")}}
    m = score_shard(str(tmp / "ds" / "part-00002.parquet"), str(tmp_path / "scores"), "part-00002", s.model_dump(mode="json"), models, 50)
    t = pq.read_table(tmp_path / "scores" / "part-00002.parquet")
    assert m["rows_in"] == t.num_rows == DOCS_PER_SHARD and t.column("score_error").null_count == t.num_rows
    texts = pq.read_table(tmp / "ds" / "part-00002.parquet").column("text").to_pylist()
    assert np.allclose(t.column("infini_gram_logprob").to_numpy(zero_copy_only=False), sc(texts)["infini_gram_logprob"], equal_nan=True)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_shard_search_on_a_small_alphabet(dtype):
    """Many repeats (5 ids), both token widths (uint32: no first-token table), vector and scalar paths."""
    from pipeline.models.suffix_array import Shard, build_sa, sep_of

    rng = np.random.default_rng(4)
    toks = rng.integers(0, 5, 4000).astype(dtype)
    toks[rng.choice(4000, 50, replace=False)] = sep_of(dtype)
    toks[-1] = sep_of(dtype)
    sh = Shard(toks, build_sa(toks), np.array([0]))
    flat = np.where(toks == sep_of(dtype), -1, toks.astype(np.int64))
    qs = [rng.integers(0, 5, int(rng.integers(1, 9))) for _ in range(200)]
    buf = np.concatenate(qs).astype(np.int64)
    lens = np.array([len(q) for q in qs])
    pos = np.concatenate([[0], np.cumsum(lens)[:-1]])
    want = [_brute_count(flat, q) for q in qs]
    assert sh.counts(buf, pos, lens).tolist() == want
    assert sh.counts(buf, pos[:10], lens[:10]).tolist() == want[:10]
    best, where = sh.longest(buf, pos, lens)
    for q, b, w in zip(qs, best, where):
        assert _brute_count(flat, q[:b]) > 0 and (b == len(q) or _brute_count(flat, q[:b + 1]) == 0)
        assert b == 0 or np.array_equal(flat[w:w + b], q[:b])
