"""Heuristic filters: ours vs datatrove, same documents, one process, one core.

    python bench/filters.py [--n 5000] [--batch-size 1000] [--skip-datatrove]

Chain on both sides: Gopher quality -> Gopher repetition -> C4 (rewrites the text of kept docs) ->
FineWeb quality, each with its default parameters; a document stops at its first failing filter.
datatrove runs `filter(doc)` per document (its cheapest path: no generator chain, no stats), so
the ratio is conservative. Ours runs each filter on a Batch of the documents still alive, sharing
the whitespace word split between Gopher quality, Gopher repetition and C4, and replaces the text
with C4's cleaned text before FineWeb, as the engine does with a filter's `text` column.

Documents: the bundled sample corpus (data/sample/*.jsonl.zst) when present, else paragraphs of
the Python docs' reST sources and docstrings of the standard library found on this machine.

Prints docs/s for both, the ratio, and agreement (share of documents with the same keep/drop
decision), with the disagreements broken down by (our reason, datatrove reason). Our chain runs
twice: with defaults (whitespace words) and with punctuation_as_words=true on the Gopher and FineWeb
filters (spaCy-like tokens, datatrove compatibility). --per-filter also
runs each filter alone on every document, which shows the differences hidden behind an earlier
filter of the chain.
Requires the `bench` extra (datatrove, spacy).
"""
from __future__ import annotations

import os

# One core, one thread: set before numpy (or anything with a thread pool) is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import ast
import collections
import glob
import io
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from filters import Batch, build  # noqa: E402

CHAIN = ("gopher_quality", "gopher_repetition", "c4", "fineweb_quality")


def pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    if "torch" in sys.modules:  # never import torch just for this
        sys.modules["torch"].set_num_threads(1)
    return cpu


def load_corpus(n: int) -> tuple[list[str], str]:
    shards = sorted(glob.glob(str(ROOT / "data" / "sample" / "*.jsonl.zst")))
    if shards:
        import zstandard

        texts: list[str] = []
        for path in shards:
            with open(path, "rb") as fh:
                reader = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8")
                for line in reader:
                    texts.append(json.loads(line)["text"])
                    if len(texts) >= n:
                        return texts, f"data/sample ({len(shards)} shards)"
        return texts, f"data/sample ({len(shards)} shards, all {len(texts)} docs)"
    return _fallback_corpus(n), "python docs reST + stdlib docstrings (fallback)"


