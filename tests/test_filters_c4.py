"""C4 filter: page rules with exact reasons, line filtering as a `text` column, sentence counting."""
from __future__ import annotations

import pytest

from filters import Batch, build
from filters.c4 import count_sentences

from test_filters_gopher import CLEAN


def run(texts: list[str], **params):
    return build("c4", params)(Batch(texts))


def test_clean_paragraph_passes_and_text_untouched_by_default():
    res = run([CLEAN])
    assert res.reasons == [None]
    assert res.columns == {}


@pytest.mark.parametrize(
    "text, reason",
    [
        (CLEAN + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "c4:lorem_ipsum"),
        (CLEAN + "\nThe function returns {x} for every value.", "c4:curly_bracket"),
        ("Hello world, this is short. It has two sentences.", "c4:min_sentences"),
        ("", "c4:min_sentences"),
        # lines without terminal punctuation or with fewer than 3 words do not count
        ("A title\nAnother heading line\nOk.\nShort one.\n" + "One good sentence here.\n" * 4, "c4:min_sentences"),
    ],
)
def test_page_rules(text, reason):
    assert run([text]).reasons == [reason]


def test_lorem_and_curly_only_count_on_surviving_lines():
    # As TFDS c4_utils / datatrove: a "{" or "lorem ipsum" on a line already dropped (no terminal
    # punctuation) does not drop the page.
    text = CLEAN + "\nint main() {\nlorem ipsum dolor"
    assert run([text]).reasons == [None]


def test_javascript_and_policy_lines_do_not_count_as_sentences():
    body = "\n".join(
        [
            "Please enable JavaScript to view the comments powered by Disqus.",
            "This site uses cookies to improve your experience.",
            "Read our privacy policy before you continue reading.",
            "By using this site you accept the terms of use of the site.",
            "This is the only real sentence of the page.",
        ]
    )
    assert run([body]).reasons == ["c4:min_sentences"]
    assert run([body], filter_javascript=False, filter_policy=False).reasons == [None]


def test_filter_lines_returns_cleaned_text_for_kept_docs_only():
    text = (
        "Menu\n"
        "  The first line is a real sentence with a citation.[1]  \n"
        "Click here\n"
        "Enable javascript to see this widget, please.\n"
        "We use cookies. Read the privacy policy for details.\n"
        "The second real sentence ends here. And a third one.\n"
        "Too short.\n"
        "The fourth sentence follows. The fifth sentence closes it.\n"
        "Trailing ellipsis is dropped as well...\n"
    )
    res = run([text, "Too short.", ""], filter_lines=True)
    assert res.reasons == [None, "c4:min_sentences", "c4:min_sentences"]
    assert res.columns["text"] == [
        "The first line is a real sentence with a citation.\n"
        "The second real sentence ends here. And a third one.\n"
        "The fourth sentence follows. The fifth sentence closes it.",
        "Too short.",  # dropped documents keep their text for _rejected/
        "",
    ]


def test_citation_removal_can_unmask_or_mask_terminal_punctuation():
    lines = ["Sentence number one ends with a citation.[2]"] * 5
    assert run(["\n".join(lines)]).reasons == [None]
    assert run(["\n".join(lines)], remove_citations=False).reasons == ["c4:min_sentences"]


def test_too_long_word_drops_the_line():
    lines = [f"Sentence {i} is a fine one." for i in range(4)] + ["A " + "x" * 1001 + " word."]
    assert run(["\n".join(lines)]).reasons == ["c4:min_sentences"]
    assert run(["\n".join(lines)], max_word_length=None).reasons == [None]


def test_disabling_min_sentences():
    assert run(["", "Hi."], min_num_sentences=None).reasons == [None, None]
    assert run(["Hi."], min_num_sentences=-1).reasons == [None]


@pytest.mark.parametrize(
    "line, n",
    [
        ("Mr. Smith went to Washington. He said hi.", 2),
        ("See e.g. the docs. Then go.", 2),
        ("J. R. R. Tolkien wrote books. Yes!", 2),
        ("It costs 3.5 dollars. Ok?! sure", 3),
        ('He said "stop." Then left.', 2),
        ("Wait... what? no", 2),
        ("The U.S. is big. Really.", 2),
        ("NASA. Space.", 2),
        ("A clone of :class:`threading.Event`.", 2),
        ("One sentence only.", 1),
    ],
)
def test_count_sentences_like_spacy(line, n):
    assert count_sentences(line) == n


def test_bad_params():
    with pytest.raises(ValueError, match="unknown parameter"):
        build("c4", {"min_sentences": 3})
    with pytest.raises(ValueError, match="filter_lines"):
        build("c4", {"filter_lines": "yes"})
    with pytest.raises(ValueError, match="min_num_sentences"):
        build("c4", {"min_num_sentences": -5})
