"""C4 heuristics (Raffel et al. 2020, JMLR 21(140), section 2.2), as TFDS c4_utils.clean_page and
datatrove's C4QualityFilter implement them.

The reference walks the lines of a page (stripped) and
  - drops a line with a word over 1000 characters,
  - removes Wikipedia citation marks ("[1]", "[edit]", "[citation needed]"),
  - drops a line not ending in . ? ! " ' (or ending in "..."),
  - drops a line with fewer than 3 words,
  - drops the whole page if the line contains "lorem ipsum" (any case),
  - drops a line mentioning "javascript" (any case),
  - drops the whole page if the line contains "{",
  - drops a line with a cookie/terms-of-use phrase,
  - counts the sentences of the kept lines, and drops the page below 5,
and rewrites the page as its kept lines. Note that, as in the reference, "lorem ipsum" and "{" only
count on lines that survived the line rules before them (a code line without terminal punctuation
does not drop the page).

Our contract separates deciding from rewriting. `C4Filter` always decides per document, with the
same keep/drop outcome as the reference: c4:lorem_ipsum, c4:curly_bracket, c4:min_sentences (after
the line rules). With `filter_lines: true` it also returns `columns={"text": [...]}`: the kept lines
joined by newlines for kept documents (the original text for dropped ones, so `_rejected/` shows what
was judged); the engine then replaces the text column. With the default `filter_lines: false` the
text is untouched and the javascript/policy/punctuation line rules only decide which lines count
towards min_num_sentences.

Sentences are counted without spaCy: a line (kept lines always end in terminal punctuation) is one
sentence, plus one per inner '.', '!' or '?' that spaCy's English tokenizer would split off and that a
word follows, skipping abbreviations ("Mr.", "e.g.", "U.S.", single letters); 99.3% of 13.5k kept
lines of the sample corpus get spaCy's count. Only documents with fewer kept lines than
min_num_sentences need counting at all. datatrove's `split_paragraph=False` mode (spaCy sentences
instead of lines) is not offered.
"""
from __future__ import annotations

import re
from typing import Any, ClassVar

from . import register
from .base import Batch, Filter, FilterResult, check_number
from .text import TERMINAL_PUNCTUATION

CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")

# spaCy English tokenizer exceptions that keep a final '.' attached although the suffix rule would
# split it (the letter before it is lowercase); no sentence ends there.
_ABBREVIATIONS = frozenset(
    """Adm. Ak. Ala. Apr. Ariz. Ark. Aug. Bros. Calif. Co. Colo. Conn. Corp. Dec. Del. Dr. E.g. Feb. Fla.
    Ga. Gen. Gov. I.e. Ia. Id. Ill. Inc. Ind. Jan. Jr. Jul. Jun. Kan. Kans. Ky. La. Ltd. Mar. Mass. Md.
    Messrs. Mich. Minn. Miss. Mo. Mont. Mr. Mrs. Ms. Mt. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. Prof.
    Rep. Rev. Sen. Sep. Sept. St. Tenn. Va. Wash. Wis. a.m. p.m. co. e.g. i.e. v.s. vs. ä. ö. ü.""".split()
) | frozenset(f"{c}." for c in "abcdefghijklmnopqrstuvwxyz")
_CLOSERS = "\"'\u201d\u2019)]}\u00bb"
_SENT_PUNCT = TERMINAL_PUNCTUATION


def _splits_period(core: str) -> bool:
    """Would spaCy split the final '.' of `core` off as its own token? (core ends with '.')

    spaCy's suffix rule splits it after a digit, punctuation, or a letter that is not uppercase
    (lowercase or uncased scripts), and after two uppercase letters; exceptions keep abbreviations.
    """
    if len(core) == 1:
        return True
    if core in _ABBREVIATIONS or core.endswith(".."):
        return False
    prev = core[-2]
    if not prev.isupper():
        return True
    return len(core) > 2 and core[-3].isupper()  # "NASA." splits, "A." and "U.S." do not


_QUOTES = "\"'`\u2018\u2019\u201c\u201d"


def _inner_breaks(core: str) -> int:
    """Periods inside a token that spaCy's infix rule splits: lowercase/uncased letter or quote before,
    uppercase/uncased letter or quote after ("os.PathLike", "end.Next")."""
    n = 0
    j = core.find(".", 1)
    while 0 < j < len(core) - 1:
        prev, nxt = core[j - 1], core[j + 1]
        if ((prev.isalpha() and not prev.isupper()) or prev in _QUOTES) and (
            (nxt.isalpha() and not nxt.islower()) or nxt in _QUOTES
        ):
            n += 1
        j = core.find(".", j + 1)
    return n


