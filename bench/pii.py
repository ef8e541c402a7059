"""PII redaction and URL blocklists: ours vs datatrove, same documents, one process, one core.

    python bench/pii.py [--n 17264] [--planted 1000] [--urls 100000] [--repeat 3]

PII, on the bundled sample corpus (real text: Python docs, code, man pages, licences, Bible, news,
dictionary, multilingual quotes):
- speed: ours (`pii` filter, one Batch) with e-mail + IP only, the job datatrove's PIIFormatter
  does (it has no phone or card detector), and with all four types; datatrove's
  `PIIFormatter.format(text)` per document (its defaults: e-mails, public IPv4). Best of --repeat.
- real text: documents changed and hits per type, ours and datatrove's, with every IP/phone/card hit
  of ours printed in context, so that the false positives can be counted by reading them.
- planted: --planted made-up values per type (filters.pii.synthetic) inserted at a line end of real
  documents; recall = the whole value replaced by its token. The same e-mails/IPv4s for datatrove.
  Phone formats we do not claim (national numbers without a + country code) are reported apart.
URL blocklist: --urls synthetic URLs (1 % on hosts of the bundled urlhaus list, some under an extra
subdomain, 1 % with an adult-list word) through `url_blocklist` (meta JSON parsed per document) and
through datatrove's URLFilter with the same lists (`use_integrated_lists=False`; it matches the
registered domain and the full host only, so a listed `b.example.com` misses `a.b.example.com`).
Requires the `bench` extra (datatrove, tldextract, pyahocorasick).
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import glob
import io
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import pyarrow as pa  # noqa: E402

from filters import Batch, build  # noqa: E402
from filters.pii import TOKENS, TYPES, find, synthetic  # noqa: E402
from filters.url_blocklist import BUNDLED  # noqa: E402

CONTEXTS = [" {x} ", "({x})", "<{x}>", " {x}.", " {x},", "\n{x}\n", ": {x};", "[{x}]"]
# National phone formats without a country code: not claimed by the filter, reported apart.
NATIONAL = ["020 7946 {a}", "030 {b}", "01 23 45 {c} 89", "03-1234-{a}", "(02) 9876 {a}", "06-{b}", "0{b}"]


def pin_one_core() -> int:
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def load_sample(n: int) -> list[str]:
    import zstandard

    texts: list[str] = []
    for path in sorted(glob.glob(str(ROOT / "data" / "sample" / "*.jsonl.zst"))):
        with open(path, "rb") as fh:
            for line in io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(fh), encoding="utf-8"):
                texts.append(json.loads(line)["text"])
    return texts[:n]


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def plant(texts: list[str], values: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """Each value inserted at a line end of a real document, in a random context; -> (docs, contexts)."""
    docs, ctxs = [], []
    for i, x in enumerate(values):
        doc, ctx = texts[i * 7 % len(texts)], rng.choice(CONTEXTS)
        p = doc.find("\n", rng.randrange(len(doc) + 1))
        p = len(doc) if p < 0 else p
        docs.append(doc[:p] + ctx.format(x=x) + doc[p:])
        ctxs.append(ctx)
    return docs, ctxs


def recall(outs: list[str], values: list[str], ctxs: list[str], token: str | None) -> float:
    """Share of planted values replaced whole: the token in the value's context (ours), or the
    value gone from its context (datatrove writes fake values, token None)."""
    ok = 0
    for out, x, ctx in zip(outs, values, ctxs):
        ok += (ctx.format(x=token) in out) if token else (ctx.format(x=x) not in out and x not in out)
    return ok / max(len(values), 1)


def bench_pii(texts: list[str], n_planted: int, repeat: int) -> None:
    from datatrove.pipeline.formatters import PIIFormatter

    dt = PIIFormatter()
    ours_all, ours_dt = build("pii"), build("pii", {"types": ["email", "ip_address"]})
    mb = sum(map(len, texts)) / 1e6
    print(f"\n== PII redaction: {len(texts)} real documents, {mb:.1f} MB")
    t_dt, dt_out = best_of(repeat, lambda: [dt.format(t) for t in texts])
    t_em, _ = best_of(repeat, lambda: ours_dt(Batch(texts)))
    t_all, res = best_of(repeat, lambda: ours_all(Batch(texts)))
    n = len(texts)
    print(f"datatrove PIIFormatter (e-mail, public IPv4): {n / t_dt:9,.0f} docs/s  {mb / t_dt:6.1f} MB/s")
    print(f"ours, e-mail + IP (v4, v6):                  {n / t_em:9,.0f} docs/s  {mb / t_em:6.1f} MB/s   {t_dt / t_em:.1f}x datatrove")
    print(f"ours, all four types:                        {n / t_all:9,.0f} docs/s  {mb / t_all:6.1f} MB/s   {t_dt / t_all:.1f}x datatrove")

    out = res.columns.get("text", texts)
    changed = sum(a != b for a, b in zip(texts, out))
    chars = sum(len(a) for a, b in zip(texts, out) if a != b) - sum(len(b) for a, b in zip(texts, out) if a != b)
    dt_changed = sum(a != b for a, b in zip(texts, dt_out))
    print(f"\nreal text, ours: {changed} docs changed ({100 * changed / n:.2f} %), hits {res.counters}, "
          f"net {chars:,} chars removed ({100 * chars / (mb * 1e6):.3f} % of the text)")
    print(f"real text, datatrove: {dt_changed} docs changed ({100 * dt_changed / n:.2f} %)")
    print("every IP / phone / card hit of ours on the real text, in context (read them: examples or false positives?):")
    for kind in ("ip_address", "phone", "credit_card"):
        seen = set()
        for t in texts:
            for a, b in find(t, kind):
                if t[a:b] not in seen:
                    seen.add(t[a:b])
                    print(f"  {kind:11s} {t[max(0, a - 35):a]!r:40} [{t[a:b]}] {t[b:b + 15]!r}")

    rng = random.Random(20240611)
    print(f"\nplanted, {n_planted} per type in real documents: recall (whole value replaced)")
    for kind in TYPES:
        values = [synthetic(kind, rng) for _ in range(n_planted)]
        docs, ctxs = plant(texts, values, rng)
        ours = recall(build("pii", {"types": [kind]})(Batch(docs)).columns.get("text", docs), values, ctxs, TOKENS[kind])
        line = f"  {kind:11s} ours {ours:.3f}"
        if kind in ("email", "ip_address"):
            v4 = [(d, x, c) for d, x, c in zip(docs, values, ctxs) if kind == "email" or "." in x]
            theirs = recall([dt.format(d) for d, _, _ in v4], [x for _, x, _ in v4], [c for _, _, c in v4], None)
            line += f"   datatrove {theirs:.3f}" + (f" (on the {len(v4)} IPv4; it has no IPv6)" if kind == "ip_address" else "")
        print(line)
    values = [rng.choice(NATIONAL).format(a=f"{rng.randrange(10000):04d}", b=rng.randrange(10**6, 10**8), c=rng.randrange(10, 100))
              for _ in range(n_planted)]
    docs, ctxs = plant(texts, values, rng)
    nat = recall(build("pii", {"types": ["phone"]})(Batch(docs)).columns.get("text", docs), values, ctxs, TOKENS["phone"])
    print(f"  phone, national formats without +country code (not claimed): ours {nat:.3f}")


def urls(n: int, rng: random.Random) -> tuple[list[str], int]:
    blocked = [ln.strip() for ln in (BUNDLED / "urlhaus.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    words = [ln.strip() for ln in (BUNDLED / "adult.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    names = ["news", "blog", "shop", "docs", "wiki", "forum", "recipes", "travel", "data", "science", "city", "club"]
    out, bad = [], 0
    for i in range(n):
        r = rng.random()
        if r < 0.01:
            h, bad = rng.choice(["", "www.", "cdn."]) + rng.choice(blocked), bad + 1
        else:
            h = f"{rng.choice(['', 'www.', 'en.', 'm.'])}{rng.choice(names)}{rng.randrange(10**5)}.{rng.choice(['com', 'org', 'net', 'de', 'co.uk', 'io'])}"
        path = f"/{rng.choice(names)}/{rng.randrange(10**6)}" + (f"-{rng.choice(words)}-videos" if 0.01 <= r < 0.02 else "")
        bad += 0.01 <= r < 0.02
        out.append(f"http{rng.choice(['', 's'])}://{h}{rng.choice(['', ':8080'])}{path}?p={i}")
    return out, bad


def bench_urls(n: int, repeat: int) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.filters import URLFilter
    from tldextract import TLDExtract

    url_list, bad = urls(n, random.Random(7))
    metas = [orjson.dumps({"url": u, "date": "2024-01-01"}).decode() for u in url_list]
    table = pa.table({"text": [""] * n, "meta": metas})
    f = build("url_blocklist")
    f.load()
    print(f"\n== URL blocklist: {n:,} URLs, {bad:,} planted on a bundled list (urlhaus hosts, adult words)")
    t_ours, res = best_of(repeat, lambda: f(Batch(table.column("text").to_pylist(), table)))
    hosts = [ln.strip() for ln in (BUNDLED / "urlhaus.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    words = [ln.strip() for ln in (BUNDLED / "adult.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    dt = URLFilter(extra_domains=hosts, banned_subwords=words, use_integrated_lists=False)
    dt.tldextractor = TLDExtract(suffix_list_urls=())  # the bundled public-suffix snapshot: no download
    docs = [Document(text="", id=str(i), metadata=orjson.loads(m)) for i, m in enumerate(metas)]
    t_dt, dt_res = best_of(repeat, lambda: [dt.filter(d) for d in docs])
    ours_hit = sum(r is not None for r in res.reasons)
    dt_hit = sum(r is not True for r in dt_res)
    print(f"ours (meta JSON parsed per document): {n / t_ours:10,.0f} docs/s, blocked {ours_hit:,}")
    print(f"datatrove URLFilter (same lists):     {n / t_dt:10,.0f} docs/s, blocked {dt_hit:,}   ours {t_dt / t_ours:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=17264, help="real documents of data/sample")
    ap.add_argument("--planted", type=int, default=1000, help="planted values per PII type")
    ap.add_argument("--urls", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per side; the best counts")
    args = ap.parse_args()
    print(f"pinned to CPU {pin_one_core()}")
    bench_pii(load_sample(args.n), args.planted, args.repeat)
    bench_urls(args.urls, args.repeat)


if __name__ == "__main__":
    main()
