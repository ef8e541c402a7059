"""Build the bundled English reference LM (`score.perplexity.reference: bundled`, CCNet-style).

    python data/reference_lm/build.py           # writes data/reference_lm/en.npz, en.arpa.gz and en.json
    python data/reference_lm/build.py --check   # rebuilds in a temp dir: the same bytes as the committed files?

CCNet scores web text with an LM trained on Wikipedia. No Wikipedia is bundled here (../shared/OFFLINE.md),
so the LM is trained on the cleanest English prose the repo ships, the real (not injected, see
data/injected.jsonl) documents of three data/sample domains:

- technical: the Python 3.11 docs (expository prose), with the reStructuredText markup taken out
  (roles, directives, code blocks, tables, section underlines: `clean_rst`);
- news: the Lee background corpus (Australian news articles);
- literature: Shakespeare (Project Gutenberg, modern spelling).

Left out: the benchmarks (data/benchmarks: the targets of decontamination, bench_sim and evaluate),
licences (legal: boilerplate repeated across packages), dictionary entries (fragments with markup),
fortunes (quotes: jokes, verse, ASCII art), the KJV (archaic, numbered verses), dialogue,
non-English text and code.

Held out: a fifth of each domain never enters the training data, chosen by a fixed hash of the
document's *file* (technical: the .rst file, literature: the play; news is one file, so per article)
- `held_out()`; tests/test_reference_lm.py measures on these. A 3-gram with modified Kneser-Ney
(`pipeline.models.ngram_train.train`), bigrams seen once and trigrams seen at most twice pruned: ~5x
fewer n-grams, and it remembers less of the text it was trained on (a training document's
perplexity is then closer to that of an unseen one from the same domain).

Two files of the same model: `en.arpa.gz` (KenLM reads it: the `kenlm` backend) and `en.npz` (our
numpy backend, loads in ~0.1 s). The build is deterministic: same data/sample, same bytes (`--check`).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.models import ngram, ngram_train  # noqa: E402

DOMAINS = ("technical", "news", "literature")
ENGLISH = DOMAINS + ("religious", "quotes", "legal", "dictionary")  # the all-English domains of data/sample
ORDER, PRUNE = 3, [0, 1, 2]
SALT = "curate-reference-lm-v1"


def real_docs(sample: Path = ROOT / "data" / "sample", injected: Path = ROOT / "data" / "injected.jsonl") -> list[dict]:
    """The real documents of data/sample (id, text, domain, source_detail), in shard order."""
    import zstandard

    fake = {json.loads(line)["id"] for line in injected.read_text().splitlines() if line.strip()}
    out = []
    for f in sorted(sample.glob("*.jsonl.zst")):
        with open(f, "rb") as fh:
            text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
        out.extend(d for d in map(json.loads, text.splitlines()) if d["id"] not in fake)
    return out


def held_out(doc: dict) -> bool:
    """True for the fifth of the documents the reference LM never sees (whole files, see above)."""
    group = doc["id"] if doc["domain"] == "news" else f"{doc['domain']}/{doc['source_detail']}"
    return int(hashlib.sha256(f"{SALT}/{group}".encode()).hexdigest()[:8], 16) % 5 == 0


def shuffled_twin(text: str, seed: int) -> str:
    """The same words in a seeded random order, on lines of the original lengths (same tokens, same
    number of sentences: only the order differs)."""
    import random

    lines = text.split("\n")
    words = [w for line in lines for w in line.split()]
    random.Random(seed).shuffle(words)
    out, i = [], 0
    for line in lines:
        n = len(line.split())
        out.append(" ".join(words[i:i + n]))
        i += n
    return "\n".join(out)


def eval_docs(docs: list[dict], per_other_domain: int = 100, seed: int = 0) -> list[dict]:
    """Real English documents the reference LM never saw: every held-out document of its training
    domains (whole files held out) and a seeded sample of the English domains it was not trained on."""
    import random

    out = [d for d in docs if d["domain"] in DOMAINS and held_out(d)]
    rng = random.Random(seed)
    for dom in ENGLISH:
        if dom not in DOMAINS:
            out += rng.sample([d for d in docs if d["domain"] == dom], per_other_domain)
    return out


_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)\s*(?:<[^`>]*>)?`")  # :func:`~os.path.join` -> os.path.join
_LITERAL = re.compile(r"``([^`]*)``")
_LINK = re.compile(r"`([^`<]+?)\s*(?:<[^`>]*>)?`__?")  # `Python Package Index <https://pypi.org>`_
_EMPH = re.compile(r"(\*\*|\*)(\S[^*]*?)\1")
_DIRECTIVE = re.compile(r"^\s*\.\. ")
_OPTION = re.compile(r"^:[\w -]+:(?!`)")  # directive options and field lists (:noindex:, :param x:)
_UNDERLINE = re.compile(r"^\s*([=\-~^\"'`#*+_:.])\1{2,}\s*$")
_CODE_DIRECTIVES = ("code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "productionlist",
                    "literalinclude", "highlight", "csv-table", "list-table", "table", "graphviz", "raw")


def clean_rst(text: str) -> str:
    """The prose of a reStructuredText document: no literal/code blocks, directive lines, tables or
    underlines; inline roles and literals reduced to their text. Indented prose (the body of
    `.. function::` or `.. note::`) stays."""
    out: list[str] = []
    skip_deeper: int | None = None  # inside a literal block: lines indented deeper than this are code
    continued = False  # a directive line ending in a backslash goes on
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if continued:
            continued = line.endswith("\\")
            continue
        if skip_deeper is not None:
            if not line.strip() or indent > skip_deeper:
                continue
            skip_deeper = None
        s = line.strip()
        if _DIRECTIVE.match(line):
            continued = line.endswith("\\")
            name = s[3:].split("::", 1)[0].strip()
            if name in _CODE_DIRECTIVES or s.endswith("::") and name in ("", "|"):
                skip_deeper = indent
            continue
        if s.endswith("::"):  # "Example::" introduces a literal block
            skip_deeper = indent
            s = s[:-1].rstrip(":") + ("" if s == "::" else ":")
        if not s:
            out.append("")
            continue
        if _UNDERLINE.match(s) or _OPTION.match(s) or s.startswith((">>>", "...", "+-", "|")):
            continue
        s = _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if "`~" in m.group(0) else m.group(1), s)
        s = _EMPH.sub(r"\2", _LINK.sub(r"\1", _LITERAL.sub(r"\1", s)))
        if sum(c.isalpha() for c in s) < 0.5 * len(s.replace(" ", "")):  # tables, option lists, stray code
            continue
        out.append(s)
    return "\n".join(out)


def training_text(doc: dict) -> str:
    return clean_rst(doc["text"]) if doc["domain"] == "technical" else doc["text"]


def write_npz(lm: ngram.NGramLM, path: Path, meta: dict) -> None:
    """`NGramLM.load`-compatible .npz, deflated, with fixed zip timestamps: the same model gives the same bytes."""
    arrays = {"vocab": np.frombuffer("\n".join(lm.vocab).encode(), dtype=np.uint8),
              "meta": np.frombuffer(json.dumps({**meta, "hash_version": ngram.HASH_VERSION, "order": lm.order},
                                               sort_keys=True).encode(), dtype=np.uint8)}
    for k, o in enumerate(lm.orders, 1):
        arrays[f"keys{k}"], arrays[f"logp{k}"] = o.keys, o.logp
        if o.bo is not None:
            arrays[f"bo{k}"] = o.bo
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, a in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a), allow_pickle=False)
            z.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue(),
                       compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    tmp.replace(path)


def write_arpa_gz(lm: ngram.NGramLM, path: Path) -> None:
    """ARPA text, gzip with no name or time in its header (same model, same bytes)."""
    plain = path.with_name(path.name[:-3] + ".tmp")
    ngram.write_arpa(lm, plain)
    tmp = path.with_name(path.name + ".tmp")
    with open(plain, "rb") as src, open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        shutil.copyfileobj(src, gz)
    plain.unlink()
    tmp.replace(path)


def build(out_dir: Path = HERE, order: int = ORDER, prune: list[int] = PRUNE) -> dict:
    """Train on the kept documents of DOMAINS and write <out_dir>/en.npz, en.arpa.gz and en.json."""
    t0 = time.perf_counter()
    docs = [d for d in real_docs() if d["domain"] in DOMAINS]
    train = [d for d in docs if not held_out(d)]
    sents = [s for d in train for s in ngram.tokenize(training_text(d))]
    lm = ngram_train.train(sents, order=order, prune=prune)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {**lm.meta, "lang": "en", "domains": list(DOMAINS),
            "data": {"corpus": "data/sample (real documents only: data/injected.jsonl lists the injected ones)",
                     "docs": len(train), "held_out_docs": len(docs) - len(train),
                     "per_domain": {dom: sum(d["domain"] == dom for d in train) for dom in DOMAINS},
                     "held_out": f"sha256('{SALT}/' + group)[:8] % 5 == 0, group = domain/source_detail (news: the id)"}}
    write_npz(lm, out_dir / "en.npz", meta)
    write_arpa_gz(lm, out_dir / "en.arpa.gz")
    from pipeline import io as pio

    files = {n: {"sha256": pio.sha256_file(out_dir / n), "bytes": (out_dir / n).stat().st_size} for n in ("en.npz", "en.arpa.gz")}
    info = {**meta, "files": files, "build_seconds": round(time.perf_counter() - t0, 1)}
    pio.write_json(info, out_dir / "en.json")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with the committed en.npz")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            got = build(Path(tmp))["files"]
        from pipeline import io as pio

        same = all(pio.sha256_file(HERE / n) == f["sha256"] for n, f in got.items())
        print("rebuilt: " + ("the same bytes as" if same else "DIFFERENT from") + " the committed " + ", ".join(got))
        sys.exit(0 if same else 1)
    info = build()
    sizes = ", ".join(f"{n} {f['bytes'] / 1e6:.2f} MB" for n, f in info["files"].items())
    print(f"{HERE}: {sizes}; n-grams {info['ngrams']}, {info['data']['docs']} docs ({info['tokens']} tokens), {info['build_seconds']} s")


if __name__ == "__main__":
    main()
