"""line_length: the filter added as one file (filters/line_length.py) with no other change."""
from __future__ import annotations

import io
import json

import pytest
import zstandard

from filters import REGISTRY, Batch, build
from tests.conftest import ROOT


def reasons(texts: list[str], **params) -> list[str | None]:
    return build("line_length", params)(Batch(texts)).reasons


def test_registered_by_its_file_alone():
    assert REGISTRY["line_length"].__module__ == "filters.line_length"


def test_minified_and_long_mean_lines_are_dropped_in_order():
    minified = "var a=1;" * 200  # one 1,600-character line
    wide = "\n".join(["x" * 150] * 5)  # mean 150, longest 150
    prose = "A line of ordinary prose.\nAnother one, short enough.\n"
    assert reasons([minified, wide, prose, ""]) == ["line_length:max_line_chars", "line_length:mean_line_chars", None, None]
    assert reasons([wide], mean_line_chars=None) == [None]


def test_bad_parameter_is_one_line():
    with pytest.raises(ValueError, match="parameter 'max_line_chars' must be a number >= 0.0 or null, got 'long'"):
        build("line_length", {"max_line_chars": "long"})


def test_real_sample_keeps_prose_and_drops_only_long_line_documents():
    docs = []
    for path in sorted((ROOT / "data" / "sample_small").glob("*.jsonl.zst")):
        with zstandard.open(path, "rt") as fh:
            docs += [json.loads(line) for line in io.StringIO(fh.read())]
    texts = [d["text"] for d in docs]
    got = reasons(texts)
    dropped = [t for t, r in zip(texts, got) if r]
    assert 0 < len(dropped) < 0.2 * len(texts)
    assert all(max(map(len, t.splitlines())) > 1000 or sum(map(len, t.splitlines())) / len(t.splitlines()) > 100 for t in dropped)
