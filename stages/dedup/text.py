"""Text normalization and shingling for deduplication, a whole batch at a time.

A batch of texts becomes one normalized UTF-8 byte buffer in which words are separated by exactly
one space, so the bytes of a word n-gram are a contiguous slice, `b" ".join(words[i:i+n])`. The
hash kernels then work on (start, end) ranges of that buffer: no Python object per token.

`normalize()` and `shingles()` are the per-document reference: the batch (compiled) path produces
exactly the same bytes (tested), and users feeding `datasketch` use them to build the same sets.

Normalization (each step optional): lowercase; NFKD + drop combining marks (diacritics) for
non-ASCII text; punctuation, symbols and control characters -> space; every digit -> "0";
whitespace runs -> one space (always). Bytes are mapped with a 256-entry table in one compiled
pass over the batch (ASCII, most of the web, needs nothing else); non-ASCII documents first go
through a code point table.
"""
from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from stages.dedup.jit import njit

SPACE = 0x20
# What str.split() treats as whitespace in ASCII (including the \x1c-\x1f separators).
_ASCII_WS = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "


@dataclass(frozen=True)
class Normalization:
    lowercase: bool = True
    punctuation: bool = True  # punctuation, symbols and control characters -> space
    digits: bool = True  # every decimal digit -> "0"
    unicode: bool = True  # NFKD + drop combining marks (non-ASCII text only)

    def key(self) -> tuple:
        return (self.lowercase, self.punctuation, self.digits, self.unicode)


@lru_cache(maxsize=16)
def _byte_table(norm: Normalization) -> np.ndarray:
    """256-entry map applied to the UTF-8 bytes; bytes >= 0x80 (multi-byte chars) pass unchanged."""
    t = np.arange(256, dtype=np.uint8)
    for c in _ASCII_WS:
        t[ord(c)] = SPACE
    if norm.punctuation:
        for c in string.punctuation:
            t[ord(c)] = SPACE
        for b in list(range(0, 32)) + [127]:
            t[b] = SPACE
    if norm.digits:
        t[ord("0"):ord("9") + 1] = ord("0")
    return t


DELETE = np.uint32(0xFFFFFFFF)


@lru_cache(maxsize=16)
def _codepoint_table(norm: Normalization) -> np.ndarray:
    """uint32 map over all code points (DELETE = drop the character); ~0.2 s once per process."""
    t = np.arange(0x110000, dtype=np.uint32)
    t[:256] = np.where(np.arange(256) < 128, _byte_table(norm), t[:256])
    # Past U+323AF only tags/variation selectors (E0000-E01EF) are assigned outside private use.
    for cp in [*range(128, 0x323B0), *range(0xE0000, 0xE01F0)]:
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if ch.isspace():
            t[cp] = SPACE
        elif norm.unicode and cat == "Mn":
            t[cp] = DELETE
        elif norm.punctuation and (cat[0] in "PS" or cat == "Cc"):
            t[cp] = SPACE
        elif norm.punctuation and cat == "Cf":
            t[cp] = DELETE  # zero-width space/joiner, soft hyphen: invisible, not a word break
        elif norm.digits and cat == "Nd":
            t[cp] = ord("0")
    return t


@lru_cache(maxsize=16)
def _translate_dict(norm: Normalization) -> dict[int, int | None]:
    t = _codepoint_table(norm)
    changed = np.flatnonzero(t != np.arange(len(t), dtype=np.uint32))
    return {int(cp): (None if t[cp] == DELETE else int(t[cp])) for cp in changed}


def _prepare(text: str, norm: Normalization) -> str:
    """Per-document steps before the table: NFKD (non-ASCII only), then lowercase."""
    if norm.unicode and not text.isascii():
        text = unicodedata.normalize("NFKD", text)
    return text.lower() if norm.lowercase else text


def normalize(text: str, norm: Normalization = Normalization()) -> str:
    """Reference normalization of one document (the batch path gives the same bytes)."""
    text = _prepare(text, norm).translate(_translate_dict(norm))
    return " ".join(text.split())


