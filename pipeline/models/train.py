"""Training the models the score stage uses: fastText classifiers (labels from datasets, from another
score column, or PreSelect) and n-gram LMs. Used by `curate train-fasttext` / `curate train-lm`
and by the score stage when its config says `train:` (then cached by hash under <out>/_models).

PreSelect (Shum et al. 2025, "Predictive Data Selection") at small scale: documents whose losses
rank a family of LMs the same way the LMs' losses on a target set (benchmarks) rank them are
"predictive" and become the positives of a fastText classifier, which then scores the whole corpus.
Here the LMs are modified Kneser-Ney n-gram models of different orders trained on different amounts
of data (`pipeline/models/ngram_train.py`): (order, fraction) = (1, 1), (2, .1), (2, 1), (3, .1), (3, .3),
(3, 1) by default. The LMs train on `lm_docs` documents and score `pool_docs` *other* documents (an
n-gram LM scores its own training text far too well). A document's score is the paper's concordance:
the share of model pairs (i better than j on the target) whose losses on the document are ordered
the same way; ties are broken by the Pearson correlation of the document's and the target's loss
vectors.
"""
from __future__ import annotations

import hashlib
import heapq
import math
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pipeline import io

POS, NEG = "pos", "neg"


# ---------------------------------------------------------------- reading documents


@dataclass
class Doc:
    id: str
    text: str
    source: str | None


def is_dataset_dir(p: Path) -> bool:
    return p.is_dir() and ((p / io.MANIFEST).exists() or bool(io.shard_files(p)))


def iter_docs(path: str | Path, text_field: str = "text", source_field: str = "source", id_field: str | None = "id",
              sources: list[str] | None = None) -> Iterator[Doc]:
    """Documents of a dataset dir (kept shards), a Parquet/JSONL file, or a dir of raw files."""
    import pyarrow.parquet as pq

    p = Path(path)
    want = set(sources) if sources is not None else None
    if is_dataset_dir(p):
        for f in io.shard_files(p):
            pf = pq.ParquetFile(f)
            cols = [c for c in ("id", "text", "source") if c in pf.schema_arrow.names]
            for rb in pf.iter_batches(columns=cols, batch_size=4096):
                d = rb.to_pydict()
                srcs = d.get("source") or [None] * rb.num_rows
                for i, t, s in zip(d["id"], d["text"], srcs):
                    if want is None or s in want:
                        yield Doc(i, t, s)
        return
    from pipeline.readers import Bad, list_inputs, read_records

    for f in list_inputs(str(p)):
        for rec in read_records(f, None, text_field, id_field):
            if isinstance(rec, Bad):
                continue  # a training sample can do without unreadable records
            s = rec.meta.get(source_field)
            s = None if s is None else str(s)
            if want is None or s in want:
                yield Doc(rec.id if rec.id is not None else f"{Path(f).name}:{rec.pos}", rec.text, s)


