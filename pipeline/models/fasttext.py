"""fastText classifiers: P(positive label) of each document, fast (the model behind scorers/fasttext.py and BETR).

Text is normalized as in DCLM's classifier (lowercase, whitespace collapsed to single spaces, one
line; NUL counts as whitespace because fastText splits on it) both when training
(`pipeline/models/train.py`) and when scoring, so the two always see the same tokens.

Fast path. A supervised fastText model with softmax loss and no character n-grams (what
`curate train-fasttext` writes; DCLM's and FineWeb-Edu-style classifiers are of this kind) is
linear up to the softmax: logits = O . mean(A[rows]), where `rows` are the input-matrix rows of the
document's words and hashed word n-grams. Since mean(A[rows]) . O^T = mean((A O^T)[rows]), we
precompute the logit contribution of every row once (for two labels, one float per row: the margin
pos - neg), and a document costs one lookup and one add per word and per word n-gram instead of
`dim` multiply-adds. Tokenization and lookups are vectorized over the whole batch in numpy, on the
UTF-8 bytes: tokens are runs of non-whitespace bytes; each gets fastText's FNV-1a hash (bytes
sign-extended as int8, used for word n-gram buckets: h = h * 116049371 + h_next, modulo `bucket`)
and a 64-bit identity hash looked up in an open-addressing table of the vocabulary (a false match
needs a 64-bit collision). No Python code runs per token. Scores equal fastText's own `predict`
up to float32 rounding (tests/test_score_fasttext.py). Other models (quantized .ftz, subword
models, hs/ova loss) go through fastText's batched `predict`.

The model loads once per process and path (`load_model`); the scorer (scorers/fasttext.py) loads it
when built, before any document.
"""
from __future__ import annotations

import os

import numpy as np

from pipeline.models.keyindex import KeyIndex