def shingles(text: str, norm: Normalization = Normalization(), n: int = 5, unit: str = "word") -> list[bytes]:
    """Reference shingles of one document, as UTF-8 bytes (what to feed `datasketch.MinHash`).

    Word n-grams are `" ".join(words[i:i+n])`; char n-grams are `t[i:i+n]` of the normalized text.
    A document with fewer than n units gives one shingle of all of them; an empty one gives none."""
    t = normalize(text, norm)
    items = t.split(" ") if unit == "word" else list(t)
    if not t:
        return []
    if len(items) < n:
        return [t.encode("utf-8", "surrogatepass")]
    sep = " " if unit == "word" else ""
    return [sep.join(items[i:i + n]).encode("utf-8", "surrogatepass") for i in range(len(items) - n + 1)]


@dataclass
class Compact:
    """A batch of normalized documents in one buffer. Documents are separated by one space.

    buf: uint8 array; doc_start/doc_end: byte range of each normalized document (trimmed);
    word_start/word_end/word_doc: every word in buffer order."""

    buf: np.ndarray
    doc_start: np.ndarray
    doc_end: np.ndarray
    word_start: np.ndarray
    word_end: np.ndarray
    word_doc: np.ndarray

    @property
    def n_docs(self) -> int:
        return len(self.doc_start)

    def doc_bytes(self, i: int) -> bytes:
        return self.buf[self.doc_start[i]:self.doc_end[i]].tobytes()


def _encode(texts: list[str], norm: Normalization) -> list[bytes]:
    """UTF-8 of every prepared document; non-ASCII ones mapped through the code point table in one
    numpy gather for the whole batch (str.translate with a large dict costs ~80 ns/char)."""
    out: list[bytes | None] = [None] * len(texts)
    uni, where = [], []
    for i, t in enumerate(texts):
        t = _prepare(t, norm)
        if t.isascii():
            out[i] = t.encode()
        else:
            uni.append(t)
            where.append(i)
    if uni:
        table = _codepoint_table(norm)
        cp = table[np.frombuffer("".join(uni).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)]
        keep = cp != DELETE
        bounds = np.zeros(len(uni) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, uni), dtype=np.int64, count=len(uni)), out=bounds[1:])
        kept_before = np.zeros(len(cp) + 1, dtype=np.int64)
        np.cumsum(keep, out=kept_before[1:])
        new_bounds = kept_before[bounds].tolist()
        mapped = cp[keep].tobytes().decode("utf-32-le", "surrogatepass")
        for j, i in enumerate(where):
            out[i] = mapped[new_bounds[j]:new_bounds[j + 1]].encode("utf-8", "surrogatepass")
    return out