def id_rank(seed: int, doc_id: str) -> int:
    """A seeded 64-bit hash of a document id: the order deterministic samples take documents in."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{doc_id}".encode(), digest_size=8).digest(), "big")


def sample_docs(docs: Iterable[Doc], n: int, seed: int, skip: int = 0) -> list[Doc]:
    """A deterministic sample: the documents with the smallest keyed hash of their id, ranks
    [skip, skip + n) in that order (so two calls with different `skip` never overlap), whatever the
    order the documents come in. A bounded reservoir (a heap of skip + n): memory is O(skip + n),
    never O(corpus), so `n` must be finite (every max_docs/sample_docs/lm_docs/pool_docs has a finite default)."""
    if n is None or n < 0:
        raise ValueError(f"sample_docs: n must be a finite count (got {n!r}); the sample is held in memory")
    heap: list[tuple[int, str, int, Doc]] = []  # max-heap via negated rank; seq breaks ties of repeated ids
    cap = skip + n
    for seq, d in enumerate(docs):
        r = id_rank(seed, d.id)
        if len(heap) < cap:
            heapq.heappush(heap, (-r, d.id, -seq, d))
        elif -heap[0][0] > r:
            heapq.heapreplace(heap, (-r, d.id, -seq, d))
    ranked = sorted(((-r, i, -q, d) for r, i, q, d in heap), key=lambda x: x[:3])
    return [x[3] for x in ranked[skip:skip + n]]


def load_targets(specs) -> dict[str, list[tuple[str, str]]]:
    """Target sets (config TargetSpec list; empty = the bundled benchmarks) -> name -> [(id, text)]."""
    from pipeline.config import bundled_targets

    out = {}
    for spec in (specs or bundled_targets()):
        rows = [(d.id, d.text) for d in iter_docs(spec.path, text_field=spec.text_field, id_field=spec.id_field)]
        if not rows:
            raise ValueError(f"target set {spec.name}: no examples in {spec.path} (text field {spec.text_field!r})")
        out[spec.name] = rows
    return out


def targets_digest(targets: dict[str, list[tuple[str, str]]]) -> str:
    h = hashlib.sha256()
    for name in sorted(targets):
        h.update(name.encode() + b"\0")
        for i, t in targets[name]:
            h.update(f"{i}\0{t}\0".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- fastText


def _metrics(p: np.ndarray, y: np.ndarray) -> dict:
    pred = p >= 0.5
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    n = len(y)
    return {"n": n, "accuracy": round((tp + tn) / n, 4) if n else None, "precision": round(prec, 4),
            "recall": round(rec, 4), "f1": round(2 * prec * rec / (prec + rec), 4) if prec + rec else 0.0,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def train_fasttext(pos: list[Doc], neg: list[Doc], out_dir: str | Path, params, *, seed: int = 0,
                   max_per_class: int = 20_000, val_fraction: float = 0.1, data_info: dict | None = None) -> dict:
    """Train a balanced binary classifier (labels __label__pos / __label__neg) on DCLM-normalized
    text. Writes out_dir/model.bin and out_dir/model.json (data, params, validation metrics, sha256).
    `pos`/`neg` should already be in a random order (see `sample_docs`)."""
    import fasttext

    from pipeline.models.fasttext import FastTextModel, normalize

    n = min(len(pos), len(neg), max_per_class)
    if n < 2:
        raise ValueError(f"need at least 2 documents per class, got {len(pos)} positive and {len(neg)} negative")
    pos, neg = pos[:n], neg[:n]
    n_val = int(round(n * val_fraction))
    train = [(POS, d) for d in pos[n_val:]] + [(NEG, d) for d in neg[n_val:]]
    val = [(POS, d) for d in pos[:n_val]] + [(NEG, d) for d in neg[:n_val]]
    random.Random(seed).shuffle(train)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hp = params.model_dump() if hasattr(params, "model_dump") else dict(params)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", dir=out_dir, delete=False, encoding="utf-8") as fh:
        for label, d in train:
            fh.write(f"__label__{label} {normalize(d.text)}\n")
        train_file = fh.name
    try:
        model = fasttext.train_supervised(input=train_file, loss="softmax", thread=1, seed=seed, verbose=0, **hp)
    finally:
        os.unlink(train_file)
    io.atomic_write(out_dir / "model.bin", lambda tmp: model.save_model(str(tmp)))
    meta = {
        "model": "model.bin", "sha256": io.sha256_file(out_dir / "model.bin"),
        "labels": {"positive": f"__label__{POS}", "negative": f"__label__{NEG}"},
        "normalization": "DCLM: lowercase, whitespace collapsed to single spaces, one line",
        "params": {**hp, "loss": "softmax", "thread": 1, "seed": seed},
        "data": {**(data_info or {}), "per_class": n, "train": len(train), "validation": len(val),
                 "positive_sources": _count_sources(pos), "negative_sources": _count_sources(neg)},
    }
    if val:
        scorer = FastTextModel(str(out_dir / "model.bin"), POS)
        p = scorer.p_positive([normalize(d.text) for _, d in val])
        meta["validation"] = _metrics(p, np.array([lab == POS for lab, _ in val]))
    io.write_json(meta, out_dir / "model.json")
    return meta


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (ranks by argsort: ties in stable order), rounded; None under 3 points."""
    if len(a) < 3:
        return None
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return round(float(np.corrcoef(ra, rb)[0, 1]), 4)


