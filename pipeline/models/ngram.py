"""N-gram language models: the model, KenLM-compatible ARPA files, vectorized scoring.

Models are trained by `pipeline.models.ngram_train` (interpolated modified Kneser-Ney, as KenLM's
`lmplz`) or read from any ARPA file; a model is written as an ARPA file that `kenlm.Model` loads,
plus a `.npz` twin that loads in milliseconds.

Scoring is vectorized over a whole batch: every n-gram window is hashed to 64 bits, looked up in
an open-addressing table of the model's keys (`keyindex.KeyIndex`), and the standard ARPA back-off
rule is applied with array operations: log p(w | h) = log p(longest matching n-gram) + sum of the back-off weights of the
longer contexts that exist. This gives KenLM's own numbers (tests/test_score_ngram.py checks it
against the `kenlm` module on an ARPA file). Keys are 64-bit hashes of word-id sequences:
training checks that no two distinct n-grams collide; at scoring time an unseen n-gram matches a
stored key with probability ~ (stored n-grams) / 2^64 per lookup.

Text is tokenized per line (a line = a sentence with <s> and </s>, as CCNet scores paragraphs):
lowercase, digits mapped to 0 (CCNet), words `\\w+` and single punctuation characters.
Sizes: a 3-gram model of the 7M-word sample corpus has ~5M n-grams (~100 MB of arrays).
"""
from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass
from itertools import repeat
from io import TextIOWrapper
from pathlib import Path

import numpy as np

from pipeline import io
from pipeline.models.keyindex import KeyIndex, hash_cols, window_keys

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
DIGIT_RE = re.compile(r"\d")
HASH_VERSION = 1  # of the keys in .npz files (`keyindex.hash_cols`)


def tokenize(text: str) -> list[list[str]]:
    """Sentences (non-empty lines) of normalized tokens."""
    out = []
    for line in DIGIT_RE.sub("0", text.lower()).splitlines():
        toks = TOKEN_RE.findall(line)
        if toks:
            out.append(toks)
    return out


# ---------------------------------------------------------------- model


