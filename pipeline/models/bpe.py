"""Byte-level BPE tokenizer: train on documents, save as a `tokenizers` JSON, encode documents to ids.

Byte-level (GPT-2 style) so every string round-trips losslessly and no text is ever out of
vocabulary. The special token `EOS` has id 0; documents are separated by it in token streams.

Determinism: the same texts give a byte-identical JSON file. The `tokenizers` trainer counts pairs
in parallel (rayon), but the counts are exact integer sums and merges of equal count are ordered by
pair ids, so threads do not change the result; checked with `TOKENIZERS_PARALLELISM` on, across
processes (tests/test_bpe.py checks two trainings in one process). No thread setting is needed.
"""
from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

from pipeline import io

EOS = "<|endoftext|>"
EOS_ID = 0


def _new_tokenizer():
    """An empty byte-level BPE tokenizer (ByteLevel pre-tokenizer and decoder, no prefix space)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path) -> Path:
    """Train a byte-level BPE of at most `vocab_size` tokens (EOS = id 0, then the 256 byte
    symbols, then merges) on `texts` and write it atomically to `path`; returns `path`."""
    from tokenizers import pre_tokenizers, trainers

    n_base = len(pre_tokenizers.ByteLevel.alphabet()) + 1
    if vocab_size < n_base:
        raise ValueError(f"vocab_size {vocab_size} is below the {n_base} byte symbols + EOS of a byte-level BPE")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.token_to_id(EOS) != EOS_ID:
        raise RuntimeError(f"{EOS} got id {tok.token_to_id(EOS)}, expected {EOS_ID}")
    io.atomic_write(path, lambda tmp: tok.save(str(tmp)))
    _load.cache_clear()  # a cached tokenizer of the same path is now stale
    return path


@lru_cache(maxsize=8)
def _load(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def load(path) -> "tokenizers.Tokenizer":  # noqa: F821
    """The tokenizer saved at `path` (cached per path string)."""
    return _load(str(path))


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id: uint16 up to 65535 tokens, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def count_tokens(tok, texts: list[str]) -> np.ndarray:
    """Tokens per document (int64), without EOS."""
    enc = tok.encode_batch(list(texts), add_special_tokens=False)
    return np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))


def encode_docs(tok, texts: list[str], eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ids of all `texts` concatenated, each followed by EOS when `eos` (dtype from the vocab
    size), and the int64 token count of each document without its EOS."""
    texts = list(texts)
    dtype = token_dtype(tok.get_vocab_size(with_added_tokens=True))
    enc = tok.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) for e in enc), dtype=np.int64, count=len(enc))
    total = int(lengths.sum()) + (len(enc) if eos else 0)
    out = np.empty(total, dtype=dtype)
    pos = 0
    for e, n in zip(enc, lengths):
        out[pos:pos + n] = e.ids
        pos += int(n)
        if eos:
            out[pos] = EOS_ID
            pos += 1
    return out, lengths
