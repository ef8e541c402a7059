"""MosaicML Streaming MDS writer (index.json + shard.00000.mds ...), without importing `streaming`.

`import streaming` pulls torchvision, which CPU clusters cannot import (OFFLINE.md), so this
reproduces `streaming.MDSWriter(out, columns, size_limit, compression=None, hashes=[])` (0.13)
byte for byte, shard split points included (tests/test_formats_mds.py compares the bytes).

Layout (streaming/base/format/mds/writer.py, base/writer.py, encodings.py):
  * sample = uint32 sizes of the variable-size columns, then each column's bytes, columns in
    sorted-name order. Encodings here: "str" (UTF-8, variable), "int"/"int64" (8-byte int64,
    fixed), "ndarray:<dtype>" for uint8/uint16/uint32/int32/int64 (1-D, variable: one byte
    (ndim << 2 | k), the length as the smallest uint of 2**k bytes that holds it, then the values;
    streaming refuses 0-element arrays, so empty token sequences are a ValueError here too).
  * shard = uint32 sample count, uint32 byte offsets (count + 1, from the file start), the JSON
    shard config, the samples.
  * split: a sample goes to a new shard when shard bytes (8 + config + sum(sample + 4)) would
    exceed size_limit; the first sample of a fresh shard is taken whatever its size. Quirk kept for
    byte identity: if the very first sample alone exceeds the limit, streaming writes an empty
    shard.00000.mds (0 samples) before it (its reader copes, with numpy divide-by-zero warnings).
  * 0 samples gives index.json with no shards, as streaming writes; StreamingDataset refuses to
    open that ("Stream contains no samples"), so a caller should not hand a trainer an empty dataset.
Sizes, headers and split points are computed with numpy; sample bytes are joined from slices.
Shards are written to dot-temp names, fsynced and renamed; index.json is written last the same
way, so a dataset without index.json is incomplete. An exception inside `with` removes the shards.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from pipeline.formats import AtomicWriter

_ARRAY_DTYPES = ("uint8", "uint16", "uint32", "int32", "int64")
ENCODINGS = {"str": None, "int": 8, "int64": 8, **{f"ndarray:{d}": None for d in _ARRAY_DTYPES}}


def _gather(src: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> bytes:
    """Concatenation of src[starts[i]:starts[i]+lens[i]].

    Slices, not a numpy byte-index gather: a gather needs an int64 index per data byte and measured
    8-80x slower than joining slices once segments average a few hundred bytes (50k token docs,
    200 MB: 8 s vs 0.1 s), and on par only at ~20 bytes. Sizes, offsets and split points are
    computed vectorized; this join is the only per-sample step.
    """
    view = memoryview(src)
    return b"".join([view[s:e] for s, e in zip(starts.tolist(), (starts + lens).tolist())])


def _ints(name: str, values, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = np.asarray(values)
    if a.shape != (n,) or a.dtype.kind not in "iu" or (a.size and a.dtype.kind == "u" and a.max() > 2**63 - 1):
        raise ValueError(f"MDS column {name!r}: expected {n} int64 values")
    return a.astype("<i8").view(np.uint8), np.arange(n, dtype=np.int64) * 8, np.full(n, 8, np.int64)


def _strs(name: str, values, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        enc = [s.encode("utf-8") for s in values]
    except AttributeError:
        raise ValueError(f"MDS column {name!r}: 'str' values must be str") from None
    lens = np.fromiter(map(len, enc), np.int64, len(enc))
    return np.frombuffer(b"".join(enc), np.uint8), np.cumsum(lens) - lens, lens


def _arrays(name: str, values, n: int, dtype: np.dtype) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Two segments per sample: the shape header and the values. A tuple is (flat values, offsets)."""
    if isinstance(values, tuple):
        flat, offsets = np.asarray(values[0]), np.asarray(values[1], np.int64)
    else:
        arrays = [np.asarray(v) for v in values]
        if any(a.ndim != 1 for a in arrays):
            raise ValueError(f"MDS column {name!r}: only 1-D arrays are supported")
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
        offsets = np.concatenate([[0], np.cumsum([a.size for a in arrays], dtype=np.int64)])
    lens = np.diff(offsets)
    if offsets.shape != (n + 1,) or flat.ndim != 1 or offsets[0] < 0 or offsets[-1] > flat.size or (lens < 1).any():
        raise ValueError(f"MDS column {name!r}: expected {n} non-empty 1-D arrays (streaming refuses empty ones)")
    flat = flat[offsets[0]:offsets[-1]]
    if flat.dtype.kind not in "iu" or (flat.dtype != dtype and (flat.min() < np.iinfo(dtype).min or flat.max() > np.iinfo(dtype).max)):
        raise ValueError(f"MDS column {name!r}: values do not fit {dtype.name}")
    vals = np.ascontiguousarray(flat, dtype=dtype).view(np.uint8)
    # header: (ndim 1) << 2 | k, then the length as uint of 2**k bytes, k the smallest that holds it;
    # little-endian, so the first 2**k bytes of the length as uint64 are exactly that uint
    k = np.searchsorted([1 << 8, 1 << 16, 1 << 32], lens, "right")
    heads = np.empty((n, 9), np.uint8)
    heads[:, 0] = 4 | k
    heads[:, 1:] = lens.astype("<u8").view(np.uint8).reshape(n, 8)
    lens_b = lens * dtype.itemsize
    return [(heads.ravel(), np.arange(n, dtype=np.int64) * 9, 1 + (1 << k)), (vals, np.cumsum(lens_b) - lens_b, lens_b)]