def distil_fasttext(docs: list[Doc], values: np.ndarray, out_dir: str | Path, params, *, top: float, bottom: float,
                    seed: int, held_out: float, data_info: dict, agreement_key: str) -> dict:
    """Distil an expensive per-document score into a fastText classifier (BETR, MATES): the first
    `held_out` share of `docs` (already in a seeded random order) is held out; of the rest, the top
    `top` share by `values` are positives, the bottom `bottom` share negatives (NaN values are left
    out). meta[agreement_key] = Spearman rho of P(positive) and `values` on the held-out documents."""
    from pipeline.models.fasttext import FastTextModel, normalize

    values = np.asarray(values, np.float64)
    n_hold = int(len(docs) * held_out)
    hold, fit = np.arange(n_hold), np.arange(n_hold, len(docs))
    fit = fit[~np.isnan(values[fit])]
    order = fit[np.argsort(-values[fit], kind="stable")]
    pos = [docs[i] for i in order[:max(2, int(len(order) * top))]]
    neg = [docs[i] for i in order[len(order) - max(2, int(len(order) * bottom)):]]
    rng = np.random.default_rng(seed)
    pos, neg = [pos[i] for i in rng.permutation(len(pos))], [neg[i] for i in rng.permutation(len(neg))]
    meta = train_fasttext(pos, neg, out_dir, params, seed=seed, data_info=data_info)
    hold = hold[~np.isnan(values[hold])]
    p = FastTextModel(str(Path(out_dir) / "model.bin"), POS).p_positive([normalize(docs[i].text) for i in hold])
    meta[agreement_key] = spearman(p, values[hold])
    meta["held_out_docs"] = int(len(hold))
    io.write_json(meta, Path(out_dir) / "model.json")
    return meta


def _count_sources(docs: list[Doc]) -> dict[str, int]:
    from collections import Counter

    return dict(sorted(Counter(d.source or "?" for d in docs).items()))


