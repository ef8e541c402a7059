"""Gopher quality and repetition filters: one document per rule, a clean paragraph, the empty text,
bad parameters, and the vectorized n-gram statistics against a plain per-document reference."""
from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from filters import REGISTRY, Batch, build

# Charles Darwin, On the Origin of Species (1859), Introduction. Public domain.
CLEAN = (
    "When on board H.M.S. 'Beagle,' as naturalist, I was much struck with certain facts in the "
    "distribution of the inhabitants of South America, and in the geological relations of the present "
    "to the past inhabitants of that continent. These facts seemed to me to throw some light on the "
    "origin of species, that mystery of mysteries, as it has been called by one of our greatest "
    "philosophers. On my return home, it occurred to me, in 1837, that something might perhaps be made "
    "out on this question by patiently accumulating and reflecting on all sorts of facts which could "
    "possibly have any bearing on it. After five years' work I allowed myself to speculate on the "
    "subject, and drew up some short notes; these I enlarged in 1844 into a sketch of the conclusions, "
    "which then seemed to me probable: from that period to the present day I have steadily pursued the "
    "same object. I hope that I may be excused for entering on these personal details, as I give them "
    "to show that I have not been hasty in coming to a decision.\n"
    "My work is now nearly finished; but as it will take me two or three more years to complete it, "
    "and as my health is far from strong, I have been urged to publish this Abstract."
)


def reasons(name: str, texts: list[str], **params) -> list[str | None]:
    return build(name, params)(Batch(texts)).reasons


def test_registered():
    assert {"gopher_quality", "gopher_repetition"} <= set(REGISTRY)


# --- quality --------------------------------------------------------------------------------------


def test_quality_clean_paragraph_passes():
    assert reasons("gopher_quality", [CLEAN]) == [None]


@pytest.mark.parametrize(
    "text, params, reason",
    [
        ("The cat and the dog sat with me.", {}, "gopher:min_doc_words"),
        (CLEAN, {"max_doc_words": 60}, "gopher:max_doc_words"),
        ("the cat is on a mat and it is to be so " * 10, {}, "gopher:mean_word_length"),
        (
            "the internationalization of standardization and telecommunications with extraordinarily "
            "incomprehensible characteristically " * 10,
            {},
            "gopher:mean_word_length",
        ),
        (CLEAN + " #tag" * 40, {}, "gopher:symbol_word_ratio"),
        (CLEAN + " and so on..." * 40, {}, "gopher:symbol_word_ratio"),
        ("\n".join(f"- the price of item {w} with the best value" for w in "abcdefghij"), {}, "gopher:bullet_lines_ratio"),
        (
            "\n".join(f"the story of {w} and the dog that ran with the wind went on..." for w in "abcd")
            + "\n"
            + "\n".join(f"the story of {w} and the dog that ran with the wind ended there." for w in "efg"),
            {},
            "gopher:ellipsis_lines_ratio",
        ),
        ("the value of 1234 and 5678 with 9012 to 3456 be 7890 that 1111 have 2222 " * 6, {}, "gopher:alpha_words_ratio"),
        ("Quick brown foxes jump over lazy dogs near rivers " * 8, {}, "gopher:stop_words"),
    ],
)
def test_quality_rule(text, params, reason):
    assert reasons("gopher_quality", [text], **params) == [reason]


def test_quality_reasons_are_per_document_in_one_batch():
    texts = [CLEAN, "", "Quick brown foxes jump over lazy dogs near rivers " * 8, CLEAN]
    assert reasons("gopher_quality", texts) == [None, "gopher:min_doc_words", "gopher:stop_words", None]


def test_quality_empty_and_disabled_rules_do_not_raise():
    assert reasons("gopher_quality", ["", "   \n "]) == ["gopher:min_doc_words"] * 2
    off = {k: None for k in REGISTRY["gopher_quality"].params if k not in ("stop_words", "punctuation_as_words")}
    assert reasons("gopher_quality", ["", "\n\n", "#", "...", CLEAN], **off) == [None] * 5


def test_quality_stop_words_ignore_edge_punctuation():
    # "the," and "(of" count as stop words, as spaCy tokens would give them; "The" does not (as datatrove).
    text = "Rivers, mountains, valleys: (of) rocks, stones, the, forests. " * 10
    assert reasons("gopher_quality", [text], min_alpha_words_ratio=None) == [None]
    assert reasons("gopher_quality", [text.replace("(of)", "Of").replace("the,", "The,")], min_alpha_words_ratio=None) == [
        "gopher:stop_words"
    ]


def test_quality_punctuation_as_words_counts_edge_punctuation():
    text = "the, cat, and, the, dog, with, a, hat, that, sat, " * 6
    assert reasons("gopher_quality", [text]) == [None]  # every whitespace word has a letter
    # with spaCy-like counting, half of the tokens are commas
    assert reasons("gopher_quality", [text], punctuation_as_words=True) == ["gopher:alpha_words_ratio"]


def test_quality_bad_params():
    with pytest.raises(ValueError, match="unknown parameter"):
        build("gopher_quality", {"min_words": 3})
    with pytest.raises(ValueError, match="max_symbol_word_ratio"):
        build("gopher_quality", {"max_symbol_word_ratio": "high"})
    with pytest.raises(ValueError, match="stop_words"):
        build("gopher_quality", {"stop_words": "the"})


