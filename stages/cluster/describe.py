"""Cluster descriptions: the term vocabulary of the fit sample, per-batch partial descriptions
(documents, tokens, sources, mean scores, distinctive-term counts, closest examples) accumulated by
the write tasks, and `finalize`, which merges them into <out>/clusters.json (+ centroids.npy).
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import io
from pipeline.config import ClusterConfig
from pipeline.models import kmeans
from pipeline.schema import N_TOKENS, SOURCE

CLUSTERS_JSON, CENTROIDS = "clusters.json", "centroids.npy"
TERM_PATTERN = r"(?u)\b[^\W\d_]{3,}\b"  # words of 3+ letters: no numbers, no snake_case fragments


def vectorizer(vocab: list[str] | None = None, max_features: int | None = None):
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    return CountVectorizer(vocabulary=vocab, max_features=max_features, binary=True, lowercase=True,
                           token_pattern=TERM_PATTERN, stop_words=None if vocab else sorted(ENGLISH_STOP_WORDS), dtype=np.int32)


def vocabulary(texts: list[str], size: int) -> list[str]:
    if not texts:
        return []
    try:
        v = vectorizer(max_features=size).fit(texts)
    except ValueError:  # no term at all (e.g. only digits)
        return []
    return sorted(v.vocabulary_, key=v.vocabulary_.get)


def describe_batch(d: dict, terms: np.ndarray, vec, kept: pa.Table, lab: np.ndarray, xb: np.ndarray,
                    final_c: np.ndarray, scores: list[str], c: ClusterConfig) -> None:
    k = len(final_c)
    for i, n in enumerate(np.bincount(lab, minlength=k)):
        d["docs"][i] += int(n)
    if N_TOKENS in kept.column_names:
        tok = kept.column(N_TOKENS).to_numpy(zero_copy_only=False).astype(np.float64)
        for i, t in enumerate(np.bincount(lab, weights=tok, minlength=k)):
            d["tokens"][i] += int(t)
    if SOURCE in kept.column_names:
        for i, s in zip(lab.tolist(), kept.column(SOURCE).to_pylist()):
            d["sources"][i][s] += 1
    for s in scores:
        v = kept.column(s).cast(pa.float64()).to_numpy(zero_copy_only=False)
        ok = np.isfinite(v)
        for i, (sm, cnt) in enumerate(zip(np.bincount(lab[ok], weights=v[ok], minlength=k), np.bincount(lab[ok], minlength=k))):
            d["score_sum"][s][i] += float(sm)
            d["score_n"][s][i] += int(cnt)
    texts = kept.column("text").to_pylist()
    if vec is not None:
        from scipy import sparse

        m = vec.transform([t[: c.describe.max_chars] for t in texts])
        onehot = sparse.csr_matrix((np.ones(len(lab), dtype=np.int64), (lab, np.arange(len(lab)))), shape=(k, len(lab)))
        terms += np.asarray((onehot @ m).todense(), dtype=np.int64)
    if c.describe.examples:
        sims = np.einsum("ij,ij->i", kmeans.normalize(xb), final_c[lab])
        ids = kept.column("id").to_pylist()
        for i in range(k):
            rows = np.flatnonzero(lab == i)
            best = sorted(rows, key=lambda r: (-float(sims[r]), ids[r]))[: c.describe.examples]
            cand = d["examples"][i] + [{"id": ids[r], "similarity": round(float(sims[r]), 4),
                                        "snippet": _snippet(texts[r], c.describe.snippet_chars)} for r in best]
            d["examples"][i] = sorted(cand, key=lambda e: (-e["similarity"], e["id"]))[: c.describe.examples]


def _snippet(text: str, n: int) -> str:
    s = re.sub(r"\s+", " ", text).strip()
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


def distinctive_terms(terms: np.ndarray, docs: np.ndarray, vocab: list[str], top: int) -> list[list[tuple[str, float]]]:
    """Per cluster, terms by p_c * log(p_c / p_rest): p = share of the cluster's (rest's) documents
    containing the term, Laplace-smoothed. Frequent in the cluster and rare elsewhere scores high;
    a term as common in the rest as in the cluster scores <= 0 and is left out."""
    out = []
    total_df, total_n = terms.sum(0), docs.sum()
    for i in range(len(terms)):
        n_c, n_r = docs[i], total_n - docs[i]
        p_c = terms[i] / max(n_c, 1)
        p_r = (total_df - terms[i] + 1) / (n_r + 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(terms[i] >= 2, p_c * np.log(np.maximum(p_c, 1e-12) / p_r), 0.0)
        order = np.lexsort((np.arange(len(score)), -score))[:top]
        out.append([(vocab[j], round(float(score[j]), 4)) for j in order if score[j] > 0])
    return out


def finalize(out: Path, markers: dict[str, dict], *, work: Path, info: dict, vocab: list[str], top_terms: int) -> None:
    """Merge the per-shard partial descriptions into clusters.json; save the final centroids."""
    out = Path(out)
    ref = np.load(work / "refined.npz")
    final_c = ref["final_centroids"]
    k = len(final_c)
    docs, tokens = np.zeros(k, np.int64), np.zeros(k, np.int64)
    terms = np.zeros((k, len(vocab)), dtype=np.int64)
    sources = [Counter() for _ in range(k)]
    ssum, sn = {}, {}
    examples = [[] for _ in range(k)]
    for key in sorted(markers):
        d = markers[key]["describe"]
        docs += np.asarray(d["docs"], np.int64)
        tokens += np.asarray(d["tokens"], np.int64)
        t = np.load(work / "terms" / f"{key}.npy")
        if t.size:
            terms += t
        for i in range(k):
            sources[i].update(d["sources"][i])
            examples[i] += d["examples"][i]
        for s in d["score_sum"]:
            ssum.setdefault(s, np.zeros(k))[:] += d["score_sum"][s]
            sn.setdefault(s, np.zeros(k))[:] += d["score_n"][s]
    top = distinctive_terms(terms, docs, vocab, top_terms) if vocab else [[] for _ in range(k)]
    n_docs, n_tok = int(docs.sum()), int(tokens.sum())
    pruned_docs = sum(m["rejected"] for m in markers.values())
    mapping = ref["mapping"]
    clusters = []
    for i in range(k):
        clusters.append({
            "id": i, "docs": int(docs[i]), "tokens": int(tokens[i]),
            "share_docs": round(docs[i] / n_docs, 6) if n_docs else 0.0,
            "share_tokens": round(tokens[i] / n_tok, 6) if n_tok else 0.0,
            "kmeans_clusters": np.flatnonzero(mapping == i).tolist(),
            "top_terms": [t for t, _ in top[i]], "term_scores": [s for _, s in top[i]],
            "scores": {s: round(float(ssum[s][i] / sn[s][i]), 6) for s in sorted(ssum) if sn[s][i]},
            "sources": dict(sorted(sources[i].items(), key=lambda kv: (-kv[1], kv[0]))[:20]),
            "examples": sorted(examples[i], key=lambda e: (-e["similarity"], e["id"]))[: info["examples"]],
        })
    io.write_npy(final_c.astype(np.float32), out / CENTROIDS)
    embedding = {k_: v for k_, v in info["embedding"].items() if k_ != "cache_dir"}  # no absolute paths: same run, same bytes
    doc = {**{k_: v for k_, v in info.items() if k_ != "examples"}, "embedding": embedding, "k": k, "clusters": clusters, "centroids": CENTROIDS,
           "totals": {"docs": n_docs, "tokens": n_tok, "pruned_docs": int(pruned_docs)}}
    io.write_json(doc, out / CLUSTERS_JSON)