class MDSWriter(AtomicWriter):
    """Writes an MDS dataset identical to streaming.MDSWriter(compression=None, hashes=[])."""

    def __init__(self, out_dir: str | Path, columns: dict[str, str], size_limit: int | None = 1 << 26) -> None:
        bad = {k: v for k, v in columns.items() if v not in ENCODINGS}
        if bad or not columns:
            raise ValueError(f"MDS encodings supported here: {sorted(ENCODINGS)}; got {bad or 'no columns'}")
        if size_limit is not None and not 0 <= size_limit < 2**32:
            raise ValueError(f"size_limit must be in [0, 2**32) (uint32 offsets), got {size_limit}")
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        if any(not p.name.startswith(".") for p in self.out.iterdir()):
            raise ValueError(f"MDS output directory is not empty: {self.out}")
        self.names = sorted(columns)
        self.encodings = [columns[k] for k in self.names]
        self.size_limit = int(size_limit) if size_limit else None  # 0/None: one shard, as streaming
        self.config = {"version": 2, "format": "mds", "compression": None, "hashes": [],
                       "size_limit": self.size_limit, "column_names": self.names,
                       "column_encodings": self.encodings, "column_sizes": [ENCODINGS[e] for e in self.encodings]}
        self._config = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self._overhead = 8 + len(self._config)
        self._size = self._overhead  # current shard's bytes as streaming counts them
        self._data: list[bytes] = []  # current shard: sample bytes and sizes
        self._sizes: list[np.ndarray] = []
        self.shards: list[dict] = []  # index.json entries
        self.samples = 0
        self.summary: dict | None = None  # close()'s result, also when `with` closed it
        self._done = False

    def _encode(self, cols: dict, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(all source bytes, segment starts (n, S), segment lengths (n, S)) in sample byte order."""
        segs, var_sizes = [], []
        for name, enc in zip(self.names, self.encodings):
            if enc == "str":
                col = [_strs(name, cols[name], n)]
            elif ENCODINGS[enc]:
                col = [_ints(name, cols[name], n)]
            else:
                col = _arrays(name, cols[name], n, np.dtype(enc.split(":")[1]).newbyteorder("<"))
            if any(seg[2].shape != (n,) for seg in col):
                raise ValueError(f"MDS column {name!r}: expected {n} samples")
            if ENCODINGS[enc] is None:
                var_sizes.append(sum(seg[2] for seg in col))
            segs += col
        head = np.stack(var_sizes, 1) if var_sizes else np.zeros((n, 0))
        if head.size and head.max() >= 2**32:
            raise ValueError("an MDS sample column is >= 4 GiB (uint32 sizes)")
        w = 4 * head.shape[1]
        segs.insert(0, (head.astype("<u4").view(np.uint8).ravel(), np.arange(n, dtype=np.int64) * w, np.full(n, w, np.int64)))
        bases = np.cumsum([0] + [seg[0].size for seg in segs])
        src = np.concatenate([seg[0] for seg in segs])
        starts = np.stack([seg[1] + b for seg, b in zip(segs, bases)], 1)
        return src, starts, np.stack([seg[2] for seg in segs], 1)

    def write_batch(self, cols: dict) -> None:
        """Append samples. cols[name]: list of str / list or array of ints; for ndarray columns a
        list of 1-D arrays, or a tuple (flat values, offsets) with sample j = values[offsets[j]:offsets[j+1]].
        Values of another integer dtype are cast when they fit (streaming would refuse them)."""
        if self._done:
            raise ValueError("MDSWriter is closed")
        if set(cols) != set(self.names):
            raise ValueError(f"MDS batch columns {sorted(cols)} != writer columns {self.names}")
        first = cols[self.names[0]]
        n = len(first[1]) - 1 if isinstance(first, tuple) else len(first)
        if n <= 0:
            return
        src, starts, lens = self._encode(cols, n)
        sizes = lens.sum(1)
        c = np.concatenate([[0], np.cumsum(sizes + 4)])  # streaming counts 4 more bytes per sample
        i, fresh = 0, False
        while i < n:
            j = n if self.size_limit is None else int(np.searchsorted(c, self.size_limit - self._size + c[i], "right")) - 1
            if j <= i and not fresh:  # sample i does not fit: flush, even an empty shard (streaming does)
                self._flush()
                fresh = True
                continue
            j = max(j, i + 1)  # a fresh shard takes its first sample whatever its size
            self._data.append(_gather(src, starts[i:j].ravel(), lens[i:j].ravel()))
            self._sizes.append(sizes[i:j])
            self._size += int(c[j] - c[i])
            i, fresh = j, False
        self.samples += n

    def _write(self, name: str, parts: list) -> None:
        tmp = self.out / f".{name}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.writelines(parts)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.out / name)

    def _flush(self) -> None:
        sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)
        n = sizes.size
        offsets = np.concatenate([[0], np.cumsum(sizes)]) + 4 + 4 * (n + 1) + len(self._config)
        if offsets[-1] >= 2**32:
            raise ValueError("an MDS shard would be >= 4 GiB (uint32 offsets); lower size_limit")
        name = f"shard.{len(self.shards):05}.mds"
        self._write(name, [np.uint32(n).tobytes(), offsets.astype("<u4").tobytes(), self._config, *self._data])
        self.shards.append({"samples": n, "raw_data": {"basename": name, "bytes": int(offsets[-1]), "hashes": {}},
                            "zip_data": None, **self.config})
        self._data, self._sizes, self._size = [], [], self._overhead

    def close(self) -> dict:
        """Flush the last shard, then write index.json (atomically, last); return the summary."""
        if self._done:
            raise ValueError("MDSWriter is closed")
        if self._sizes:
            self._flush()
        self._write("index.json", [json.dumps({"version": 2, "shards": self.shards}, sort_keys=True).encode()])
        fd = os.open(self.out, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._done = True
        self.summary = {"samples": self.samples, "shards": len(self.shards)}
        return self.summary

    def abort(self) -> None:
        """Remove the shards and temp files written so far; no index.json is written."""
        if not self._done:
            for shard in self.shards:
                (self.out / shard["raw_data"]["basename"]).unlink(missing_ok=True)
            for tmp in self.out.glob(f".*.tmp-{os.getpid()}"):
                tmp.unlink()
            self._done = True

