"""∞-gram index of a dataset dir (Infini-gram, Liu et al. 2024): one suffix array per shard,
memory-mapped, with exact counts of n-grams of any length and the ∞-gram probability.

    <index>/index.json         format, tokenizer, dtype, source dir, per shard: docs, tokens, files
            tokenizer.json     copy of the tokenizer the ids come from (text queries use it)
            tokens-<key>.npy   uint16/uint32 ids: each document's tokens followed by SEP
            sa-<key>.npy       suffix array of tokens-<key> (int32 below 2^31 tokens)
            starts-<key>.npy   int64 start of each document in tokens-<key> (+ the end)
            ids-<key>.parquet  the documents' `id`s, in the same order
            _done/<key>.json   per-shard completion markers (the engine's), _manifest.json

Build: one task per input shard (`pipeline.runner`: Ray or in-process, retries, resume). A
shard's files are written atomically and its marker last, so a SIGKILLed build re-run with the
same input redoes only the unfinished shards and ends with the same bytes. Input: a dataset dir's
`part-*.parquet` (text tokenized with the given tokenizer) or, when present, the remix's token
files `part-*.tokens.npy` + `.index.npy` (ids used as they are; each document's closing EOS
becomes SEP). Either way the same documents and tokenizer give the same index.

∞-gram probability of token w after context c (the paper's definition): take the longest suffix c'
of c that occurs in the corpus (possibly empty), P(w | c) = cnt(c' w) / cnt(c'). Counts are sums
over shards; cnt(empty) = all positions, separators included, as Infini-gram's engine counts them
(so an occurrence of c' at a document's end counts in the denominator: that mass is "the document
ends here"). Contexts never reach across a document boundary, in the corpus or in a query.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import io, runner
from pipeline.models.suffix_array import Shard, build_sa, sep_of

FORMAT = 1
INDEX_JSON, TOKENIZER = "index.json", "tokenizer.json"
STAGE = "ngram:index"
CHUNK = 1 << 16  # query positions searched at once (bounds the gathers' memory: ~CHUNK * 64 * 8 bytes)
ZERO = {"rows_in": 0, "kept": 0, "rejected": 0, "quarantined": 0, "pass_output": True}


class NgramError(ValueError):
    """A bad index dir or query; its message is one line (what, where, what to do)."""


# ---------------------------------------------------------------- build


def source_shards(src: Path) -> tuple[str, list[Path]]:
    """('tokens', part-*.tokens.npy) when the dir has token files, else ('text', part-*.parquet)."""
    if not src.is_dir():
        raise NgramError(f"ngram build: input {src} is not a directory; give a curate dataset dir (e.g. runs/default/dedup)")
    tok = sorted(p for p in src.glob("part-*.tokens.npy") if io.TMP_TAG not in p.name)
    if tok:
        return "tokens", tok
    pq_files = io.shard_files(src)
    if not pq_files:
        raise NgramError(f"ngram build: {src} has no part-*.parquet or part-*.tokens.npy; give a curate dataset dir (e.g. runs/default/dedup)")
    return "text", pq_files


def _key(p: Path) -> str:
    return p.name.split(".")[0]


def _from_text(path: Path, tokenizer: str, batch_size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from pipeline.models import bpe

    tok = bpe.load(tokenizer)
    dtype = bpe.token_dtype(tok.get_vocab_size(with_added_tokens=True))
    parts, lens, ids = [], [], []
    pf = pq.ParquetFile(path)
    for rb in pf.iter_batches(columns=["id", "text"], batch_size=batch_size):
        enc = tok.encode_batch(rb.column("text").to_pylist(), add_special_tokens=False)
        for e in enc:
            parts.append(np.asarray(e.ids, dtype))
            lens.append(len(e.ids))
        ids.extend(rb.column("id").to_pylist())
    sep = np.array([sep_of(dtype)], dtype)
    arr = np.concatenate([x for p in parts for x in (p, sep)]) if parts else np.zeros(0, dtype)
    starts = np.concatenate([[0], np.cumsum(np.asarray(lens, np.int64) + 1)]).astype(np.int64)
    return arr, starts, ids


def _from_tokens(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    key = _key(path)
    toks = np.load(path)
    off = np.load(path.with_name(f"{key}.index.npy")).astype(np.int64)
    if len(off) == 0 or off[0] != 0 or off[-1] != len(toks) or (np.diff(off) < 1).any():
        raise NgramError(f"ngram build: {path.with_name(key + '.index.npy')} does not hold the document offsets of {path.name} "
                          "(0 .. len, one EOS per document); rebuild the remix output")
    ends = off[1:] - 1
    eos = np.unique(toks[ends])
    if len(eos) > 1:
        raise NgramError(f"ngram build: {path}: documents end in different tokens {eos[:5].tolist()}, not one EOS; rebuild the remix output")
    sep = sep_of(toks.dtype)
    if (toks == sep).any():
        raise NgramError(f"ngram build: {path} holds token id {sep}, the separator of a {toks.dtype} index; rebuild with a smaller vocabulary")
    toks[ends] = sep
    pqf = path.with_name(f"{key}.parquet")
    ids = pq.read_table(pqf, columns=["id"]).column("id").to_pylist() if pqf.exists() else [str(i) for i in range(len(ends))]
    return toks, off, ids


def index_shard(kind: str, path: str, out: str, key: str, tokenizer: str | None, batch_size: int) -> dict:
    """One task: tokens, suffix array, document starts and ids of one input shard -> <out>."""
    o = Path(out)
    toks, starts, ids = _from_text(Path(path), tokenizer, batch_size) if kind == "text" else _from_tokens(Path(path))
    sa = build_sa(toks)
    files = {f"tokens-{key}.npy": toks, f"sa-{key}.npy": sa, f"starts-{key}.npy": starts}
    for name, arr in files.items():
        io.write_npy(arr, o / name)
    io.write_parquet(pa.table({"id": pa.array(ids, pa.string())}), o / f"ids-{key}.parquet")
    names = [*files, f"ids-{key}.parquet"]
    # kept_files: the engine checks on resume that each is still there with its size (else the shard is redone)
    return {**ZERO, "inputs": [str(path)], "docs": len(ids), "tokens": int(len(toks) - len(ids)),
            "max_doc_tokens": int((np.diff(starts) - 1).max()) if len(ids) else 0,
            "dtype": toks.dtype.name, "kept_files": [{"name": n, "bytes": (o / n).stat().st_size, "sha256": io.sha256_file(o / n)} for n in names]}


def build(src: Path, out: Path, tokenizer: Path | None = None, force: bool = False, use_ray: bool = True,
          batch_size: int = 2000, show_progress: bool = False) -> runner.StageResult:
    """Index every shard of `src` into `out`; finished shards of an earlier run are kept (resume)."""
    src, out = Path(src), Path(out)
    kind, shards = source_shards(src)
    if kind == "text" and tokenizer is None:
        raise NgramError(f"ngram build: {src} holds text, not token files; give --tokenizer (a tokenizers JSON, e.g. runs/default/mix/tokenizer.json) or --config")
    if tokenizer is not None and not Path(tokenizer).is_file():
        raise NgramError(f"ngram build: tokenizer {tokenizer} does not exist; give a tokenizers JSON file")
    tok_sha = io.sha256_file(tokenizer) if tokenizer else None
    out.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None and (not (out / TOKENIZER).exists() or io.sha256_file(out / TOKENIZER) != tok_sha):
        io.atomic_write(out / TOKENIZER, lambda tmp: shutil.copyfile(tokenizer, tmp))
    (out / INDEX_JSON).unlink(missing_ok=True)  # an index is complete only when index.json is (re)written
    tasks = [runner.Task(_key(p), index_shard, dict(kind=kind, path=str(p), out=str(out), key=_key(p),
                                                   tokenizer=str(out / TOKENIZER) if tokenizer else None, batch_size=batch_size),
                         input_fp=io.fingerprint([p])) for p in shards]
    config_hash = runner_hash(kind, tok_sha)

    def finalize(o: Path, markers: dict) -> None:
        keep = {f["name"] for m in markers.values() for f in m["kept_files"]}
        for p in o.glob("*-*.*"):
            if p.name.split("-", 1)[0] in ("tokens", "sa", "starts", "ids") and p.name not in keep and io.TMP_TAG not in p.name:
                p.unlink()  # a shard the input no longer has
        dtypes = {m["dtype"] for m in markers.values()}
        io.write_json({"format": FORMAT, "source": str(src.resolve()), "source_kind": kind,
                       "tokenizer": TOKENIZER if tokenizer else None, "tokenizer_sha256": tok_sha,
                       "dtype": dtypes.pop() if len(dtypes) == 1 else sorted(dtypes),
                       "shards": [{"key": k, "source": Path(markers[k]["inputs"][0]).name, "docs": markers[k]["docs"],
                                   "tokens": markers[k]["tokens"], "files": markers[k]["kept_files"]} for k in sorted(markers)],
                       "docs": sum(m["docs"] for m in markers.values()), "tokens": sum(m["tokens"] for m in markers.values()),
                       "max_doc_tokens": max((m["max_doc_tokens"] for m in markers.values()), default=0)},
                      o / INDEX_JSON)

    return runner.run_stage(STAGE, out, tasks, config_hash=config_hash, input_fingerprint=io.dataset_fingerprint(src) if kind == "text"
                            else io.fingerprint(shards), force=force, use_ray=use_ray, show_progress=show_progress, finalize=finalize)


def runner_hash(kind: str, tok_sha: str | None) -> str:
    from pipeline.models.tokenstreams import digest

    return digest("infini-gram", FORMAT, kind, tok_sha)


# ---------------------------------------------------------------- queries


class InfiniGram:
    """An index dir opened for queries: shards memory-mapped, the tokenizer loaded when present."""

    def __init__(self, d: Path):
        d = Path(d)
        meta_path = d / INDEX_JSON
        if not meta_path.exists():
            what = "an unfinished build (re-run curate ngram build to resume it)" if (d / io.DONE).is_dir() else "not an index"
            raise NgramError(f"ngram: {d} has no {INDEX_JSON}: {what}; build one with curate ngram build DATASET_DIR -o {d}")
        self.dir, self.meta = d, io.read_json(meta_path)
        if self.meta.get("format") != FORMAT:
            raise NgramError(f"ngram: {d} is index format {self.meta.get('format')}, this code reads {FORMAT}; rebuild it (curate ngram build --force)")
        try:
            self.shards = [Shard.open(d, s["key"]) for s in self.meta["shards"]]
        except (OSError, ValueError) as e:
            raise NgramError(f"ngram: {d}: cannot open the index files ({e.__class__.__name__}: {e}); rebuild it (curate ngram build --force)") from None
        self.ids = {}  # shard key -> document ids, read when first needed
        self.n = sum(s.n for s in self.shards)  # all positions (tokens + one separator per document)
        self.sep = self.shards[0].sep if self.shards else sep_of(np.uint16)
        self.tok = None
        if self.meta.get("tokenizer"):
            from pipeline.models import bpe

            self.tok = bpe.load(d / self.meta["tokenizer"])

    # ------------------------------------------------------------ queries as ids

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        if self.tok is None:
            raise NgramError(f"ngram: index {self.dir} was built from token files without a tokenizer; query with --ids, "
                             "or rebuild it with --tokenizer")
        return [np.asarray(e.ids, np.int64) for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in ids]) if self.tok is not None else " ".join(map(str, ids))

    def check(self, ids: np.ndarray, what: str = "query") -> np.ndarray:
        ids = np.asarray(ids, np.int64)
        bad = ids[(ids < 0) | (ids >= self.sep)]
        if len(bad):
            raise NgramError(f"ngram: {what} has token id {int(bad[0])}, outside this index's ids 0..{self.sep - 1}; "
                             "give ids of the index's tokenizer")
        return ids

    @staticmethod
    def _pack(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lens = np.array([len(s) for s in seqs], np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)])
        buf = np.concatenate(seqs).astype(np.int64) if len(seqs) and lens.sum() else np.zeros(0, np.int64)
        return buf, starts[:-1], lens

    def _counts(self, buf: np.ndarray, pos: np.ndarray, lens: np.ndarray) -> np.ndarray:
        out = np.zeros(len(pos), np.int64)
        for a in range(0, len(pos), CHUNK):
            sl = slice(a, a + CHUNK)
            for sh in self.shards:
                out[sl] += sh.counts(buf, pos[sl], lens[sl])
        return out

    def count(self, seqs: list[np.ndarray]) -> np.ndarray:
        """Occurrences of each id sequence in the corpus (sum over shards; an empty one: all positions)."""
        seqs = [self.check(s) for s in seqs]
        return self._counts(*self._pack(seqs))

    def longest(self, buf: np.ndarray, pos: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Longest prefix of each key buf[pos:pos+len] that occurs: (length, shard index, corpus position)
        (the first shard holding a longest one; -1 where the length is 0)."""
        best = np.zeros(len(pos), np.int64)
        shard = np.full(len(pos), -1, np.int64)
        where = np.full(len(pos), -1, np.int64)
        for a in range(0, len(pos), CHUNK):
            sl = slice(a, a + CHUNK)
            for i, sh in enumerate(self.shards):
                ln, w = sh.longest(buf, pos[sl], lens[sl])
                better = ln > best[sl]
                best[sl] = np.where(better, ln, best[sl])
                shard[sl] = np.where(better, i, shard[sl])
                where[sl] = np.where(better, w, where[sl])
        return best, shard, where

    def infgram(self, seqs: list[np.ndarray]) -> dict[str, np.ndarray]:
        """∞-gram statistics of every token of every sequence given the tokens before it in the same
        sequence, concatenated: prob, ctx (length of the longest context suffix that occurs), ctx_count
        = cnt(that suffix), count = cnt(suffix + token), doc (which sequence)."""
        seqs = [self.check(s) for s in seqs]
        buf, starts, lens = self._pack(seqs)
        t = len(buf)
        doc = np.repeat(np.arange(len(seqs)), lens)
        pos = np.arange(t, dtype=np.int64)
        dstart = np.repeat(starts, lens)
        rest = np.repeat(starts + lens, lens) - pos  # tokens from each position to its sequence's end
        ms, _, _ = self.longest(buf, pos, rest)
        # j + ms[j] never decreases (a match at j, minus its first token, is one at j+1), so the
        # earliest start of an occurring context ending at i is a binary search, cut at the sequence start
        s = np.maximum(np.searchsorted(pos + ms, pos, side="left"), dstart)
        ctx = pos - s
        ctx_count = self._counts(buf, s, ctx)
        count = np.zeros(t, np.int64)
        seen = ms[s] > ctx  # the context followed by this token occurs (else its count is 0)
        count[seen] = self._counts(buf, s[seen], ctx[seen] + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            prob = np.where(ctx_count > 0, count / np.maximum(ctx_count, 1), 0.0)
        return {"prob": prob, "ctx": ctx, "ctx_count": ctx_count, "count": count, "doc": doc}

    def prob_next(self, ctx: np.ndarray, token: int) -> dict:
        """∞-gram statistics of one token after `ctx` (= the last entry of `infgram(ctx + [token])`):
        the longest occurring suffix of ctx by binary search on its length (occurrence is monotone:
        a suffix of an occurring sequence occurs), ~log2(len(ctx)) + 2 counts instead of one search
        per position."""
        buf = np.concatenate([self.check(ctx, "context"), self.check([token], "token")])
        L = len(buf) - 1

        def cnt(n: int, extra: int = 0) -> int:
            return int(self._counts(buf, np.array([L - n]), np.array([n + extra]))[0])

        lo, hi = 0, L
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if cnt(mid) > 0 else (lo, mid - 1)
        ctx_count, count = cnt(lo), cnt(lo, 1)
        return {"prob": count / ctx_count, "ctx": lo, "ctx_count": ctx_count, "count": count}

    def next_tokens(self, ctx: np.ndarray, k: int = 10) -> tuple[int, list[tuple[int, int]]]:
        """The ∞-gram next-token distribution after `ctx`: (length of the suffix used, [(id, count)] top k)."""
        ctx = self.check(ctx, "context")
        L = len(ctx)
        buf = ctx.astype(np.int64)
        rest = L - np.arange(L)
        ms, _, _ = self.longest(buf, np.arange(L, dtype=np.int64), rest) if L else (np.zeros(0, np.int64), None, None)
        full = np.flatnonzero(np.arange(L) + ms == L)
        s = int(full[0]) if len(full) else L
        tally: dict[int, int] = {}
        for sh in self.shards:
            lo, hi = sh.ranges(buf, np.array([s]), np.array([L - s]))
            # the tokens following each occurrence (bounded: a frequent context lists its first 1M)
            p = np.asarray(sh.sa[int(lo[0]):min(int(hi[0]), int(lo[0]) + 1_000_000)], np.int64) + (L - s)
            nxt = np.asarray(sh.tokens[p[p < sh.n]], np.int64)
            v, c = np.unique(nxt[nxt != sh.sep], return_counts=True)
            for a, b in zip(v.tolist(), c.tolist()):
                tally[a] = tally.get(a, 0) + b
        top = sorted(tally.items(), key=lambda x: (-x[1], x[0]))[:k]
        return L - s, top

    def locate(self, shard: int, where: int) -> dict:
        """Shard, document (row of the source shard and id) and token offset of a corpus position."""
        sh = self.shards[shard]
        doc = int(np.searchsorted(sh.starts, where, side="right") - 1)
        if sh.key not in self.ids:
            self.ids[sh.key] = pq.read_table(self.dir / f"ids-{sh.key}.parquet").column("id").to_pylist()
        return {"shard": self.meta["shards"][shard]["source"], "doc_row": doc, "doc_id": self.ids[sh.key][doc],
                "doc_offset": int(where - sh.starts[doc])}
