"""n-gram LM: modified Kneser-Ney training, ARPA files, our vectorized scorer vs the kenlm module."""
from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.models.lm import model_files, resolve_backend
from scorers.perplexity import PerplexityScorer
from pipeline.models import train
from pipeline.models import ngram, ngram_train
from pipeline.models.keyindex import KeyIndex
from tests.conftest import ROOT

SAMPLE = ROOT / "data" / "sample_small"


@pytest.fixture(scope="module")
def docs():
    return train.sample_docs(train.iter_docs(SAMPLE, source_field="domain"), 10**6, seed=0)


def _sents(docs, n):
    return [s for d in docs[:n] for s in ngram.tokenize(d.text)]


@pytest.mark.parametrize("order", [2, 3, 5])
def test_scores_equal_kenlm_on_our_arpa(docs, order, tmp_path):
    kenlm = pytest.importorskip("kenlm")  # scripts/install.sh builds it; only skipped where it cannot import
    lm = ngram_train.train(_sents(docs, 60), order=order)
    lm.save(tmp_path / "m")
    km = kenlm.Model(str(tmp_path / "m.arpa"))
    held_out = _sents(docs[300:], 40)[:400] + [["zzqx", "the", "qqzz"], ["the"], [], ["<", "s", ">", "of", "the"]]
    ref = np.array([km.score(" ".join(s), bos=True, eos=True) for s in held_out])
    for model in (lm, ngram.NGramLM.load(tmp_path / "m.npz"), ngram.NGramLM.load(tmp_path / "m.arpa")):
        ours = model.sentence_scores(held_out)
        assert np.abs(ours - ref).max() < 1e-4  # float32 sums in kenlm
    # word by word: log10 p and the length of the n-gram that matched, as kenlm.full_scores reports
    ids, sent = lm.encode(held_out[:50])
    lp, matched = lm.token_logprobs(ids, sent)
    want = [(0.0, 0)] + [x for s in held_out[:50] for x in [(p, n) for p, n, _ in km.full_scores(" ".join(s))] + [(0.0, 0)]][:-1]
    assert np.abs(lp - np.array([p for p, _ in want])).max() < 1e-5
    assert matched.tolist() == [n for _, n in want]


def test_perplexity_backends_agree(docs, tmp_path):
    pytest.importorskip("kenlm")
    train.train_lm(docs[:80], tmp_path / "lm", order=3)
    texts = [d.text for d in docs[200:260]] + ["", "   \n"]
    a = PerplexityScorer(tmp_path / "lm", backend="numpy")(texts)
    b = PerplexityScorer(tmp_path / "lm.arpa", backend="kenlm")(texts)
    assert np.allclose(a["perplexity"][:-2], b["perplexity"][:-2], rtol=1e-4)
    assert np.isnan(a["perplexity"][-2:]).all() and a["lm_tokens"][-2:].tolist() == [0, 0]
    assert resolve_backend(tmp_path / "lm", "auto") == "kenlm"


@pytest.mark.parametrize("order", [2, 3])
def test_kneser_ney_is_a_distribution(docs, order):
    """sum over the vocabulary of p(w | h) is 1 for seen and unseen contexts (<s> is never predicted)."""
    lm = ngram_train.train(_sents(docs, 40), order=order)
    V = len(lm.vocab)
    words = [i for i in range(V) if i != ngram.BOS_ID]
    for ctx in (["the"], ["of", "the"], ["zzunseen"]):
        ctx_ids = [lm.index.get(w, ngram.UNK_ID) for w in ctx][-(order - 1):]
        seq = np.array([x for w in words for x in [ngram.BOS_ID, *ctx_ids, w]], dtype=np.int64)
        sent = np.repeat(np.arange(len(words)), len(ctx_ids) + 2)
        lp, _ = lm.token_logprobs(seq, sent)
        p = np.power(10.0, lp[len(ctx_ids) + 1::len(ctx_ids) + 2])
        assert abs(p.sum() - 1.0) < 1e-4, (ctx, p.sum())


