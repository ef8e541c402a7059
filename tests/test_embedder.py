"""The shared embedder: same vectors as SentenceTransformer.encode (fp32), exact truncation from a
tokenized prefix, order/duplicates/empty input, token-budget batches, cache keys."""
from __future__ import annotations

import json

import numpy as np
import pytest
import zstandard

from pipeline.models import embedder as E
from tests.conftest import SAMPLE_SMALL

EDGE = ["", "   ", "a" * 3000, "日本語のテキスト" * 200, "word " * 2000, "tab\tand\nnew\rlines " * 300,
        "unit\x1cseparator " * 400, "x" * 200 + " y" * 500, ("z" * 150 + " ") * 100]


@pytest.fixture(scope="module")
def docs() -> list[str]:
    with open(SAMPLE_SMALL / "shard-00000.jsonl.zst", "rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    return [json.loads(line)["text"] for line in text.splitlines()[:48]] + EDGE


@pytest.fixture(scope="module")
def st():
    return E.Embedder(max_tokens=64, precision="fp32").model


def test_tokenized_prefix_gives_exactly_the_models_ids(docs, st):
    emb = E.Embedder(max_tokens=64, precision="fp32")
    before = E.COUNTERS["retokenized"]
    ours = emb.tokenize(docs)
    ref = st.tokenizer(docs, truncation=True, max_length=64)["input_ids"]
    assert ours == ref
    # words over 100 chars are one [UNK] each: that prefix was too short and was redone in full
    assert E.COUNTERS["retokenized"] > before


def test_fp32_vectors_equal_sentence_transformers(docs, st):
    st.max_seq_length = 64
    ref = st.encode(docs, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    ours = E.Embedder(max_tokens=64, batch_size=16, precision="fp32").encode(docs)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(docs), 384)
    assert np.abs(ours - ref).max() < 1e-5


def test_half_precision_is_close_to_fp32(docs):
    ref = E.Embedder(max_tokens=64, precision="fp32").encode(docs[:16])
    half = E.Embedder(max_tokens=64, precision="bf16").encode(docs[:16])
    assert np.min((ref * half).sum(1)) > 0.999
    assert E.resolve_precision("auto", "cuda:0") == "fp16"
    assert E.resolve_precision("auto", "cpu") == "fp32"  # with or without native bf16: bf16 only when asked for
    with pytest.raises(ValueError, match="precision"):
        E.resolve_precision("int8", "cpu")


def test_order_duplicates_empty_and_norm(docs):
    emb = E.Embedder(max_tokens=32)
    a, b = docs[0], docs[5]
    before = dict(E.COUNTERS)
    out = emb.encode([a, b, a, a])
    assert E.COUNTERS["texts"] - before.get("texts", 0) == 4
    assert E.COUNTERS["unique_texts"] - before.get("unique_texts", 0) == 2  # copies embedded once
    assert np.array_equal(out[0], out[2]) and np.array_equal(out[0], out[3])
    assert np.allclose(out[1], emb.encode([b])[0], atol=1e-6)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert emb.encode([]).shape == (0, 384)


def test_encode_many_with_overlap_equals_encode(docs):
    emb = E.Embedder(max_tokens=32)
    chunks = [docs[:10], [], docs[10:25], docs[25:26]]
    for overlap in (False, True):  # True: tokenizing the next chunk on a thread, as on CUDA
        got = list(emb.encode_many(iter(chunks), overlap=overlap))
        assert [len(g) for g in got] == [10, 0, 15, 1]
        assert np.allclose(np.concatenate(got), emb.encode(docs[:26]), atol=1e-6)


def test_batches_fill_a_token_budget():
    emb = E.Embedder(max_tokens=64, batch_size=4)
    lengths = np.array([64, 3, 64, 10, 2, 64, 5, 7, 64, 1, 2, 2] * 3)
    batches = emb.batches(lengths)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every index once
    assert all(len(b) * lengths[b].max() <= 4 * 64 for b in batches)  # padded tokens within budget
    assert max(len(b) for b in batches) > 4  # short documents share bigger batches
    assert lengths[flat].tolist() == sorted(lengths.tolist(), reverse=True)  # longest first
    assert all(len(set(lengths[b].tolist())) == 1 for b in batches)  # CPU: one token count per batch, no padding


def test_cache_key_names_what_made_the_vectors(tmp_path):
    a = E.Embedder(max_tokens=64, precision="fp32")
    assert a.cache_key() == E.Embedder(max_tokens=64, precision="fp32", batch_size=7).cache_key()  # batching is not content
    assert a.cache_key() != E.Embedder(max_tokens=128, precision="fp32").cache_key()
    assert a.cache_key() != E.Embedder(max_tokens=64, precision="bf16").cache_key()
    (tmp_path / "config.json").write_text("{}")
    assert E.model_fingerprint(str(tmp_path)) != E.model_fingerprint(a.model_path)
    with pytest.raises(ValueError, match="max_tokens"):
        E.Embedder(max_tokens=2)


def test_word_prefix_cuts_at_whitespace_only():
    assert E._word_prefix("short", 100) == "short"
    assert E._word_prefix("alpha beta  gamma delta", 14) == "alpha beta"
    assert E._word_prefix("nospaceatall" * 5, 10) == "nospaceatall" * 5  # cannot cut safely: keep all
    assert E._word_prefix("a\x1cb c", 4) == "a\x1cb"  # a control char is not a word boundary
