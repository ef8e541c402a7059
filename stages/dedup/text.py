"""Text normalization and shingling for deduplication, a whole batch at a time.

A batch of texts becomes one normalized UTF-8 byte buffer in which words are separated by exactly
one space, so the bytes of a word n-gram are a contiguous slice, `b" ".join(words[i:i+n])`. The
hash kernels then work on (start, end) ranges of that buffer: no Python object per token.

`normalize()` and `shingles()` are the per-document reference: the vectorized path produces
exactly the same bytes (tested), and users feeding `datasketch` use them to build the same sets.

Normalization (each step optional): lowercase; NFKD + drop combining marks (diacritics) for
non-ASCII text; punctuation, symbols and control characters -> space; every digit -> "0";
whitespace runs -> one space (always). ASCII text is mapped with a 256-entry byte table in numpy,
which is most of the web; non-ASCII documents go through `str.translate` first.
"""
from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

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
    """Reference normalization of one document (the vectorized path gives the same bytes)."""
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


def compact(texts: list[str], norm: Normalization = Normalization()) -> Compact:
    """Normalize a batch into one buffer `" ".join(all words)` (see module doc)."""
    n = len(texts)
    encs = _encode(texts, norm)
    lens = np.fromiter(map(len, encs), dtype=np.int64, count=n)
    arr = _byte_table(norm)[np.frombuffer(b" ".join(encs), dtype=np.uint8)]
    doc_raw_start = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lens[:-1] + 1, out=doc_raw_start[1:])
    padded = np.zeros(len(arr) + 2, dtype=bool)
    padded[1:-1] = arr != SPACE
    edges = np.flatnonzero(padded[1:] != padded[:-1])  # alternating word starts and ends (raw)
    ws_raw, we_raw = edges[0::2], edges[1::2]
    buf = arr[padded[1:-1] | padded[:-2]]  # every non-space byte and the first space after it
    wlen = we_raw - ws_raw
    word_start = np.zeros(len(wlen), dtype=np.int64)
    if len(wlen) > 1:
        np.cumsum(wlen[:-1] + 1, out=word_start[1:])
    word_end = word_start + wlen
    word_doc = np.searchsorted(doc_raw_start, ws_raw, side="right") - 1
    counts = np.bincount(word_doc, minlength=n)
    first = np.searchsorted(ws_raw, doc_raw_start)  # first word at/after each doc's start
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


def shingle(c: Compact, n: int = 5, unit: str = "word") -> Shingles:
    """All n-gram shingles of a compacted batch (short documents: one shingle of all units)."""
    u_start, u_end, u_doc = _units(c, unit)
    counts = np.bincount(u_doc, minlength=c.n_docs).astype(np.int64)
    first = np.zeros(c.n_docs, dtype=np.int64)
    if c.n_docs > 1:
        np.cumsum(counts[:-1], out=first[1:])
    k = np.arange(len(u_start), dtype=np.int64)
    local = k - first[u_doc]
    m = counts[u_doc]
    valid = local <= np.maximum(m - n, 0)
    kv = k[valid]
    last_unit = np.minimum(kv + n - 1, first[u_doc[kv]] + m[valid] - 1)
    per_doc = np.where(counts >= n, counts - n + 1, (counts > 0).astype(np.int64))
    offsets = np.zeros(c.n_docs + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    return Shingles(c.buf, u_start[kv], u_end[last_unit], offsets)
