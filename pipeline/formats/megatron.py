"""Megatron-core indexed dataset writer: PREFIX.bin (tokens) + PREFIX.idx (index).

The layout is megatron.core.datasets.indexed_dataset's `_IndexWriter` (0.16), without sequence
modes: header b"MMIDIDX\\x00\\x00", <Q version 1, <B dtype code, <Q sequence count, <Q document
count (= documents + 1), then int32 sequence lengths, int64 byte pointers into .bin, int64
document indices (0, 1, ..., n: one sequence per document). For the same documents the files are
byte-identical to megatron's `IndexedDatasetBuilder` output, except for an empty dataset (below).

Why not megatron's builder: it needs torch and appends one Python list item per document; this
writer takes whole batches (tokens + offsets) with no per-document Python work and streams tokens
to disk, keeping only the int32 lengths in memory.

Megatron quirks this follows:
  * dtypes: megatron has no uint32 code; vocabularies >= 65500 are stored as int32 (its own
    `DType.optimal_dtype`). Only uint16 and int32 are accepted.
  * empty documents are valid (length-0 sequences read back as empty arrays).
  * a 0-byte .bin cannot be opened (np.memmap refuses empty files), so when no token at all was
    written, .bin holds one zero token that no sequence points to: the dataset then opens with
    the right length (0 documents, or only empty documents).
Atomicity: both files are written under dot-prefixed temp names in the target directory, fsynced,
then renamed .bin first and .idx last (an older .idx is removed before), so an existing .idx means
a complete pair. An exception inside `with` removes the temp files and renames nothing.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from pipeline.formats import AtomicWriter

_HEADER = b"MMIDIDX\x00\x00"
_CODES = {np.dtype("<u2"): 8, np.dtype("<i4"): 4}  # megatron DType: uint16 = 8, int32 = 4
_PREAMBLE = len(_HEADER) + 8 + 1 + 8 + 8  # header, version, dtype code, sequence and document counts


def _paths(prefix: str | Path) -> tuple[Path, Path]:
    p = Path(prefix)
    return p.with_name(p.name + ".bin"), p.with_name(p.name + ".idx")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class IndexedWriter(AtomicWriter):
    """Streams documents into a Megatron-core indexed dataset at `prefix` (.bin + .idx)."""

    def __init__(self, prefix: str | Path, dtype: np.dtype) -> None:
        try:
            dt = np.dtype(dtype).newbyteorder("<")
        except TypeError:
            dt = None
        if dt not in _CODES:
            raise ValueError(f"megatron token dtype must be uint16 or int32 (megatron has no uint32 code), got {dtype!r}")
        self.dtype = dt
        self.bin_path, self.idx_path = _paths(prefix)
        self.bin_path.parent.mkdir(parents=True, exist_ok=True)
        tag = f".tmp-{os.getpid()}"
        self._tmp_bin = self.bin_path.with_name(f".{self.bin_path.name}{tag}")
        self._tmp_idx = self.idx_path.with_name(f".{self.idx_path.name}{tag}")
        self._file = open(self._tmp_bin, "wb")  # noqa: SIM115 - open across add_documents calls, closed by close()/abort()
        self._lengths: list[np.ndarray] = []
        self._tokens = 0
        self._done = False
        self.summary: dict | None = None

    def add_documents(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        """Append len(offsets)-1 documents, doc j = tokens[offsets[j]:offsets[j+1]], one sequence each.

        Any integer token dtype is accepted when its values fit the writer's dtype (range-checked,
        not wrapped); offsets must be non-decreasing and inside tokens.
        """
        if self._done:
            raise ValueError("IndexedWriter is closed")
        tokens, offsets = np.asarray(tokens), np.asarray(offsets)
        if tokens.ndim != 1 or tokens.dtype.kind not in "iu":
            raise ValueError(f"tokens must be a 1-D integer array, got {tokens.dtype} with shape {tokens.shape}")
        if offsets.ndim != 1 or offsets.size == 0 or offsets.dtype.kind not in "iu":
            raise ValueError("offsets must be a non-empty 1-D integer array (documents + 1 entries)")
        offsets = offsets.astype(np.int64)
        lengths = np.diff(offsets)
        if offsets[0] < 0 or offsets[-1] > tokens.size or (lengths < 0).any():
            raise ValueError(f"offsets must be non-decreasing within [0, {tokens.size}]")
        if lengths.size and lengths.max() > np.iinfo(np.int32).max:
            raise ValueError("a document is longer than megatron's int32 sequence length")
        chunk = tokens[offsets[0]:offsets[-1]]
        if chunk.dtype != self.dtype and chunk.size:
            info = np.iinfo(self.dtype)
            lo, hi = int(chunk.min()), int(chunk.max())
            if lo < info.min or hi > info.max:
                raise ValueError(f"token ids [{lo}, {hi}] do not fit {self.dtype.name}")
        chunk = np.ascontiguousarray(chunk, dtype=self.dtype)
        self._file.write(memoryview(chunk).cast("B"))
        self._lengths.append(lengths.astype("<i4"))
        self._tokens += chunk.size

    def close(self) -> dict:
        """Write .idx, fsync both, rename .bin then .idx into place; return the summary."""
        if self._done:
            raise ValueError("IndexedWriter is closed")
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, "<i4")
        n = lengths.size
        if self._tokens == 0:  # np.memmap (megatron's reader) cannot map an empty .bin
            self._file.write(np.zeros(1, self.dtype).tobytes())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        ends = np.cumsum(lengths, dtype=np.int64)
        pointers = ((ends - lengths) * self.dtype.itemsize).astype("<i8")
        with open(self._tmp_idx, "wb") as f:
            f.write(_HEADER + struct.pack("<QBQQ", 1, _CODES[self.dtype], n, n + 1))
            f.write(lengths.tobytes())
            f.write(pointers.tobytes())
            f.write(np.arange(n + 1, dtype="<i8").tobytes())
            f.flush()
            os.fsync(f.fileno())
        self.idx_path.unlink(missing_ok=True)  # never leave an older .idx next to the new .bin
        os.replace(self._tmp_bin, self.bin_path)
        os.replace(self._tmp_idx, self.idx_path)
        _fsync_dir(self.idx_path.parent)
        self._done = True
        self.summary = {"documents": int(n), "tokens": int(self._tokens), "dtype": self.dtype.name}
        return self.summary

    def abort(self) -> None:
        """Drop everything written so far: temp files removed, nothing renamed."""
        if not self._done:
            self._file.close()
            self._tmp_bin.unlink(missing_ok=True)
            self._tmp_idx.unlink(missing_ok=True)
            self._done = True



def read_index(prefix: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(sequence_lengths int32, document_indices int64) of PREFIX.idx, read into memory (no mmap to outlive)."""
    idx = _paths(prefix)[1]
    head = np.fromfile(idx, dtype=np.uint8, count=_PREAMBLE).tobytes()
    if len(head) < _PREAMBLE or head[:len(_HEADER)] != _HEADER:
        raise ValueError(f"{idx}: not a megatron indexed dataset index")
    version, _code, n_seq, n_doc = struct.unpack("<QBQQ", head[len(_HEADER):])
    if version != 1:
        raise ValueError(f"{idx}: unsupported index version {version}")
    lengths = np.fromfile(idx, dtype="<i4", count=n_seq, offset=_PREAMBLE)
    docs = np.fromfile(idx, dtype="<i8", count=n_doc, offset=_PREAMBLE + 12 * n_seq)
    if lengths.size != n_seq or docs.size != n_doc:
        raise ValueError(f"{idx}: truncated index")
    return lengths, docs
