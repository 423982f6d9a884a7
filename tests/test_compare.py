"""The shared paired-comparison rule: verdicts from the seed spread and the test set's sampling error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dltricks import book
from dltricks.compare import VERDICTS, compare_paired


def test_half_width_is_the_paired_t_interval_from_first_principles():
    b = np.array([0.80, 0.80, 0.82, 0.81])
    t = b + np.array([0.02, 0.03, 0.025, 0.03])
    d = t - b
    # Student's t quantile for 3 degrees of freedom at 97.5% is 3.182446...
    expected = 3.1824463052837 * d.std(ddof=1) / math.sqrt(4)
    res = compare_paired(t, b)
    assert res.half_width == pytest.approx(expected, rel=1e-9)
    # scipy's paired t-test agrees: the interval excludes 0 exactly when p < 0.05
    assert (res.verdict == "helps") == (stats.ttest_rel(t, b).pvalue < 0.05)
    assert res.verdict == "helps" and res.n_better == 4 and res.mean == pytest.approx(d.mean())


def test_losses_flip_the_direction():
    lower = np.array([0.30, 0.31, 0.29])
    higher = lower + np.array([0.05, 0.06, 0.05])
    assert compare_paired(lower, higher, higher_is_better=False).verdict == "helps"
    assert compare_paired(higher, lower, higher_is_better=False).verdict == "hurts"
    assert compare_paired(higher, lower, higher_is_better=True).verdict == "helps"


def test_a_consistent_difference_inside_the_test_sampling_error_is_no_clear_difference():
    # +0.5 points on every seed: far outside the seed spread, but inside one binomial standard error of an
    # accuracy near 80% on 2,000 images (0.89 points), so the test set alone could move it.
    b = np.array([0.800, 0.803, 0.797, 0.801, 0.799])
    t = b + 0.005 + np.array([0.0, 1e-4, -1e-4, 0.0, 5e-5])
    assert compare_paired(t, b).verdict == "helps"
    res = compare_paired(t, b, n_test=2000)
    assert res.sampling_error == pytest.approx(math.sqrt(0.8 * 0.2 / 2000), rel=1e-2)
    assert res.verdict == "no clear difference"
    # With 100,000 test images the same difference is clear.
    assert compare_paired(t, b, n_test=100_000).verdict == "helps"


def test_a_wide_spread_gives_no_clear_difference():
    t = np.array([0.9, 0.7, 0.85])
    b = np.array([0.8, 0.8, 0.8])
    res = compare_paired(t, b)
    assert res.verdict == "no clear difference" and not res.clear
    assert "no clear difference" in res.describe("{:+.1%}") and "2 of 3 seeds" in res.describe()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=8),
    st.floats(-5, 5, allow_nan=False),
)
def test_verdict_is_antisymmetric_and_shift_consistent(base, shift):
    b = np.array(base)
    t = b + shift + np.linspace(-0.01, 0.01, b.size)
    forward, backward = compare_paired(t, b), compare_paired(b, t)
    assert forward.verdict in VERDICTS
    flip = {"helps": "hurts", "hurts": "helps", "no clear difference": "no clear difference"}
    assert backward.verdict == flip[forward.verdict]
    assert forward.margin == pytest.approx(backward.margin)
    # Clear means outside the interval: the verdict and the interval tell the same story.
    assert forward.clear == (abs(forward.mean) > forward.margin)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (dict(treatment=[1.0], baseline=[1.0]), ValueError, "treatment"),
        (dict(treatment=[1.0, 2.0], baseline=[1.0]), ValueError, "baseline"),
        (dict(treatment=[1.0, float("nan")], baseline=[1.0, 2.0]), ValueError, "treatment"),
        (dict(treatment="ab", baseline=[1.0, 2.0]), TypeError, "treatment"),
        (dict(treatment=[1.0, 2.0], baseline=[1.0, 2.0], higher_is_better=1), TypeError, "higher_is_better"),
        (dict(treatment=[1.0, 2.0], baseline=[1.0, 2.0], confidence=1.0), ValueError, "confidence=1.0"),
        (dict(treatment=[0.5, 0.6], baseline=[0.5, 0.6], n_test=0), ValueError, "n_test=0"),
        (dict(treatment=[50.0, 60.0], baseline=[50.0, 61.0], n_test=100), ValueError, "n_test=100"),
        (dict(treatment=[0.5, 0.6], baseline=[0.5, 0.6], n_test=2.5), TypeError, "n_test=2.5"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        compare_paired(**kwargs)


def test_record_comparison_keeps_what_a_claim_test_needs(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "_current", None)
    with pytest.raises(RuntimeError, match="start_chapter"):
        book.record_comparison("x", [1.0, 2.0], [0.0, 1.0])
    book.start_chapter("cmp", profile="quick", device="cpu", seeds=[0, 1, 2], results_dir=tmp_path)
    res = book.record_comparison("gain", [0.9, 0.91, 0.92], [0.8, 0.8, 0.81], "{:+.1%}", glue=False)
    data = book.load_results(tmp_path / "cmp.json")["results"]
    assert data["gain"]["values"] == pytest.approx([0.1, 0.11, 0.11])
    assert data["gain_verdict"]["value"] == res.verdict == "helps"
    assert data["gain_text"]["value"].startswith("+10.7% ± 0.6% (helps; better in 3 of 3")
    again = compare_paired(data["gain"]["comparison"]["treatment"], data["gain"]["comparison"]["baseline"])
    assert again.verdict == data["gain"]["comparison"]["verdict"]