def count_sentences(line: str) -> int:
    """Sentences of a non-empty line as spaCy's English sentencizer counts them (approximately: 99%
    of the kept lines of the sample corpus get spaCy's count)."""
    n = 1
    word_after = False
    for tok in reversed(line.split()):
        core = tok.rstrip(_CLOSERS)
        if word_after and core:
            last = core[-1]
            if last == "." and _splits_period(core) or last != "." and last in _SENT_PUNCT:
                n += 1
                word_after = False
        if not word_after and any(map(str.isalnum, tok)):
            word_after = True  # this token holds a word: a sentence end before it is a break
        if "." in core[1:-1]:
            n += _inner_breaks(core)
    return n


@register
class C4Filter(Filter):
    """C4 page rules (see module docstring); reasons c4:lorem_ipsum, c4:curly_bracket, c4:min_sentences.

    Set min_num_sentences, min_words_per_line or max_word_length to null (or -1) to disable them.
    """

    name: ClassVar[str] = "c4"
    params: ClassVar[dict[str, Any]] = {
        "remove_citations": True,
        "filter_no_terminal_punct": True,
        "min_num_sentences": 5,
        "min_words_per_line": 3,
        "max_word_length": 1000,
        "filter_lorem_ipsum": True,
        "filter_javascript": True,
        "filter_curly_bracket": True,
        "filter_policy": True,
        "filter_lines": False,
    }

    def __init__(self, **overrides: Any):
        super().__init__(**overrides)
        for key in ("min_num_sentences", "min_words_per_line", "max_word_length"):
            if self.cfg[key] == -1:
                self.cfg[key] = None
            check_number(key, self.cfg[key])
        for key, value in self.cfg.items():
            if key.startswith(("filter_", "remove_")) and not isinstance(value, bool):
                raise ValueError(f"parameter '{key}' must be true or false, got {value!r}")
        phrases = []
        if self.cfg["filter_lorem_ipsum"]:
            phrases.append("lorem ipsum")
        if self.cfg["filter_javascript"]:
            phrases.append("javascript")
        if self.cfg["filter_policy"]:
            phrases.extend(POLICY_SUBSTRINGS)
        self._phrases = tuple(phrases)

    def apply(self, batch: Batch) -> FilterResult:
        n = len(batch)
        reasons: list[str | None] = [None] * n
        cleaned: list[str] | None = list(batch.texts) if self.cfg["filter_lines"] else None
        for i, (text, lines) in enumerate(zip(batch.texts, batch.lines)):
            reason, kept = self._page(text, lines)
            reasons[i] = reason
            if cleaned is not None and reason is None:
                cleaned[i] = "\n".join(kept).strip()
        return FilterResult(reasons, {"text": cleaned} if cleaned is not None else {})

    def _page(self, text: str, lines: list[str]) -> tuple[str | None, list[str]]:
        c = self.cfg
        max_word, min_words, min_sents = c["max_word_length"], c["min_words_per_line"], c["min_num_sentences"]
        # Lowercasing and substring tests per line are only needed when the page has a phrase at all.
        phrases = self._phrases
        if phrases:
            low = text.lower()
            phrases = tuple(p for p in phrases if p in low)
        lorem = "lorem ipsum" in phrases
        js = "javascript" in phrases
        policy = tuple(p for p in phrases if p in POLICY_SUBSTRINGS)
        curly = c["filter_curly_bracket"] and "{" in text
        cite = c["remove_citations"] and "[" in text
        punct = c["filter_no_terminal_punct"]
        kept: list[str] = []
        for line in lines:
            line = line.strip()
            if max_word is not None and len(line) > max_word and any(len(w) > max_word for w in line.split()):
                continue
            if cite and "[" in line:
                stripped_line = line
                line = CITATION_RE.sub("", line)
            else:
                stripped_line = line
            if punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
                continue
            if min_words is not None and len(stripped_line.split()) < min_words:
                continue
            if phrases:
                line_l = line.lower()
                if lorem and "lorem ipsum" in line_l:
                    return "c4:lorem_ipsum", []
                if js and "javascript" in line_l:
                    continue
                if curly and "{" in line:
                    return "c4:curly_bracket", []
                if policy and any(p in line_l for p in policy):
                    continue
            elif curly and "{" in line:
                return "c4:curly_bracket", []
            kept.append(line)
        if min_sents is not None and sum(1 for s in kept if s) < min_sents:
            # Every non-empty kept line is at least one sentence; count inner ones only when it matters.
            if sum(count_sentences(s) for s in kept if s) < min_sents:
                return "c4:min_sentences", kept
        return None, kept
