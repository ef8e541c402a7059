"""PII redaction: e-mail addresses, IP addresses, phone numbers and credit-card numbers.

`pii` rewrites `text`, replacing each hit with a token per type (default: Presidio's entity
names, which NeMo Curator's PII modifier also writes: `<EMAIL_ADDRESS>`, `<IP_ADDRESS>`,
`<PHONE_NUMBER>`, `<CREDIT_CARD>`; datatrove writes fake addresses instead, Dolma `|||EMAIL_ADDRESS|||`:
set `replacements`). It keeps every document unless `max_count` is set (Dolma removes documents
with 6 or more PII spans and masks the rest: `max_count: 5`). It adds `pii_count` (hits in the
document) and counts hits per type for the shard's `_stats.json` (`counters`, `pii:<type>`).

Regexes find candidates; a validator per type keeps the false positives of real corpora out:
- IP addresses: IPv4 and IPv6 checked by `ipaddress`; only public ones by default (as datatrove:
  127.0.0.1, 192.168.x.x, 10.x and the documentation ranges 192.0.2.0/24, 2001:db8::/32 are not
  PII). Dotted numbers after "version", "section", "revision", "rfc", "v" ... are left alone
  (`13.2.5.8` in a spec reference, `1.17.2.7` in a CVS log).
- phone numbers: a `+` country code with 8-15 digits (E.164), or the North American plan
  (area code and exchange start with 2-9) written `(202) 555-0143`, `202-555-0143` or
  `202.555.0143` with one consistent separator. National formats of other countries without the
  `+` prefix (`020 7946 0958`) are not caught: in running text they look like any number group.
- credit cards: 13-19 digits, bare or in groups of 4 (Amex 4-6-5), with a card-network prefix
  and a valid Luhn check digit; floats, ids and message ids (`20031104211846.GK...`) are skipped.
A cheap RE2 prefilter per type (pyarrow, over the whole batch) picks the documents that may hold a
hit; the Python regexes and validators run on those only, so clean prose costs ~nothing.
"""
from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import register
from .base import Batch, Filter, FilterResult, check_number