def labels_from_column(path: str | Path, column: str, top: float, bottom: float, seed: int) -> tuple[list[Doc], list[Doc], dict]:
    """Top `top` fraction of a dataset dir by `column` -> positives, bottom `bottom` -> negatives."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = io.shard_files(Path(path))
    ids, vals, where = [], [], []  # pass 1: ids and the column only (no text): O(N) small values
    for fi, f in enumerate(files):
        names = pq.ParquetFile(f).schema_arrow.names
        if column not in names:
            raise ValueError(f"{f}: no column {column!r} to take labels from (columns: {names})")
        t = pq.read_table(f, columns=["id", column])
        ids += t.column("id").to_pylist()
        vals.append(t.column(column).cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))
        where.append(np.stack([np.full(t.num_rows, fi, np.int64), np.arange(t.num_rows, dtype=np.int64)], 1))
    v = np.concatenate(vals) if vals else np.zeros(0)
    loc = np.concatenate(where) if where else np.zeros((0, 2), np.int64)
    ok = np.flatnonzero(~np.isnan(v))
    order = ok[np.lexsort((np.array([id_rank(seed, ids[i]) for i in ok], dtype=np.uint64), -v[ok]))]  # best first
    n_top, n_bot = int(len(order) * top), int(len(order) * bottom)
    pick = np.concatenate([order[:n_top], order[len(order) - n_bot:] if n_bot else order[:0]])
    texts: dict[int, tuple[str, str | None]] = {}  # pass 2: text and source of the labelled rows only
    for fi, f in enumerate(files):
        mine = pick[loc[pick, 0] == fi] if len(pick) else pick
        if not len(mine):
            continue
        cols = ["text"] + (["source"] if "source" in pq.ParquetFile(f).schema_arrow.names else [])
        t = pq.read_table(f, columns=cols).take(pa.array(loc[mine, 1]))
        src = t.column("source").to_pylist() if "source" in cols else [None] * t.num_rows
        texts.update(zip(mine.tolist(), zip(t.column("text").to_pylist(), src)))
    pos = [Doc(ids[i], *texts[i]) for i in order[:n_top].tolist()]
    neg = [Doc(ids[i], *texts[i]) for i in order[len(order) - n_bot:].tolist()] if n_bot else []
    pos.sort(key=lambda d: id_rank(seed, d.id))
    neg.sort(key=lambda d: id_rank(seed, d.id))
    info = {"labels": "from_column", "column": column, "path": str(path), "top": top, "bottom": bottom,
            "threshold_pos": float(v[order[n_top - 1]]) if n_top else None,
            "threshold_neg": float(v[order[len(order) - n_bot]]) if n_bot else None}
    return pos, neg, info


# ---------------------------------------------------------------- PreSelect


def preselect_scores(pool: list[Doc], lm_docs: list[Doc], targets: dict[str, list[tuple[str, str]]],
                     models: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(concordance score, Pearson tie-breaker, info) for every pool document. NaN: no tokens."""
    from pipeline.models import ngram, ngram_train

    lm_tok = [ngram.tokenize(d.text) for d in lm_docs]
    pool_tok = [ngram.tokenize(d.text) for d in pool]
    tgt_tok = [ngram.tokenize(t) for rows in targets.values() for _, t in rows]
    n_models = len(models)
    doc_loss = np.zeros((len(pool), n_models))
    tgt_loss = np.zeros(n_models)
    for j, (order, frac) in enumerate(models):
        k = max(1, int(round(len(lm_tok) * frac)))
        lm = ngram_train.train([s for doc in lm_tok[:k] for s in doc], order=order, keep_rows=False)
        lp, n = lm.doc_scores_tokens(pool_tok)
        with np.errstate(divide="ignore", invalid="ignore"):
            doc_loss[:, j] = np.where(n > 0, -lp / np.maximum(n, 1), np.nan)
        tlp, tn = lm.doc_scores_tokens(tgt_tok)
        tgt_loss[j] = -tlp.sum() / max(tn.sum(), 1)
    rank = np.argsort(tgt_loss, kind="stable")  # best model (lowest target loss) first
    L = doc_loss[:, rank]
    pairs = [(a, b) for a in range(n_models) for b in range(a + 1, n_models)]
    conc = np.mean([L[:, a] < L[:, b] for a, b in pairs], axis=0)
    tl = tgt_loss[rank]
    dc = L - L.mean(axis=1, keepdims=True)
    tc = tl - tl.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        pearson = (dc @ tc) / (np.sqrt((dc ** 2).sum(axis=1)) * np.sqrt((tc ** 2).sum()))
    bad = np.isnan(L).any(axis=1)
    conc = np.where(bad, np.nan, conc)
    pearson = np.where(bad | np.isnan(pearson), 0.0, pearson)
    info = {"models": [{"order": o, "fraction": f, "target_bits_per_token": round(float(tgt_loss[j] * math.log2(10)), 4)}
                       for j, (o, f) in enumerate(models)],
            "model_rank_on_target": [list(models[j]) for j in rank],
            "targets": {k: len(v) for k, v in targets.items()}, "pool_docs": len(pool), "lm_docs": len(lm_docs),
            "score_histogram": {f"{x:.3f}": int(c) for x, c in zip(*np.unique(conc[~np.isnan(conc)], return_counts=True))}}
    return conc, pearson, info


