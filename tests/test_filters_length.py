"""length and char_ratio filters."""
from __future__ import annotations

import pytest

from filters import Batch, build
from filters.length import char_class_counts
from test_filters_gopher import CLEAN


def reasons(name: str, texts: list[str], **params) -> list[str | None]:
    return build(name, params)(Batch(texts)).reasons


def test_length_defaults_drop_only_empty():
    assert reasons("length", ["", " ", CLEAN]) == ["length:min_chars", None, None]


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"min_chars": 2000}, "length:min_chars"),
        ({"max_chars": 100}, "length:max_chars"),
        ({"min_words": 1000}, "length:min_words"),
        ({"max_words": 10}, "length:max_words"),
    ],
)
def test_length_rule(params, reason):
    assert reasons("length", [CLEAN], **params) == [reason]


def test_length_order_and_disabled():
    assert reasons("length", ["", "a b c"], min_chars=None, max_words=2) == [None, "length:max_words"]
    assert reasons("length", ["abc"], min_chars=10, min_words=10) == ["length:min_chars"]


def test_char_class_counts():
    texts = ["Ab 12", "", "Ünïcode ß\t😀x", "ⅫⅢ ²"]
    got = char_class_counts(texts)
    for i, t in enumerate(texts):
        assert got["alpha"][i] == sum(c.isalpha() for c in t)
        assert got["digit"][i] == sum(c.isdigit() for c in t)
        assert got["upper"][i] == sum(c.isupper() for c in t)
        assert got["whitespace"][i] == sum(c.isspace() for c in t)
        assert got["non_ascii"][i] == sum(ord(c) > 127 for c in t)


def test_char_ratio_lone_surrogate_does_not_raise():
    assert char_class_counts(["a\ud800b"])["alpha"].tolist() == [2]


def test_char_ratio_off_by_default_and_clean_passes():
    assert reasons("char_ratio", ["", "1234", CLEAN]) == [None, None, None]
    strict = dict(min_alpha_ratio=0.6, max_digit_ratio=0.05, max_upper_ratio=0.1, max_whitespace_ratio=0.3, max_non_ascii_ratio=0.05)
    assert reasons("char_ratio", [CLEAN], **strict) == [None]


@pytest.mark.parametrize(
    "text, params, reason",
    [
        ("12345 abc", {"min_alpha_ratio": 0.5}, "char_ratio:min_alpha"),
        ("abcdef", {"max_alpha_ratio": 0.9}, "char_ratio:max_alpha"),
        ("abcdef", {"min_digit_ratio": 0.1}, "char_ratio:min_digit"),
        ("2024-01-01 report", {"max_digit_ratio": 0.2}, "char_ratio:max_digit"),
        ("lowercase only", {"min_upper_ratio": 0.01}, "char_ratio:min_upper"),
        ("SHOUTING TEXT HERE", {"max_upper_ratio": 0.5}, "char_ratio:max_upper"),
        ("nospaces", {"min_whitespace_ratio": 0.05}, "char_ratio:min_whitespace"),
        ("a  \n\n\t   b", {"max_whitespace_ratio": 0.5}, "char_ratio:max_whitespace"),
        ("ascii", {"min_non_ascii_ratio": 0.1}, "char_ratio:min_non_ascii"),
        ("Привет мир", {"max_non_ascii_ratio": 0.5}, "char_ratio:max_non_ascii"),
    ],
)
def test_char_ratio_rule(text, params, reason):
    assert reasons("char_ratio", [text, ""], **params) == [reason, None]


def test_bad_params():
    with pytest.raises(ValueError, match="unknown parameter"):
        build("length", {"min_tokens": 3})
    with pytest.raises(ValueError, match="unknown parameter"):
        build("char_ratio", {"min_alpha": 0.5})
    with pytest.raises(ValueError, match="max_chars"):
        build("length", {"max_chars": "10"})


def test_sub_batches_share_the_word_split_of_their_root():
    from filters import Batch

    root = Batch(["a b c", "d e", "f", "g h i j"])
    sub = root.take([3, 1, 0])
    subsub = sub.take([2, 0])
    assert subsub.words == [["a", "b", "c"], ["g", "h", "i", "j"]]
    assert "words" in root.__dict__  # computed once, on the root
    assert list(subsub.n_chars) == [5, 7] and list(sub.n_words) == [4, 2, 3]
    assert root.words[3] is subsub.words[1]