# --- repetition -----------------------------------------------------------------------------------


def test_repetition_clean_paragraph_passes():
    assert reasons("gopher_repetition", [CLEAN]) == [None]


def test_repetition_empty():
    assert reasons("gopher_repetition", ["", " \n\t "]) == ["gopher:empty", "gopher:empty"]


LONG = "This paragraph is long enough to carry most of the characters of the whole document here."


@pytest.mark.parametrize(
    "text, params, reason",
    [
        ("Alpha beta.\n\nAlpha beta.\n\nAlpha beta.\n\nGamma delta.", {}, "gopher:dup_para_frac"),
        (f"{LONG}\n\nOne.\n\nTwo.\n\n{LONG}", {}, "gopher:dup_para_char_frac"),
        ("x is one\ny is two\nx is one\nx is one", {}, "gopher:dup_line_frac"),
        (f"{LONG}\nOne.\nTwo.\nThree.\n{LONG}", {}, "gopher:dup_line_char_frac"),
        ("the cat " * 20, {}, "gopher:top_2_gram"),
        ("one two three " * 10, {"top_n_grams": [[3, 0.18]]}, "gopher:top_3_gram"),
        ("one two three four " * 10, {"top_n_grams": [[4, 0.16]]}, "gopher:top_4_gram"),
    ]
    + [
        (CLEAN + " " + " ".join(CLEAN.split()[:40]), {"top_n_grams": [], "dup_n_grams": [[k, 0.1]]}, f"gopher:dup_{k}_gram")
        for k in range(5, 11)
    ],
)
def test_repetition_rule(text, params, reason):
    assert reasons("gopher_repetition", [text], **params) == [reason]


def test_repetition_edge_newlines_are_not_duplicate_lines():
    # datatrove's re.split("\n+") gives '' at both ends: 1 of 3 "lines" duplicate > 0.3.
    assert reasons("gopher_repetition", ["\n" + CLEAN.splitlines()[0] + "\n"]) == [None]


def test_repetition_bad_params():
    with pytest.raises(ValueError, match="unknown parameter"):
        build("gopher_repetition", {"dup_lines": 0.1})
    with pytest.raises(ValueError, match="top_n_grams"):
        build("gopher_repetition", {"top_n_grams": [2, 0.2]})
    with pytest.raises(ValueError, match="dup_n_grams"):
        build("gopher_repetition", {"dup_n_grams": [[0, 0.2]]})


def _reference_repetition(text: str, top, dup) -> str | None:
    """datatrove's GopherRepetitionFilter n-gram rules, per document, on whitespace words."""
    words = text.split()
    for n, frac in top:
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        if grams:
            gram, count = Counter(grams).most_common(1)[0]
            if len(gram) * count / len(text) > frac:
                return f"gopher:top_{n}_gram"
    for n, frac in dup:
        seen, idx, rep = set(), 0, 0
        while idx < len(words) - n + 1:
            gram = tuple(words[idx : idx + n])
            if gram in seen:
                rep += sum(map(len, gram))
                idx += n
            else:
                seen.add(gram)
                idx += 1
        if rep / len(text) > frac:
            return f"gopher:dup_{n}_gram"
    return None


def test_repetition_ngrams_match_reference_on_random_docs():
    rng = random.Random(7)
    vocab = [w for w in re.findall(r"\S+", CLEAN)][:60]
    texts = []
    for _ in range(400):
        words = [rng.choice(vocab[: rng.randint(3, 60)]) for _ in range(rng.randint(0, 120))]
        if words and rng.random() < 0.5:  # paste a repeated run
            a = rng.randrange(len(words))
            words[a:a] = words[a : a + rng.randint(3, 15)] * rng.randint(1, 3)
        texts.append(" ".join(words))
    f = build("gopher_repetition", {"dup_line_frac": None, "dup_para_frac": None, "dup_line_char_frac": None, "dup_para_char_frac": None})
    got = f(Batch(texts)).reasons
    want = [
        "gopher:empty" if not t.strip() else _reference_repetition(t, f._top, f._dup) for t in texts
    ]
    assert got == want
    assert len(set(want)) > 5  # the sample exercises many rules


def test_punctuation_tokens_like_spacy():
    from filters.text import punctuation_tokens

    assert punctuation_tokens(["end.", "(see", "====", "-----", "wait....", '"Hi,"', "..."]) == [
        "end", ".", "(", "see", "=", "=", "=", "=", "-----", "wait", "....", '"', "Hi", ",", '"', "...",
    ]


def test_repetition_punctuation_as_words():
    # a reST section underline is one whitespace word, but 40 one-character tokens for spaCy
    text = CLEAN.splitlines()[0] + "\n" + "=" * 40 + "\nSection\n" + "=" * 40 + "\n" + CLEAN.splitlines()[1]
    assert reasons("gopher_repetition", [text]) == [None]
    assert reasons("gopher_repetition", [text], punctuation_as_words=True) == ["gopher:top_3_gram"]
