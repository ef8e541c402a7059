"""Long-span contamination report: for every benchmark example, the longest token span of it that
occurs verbatim in the indexed corpus, where (shard, document id, token offset), and how often.

Unlike the 13-gram decontamination of the score stage (filters/decontam.py: fixed-length word
windows, a yes/no per document), this measures how much of each example a corpus holds, at any
length, on the tokenizer's ids: a 40-token span of a 45-token example is a copy; 8 tokens of
common phrasing are not. The spans come from the suffix arrays' matching statistics (the longest
prefix of every suffix of the example that occurs), so nothing is sampled or hashed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.models.infini_gram import InfiniGram

TOP = 10  # examples listed per benchmark, longest spans first


def example_spans(index: InfiniGram, texts: list[str]) -> list[dict]:
    """Per text: tokens, longest occurring span (tokens, start), its count and its first place."""
    seqs = index.encode(texts)
    lens = np.array([len(s) for s in seqs], np.int64)
    buf = np.concatenate(seqs).astype(np.int64) if lens.sum() else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(lens)])
    pos = np.arange(len(buf), dtype=np.int64)
    ex = np.repeat(np.arange(len(seqs)), lens)
    ms, shard, where = index.longest(buf, pos, np.repeat(starts[1:], lens) - pos)
    # per example: the position of its longest match (the first one on ties)
    order = np.lexsort((pos, -ms, ex))
    first = order[np.searchsorted(ex[order], np.arange(len(seqs)), side="left")] if len(buf) else np.zeros(0, np.int64)
    out = []
    has = lens > 0
    best = np.zeros(len(seqs), np.int64)
    best[has] = ms[first[has]]
    cnt = np.zeros(len(seqs), np.int64)
    hit = np.flatnonzero(best > 0)
    if len(hit):
        cnt[hit] = index._counts(buf, first[hit], best[hit])
    for i in range(len(seqs)):
        row = {"tokens": int(lens[i]), "longest": int(best[i]), "fraction": round(float(best[i] / lens[i]), 4) if lens[i] else 0.0}
        if best[i] > 0:
            j = int(first[i])
            row |= {"start": int(j - starts[i]), "count": int(cnt[i]), **index.locate(int(shard[j]), int(where[j])),
                    "span": index.decode(buf[j:j + best[i]])}
        out.append(row)
    return out


def report(index: InfiniGram, targets: dict[str, list[tuple[str, str]]], min_span: int, batch: int = 2000) -> dict:
    """{benchmark: summary + every example's row} over the given target sets (name -> [(id, text)])."""
    res = {}
    for name, rows in targets.items():
        ex = []
        for a in range(0, len(rows), batch):
            part = rows[a:a + batch]
            for (eid, _), r in zip(part, example_spans(index, [t for _, t in part])):
                ex.append({"id": eid, **r})
        longest = np.array([e["longest"] for e in ex], np.int64)
        frac = np.array([e["fraction"] for e in ex])
        res[name] = {"examples": len(ex), "median_longest": float(np.median(longest)) if len(ex) else 0.0,
                     "max_longest": int(longest.max()) if len(ex) else 0,
                     f"span_at_least_{min_span}": int((longest >= min_span).sum()), "half_or_more": int((frac >= 0.5).sum()),
                     "top": sorted(ex, key=lambda e: (-e["longest"], str(e["id"])))[:TOP], "rows": ex}
    return {"index": str(index.dir), "corpus_tokens": int(index.meta["tokens"]), "min_span": min_span, "benchmarks": res}


def table(rep: dict):
    """A rich table: one line per benchmark, with its longest-span example."""
    from rich.table import Table

    k = rep["min_span"]
    t = Table(title=f"longest benchmark spans found in {rep['index']} ({rep['corpus_tokens']:,} tokens)")
    for c in ("benchmark", "examples", "median span", "max span", f"span >= {k}", "half or more", "longest example: where, span"):
        t.add_column(c, justify="right" if c not in ("benchmark", "longest example: where, span") else "left", overflow="fold")
    for name, r in rep["benchmarks"].items():
        top = r["top"][0] if r["top"] and r["top"][0]["longest"] else None
        where = f"{top['id']} ({top['longest']}/{top['tokens']} tok) in {top['shard']} doc {top['doc_id']}: {top['span'][:60]!r}" if top else ""
        t.add_row(name, str(r["examples"]), f"{r['median_longest']:g}", str(r["max_longest"]), str(r[f"span_at_least_{k}"]),
                  str(r["half_or_more"]), where)
    return t


def save(rep: dict, path: Path) -> None:
    from pipeline import io

    io.write_json(rep, Path(path))