@dataclass
class Order:
    keys: np.ndarray  # uint64, sorted
    logp: np.ndarray  # float32 log10 probability
    bo: np.ndarray | None  # float32 log10 back-off (None for the highest order)
    rows: np.ndarray | None = None  # (n, k) word ids, kept after training for the ARPA writer
    _index: KeyIndex | None = None

    def find(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            self._index = KeyIndex(self.keys)
        return self._index.find(q)


class NGramLM:
    """A back-off n-gram LM: `vocab[i]` is word id i (0 <unk>, 1 <s>, 2 </s>), `orders[k-1]` the k-grams."""

    def __init__(self, vocab: list[str], orders: list[Order], meta: dict | None = None):
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}
        self.orders = orders
        self.meta = meta or {}

    @property
    def order(self) -> int:
        return len(self.orders)

    # ------------------------------------------------------------ scoring

    def encode(self, sentences: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated ids with <s> ... </s> around each sentence, and the sentence index of each id."""
        flat: list[str] = []
        for s in sentences:  # the tokenizer never yields "<s>"/"</s>" (it splits "<" and ">")
            flat.append(BOS)
            flat.extend(s)
            flat.append(EOS)
        lens = np.fromiter((len(s) + 2 for s in sentences), dtype=np.int64, count=len(sentences))
        ids = np.fromiter(map(self.index.get, flat, repeat(UNK_ID)), dtype=np.int64, count=len(flat))
        return ids, np.repeat(np.arange(len(sentences)), lens)

    def token_logprobs(self, ids: np.ndarray, sent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """log10 p of every id given its history within its sentence (0.0 at each <s>), and the
        length of the n-gram that matched (0 at <s>) - what kenlm's `full_scores` reports."""
        T, N = len(ids), self.order
        logp = np.zeros(T, dtype=np.float64)
        matched = np.zeros(T, dtype=np.int64)
        if T == 0:
            return logp, matched
        bo_ctx = []  # bo_ctx[k-1][i]: back-off of the k-gram ending at i (0 if absent)
        start_of = np.maximum.accumulate(np.where(ids == BOS_ID, np.arange(T), 0))
        for k in range(1, N + 1):
            o = self.orders[k - 1]
            end = np.arange(k - 1, T)
            valid = end - (k - 1) >= start_of[end]
            found, pos = o.find(window_keys(ids, k))
            found &= valid
            hit = end[found]
            logp[hit] = o.logp[pos[found]]  # longer matches overwrite shorter ones
            matched[hit] = k
            if k < N:
                b = np.zeros(T, dtype=np.float64)
                b[hit] = o.bo[pos[found]]
                bo_ctx.append(b)
        # Back off from every context longer than the match: add bo of contexts j = matched .. N-1
        # ending at i-1. (Contexts crossing the sentence start are absent: their bo is 0.)
        acc = np.zeros(T, dtype=np.float64)
        total_bo = np.zeros(T, dtype=np.float64)
        for j in range(N - 1, 0, -1):
            acc[1:] += bo_ctx[j - 1][:-1]
            sel = matched == j
            total_bo[sel] = acc[sel]
        bos = ids == BOS_ID
        logp += total_bo
        logp[bos] = 0.0
        matched[bos] = 0
        return logp, matched

    def sentence_scores(self, sentences: list[list[str]]) -> np.ndarray:
        """log10 probability of each sentence with <s> and </s> (kenlm `score(s, bos=True, eos=True)`)."""
        ids, sent = self.encode(sentences)
        lp, _ = self.token_logprobs(ids, sent)
        return np.bincount(sent, weights=lp, minlength=len(sentences))

    def doc_scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(sum of log10 p, number of predicted tokens incl. one </s> per line) per document."""
        return self.doc_scores_tokens([tokenize(t) for t in texts])

    def doc_scores_tokens(self, docs: list[list[list[str]]]) -> tuple[np.ndarray, np.ndarray]:
        """`doc_scores` of already tokenized documents (lists of sentences)."""
        sents, owner = [], []
        for d, s in enumerate(docs):
            sents.extend(s)
            owner.extend([d] * len(s))
        n = len(docs)
        if not sents:
            return np.zeros(n), np.zeros(n, dtype=np.int64)
        per_sent = self.sentence_scores(sents)
        owner_a = np.asarray(owner, dtype=np.int64)
        lengths = np.fromiter((len(s) + 1 for s in sents), dtype=np.int64, count=len(sents))
        return np.bincount(owner_a, weights=per_sent, minlength=n), np.bincount(owner_a, weights=lengths, minlength=n).astype(np.int64)

    def perplexity(self, texts: list[str]) -> np.ndarray:
        """CCNet's document perplexity 10^(-sum log10 p / tokens); NaN for a document without tokens."""
        lp, n = self.doc_scores(texts)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 0, np.power(10.0, -lp / np.maximum(n, 1)), np.nan)

    def bits_per_token(self, texts: list[str]) -> np.ndarray:
        lp, n = self.doc_scores(texts)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(n > 0, -lp / np.maximum(n, 1) * math.log2(10), np.nan)

    # ------------------------------------------------------------ files

    def save(self, path: str | Path, arpa: bool = True) -> dict:
        """Write `<path>.npz` (fast to load) and, with `arpa`, the KenLM-readable `<path>.arpa`.
        Returns {file: sha256}."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        out = {}
        arrays = {"vocab": np.frombuffer("\n".join(self.vocab).encode(), dtype=np.uint8),
                  "meta": np.frombuffer(json.dumps({**self.meta, "hash_version": HASH_VERSION, "order": self.order}, sort_keys=True).encode(), dtype=np.uint8)}
        for k, o in enumerate(self.orders, 1):
            arrays[f"keys{k}"], arrays[f"logp{k}"] = o.keys, o.logp
            if o.bo is not None:
                arrays[f"bo{k}"] = o.bo
        npz = path.with_suffix(".npz")
        io.write_npz(npz, arrays)
        out[npz.name] = io.sha256_file(npz)
        if arpa:
            a = path.with_suffix(".arpa")
            write_arpa(self, a)
            out[a.name] = io.sha256_file(a)
        return out

    @classmethod
    def load(cls, path: str | Path) -> "NGramLM":
        """From `.npz` (ours) or `.arpa`/`.arpa.gz` (any ARPA file, e.g. from KenLM's lmplz)."""
        path = Path(path)
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode())
                if meta.get("hash_version") != HASH_VERSION:
                    raise ValueError(f"{path}: written with n-gram hash version {meta.get('hash_version')}, this code uses {HASH_VERSION}; re-run `curate train-lm`")
                vocab = z["vocab"].tobytes().decode().split("\n")
                n = meta["order"]
                orders = [Order(z[f"keys{k}"], z[f"logp{k}"], z[f"bo{k}"] if k < n else None) for k in range(1, n + 1)]
            return cls(vocab, orders, meta)
        return read_arpa(path)


# ---------------------------------------------------------------- ARPA


def _fmt(x: float) -> str:
    return "%.9g" % x  # float32 round-trips through 9 significant digits


