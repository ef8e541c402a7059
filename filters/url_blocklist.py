"""URL blocklists: reject documents whose URL is on a domain list or contains an entry of a substring list.

The URL is `meta[meta_key]` (default `url`, as WARC ingest writes it; a dotted key reads nested
meta: `metadata.url`); documents without one are kept. A domain entry blocks its host and every
subdomain (`example.com` blocks `a.b.example.com`): one set lookup per label of the URL's host,
compared lower-case without scheme, userinfo, port, trailing dot or `www.`. Substring lists match the
lower-cased URL, one RE2 pass per list over the whole batch. A list is a file, one entry a line, `#`
comments; a bare name is a bundled list (data/blocklists/, see its README). Reason:
`url_blocklist:<list name>` (file name without extension): the first matching list, domain lists
before substring lists.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import register
from .base import Batch, Filter, FilterResult, ModelError

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "blocklists"
_HOST = re.compile(r"^\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?/*(?:[^@/?#\s]*@)?(\[[^\]/]*\]|[^:/?#\s]*)")


def host(url: str) -> str:
    """The host of `url`, lower-case, without port, trailing dot or a leading `www.`."""
    return _HOST.match(url).group(1).lower().rstrip(".").removeprefix("www.")


def _url(meta: Any, key: list[str]) -> str | None:
    node = orjson.loads(meta) if isinstance(meta, (str, bytes)) else meta
    for k in key:
        node = node.get(k) if isinstance(node, dict) else None
    return node if isinstance(node, str) and node.strip() else None


@register
class URLBlocklistFilter(Filter):
    """Reasons: url_blocklist:<list name>. Parameters: `domains`, `substrings` (lists of bundled
    names or paths, default the bundled `urlhaus` malware hosts and `adult` substrings), `meta_key`."""

    name: ClassVar[str] = "url_blocklist"
    params: ClassVar[dict[str, Any]] = {"domains": ["urlhaus"], "substrings": ["adult"], "meta_key": "url"}

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        self.lists: list[tuple[str, str, Path]] = []  # (kind, name, path) in order
        for kind in ("domains", "substrings"):
            entries = self.cfg[kind]
            if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
                raise ValueError(f"filter 'url_blocklist': {kind} must be a list of bundled list names or file paths, got {entries!r}")
            for e in entries:
                bare = "/" not in e and "\\" not in e and not e.endswith(".txt")
                self.lists.append((kind, Path(e).stem if not bare else e, BUNDLED / f"{e}.txt" if bare else Path(e)))
        names = [n for _, n, _ in self.lists]
        if len(set(names)) < len(names):
            raise ValueError(f"filter 'url_blocklist': two lists share a name in {names}; reasons are per list name, rename a file")
        if not isinstance(self.cfg["meta_key"], str) or not self.cfg["meta_key"]:
            raise ValueError(f"filter 'url_blocklist': meta_key must be a non-empty string, got {self.cfg['meta_key']!r}")
        self.key = self.cfg["meta_key"].split(".")

    def check(self) -> None:
        bundled = sorted(p.stem for p in BUNDLED.glob("*.txt"))
        for kind, name, path in self.lists:
            if not path.is_file():
                raise ModelError(f"filter 'url_blocklist': {kind} list '{name}' not found at {path}; "
                                 f"give a file path or a bundled list name ({', '.join(bundled)})")

    def load(self) -> None:
        if hasattr(self, "domains"):
            return
        self.check()
        self.domains: dict[str, str] = {}  # host -> first list naming it
        self.patterns: list[tuple[str, str]] = []  # (list name, RE2 alternation)
        for kind, name, path in self.lists:
            entries = [ln.split("#", 1)[0].strip().lower() for ln in path.read_text(encoding="utf-8").splitlines()]
            entries = [e for e in entries if e]
            if kind == "domains":
                for e in entries:
                    self.domains.setdefault(host(e), name)
            elif entries:
                self.patterns.append((name, "|".join(re.escape(e) for e in entries)))

    def apply(self, batch: Batch) -> FilterResult:
        if not hasattr(self, "domains"):  # used directly, not through the filter stage
            self.load()
        urls = [None if m is None else _url(m, self.key) for m in batch.column("meta")]
        reasons: list[str | None] = [None] * len(urls)
        lower = pc.utf8_lower(pa.array(urls, pa.string()))
        hits = [(name, pc.match_substring_regex(lower, pattern).to_pylist()) for name, pattern in self.patterns]
        for i, url in enumerate(urls):
            if url is None:
                continue
            h, name = host(url), None
            while h and (name := self.domains.get(h)) is None:
                h = h.partition(".")[2]  # a.b.example.com -> b.example.com -> example.com -> com
            name = name or next((n for n, hit in hits if hit[i]), None)
            reasons[i] = None if name is None else f"url_blocklist:{name}"
        return FilterResult(reasons)