def preselect_labels(docs_path: str | Path, targets: dict[str, list[tuple[str, str]]], cfg, top: float, bottom: float,
                     seed: int) -> tuple[list[Doc], list[Doc], dict]:
    """PreSelect positives/negatives from the documents at `docs_path` (`cfg`: PreSelectConfig)."""
    lm_docs = sample_docs(iter_docs(docs_path), cfg.lm_docs, seed)
    pool = sample_docs(iter_docs(docs_path), cfg.pool_docs, seed, skip=cfg.lm_docs)
    if len(pool) < 10 or len(lm_docs) < 10:
        raise ValueError(f"PreSelect needs documents to train LMs on and to label; {docs_path} has only {len(lm_docs) + len(pool)}")
    conc, pearson, info = preselect_scores(pool, lm_docs, targets, [tuple(m) for m in cfg.models])
    ok = np.flatnonzero(~np.isnan(conc))
    order = ok[np.lexsort((-pearson[ok], -conc[ok]))]  # best first
    n_top, n_bot = int(len(order) * top), int(len(order) * bottom)
    pos = [pool[i] for i in order[:n_top]]
    neg = [pool[i] for i in order[len(order) - n_bot:]] if n_bot else []
    pos.sort(key=lambda d: id_rank(seed, d.id))
    neg.sort(key=lambda d: id_rank(seed, d.id))
    info.update(labels="preselect", top=top, bottom=bottom, positive_sources=_count_sources(pos), negative_sources=_count_sources(neg))
    return pos, neg, info


def fasttext_from_config(tcfg, out_dir: str | Path, default_input: str | Path | None, seed: int) -> dict:
    """Train per a FastTextTrainConfig; `default_input` stands for label sources without a path."""
    def src_path(p):
        p = p if p is not None else default_input
        if p is None:
            raise ValueError("a label source has no path and there is no default input (give --input or a path)")
        return p

    if tcfg.preselect is not None:
        targets = load_targets(tcfg.preselect.targets)
        pos, neg, info = preselect_labels(src_path(None), targets, tcfg.preselect, tcfg.top, tcfg.bottom, seed)
        info["targets_sha"] = targets_digest(targets)
    elif tcfg.from_column is not None:
        pos, neg, info = labels_from_column(src_path(tcfg.from_column.path), tcfg.from_column.column, tcfg.top, tcfg.bottom, seed)
    else:
        def gather(srcs):
            docs = []
            for s in srcs:
                docs += sample_docs(iter_docs(src_path(s.path), s.text_field, s.source_field, sources=s.sources), s.max_docs, seed)
            docs.sort(key=lambda d: id_rank(seed, d.id))
            return docs

        pos, neg = gather(tcfg.positive), gather(tcfg.negative)
        info = {"labels": "datasets",
                "positive": [{"path": str(src_path(s.path)), "sources": s.sources} for s in tcfg.positive],
                "negative": [{"path": str(src_path(s.path)), "sources": s.sources} for s in tcfg.negative]}
    return train_fasttext(pos, neg, out_dir, tcfg.params, seed=seed, max_per_class=tcfg.max_per_class,
                          val_fraction=tcfg.val_fraction, data_info=info)


# ---------------------------------------------------------------- n-gram LM


def train_lm(docs: list[Doc], out_stem: str | Path, order: int = 3, min_count: int = 1, arpa: bool = True,
             data_info: dict | None = None) -> dict:
    """Modified Kneser-Ney LM on `docs` -> <stem>.npz, <stem>.arpa (KenLM-readable), <stem>.json."""
    from pipeline.models import ngram, ngram_train

    if not docs:
        raise ValueError("no documents to train the LM on")
    sents = [s for d in docs for s in ngram.tokenize(d.text)]
    lm = ngram_train.train(sents, order=order, min_count=min_count)
    files = lm.save(out_stem, arpa=arpa)
    meta = {**lm.meta, "files": files, "data": {**(data_info or {}), "docs": len(docs), "sources": _count_sources(docs)}}
    io.write_json(meta, Path(str(out_stem) + ".json"))
    return meta