TYPES = ("email", "ip_address", "phone", "credit_card")
TOKENS = {"email": "<EMAIL_ADDRESS>", "ip_address": "<IP_ADDRESS>", "phone": "<PHONE_NUMBER>", "credit_card": "<CREDIT_CARD>"}

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_END = r"(?![\w@-]|[.,]\w)"  # not followed by more of a word, number or id ("1.2.3.4.5", "123.GA")
# Python regexes that find candidates (validated below). E-mail is found from its "@": the domain
# forwards, the local part backwards (a pattern that starts at every word character is 100x slower).
_EMAIL_DOMAIN = re.compile(r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")
_EMAIL_LOCAL = re.compile(r"(?<![\w.%+/-])[\w.%+-]*[\w%+-]\Z")  # not after "/": po/ca@valencia.po is a file
# Domains that are no one's address: reserved (RFC 2606/6761), local, and file extensions after an
# "@" in file names (en@boldquot.header); e-mails at them are left alone.
_NOT_EMAIL_TLD = frozenset(
    "test example invalid localhost local localdomain lan internal home loc "
    "po pot mo header txt html htm json xml yaml yml png jpg jpeg gif svg log conf cfg ini lock gz bz2 xz zip tar rst cpp hpp java css".split())
_EXAMPLE_DOMAIN = re.compile(r"(?:^|\.)example\.(?:com|org|net)$", re.I)
_REGEX = {
    "credit_card": re.compile(r"(?<![\w.,+-])(?:\d{4}(?P<s>[ -])\d{4}(?P=s)\d{4}(?P=s)\d{4}(?:(?P=s)\d{3})?"
                              r"|\d{4}(?P<a>[ -])\d{6}(?P=a)\d{4,5}|\d{13,19})" + _END),
    # IPv4 (a port may follow), IPv6; not followed by /\d: a network (1.2.0.0/16) is no one's address
    "ip_address": re.compile(rf"(?<![\w.:-])(?:(?:{_OCTET}\.){{3}}{_OCTET}(?!\w|\.\w|/\d)|(?:[0-9A-Fa-f]{{0,4}}:){{2,7}}[0-9A-Fa-f]{{0,4}}(?![\w:]|\.\w|/\d))"),
    "phone": re.compile(r"(?<![\w+.-])(?:\+[1-9]\d{0,14}(?:[ .-]?\(\d{1,4}\)[ .-]?\d{1,8})?(?:[ .-]\d{1,8}){0,6}"
                        r"|(?:1[ .-]?)?(?:\([2-9]\d\d\)[ .-]?[2-9]\d\d[ .-]|[2-9]\d\d(?P<s>[.-])[2-9]\d\d(?P=s))\d{4})" + _END),
}
# RE2 patterns (pyarrow, whole batch at once, ~300 MB/s) that every document with a hit of the
# type matches: the Python regexes above run only on those documents.
_PREFILTER = {
    "email": r"[^\s@]@[A-Za-z0-9]",
    "credit_card": r"\d{4}[ -]?\d{4,6}[ -]?\d{4}",
    "ip_address": r"\d\.\d{1,3}\.\d{1,3}\.\d|[0-9A-Fa-f]:[0-9A-Fa-f]{0,4}:",
    "phone": r"\+[1-9]|\d\)[ .-]?\d{3}|\d{3}[.-]\d{3}[.-]\d{4}",
}
# A dotted number right after one of these words is a version or section number, not an address.
_NOT_IP_BEFORE = re.compile(r"(?:(?:\b(?:version|release|revision|rev|section|sections|chapter|rfc|v)|§)\.?[ \t:\"'(]*|[A-Za-z]/)\Z", re.I)
_SEPARATORS = re.compile(r"[ .()-]+")
_CARD_PREFIX = re.compile(
    r"4(?:\d{12}|\d{15}|\d{18})|5[1-5]\d{14}|2(?:2[2-9]\d|[3-6]\d\d|7[01]\d|720)\d{12}|3[47]\d{13}"
    r"|3(?:0[0-5]|[689]\d)\d{11,16}|6(?:011|5\d\d|4[4-9]\d)\d{12,15}|35(?:2[89]|[3-8]\d)\d{12,15}|62\d{14,17}")


def luhn(digits: str) -> bool:
    """The Luhn (mod 10) check digit of card numbers is valid."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _emails(text: str) -> list[tuple[int, int]]:
    spans = []
    for m in _EMAIL_DOMAIN.finditer(text):
        domain = m.group()[1:]
        if domain.rsplit(".", 1)[1].lower() in _NOT_EMAIL_TLD or _EXAMPLE_DOMAIN.search(domain):
            continue
        local = _EMAIL_LOCAL.search(text, max(0, m.start() - 64), m.start())
        if local is not None:
            spans.append((local.start(), m.end()))
    return spans


def _is_card(s: str, text: str, start: int, public_only: bool) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    return _CARD_PREFIX.fullmatch(digits) is not None and luhn(digits)


def _is_phone(s: str, text: str, start: int, public_only: bool) -> bool:
    if s[0] != "+":
        return True  # North American pattern: its shape is the check
    groups = [g for g in _SEPARATORS.split(s[1:]) if g]
    n = sum(map(len, groups))
    if not 8 <= n <= 15 or len(groups[-1]) < 2:  # E.164 length; "+35236450.6" is a signed decimal
        return False
    if len(groups) == 1:
        return n >= 10  # a bare "+35236450" is more often a number
    return "." not in s or len(groups) >= 3  # "+1.202.555.0143", not "+3.1415"


def _is_ip(s: str, text: str, start: int, public_only: bool) -> bool:
    try:
        ip = ipaddress.ip_address(s)
    except ValueError:
        return False
    if public_only and not ip.is_global:
        return False
    if ip.version == 6:  # "be::", "42::" (reST literal blocks), "l[1::2]" (slices) are too short
        return sum(1 for g in s.split(":") if g) >= 3
    octets = [int(o) for o in s.split(".")]
    if octets[0] < 30 and sum(o < 10 for o in octets[1:]) >= 2:  # 13.2.5.8, 1.2.3.4, 2.0.0.11: a version
        return False  # or a section number (p = 0.05 % for a random address)
    return not _NOT_IP_BEFORE.search(text, max(0, start - 24), start)


_VALID = {"credit_card": _is_card, "ip_address": _is_ip, "phone": _is_phone}


def find(text: str, kind: str, public_only: bool = True) -> list[tuple[int, int]]:
    """Spans (start, end) of PII of type `kind` in `text`."""
    if kind == "email":
        return _emails(text)
    regex, valid, spans, pos = _REGEX[kind], _VALID[kind], [], 0
    while (m := regex.search(text, pos)) is not None:
        if valid(m.group(), text, m.start(), public_only):
            spans.append(m.span())
            pos = m.end()
        else:  # a rejected candidate may hide a real one inside it: "1913 5109 2052 6303 0391"
            pos = m.start() + 1
    return spans


def _check_types(name: str, value: Any) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(t, str) for t in value):
        raise ValueError(f"filter 'pii': {name} must be a non-empty list of PII types from {list(TYPES)}, got {value!r}")
    unknown = [t for t in value if t not in TYPES]
    if unknown:
        raise ValueError(f"filter 'pii': unknown PII type(s) {unknown} in {name}; known: {list(TYPES)}")
    return list(value)


@register
class PIIFilter(Filter):
    """Redacts PII in `text` (see the module docstring); adds `pii_count`. Reason (only with
    max_count set): pii:max_count, more than max_count PII hits in the document (before redaction).
    Counters per shard: pii:<type>, hits replaced."""

    name: ClassVar[str] = "pii"
    params: ClassVar[dict[str, Any]] = {"types": list(TYPES), "replacements": {}, "public_ips_only": True, "max_count": None}
    output_columns: ClassVar[dict[str, str]] = {"pii_count": "int32"}

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        c = self.cfg
        self.types = _check_types("types", c["types"])
        reps = c["replacements"]
        if not isinstance(reps, dict) or not all(isinstance(v, str) for v in reps.values()):
            raise ValueError(f"filter 'pii': replacements must map PII types to strings, e.g. {{email: '<EMAIL>'}}, got {reps!r}")
        _check_types("replacements", list(reps) or ["email"])
        self.tokens = {**TOKENS, **reps}
        if not isinstance(c["public_ips_only"], bool):
            raise ValueError(f"filter 'pii': public_ips_only must be true or false, got {c['public_ips_only']!r}")
        check_number("max_count", c["max_count"])
        self.types = [t for t in TYPES if t in self.types]  # priority on overlaps: e-mail, card, IP, phone

    def redact(self, text: str, kinds: list[str] | None = None) -> tuple[str, Counter]:
        """`text` with its PII (of `kinds`, default all enabled types) replaced, and the hits per type.
        Where hits of two types overlap, the first type in TYPES order wins."""
        hits: Counter = Counter()
        taken: list[tuple[int, int, str]] = []
        for kind in kinds if kinds is not None else self.types:
            for a, b in find(text, kind, self.cfg["public_ips_only"]):
                if all(b <= s or a >= e for s, e, _ in taken):
                    taken.append((a, b, kind))
        if not taken:
            return text, hits
        out, pos = [], 0
        for a, b, kind in sorted(taken):
            out += (text[pos:a], self.tokens[kind])
            pos = b
            hits[kind] += 1
        out.append(text[pos:])
        return "".join(out), hits

    def apply(self, batch: Batch) -> FilterResult:
        texts = list(batch.texts)
        arr = pa.array(texts, pa.large_string())
        # per document, the types whose cheap RE2 prefilter it matches (most documents: none)
        masks = [pc.match_substring_regex(arr, _PREFILTER[t]).to_numpy(zero_copy_only=False) for t in self.types]
        counts = np.zeros(len(texts), dtype=np.int64)
        total = Counter({f"pii:{t}": 0 for t in self.types})
        for i in np.flatnonzero(np.logical_or.reduce(masks)):
            kinds = [t for t, m in zip(self.types, masks) if m[i]]
            texts[i], hits = self.redact(texts[i], kinds)
            counts[i] = sum(hits.values())
            total.update({f"pii:{k}": v for k, v in hits.items()})
        cap = self.cfg["max_count"]
        reasons = [None] * len(texts) if cap is None else ["pii:max_count" if n > cap else None for n in counts.tolist()]
        columns: dict[str, list] = {"pii_count": counts.tolist()}
        if counts.any():  # an unchanged batch keeps its text (and the engine its token counts)
            columns["text"] = texts
        return FilterResult(reasons, columns, counters=dict(total))


def synthetic(kind: str, rng: Any) -> str:
    """A made-up PII string of type `kind`, drawn with `rng` (random.Random) in one of the formats
    this filter claims to catch: the planted side of the tests and of bench/pii.py."""
    r = rng.randrange
    if kind == "email":
        first, last = rng.choice(["anna", "li", "jose", "mary-jo", "o.k", "wei"]), rng.choice(["smith", "nguyen", "garcia", "x"])
        local = rng.choice([f"{first}.{last}", f"{first}{r(100)}", f"{first[0]}_{last}+news", f"{last.upper()}"])
        return f"{local}@{rng.choice(['mail.', 'cs.', ''])}{rng.choice(['gmail', 'uni-bonn', 'acme-corp', 'yahoo'])}.{rng.choice(['com', 'de', 'co.uk', 'org', 'fr', 'io'])}"
    if kind == "ip_address":
        while True:
            ip = ipaddress.ip_address(r(1 << 32)) if r(3) else ipaddress.IPv6Address((0x2000 + r(0x2000)) << 112 | r(1 << 112))
            if ip.is_global:
                return ip.compressed if ip.version == 4 or r(2) else ip.exploded
    if kind == "phone":
        a, b, c = f"{r(2, 10)}{r(10)}{r(10)}", f"{r(2, 10)}{r(10)}{r(10)}", f"{r(10000):04d}"
        nanp = [f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"1-{a}-{b}-{c}", f"+1 {a} {b} {c}", f"+1-{a}-{b}-{c}", f"+1 ({a}) {b}-{c}"]
        intl = [f"+44 20 {r(1000, 10000)} {r(1000, 10000)}", f"+49 30 {r(10**7, 10**8)}", f"+33 {r(1, 10)} {r(10, 100)} {r(10, 100)} {r(10, 100)} {r(10, 100)}",
                f"+91 {r(10**4, 10**5)} {r(10**4, 10**5)}", f"+81 3-{r(1000, 10000)}-{r(1000, 10000)}", f"+86 10 {r(1000, 10000)} {r(1000, 10000)}",
                f"+7 495 {r(100, 1000)}-{r(10, 100)}-{r(10, 100)}", f"+55 11 9{r(1000, 10000)}-{r(1000, 10000)}", f"+61 2 {r(1000, 10000)} {r(1000, 10000)}",
                f"+{r(20, 99)}{r(10**8, 10**9)}"]
        return rng.choice(nanp + intl)
    if kind == "credit_card":
        prefix, n = rng.choice([("4", 16), ("4", 13), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3530", 16), ("62", 16)])
        body = prefix + "".join(str(r(10)) for _ in range(n - len(prefix) - 1))
        digits = next(body + str(d) for d in range(10) if luhn(body + str(d)))
        sep = rng.choice(["", " ", "-"])
        groups = [digits[:4], digits[4:10], digits[10:]] if n == 15 else [digits[i:i + 4] for i in range(0, n, 4)]
        return digits if not sep or n == 13 else sep.join(groups)
    raise ValueError(f"unknown PII type {kind!r}; known: {list(TYPES)}")