@njit
def _compact_kernel(raw, table, doc_raw_start):
    """One pass over the joined raw bytes: map through `table`, keep every non-space byte and the
    first space after a word; word ranges in the output and, per document, its first word.
    Branch-free: every byte is stored and counters advance by 0 or 1 (word boundaries every ~6
    bytes would mispredict a branch)."""
    n_raw, n_docs = len(raw), len(doc_raw_start)
    buf = np.empty(n_raw + 1, dtype=np.uint8)
    word_start = np.empty(n_raw // 2 + 2, dtype=np.int64)
    word_end = np.empty(n_raw // 2 + 2, dtype=np.int64)
    first = np.empty(n_docs, dtype=np.int64)
    nb, ns, ne, d, prev = 0, 0, 0, 0, 0
    for j in range(n_raw):
        while d < n_docs and doc_raw_start[d] <= j:  # documents start on word boundaries
            first[d] = ns
            d += 1
        c = table[raw[j]]
        cur = 1 if c != SPACE else 0
        word_start[ns] = nb
        ns += cur & (1 - prev)
        word_end[ne] = nb
        ne += prev & (1 - cur)
        buf[nb] = c
        nb += cur | prev
        prev = cur
    if prev:
        word_end[ne] = nb
        ne += 1
    while d < n_docs:
        first[d] = ns
        d += 1
    return buf[:nb].copy(), word_start[:ns].copy(), word_end[:ne].copy(), first


def compact(texts: list[str], norm: Normalization = Normalization()) -> Compact:
    """Normalize a batch into one buffer `" ".join(all words)` (see module doc)."""
    n = len(texts)
    encs = _encode(texts, norm)
    lens = np.fromiter(map(len, encs), dtype=np.int64, count=n)
    doc_raw_start = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lens[:-1] + 1, out=doc_raw_start[1:])
    raw = np.frombuffer(b" ".join(encs), dtype=np.uint8)
    buf, word_start, word_end, first = _compact_kernel(raw, _byte_table(norm), doc_raw_start)
    counts = np.diff(np.append(first, len(word_start)))
    word_doc = np.repeat(np.arange(n, dtype=np.int64), counts)
    # Empty documents sit at their position in the buffer, so doc_start stays sorted.
    doc_start = np.append(word_start, len(buf))[first]
    doc_end = doc_start.copy()
    has = counts > 0
    doc_end[has] = word_end[first[has] + counts[has] - 1]
    return Compact(buf, doc_start, doc_end, word_start, word_end, word_doc)


@dataclass
class Shingles:
    """Byte ranges [start, end) in `buf` of every shingle, grouped by document in order."""

    buf: np.ndarray
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray  # (n_docs + 1,): shingles of doc d are [offsets[d], offsets[d+1])

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_bytes(self, d: int) -> list[bytes]:
        b = self.buf
        return [b[s:e].tobytes() for s, e in zip(self.start[self.offsets[d]:self.offsets[d + 1]], self.end[self.offsets[d]:self.offsets[d + 1]])]


def _units(c: Compact, unit: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if unit == "word":
        return c.word_start, c.word_end, c.word_doc
    # Characters of each normalized document: UTF-8 lead bytes inside [doc_start, doc_end).
    size = len(c.buf) + 1
    mark = np.bincount(c.doc_start, minlength=size) - np.bincount(c.doc_end, minlength=size)
    inside = np.cumsum(mark[:-1]) > 0
    lead = inside & ((c.buf & 0xC0) != 0x80)
    starts = np.flatnonzero(lead)
    doc = np.searchsorted(c.doc_start, starts, side="right") - 1
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    if len(starts):
        ends[-1] = c.doc_end[doc[-1]]
    last = np.ones(len(starts), dtype=bool)
    last[:-1] = doc[1:] != doc[:-1]
    ends[last] = c.doc_end[doc[last]]  # the last char of a doc ends at the doc's end
    return starts, ends, doc


@njit
def _shingle_kernel(u_start, u_end, first, counts, n):
    """Shingle d.i spans units first[d] + i .. first[d] + i + n - 1 (or all of a short document)."""
    n_docs = len(first)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    for d in range(n_docs):
        m = counts[d]
        offsets[d + 1] = offsets[d] + (m - n + 1 if m >= n else (1 if m > 0 else 0))
    start = np.empty(offsets[n_docs], dtype=np.int64)
    end = np.empty(offsets[n_docs], dtype=np.int64)
    for d in range(n_docs):
        f, last = first[d], first[d] + counts[d] - 1
        for k in range(offsets[d], offsets[d + 1]):
            u = f + k - offsets[d]
            start[k] = u_start[u]
            end[k] = u_end[min(u + n - 1, last)]
    return start, end, offsets


def shingle(c: Compact, n: int = 5, unit: str = "word") -> Shingles:
    """All n-gram shingles of a compacted batch (short documents: one shingle of all units)."""
    if n < 1:
        raise ValueError(f"shingle size must be >= 1, got {n}")
    u_start, u_end, u_doc = _units(c, unit)
    counts = np.bincount(u_doc, minlength=c.n_docs).astype(np.int64)
    first = np.zeros(c.n_docs, dtype=np.int64)
    if c.n_docs > 1:
        np.cumsum(counts[:-1], out=first[1:])
    start, end, offsets = _shingle_kernel(np.ascontiguousarray(u_start, dtype=np.int64), np.ascontiguousarray(u_end, dtype=np.int64),
                                          first, counts, n)
    return Shingles(c.buf, start, end, offsets)