def _fallback_corpus(n: int) -> list[str]:
    """Real text on this machine: reST sections of the Python docs, then stdlib docstrings."""
    texts: list[str] = []
    for path in sorted(glob.glob("/usr/share/doc/python3*/html/_sources/**/*.rst.txt", recursive=True)):
        chunk: list[str] = []
        for para in Path(path).read_text(errors="replace").split("\n\n"):
            chunk.append(para)
            if sum(map(len, chunk)) > 3000:
                texts.append("\n\n".join(chunk))
                chunk = []
        if chunk:
            texts.append("\n\n".join(chunk))
    for path in sorted(glob.glob(f"/usr/lib/python3.{sys.version_info.minor}/*.py")):
        try:
            tree = ast.parse(Path(path).read_text(errors="replace"))
        except (SyntaxError, ValueError):
            continue
        docs = [ast.get_docstring(node) for node in ast.walk(tree) if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))]
        docs = [d for d in docs if d]
        if docs:
            texts.append("\n\n".join(docs))
    if not texts:
        sys.exit("no corpus: build data/sample or install python3-doc")
    random.Random(0).shuffle(texts)
    return (texts * (n // len(texts) + 1))[:n]


def run_ours(
    texts: list[str], batch_size: int, overrides: dict[str, dict], timings: dict[str, float] | None = None
) -> list[str | None]:
    params = {name: dict(overrides.get(name, {})) for name in CHAIN}
    params["c4"]["filter_lines"] = True  # datatrove's C4 rewrites the text that FineWeb then sees
    filters = [build(name, params[name]) for name in CHAIN]
    reasons: list[str | None] = [None] * len(texts)
    for start in range(0, len(texts), batch_size):
        batch = Batch(texts[start : start + batch_size])
        alive = list(range(len(batch)))
        for f in filters:
            if not alive:
                break
            t0 = time.perf_counter()
            sub = batch if len(alive) == len(batch) else batch.take(alive)
            res = f(sub)
            if timings is not None:  # includes the shared word/line split, paid by the first user
                timings[f.name] = timings.get(f.name, 0.0) + time.perf_counter() - t0
            survivors = []
            for j, r in zip(alive, res.reasons):
                if r is None:
                    survivors.append(j)
                else:
                    reasons[start + j] = r
            if "text" in res.columns:  # the engine replaces the text column: fresh views after it
                new_text = dict(zip(alive, res.columns["text"]))
                batch = Batch([new_text.get(j, t) for j, t in enumerate(batch.texts)])
            alive = survivors
    return reasons


def run_datatrove(texts: list[str]) -> tuple[list[str | None], float]:
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    chain = list(zip(CHAIN, (GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter())))
    warm = Document(text=texts[0], id="warm")
    for _, f in chain:  # loads spaCy outside the timing
        f.filter(warm)
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    reasons: list[str | None] = [None] * len(texts)
    t0 = time.perf_counter()
    for i, doc in enumerate(docs):
        for name, f in chain:
            r = f.filter(doc)
            if r is not True:
                reasons[i] = f"{name}/{r[1] if isinstance(r, tuple) else 'dropped'}"
                break
    return reasons, time.perf_counter() - t0


def per_filter_agreement(texts: list[str], batch_size: int) -> None:
    """Each filter alone on every document (untimed): where exactly the two implementations differ."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter, GopherRepetitionFilter

    peers = (GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(), FineWebQualityFilter())
    variants = [(name, {}, peer) for name, peer in zip(CHAIN, peers)]
    variants.insert(1, ("gopher_quality", {"punctuation_as_words": True}, peers[0]))
    variants.insert(3, ("gopher_repetition", {"punctuation_as_words": True}, peers[1]))
    variants.append(("fineweb_quality", {"punctuation_as_words": True}, peers[3]))
    theirs_by_peer: dict[int, list[str | None]] = {}
    for name, params, peer in variants:
        f = build(name, params)
        mine: list[str | None] = []
        for start in range(0, len(texts), batch_size):
            mine += f(Batch(texts[start : start + batch_size])).reasons
        if id(peer) not in theirs_by_peer:
            res = [peer.filter(Document(text=t, id=str(i))) for i, t in enumerate(texts)]
            theirs_by_peer[id(peer)] = [None if r is True else (r[1] if isinstance(r, tuple) else "dropped") for r in res]
        agree, dis = agreement(mine, theirs_by_peer[id(peer)])
        label = name + "".join(f" {k}={v}" for k, v in params.items())
        print(f"  {label:45s} agreement {agree:.4f}  " + ", ".join(f"{a} vs {b}: {k}" for (a, b), k in dis.most_common(6)))


def agreement(ours: list[str | None], theirs: list[str | None]) -> tuple[float, collections.Counter]:
    dis = collections.Counter(
        (a or "kept", b or "kept") for a, b in zip(ours, theirs) if (a is None) != (b is None)
    )
    return 1 - sum(dis.values()) / len(ours), dis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="documents (default 5000)")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--skip-datatrove", action="store_true", help="time ours only")
    ap.add_argument("--per-filter", action="store_true", help="also each filter alone, untimed (~30 ms/doc more)")
    args = ap.parse_args()

    cpu = pin_one_core()
    texts, source = load_corpus(args.n)
    n_words = sum(len(t.split()) for t in texts)
    print(f"{len(texts)} docs, {n_words} words from {source}; pinned to cpu {cpu}")

    run_ours(texts[:50], args.batch_size, {})  # warm-up: imports, lazy tables
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ours = run_ours(texts, args.batch_size, {}, timings)
    t_ours = time.perf_counter() - t0
    compat = {"punctuation_as_words": True}
    t0 = time.perf_counter()
    ours_dt_like = run_ours(texts, args.batch_size, {k: compat for k in ("gopher_quality", "gopher_repetition", "fineweb_quality")})
    t_compat = time.perf_counter() - t0
    print(f"ours:      {len(texts) / t_ours:10.1f} docs/s  ({t_ours:.2f} s)")
    print("  seconds per filter:", {k: round(v, 3) for k, v in timings.items()})
    print(f"ours, punctuation_as_words=true: {len(texts) / t_compat:10.1f} docs/s  ({t_compat:.2f} s)")
    print("  reasons:", collections.Counter(ours).most_common())
    if args.skip_datatrove:
        return

    theirs, t_dt = run_datatrove(texts)
    print(f"datatrove: {len(texts) / t_dt:10.1f} docs/s  ({t_dt:.2f} s)")
    print("  reasons:", collections.Counter(theirs).most_common())
    print(f"ratio ours/datatrove: {t_dt / t_ours:.1f}x  (punctuation_as_words=true: {t_dt / t_compat:.1f}x)")
    for label, mine in (("defaults", ours), ("punctuation_as_words=true", ours_dt_like)):
        agree, dis = agreement(mine, theirs)
        kept_o = sum(r is None for r in mine)
        kept_d = sum(r is None for r in theirs)
        print(f"agreement ({label}): {agree:.4f}   kept: ours {kept_o}, datatrove {kept_d}")
        for (a, b), k in dis.most_common():
            print(f"    {k:5d}  ours={a:28s} datatrove={b}")
    if args.per_filter:
        print("each filter alone:")
        per_filter_agreement(texts, args.batch_size)


if __name__ == "__main__":
    main()