def write_arpa(lm: NGramLM, path: str | Path) -> None:
    """ARPA text (gzip when the name ends in .gz). Needs the n-gram rows (models fresh from `train`)."""
    path = Path(path)
    if any(o.rows is None for o in lm.orders):
        raise ValueError("this model has no n-gram rows (loaded from .npz or trained with keep_rows=False); re-train to write ARPA")
    io.atomic_write(path, lambda tmp: _write_arpa_text(lm, tmp, gz=path.suffix == ".gz"))


def _write_arpa_text(lm: NGramLM, tmp: Path, gz: bool) -> None:
    with open(tmp, "wb") as raw:
        if not gz:
            _write_arpa_body(lm, TextIOWrapper(raw, encoding="utf-8", newline=""))
            return
        # no file name and mtime 0 in the gzip header: the same model gives the same bytes
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as z:
            _write_arpa_body(lm, TextIOWrapper(z, encoding="utf-8", newline=""))


def _write_arpa_body(lm: NGramLM, fh: TextIOWrapper) -> None:
    vocab = lm.vocab
    with fh:
        fh.write("\n\\data\\\n")
        for k, o in enumerate(lm.orders, 1):
            fh.write(f"ngram {k}={len(o.keys)}\n")
        for k, o in enumerate(lm.orders, 1):
            fh.write(f"\n\\{k}-grams:\n")
            # Stable, readable order: by word ids.
            order = np.lexsort(o.rows.T[::-1])
            lp = o.logp[order].tolist()
            words = [" ".join(vocab[i] for i in row) for row in o.rows[order].tolist()]
            if o.bo is not None:
                bo = o.bo[order].tolist()
                fh.writelines(f"{_fmt(p)}\t{w}\t{_fmt(b)}\n" if b != 0.0 else f"{_fmt(p)}\t{w}\n" for p, w, b in zip(lp, words, bo))
            else:
                fh.writelines(f"{_fmt(p)}\t{w}\n" for p, w in zip(lp, words))
        fh.write("\n\\end\\\n")


def read_arpa(path: str | Path) -> NGramLM:
    """Any ARPA file (words separated by spaces). Words not in our tokenizer's alphabet still work:
    scoring maps them by exact string."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    counts: dict[int, int] = {}
    sections: dict[int, tuple[list, list, list]] = {}
    k = 0
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("ngram ") and k == 0:
                n, c = line[6:].split("=")
                counts[int(n)] = int(c)
            elif line.startswith("\\") and line.endswith("-grams:"):
                k = int(line[1:-7])
                sections[k] = ([], [], [])
            elif line == "\\end\\":
                break
            elif k > 0:
                parts = line.split("\t")
                if len(parts) == 1:
                    parts = line.split()
                    parts = [parts[0], " ".join(parts[1:1 + k])] + parts[1 + k:]
                sections[k][0].append(float(parts[0]))
                sections[k][1].append(parts[1])
                sections[k][2].append(float(parts[2]) if len(parts) > 2 else 0.0)
    if not sections:
        raise ValueError(f"{path}: not an ARPA file (no \\1-grams: section)")
    N = max(sections)
    words1 = sections[1][1]
    vocab = [UNK, BOS, EOS] + [w for w in words1 if w not in (UNK, BOS, EOS)]
    index = {w: i for i, w in enumerate(vocab)}
    orders = []
    for k in range(1, N + 1):
        lps, grams, bos = sections.get(k, ([], [], []))
        if counts.get(k, len(grams)) != len(grams):
            raise ValueError(f"{path}: header says ngram {k}={counts[k]} but the section has {len(grams)} lines")
        r = np.array([[index.get(w, UNK_ID) for w in g.split(" ")] for g in grams], dtype=np.int64).reshape(len(grams), k)
        keys = hash_cols([r[:, j] for j in range(k)]) if len(grams) else np.zeros(0, dtype=np.uint64)
        o = np.argsort(keys, kind="stable")
        orders.append(Order(keys[o], np.asarray(lps, dtype=np.float32)[o],
                            np.asarray(bos, dtype=np.float32)[o] if k < N else None, r[o]))
    if UNK not in words1:  # kenlm adds <unk> with log10 p = -100 when the file lacks it
        o = orders[0]
        key = hash_cols([np.array([UNK_ID])])
        keys = np.concatenate([o.keys, key])
        s = np.argsort(keys, kind="stable")
        orders[0] = Order(keys[s], np.concatenate([o.logp, [-100.0]]).astype(np.float32)[s],
                          np.concatenate([o.bo, [0.0]]).astype(np.float32)[s] if o.bo is not None else None,
                          np.concatenate([o.rows, [[UNK_ID]]])[s])
    return NGramLM(vocab, orders, {"order": N, "source": str(path)})