@pytest.mark.parametrize("order,prune", [(2, [0, 1]), (3, [0, 1, 2]), (4, [0, 1, 1, 3])])
def test_pruned_lm_sums_to_one_and_equals_kenlm(docs, order, prune, tmp_path):
    """Pruning drops rare n-grams but keeps every p(. | h) a distribution (their mass backs off), and
    the ARPA it writes is one kenlm loads and scores as we do (prefixes/suffixes of kept n-grams stay)."""
    sents = _sents(docs, 80)
    lm = ngram_train.train(sents, order=order, prune=prune)
    full = ngram_train.train(sents, order=order)
    assert lm.meta["ngrams"][0] == full.meta["ngrams"][0] and all(a < b for a, b in zip(lm.meta["ngrams"][1:], full.meta["ngrams"][1:]))
    V = len(lm.vocab)
    words = [i for i in range(V) if i != ngram.BOS_ID]
    for ctx in (["of", "the"], ["the"], ["i", "am", "not"], ["zzunseen"]):
        ctx_ids = [lm.index.get(w, ngram.UNK_ID) for w in ctx][-(order - 1):]
        seq = np.array([x for w in words for x in [ngram.BOS_ID, *ctx_ids, w]], dtype=np.int64)
        lp, _ = lm.token_logprobs(seq, np.repeat(np.arange(len(words)), len(ctx_ids) + 2))
        assert abs(np.power(10.0, lp[len(ctx_ids) + 1::len(ctx_ids) + 2]).sum() - 1.0) < 1e-4, ctx
    kenlm = pytest.importorskip("kenlm")
    lm.save(tmp_path / "p")
    km = kenlm.Model(str(tmp_path / "p.arpa"))
    held_out = _sents(docs[300:], 30)[:300]
    ref = np.array([km.score(" ".join(s), bos=True, eos=True) for s in held_out])
    assert np.abs(ngram.NGramLM.load(tmp_path / "p.npz").sentence_scores(held_out) - ref).max() < 1e-4
    with pytest.raises(ValueError, match="prune"):
        ngram_train.train(sents, order=2, prune=[1, 1])


def test_discounts_and_adjusted_counts_on_a_toy_corpus():
    lm = ngram_train.train([["a", "b", "a"], ["b", "a", "c"], ["a", "b"]], order=2)
    # adjusted unigram counts are left-extension counts: a follows <s>, b ; b follows a, <s> ...
    assert lm.meta["ngrams"] == [6, 8]  # <unk> <s> </s> a b c ; bigrams incl. <s> x and x </s>
    assert lm.meta["discount_fallback"] == [True, True]  # too little data for Chen-Goodman discounts
    p = np.power(10.0, lm.sentence_scores([["a", "b"]])[0])
    assert 0 < p < 1


def test_shuffled_words_score_far_worse_than_real_text(docs, tmp_path):
    lit = [d for d in docs if d.source == "literature"]
    train.train_lm(lit[:100], tmp_path / "lit", order=3, arpa=False)
    held = [d.text for d in lit[100:140]]
    rng = random.Random(0)

    def shuffle(t: str) -> str:
        w = t.split()
        rng.shuffle(w)
        return " ".join(w)

    sc = PerplexityScorer(tmp_path / "lit", backend="numpy")
    real, shuf = sc(held)["perplexity"], sc([shuffle(t) for t in held])["perplexity"]
    assert (shuf > 1.5 * real).all()
    assert np.median(shuf / real) > 3


def test_model_files_and_errors(tmp_path):
    assert model_files(tmp_path / "nope") == {}
    with pytest.raises(FileNotFoundError, match="train-lm"):
        resolve_backend(tmp_path / "nope")
    with pytest.raises(ValueError, match="backend"):
        resolve_backend(tmp_path / "nope", "gpu")
    with pytest.raises(ValueError, match="not an ARPA"):
        (tmp_path / "x.arpa").write_text("hello\n")
        ngram.read_arpa(tmp_path / "x.arpa")


def test_key_index_matches_a_dict():
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 2**63, 5000, dtype=np.int64).astype(np.uint64))
    idx = KeyIndex(keys)
    q = np.concatenate([keys[::3], rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64), np.zeros(3, np.uint64)])
    found, pos = idx.find(q)
    d = {int(k): i for i, k in enumerate(keys)}
    assert found.tolist() == [int(x) in d for x in q]
    assert all(pos[i] == d[int(q[i])] for i in np.flatnonzero(found))


def test_cli_train_lm(tmp_path):
    import json
    import subprocess

    from tests.conftest import clean_env, curate_bin

    r = subprocess.run([curate_bin(), "train-lm", "-i", str(SAMPLE), "-o", str(tmp_path / "lit"), "--source-field", "domain",
                        "--source", "literature", "--max-docs", "50", "--order", "4"], capture_output=True, text=True, timeout=300, env=clean_env())
    assert r.returncode == 0, r.stderr
    meta = json.loads((tmp_path / "lit.json").read_text())
    assert meta["order"] == 4 and meta["data"]["docs"] == 50 and meta["data"]["sources"] == {"literature": 50}
    assert set(meta["files"]) == {"lit.npz", "lit.arpa"}
    a = ngram.NGramLM.load(tmp_path / "lit.npz")
    b = ngram.NGramLM.load(tmp_path / "lit.arpa")
    s = [["to", "be", "or", "not", "to", "be"], ["enter", "the", "king"]]
    assert np.allclose(a.sentence_scores(s), b.sentence_scores(s))
    r = subprocess.run([curate_bin(), "train-lm", "-i", str(SAMPLE), "-o", str(tmp_path / "x"), "--source", "nope"],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert r.returncode == 2 and "no documents" in r.stderr
