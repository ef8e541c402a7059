"""Paired seed intervals: known answers, one seed, significance, bad input."""
import numpy as np
import pytest

from pipeline.intervals import describe, paired, t975


def test_known_interval():
    # differences -0.02, -0.03, -0.01 relative: mean -0.02, sd 0.01, t(2) = 4.303 -> half width 0.02484
    ref = [10.0, 10.0, 10.0]
    x = paired([9.8, 9.7, 9.9], ref)
    assert x["mean"] == pytest.approx(-0.02) and x["std"] == pytest.approx(0.01)
    assert x["hi"] == pytest.approx(-0.02 + 4.303 * 0.01 / np.sqrt(3)) and x["significant"] is False
    y = paired([9.80, 9.79, 9.81], ref)
    assert y["significant"] is True and y["hi"] < 0
    assert "n.s." in describe(x) and "n.s." not in describe(y)


def test_one_seed_is_never_significant_and_mismatch_refused():
    x = paired([9.0], [10.0])
    assert x["mean"] == pytest.approx(-0.1) and x["lo"] is None and not x["significant"]
    assert describe(x).endswith("(1 seed)")
    with pytest.raises(ValueError, match="same seeds"):
        paired([1.0, 2.0], [1.0])


def test_t_quantiles():
    assert t975(2) == pytest.approx(4.303) and abs(t975(40) - 2.021) < 0.01 and abs(t975(200) - 1.972) < 0.01
