#!/usr/bin/env python3
"""Check the bundled sample corpus built by data/build_corpus.py and print a summary.

    python data/verify_corpus.py          # checks, summary; exit 1 on failure
    python data/verify_corpus.py --sha    # also print sha256 of every output file
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from collections import Counter
from pathlib import Path

import zstandard

HERE = Path(__file__).resolve().parent
DOMAINS = {"literature", "religious", "technical", "legal", "dictionary", "news",
           "dialogue", "multilingual", "quotes", "code", "web_noise"}
KINDS = {"exact_dup", "norm_dup", "near_dup", "boilerplate", "lorem", "short",
         "symbol_heavy", "bullet_list", "no_punct", "ascii_art"}
MAX_DATA_BYTES = 20 * 1024 * 1024


def load_shards(folder: Path) -> list[dict]:
    docs = []
    for path in sorted(folder.glob("shard-*.jsonl.zst")):
        with open(path, "rb") as fh:
            raw = zstandard.ZstdDecompressor().stream_reader(fh).read()
        docs.extend(json.loads(line) for line in raw.decode("utf-8").splitlines())
    return docs


def norm(t: str) -> str:
    return " ".join(t.lower().split())


def shingles(t):
    toks = t.split()
    return {tuple(toks[i:i + 5]) for i in range(max(1, len(toks) - 4))}


def check(folder: Path, gt_path: Path, n_shards: int, errors: list, full: bool) -> dict:
    shards = sorted(folder.glob("shard-*.jsonl.zst"))
    if len(shards) != n_shards:
        errors.append(f"{folder.name}: {len(shards)} shards, want {n_shards}")
    docs = load_shards(folder)
    ids = [d["id"] for d in docs]
    if len(ids) != len(set(ids)):
        errors.append(f"{folder.name}: duplicate ids")
    for d in docs:
        if set(d) != {"id", "text", "domain", "source_detail"} or not all(
                isinstance(d[k], str) for k in d):
            errors.append(f"{folder.name}: bad record {d.get('id')}")
            break
    bad_dom = {d["domain"] for d in docs} - DOMAINS
    if bad_dom:
        errors.append(f"{folder.name}: unknown domains {bad_dom}")
    gt = [json.loads(l) for l in gt_path.read_text("utf-8").splitlines()]
    by_id = {d["id"]: d for d in docs}
    for r in gt:
        if r["kind"] not in KINDS:
            errors.append(f"unknown kind {r['kind']}")
        if r["id"] not in by_id or any(o not in by_id for o in r["of"]):
            errors.append(f"{gt_path.name}: {r['id']} or its originals missing")
            continue
        if not full:
            continue
        d = by_id[r["id"]]
        origs = [by_id[o] for o in r["of"]]
        if r["kind"] == "exact_dup" and d["text"] != origs[0]["text"]:
            errors.append(f"{r['id']}: not byte-identical")
        if r["kind"] == "norm_dup" and (d["text"] == origs[0]["text"]
                                        or norm(d["text"]) != norm(origs[0]["text"])):
            errors.append(f"{r['id']}: not a normalization duplicate")
        if r["kind"] == "near_dup":
            a, b = shingles(d["text"]), shingles(origs[0]["text"])
            j = round(len(a & b) / len(a | b), 4)
            if abs(j - r["details"]["jaccard_5gram"]) > 1e-4:
                errors.append(f"{r['id']}: jaccard {j} != recorded")
        if r["kind"] == "short" and not 1 <= len(d["text"].split()) <= 10:
            errors.append(f"{r['id']}: short doc has {len(d['text'].split())} words")
    noise_ids = {r["id"] for r in gt}
    # real docs must not duplicate each other (ground truth is the only duplication)
    if full:
        seen = {}
        for d in docs:
            if d["id"] in noise_ids:
                continue
            k = norm(d["text"])
            if k in seen:
                errors.append(f"real docs {seen[k]} and {d['id']} are duplicates")
            seen[k] = d["id"]
    words = Counter()
    cnt = Counter()
    for d in docs:
        cnt[d["domain"]] += 1
        words[d["domain"]] += len(d["text"].split())
    return {"docs": len(docs), "injected": len(gt), "by_domain": dict(sorted(cnt.items())),
            "words_by_domain": dict(sorted(words.items())),
            "noise": dict(sorted(Counter(r["kind"] for r in gt).items())),
            "shard_docs": [sum(1 for _ in zstandard.ZstdDecompressor().stream_reader(
                open(p, "rb")).read().splitlines()) for p in shards],
            "shard_bytes": [p.stat().st_size for p in shards]}


def check_web(errors: list) -> dict:
    from warcio.archiveiterator import ArchiveIterator
    warc = HERE / "web" / "python-docs.warc.gz"
    n, uris = 0, []
    with open(warc, "rb") as fh:
        for rec in ArchiveIterator(fh):
            if rec.rec_type == "response":
                n += 1
                uris.append(rec.rec_headers.get_header("WARC-Target-URI"))
                body = rec.content_stream().read()
                if b"<html" not in body[:2000].lower():
                    errors.append(f"WARC record {uris[-1]} is not HTML")
                if rec.http_headers.get_statuscode() != "200":
                    errors.append("WARC record without HTTP 200")
    html = sorted((HERE / "web" / "html").glob("*.html"))
    if not 30 <= n <= 50:
        errors.append(f"WARC has {n} response records")
    if len(html) != 3:
        errors.append(f"web/html has {len(html)} files")
    if warc.stat().st_size > 2 * 1024 * 1024:
        errors.append("WARC larger than 2 MB")
    return {"warc_records": n, "warc_bytes": warc.stat().st_size,
            "html_files": [p.name for p in html], "first_uri": uris[0] if uris else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sha", action="store_true", help="print sha256 of all outputs")
    ap.add_argument("--quick", action="store_true", help="skip per-record noise checks")
    args = ap.parse_args()
    errors: list[str] = []
    full = check(HERE / "sample", HERE / "injected.jsonl", 8, errors, not args.quick)
    small = check(HERE / "sample_small", HERE / "injected_small.jsonl", 2, errors,
                  not args.quick)
    web = check_web(errors)
    total = full["docs"]
    for dom, c in full["by_domain"].items():
        if c / total > 0.40:
            errors.append(f"domain {dom} is {100 * c / total:.1f}% of docs")
    real_domains = set(full["by_domain"]) - {"web_noise"}
    if len(real_domains) < 6:
        errors.append("fewer than 6 domains")
    if not 15_000 <= total <= 35_000:
        errors.append(f"{total} docs, want 15k-35k")
    missing = set(KINDS) - set(small["noise"])
    if missing:
        errors.append(f"sample_small lacks noise kinds {missing}")
    stats = json.loads((HERE / "stats.json").read_text())
    if stats["total_docs"] != total:
        errors.append("stats.json total_docs mismatch")
    data_bytes = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file()
                     and "__pycache__" not in p.parts)
    if data_bytes > MAX_DATA_BYTES:
        errors.append(f"data/ is {data_bytes} bytes > 20 MiB")
    print(f"corpus: {total} docs ({total - full['injected']} real + {full['injected']} "
          f"injected) in {len(full['shard_docs'])} shards")
    print(f"  shard docs:  {full['shard_docs']}")
    print(f"  shard bytes: {full['shard_bytes']}")
    print("  domain          docs   share      words")
    for dom, c in full["by_domain"].items():
        print(f"  {dom:<14}{c:>6}  {100 * c / total:5.1f}%  {full['words_by_domain'][dom]:>10,}")
    print(f"  noise: {full['noise']}")
    print(f"sample_small: {small['docs']} docs, {small['injected']} injected, "
          f"noise {small['noise']}")
    print(f"web: {web}")
    print(f"data/ total file bytes: {data_bytes:,}")
    if args.sha:
        for p in sorted(HERE.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                print(hashlib.sha256(p.read_bytes()).hexdigest(), p.relative_to(HERE))
    if errors:
        print("FAILED:")
        for e in errors[:50]:
            print("  " + e)
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
