"""FineWeb quality filter: one document per rule, a clean paragraph, the empty text, bad params."""
from __future__ import annotations

import pytest

from filters import Batch, build
from test_filters_gopher import CLEAN


def reasons(texts: list[str], **params) -> list[str | None]:
    return build("fineweb_quality", params)(Batch(texts)).reasons


def test_clean_paragraph_passes():
    assert reasons([CLEAN]) == [None]


def test_empty():
    assert reasons(["", "\n\n", "  \t\n "]) == ["fineweb:empty"] * 3


@pytest.mark.parametrize(
    "text, reason",
    [
        ("\n".join(f"Navigation entry number {i} of the site menu" for i in range(10)), "fineweb:line_punct_ratio"),
        ("\n".join(f"Short line {i} is here." for i in range(10)), "fineweb:short_line_ratio"),
        (CLEAN + "\n" + CLEAN.splitlines()[1], "fineweb:char_dup_ratio"),
        (
            "\n".join(f"Extraordinarily magnificent celebrations{i}." for i in range(12)),
            "fineweb:list_ratio",
        ),
    ],
)
def test_rule(text, reason):
    assert reasons([text]) == [reason]


def test_line_punct_exclude_zero():
    text = "\n".join(f"Navigation entry number {i} of the site menu" for i in range(10))
    assert reasons([text], line_punct_exclude_zero=True) == [None]


def test_crlf_lines_end_in_punctuation():
    # datatrove splits on "\n" only, so every CRLF line ends in "\r" and fails line_punct_ratio.
    assert reasons([CLEAN.replace("\n", "\r\n")]) == [None]


def test_stop_chars_may_be_strings():
    text = "\n".join(f"A sentence that ends with an arrow number {i} -->" for i in range(5))
    assert reasons([text]) == ["fineweb:line_punct_ratio"]
    assert reasons([text], stop_chars=["-->", "."]) == [None]


def test_thresholds_can_be_disabled():
    assert reasons(["x\ny\nx"], line_punct_thr=None, short_line_thr=None, char_duplicates_ratio=None, new_line_ratio=None) == [None]


def test_bad_params():
    with pytest.raises(ValueError, match="unknown parameter"):
        build("fineweb_quality", {"line_punct": 0.1})
    with pytest.raises(ValueError, match="stop_chars"):
        build("fineweb_quality", {"stop_chars": ".!?"})
    with pytest.raises(ValueError, match="new_line_ratio"):
        build("fineweb_quality", {"new_line_ratio": -1})


def test_punctuation_as_words_counts_spacy_like_tokens_for_list_ratio():
    # 11 newlines / 36 words > 0.3, but not / 60 spaCy-like tokens ("(" and "." are tokens)
    text = "\n".join(f"(Extraordinarily magnificent celebrations{i}." for i in range(12))
    assert reasons([text]) == ["fineweb:list_ratio"]
    assert reasons([text], punctuation_as_words=True) == [None]