LABEL_PREFIX = "__label__"
EOS = "</s>"
_MODELS: dict[tuple[str, str], "FastTextModel"] = {}
_WS = np.zeros(256, dtype=bool)
_WS[[0, 9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True  # + NUL, which fastText splits on
_LONG = 255  # tokens longer than this many bytes are hashed in Python (rare)


def normalize(text: str) -> str:
    """DCLM's classifier normalization: lowercase, whitespace runs -> one space, single line."""
    return " ".join(text.replace("\x00", " ").lower().split())


_SEXT = np.arange(256, dtype=np.uint8).astype(np.int8).astype(np.int32).view(np.uint32)  # byte -> int8 -> uint32
_MASK = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [(1 << 64) - 1], dtype=np.uint64)  # low i bytes
_K1, _K2, _K3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def fnv1a32(buf: np.ndarray, start: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """fastText's word hash of the tokens buf[start:start+len] (FNV-1a over the bytes, each byte
    sign-extended as int8), returned as int64 of the int32. Vectorized over character positions:
    tokens are sorted by length once, so step j works on a contiguous prefix (tokens longer than j)."""
    n = len(start)
    h32 = np.full(n, 2166136261, dtype=np.uint32)
    if n:
        clipped = np.minimum(lens, _LONG + 1)
        order = np.argsort(-clipped.astype(np.int16), kind="stable")
        live_n = np.bincount(clipped, minlength=_LONG + 2)[::-1].cumsum()[::-1]  # live_n[j] = #tokens of len >= j
        st = start[order]
        with np.errstate(over="ignore"):
            for j in range(min(int(clipped.max()), _LONG)):
                k = int(live_n[j + 1])
                h32[:k] = (h32[:k] ^ _SEXT[buf[st[:k] + j]]) * np.uint32(16777619)
        h32[order] = h32.copy()
        for i in np.flatnonzero(lens > _LONG):  # rare very long tokens: finish in Python
            a = int(h32[i])
            for x in buf[start[i] + _LONG:start[i] + lens[i]].tolist():
                a = ((a ^ int(_SEXT[x])) * 16777619) & 0xFFFFFFFF
            h32[i] = a
    return h32.view(np.int32).astype(np.int64)


def identity64(buf: np.ndarray, start: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """64-bit key of each token's bytes, 8 bytes per step through an unaligned uint64 view (most
    words take one step). `buf` must be followed by 8 readable bytes (see `padded`)."""
    w8 = np.ndarray(shape=(len(buf) - 8,), dtype="<u8", buffer=buf, strides=(1,))
    with np.errstate(over="ignore"):
        h = lens.astype(np.uint64) * _K1
        h ^= w8[start] & _MASK[np.minimum(lens, 8)]
        h *= _K2
        multi = np.flatnonzero(lens > 8)
        c = 1
        while len(multi):
            rem = lens[multi] - 8 * c
            x = (h[multi] ^ (w8[start[multi] + 8 * c] & _MASK[np.minimum(rem, 8)])) * _K2
            h[multi] = x ^ (x >> np.uint64(29))
            multi = multi[rem > 8]
            c += 1
        h ^= h >> np.uint64(32)
        h *= _K3
        h ^= h >> np.uint64(29)
    return h


def _is(buf: np.ndarray, start: np.ndarray, lens: np.ndarray, word: bytes) -> np.ndarray:
    """Mask of the tokens equal to `word`."""
    idx = np.flatnonzero(lens == len(word))
    for j, c in enumerate(word):
        idx = idx[buf[start[idx] + j] == c]
    m = np.zeros(len(start), dtype=bool)
    m[idx] = True
    return m


def padded(data: bytes) -> np.ndarray:
    return np.frombuffer(data + b"\0" * 8, dtype=np.uint8)


_EOS_SEP = b" </s> "


def _unicode_spaces(body: np.ndarray) -> np.ndarray:
    """Start positions and byte lengths of the UTF-8 encodings of Python's non-ASCII whitespace
    (U+0085, U+00A0, U+1680, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000)."""
    n = len(body)
    cand = np.flatnonzero((body == 0xC2) | ((body >= 0xE1) & (body <= 0xE3)))
    cand = cand[cand + 2 < n]
    if not len(cand):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    b0, b1, b2 = body[cand], body[cand + 1], body[cand + 2]
    two = (b0 == 0xC2) & ((b1 == 0x85) | (b1 == 0xA0))
    three = (((b0 == 0xE1) & (b1 == 0x9A) & (b2 == 0x80))
             | ((b0 == 0xE2) & (b1 == 0x80) & (((b2 >= 0x80) & (b2 <= 0x8A)) | (b2 == 0xA8) | (b2 == 0xA9) | (b2 == 0xAF)))
             | ((b0 == 0xE2) & (b1 == 0x81) & (b2 == 0x9F))
             | ((b0 == 0xE3) & (b1 == 0x80) & (b2 == 0x80)))
    hit = two | three
    return cand[hit], np.where(two[hit], 2, 3)


_EOS_SEP = b" </s> "


def tokenize_batch(texts: list[str], lowercase: bool = True):
    """Tokens of each text as fastText reads `normalize(text) + "\\n"`: (bytes + 8 bytes of padding,
    token starts, token lengths, document of each token). Each document is followed by a literal
    "</s>" token standing for the newline (fastText turns it into the same word)."""
    parts = [(t.lower() if lowercase else t).encode("utf-8", "surrogatepass") for t in texts]
    buf = padded(_EOS_SEP.join(parts) + _EOS_SEP)
    body = buf[:-8]
    ws = _WS[body]
    us, ul = _unicode_spaces(body)
    for k in range(3):  # every byte of a Unicode space is a separator, as if it were " "
        sel = us[ul > k]
        ws[sel + k] = True
    edge = np.diff(ws.view(np.int8), prepend=np.int8(1))  # -1: a token starts, +1: it ended
    start = np.flatnonzero(edge == -1)
    lens = np.flatnonzero(edge == 1) - start  # the buffer ends with a space, so every token ends
    offs = np.zeros(len(parts), dtype=np.int64)
    if len(parts) > 1:
        offs[1:] = np.cumsum(np.fromiter((len(p) + len(_EOS_SEP) for p in parts[:-1]), dtype=np.int64, count=len(parts) - 1))
    first = np.searchsorted(start, offs)  # index of each document's first token
    doc = np.repeat(np.arange(len(parts)), np.diff(np.append(first, len(start))))
    return buf, start, lens, doc


class FastTextModel:
    """A loaded fastText classifier: `p_positive(texts)` over raw or normalized texts."""

    def __init__(self, path: str, positive_label: str):
        try:
            import fasttext
        except ImportError as e:  # pragma: no cover - core dependency
            raise RuntimeError("fastText scoring needs 'fasttext-community' (imports as fasttext)") from e
        if not os.path.exists(path):
            raise FileNotFoundError(f"fastText model not found: {path}")
        self.model = fasttext.load_model(path)
        labels = list(self.model.get_labels())
        label = positive_label if positive_label.startswith(LABEL_PREFIX) else LABEL_PREFIX + positive_label
        if label not in labels:
            raise ValueError(f"{path}: positive label {label!r} not among the model's labels {labels}")
        self.labels, self.pos = labels, labels.index(label)
        args = self.model.f.getArgs()
        self.linear = (not self.model.is_quantized() and str(args.loss).endswith("softmax") and args.maxn <= 0
                       and args.label == LABEL_PREFIX)
        if self.linear:
            self.linear = self._collapse(args)

    def _collapse(self, args) -> bool:
        words = list(self.model.get_words())
        enc = [w.encode("utf-8", "surrogatepass") for w in words]
        buf = padded(b"".join(enc))
        lens = np.fromiter((len(e) for e in enc), dtype=np.int64, count=len(enc))
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if len(enc) else np.zeros(0, dtype=np.int64)
        key = identity64(buf, starts, lens)
        if len(np.unique(key)) != len(key):  # 64-bit identity collision in the vocabulary: be exact instead
            return False
        self.word_h32 = fnv1a32(buf, starts, lens)
        A = self.model.get_input_matrix()
        B = self.model.get_output_matrix().astype(np.float64)
        if len(self.labels) == 2:
            w = B[self.pos] - B[1 - self.pos]
            self.table = np.concatenate([A[i:i + 65536].astype(np.float64) @ w for i in range(0, len(A), 65536)])
        else:
            self.table = np.concatenate([A[i:i + 65536].astype(np.float64) @ B.T for i in range(0, len(A), 65536)])
        self.table_ext = np.concatenate([self.table, np.zeros((1,) + self.table.shape[1:])])
        self.nwords, self.bucket, self.ngrams = len(words), int(args.bucket), int(args.wordNgrams)
        self.vocab = KeyIndex(key, slots_per_key=4)  # sparse table: ~1.2 probes per lookup
        self.eos_row = words.index(EOS) if EOS in words else -1
        self.eos_h32 = int(fnv1a32(padded(EOS.encode()), np.array([0]), np.array([len(EOS)]))[0])
        return True

    def p_positive(self, texts: list[str], normalized: bool = False) -> np.ndarray:
        """P(positive) of each text (float64), as fastText predicts it on `normalize(text)`;
        `normalized=True` skips the lowercasing (the texts are already normalized)."""
        if not texts:
            return np.zeros(0)
        if not self.linear:
            return self._predict([t if normalized else normalize(t) for t in texts])
        buf, start, lens, doc = tokenize_batch(texts, lowercase=not normalized)
        n_docs = len(texts)
        found, rows = self.vocab.find(identity64(buf, start, lens))
        rows[~found] = -1
        h32 = self.word_h32[rows]  # (garbage where not found, overwritten next)
        oov = np.flatnonzero(~found)  # only words outside the vocabulary need hashing byte by byte
        if len(oov):
            h32[oov] = fnv1a32(buf, start[oov], lens[oov])
        keep = None
        # fastText stops reading a line at its first "</s>": our separator ends every document, so
        # only a literal "</s>" inside a text cuts it short (rare; checked with one comparison)
        is_eos = found & (rows == self.eos_row) if self.eos_row >= 0 else _is(buf, start, lens, EOS.encode())
        eos_at = np.flatnonzero(is_eos)
        if len(eos_at) > n_docs:
            first = np.full(n_docs, len(doc), dtype=np.int64)
            np.minimum.at(first, doc[eos_at], eos_at)
            keep = np.arange(len(doc)) <= first[doc]
        # an unknown token starting with the label prefix is a label: fastText skips it entirely
        if len(oov):
            pfx = np.frombuffer(LABEL_PREFIX.encode(), dtype=np.uint8)
            cand = oov[lens[oov] >= len(pfx)]
            for j, c in enumerate(pfx):
                cand = cand[buf[start[cand] + j] == c]
            if len(cand):
                keep = np.ones(len(start), dtype=bool) if keep is None else keep
                keep[cand] = False
        if keep is not None:
            rows, h32, doc = rows[keep], h32[keep], doc[keep]
        two = self.table.ndim == 1
        tab = self.table_ext  # the table plus a zero row at index -1, for words outside the vocabulary
        ntok = np.bincount(doc, minlength=n_docs)
        cnt = (ntok - np.bincount(doc[rows < 0], minlength=n_docs)).astype(np.float64)
        sums = [np.bincount(doc, weights=tab[rows] if two else tab[rows, c], minlength=n_docs) for c in range(1 if two else tab.shape[1])]
        h0 = h32.view(np.uint64)  # int32 sign-extended to 64 bits, as fastText does
        with np.errstate(over="ignore"):
            for n in range(2, self.ngrams + 1):
                m = len(h0) - n + 1
                if m <= 0:
                    break
                h = h0[:m] * np.uint64(116049371) + h0[1:m + 1]
                for j in range(2, n):
                    h = h * np.uint64(116049371) + h0[j:j + m]
                ng_rows = (h % np.uint64(self.bucket)).astype(np.int64)
                ng_rows += self.nwords
                d = doc[:m]
                cross = np.flatnonzero(d != doc[n - 1:])  # windows spanning two documents: weight 0
                cnt += np.maximum(ntok - (n - 1), 0)
                for c in range(len(sums)):
                    w = tab[ng_rows] if two else tab[ng_rows, c]
                    w[cross] = 0.0
                    sums[c] += np.bincount(d, weights=w, minlength=n_docs)
        safe = np.maximum(cnt, 1)
        if two:
            prob = 1.0 / (1.0 + np.exp(-sums[0] / safe))
        else:
            logits = (np.stack(sums) / safe).T
            logits -= logits.max(axis=1, keepdims=True)
            e = np.exp(logits)
            prob = e[:, self.pos] / e.sum(axis=1)
        return np.where(cnt > 0, prob, np.nan)  # fastText predicts nothing for a line without known input

    def _predict(self, lines: list[str]) -> np.ndarray:
        labels, probs = self.model.predict(lines, k=-1)
        want = self.labels[self.pos]
        out = np.full(len(lines), np.nan)
        for i, (lab, pr) in enumerate(zip(labels, probs)):
            for lb, p in zip(lab, pr):
                if lb == want:
                    out[i] = min(float(p), 1.0)
        return out


def load_model(path: str, positive_label: str = "pos") -> FastTextModel:
    key = (os.path.abspath(path), positive_label)
    m = _MODELS.get(key)
    if m is None:
        m = _MODELS[key] = FastTextModel(path, positive_label)
    return m
