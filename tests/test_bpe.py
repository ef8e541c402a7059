"""Byte-level BPE: lossless round trip, EOS layout, determinism, vocab size, dtype."""
from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline.models import bpe

WORDS = ["the", "cat", "sat", "on", "mat", "data", "curation", "token", "кот", "данные", "猫", "数据", "🙂", "🚀", "café"]


def _corpus(n: int = 600, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 40))) for _ in range(n)]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    return bpe.train_bpe(_corpus(), 400, tmp_path_factory.mktemp("bpe") / "tok.json")


@pytest.fixture(scope="module")
def tok(tok_path):
    return bpe.load(tok_path)


SAMPLES = [
    "Hello, world!  Two spaces,\ttabs\nand newlines.\n",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "数据整理 是 预训练 的 关键。日本語のテキストも。",
    "emoji 🙂🚀👩‍💻 and flags 🇫🇷, zero-width\u200bjoiner",
    "",
    " leading space and trailing ",
    "unseen bytes: \x00\x01 ÿ ǅ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
]


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_lossless(tok, text):
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text


def test_eos_is_id_zero_and_lengths(tok):
    assert tok.token_to_id(bpe.EOS) == bpe.EOS_ID == 0
    ids, lengths = bpe.encode_docs(tok, SAMPLES)
    assert ids.dtype == np.uint16 and lengths.dtype == np.int64
    assert int(lengths.sum()) + len(SAMPLES) == len(ids)
    assert int((ids == 0).sum()) == len(SAMPLES)  # no text maps to EOS
    ends = np.cumsum(lengths + 1) - 1
    assert (ids[ends] == 0).all()
    starts = ends - lengths
    for text, s, n in zip(SAMPLES, starts, lengths):
        assert tok.decode(ids[s:s + n].tolist()) == text
    np.testing.assert_array_equal(bpe.count_tokens(tok, SAMPLES), lengths)


def test_encode_without_eos(tok):
    ids, lengths = bpe.encode_docs(tok, SAMPLES, eos=False)
    assert len(ids) == int(lengths.sum()) and not (ids == 0).any()
    assert tok.decode(ids.tolist()) == "".join(SAMPLES)


def test_deterministic(tmp_path, tok_path):
    again = bpe.train_bpe(_corpus(), 400, tmp_path / "again.json")
    assert again.read_bytes() == tok_path.read_bytes()
    other = bpe.train_bpe(_corpus(seed=1)[:50], 400, tmp_path / "other.json")
    assert other.read_bytes() != tok_path.read_bytes()
    assert not list(tmp_path.glob("*.tmp"))  # atomic write leaves no temp file


def test_vocab_size_respected(tok, tmp_path):
    assert 257 < tok.get_vocab_size() <= 400
    big = bpe.load(bpe.train_bpe(_corpus(2000) + SAMPLES, 300, tmp_path / "small.json"))
    assert big.get_vocab_size() <= 300
    with pytest.raises(ValueError, match="vocab_size"):
        bpe.train_bpe(["x"], 100, tmp_path / "tiny.json")


def test_load_cached(tok_path):
    assert bpe.load(tok_path) is bpe.load(str(tok_path))


def test_token_dtype():
    assert bpe.token_dtype(4096) == np.uint16
    assert bpe.token_dtype(65535) == np.uint16
    assert bpe.token_dtype(65536) == np.uint32
    assert bpe.token_dtype(200_000) == np.uint32
