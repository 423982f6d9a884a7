"""Expected calibration error: hand-worked cases, bin edges, and the calibrated and overconfident limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.calibration import ReliabilityBins, expected_calibration_error, reliability_bins

# Four examples, two classes:
#   row           confidence  prediction  label  correct
#   [0.9, 0.1]    0.9         0           0      yes
#   [0.8, 0.2]    0.8         0           1      no
#   [0.3, 0.7]    0.7         1           1      yes
#   [0.4, 0.6]    0.6         1           1      yes
# With 5 bins (0, .2], (.2, .4], (.4, .6], (.6, .8], (.8, 1] (closed on the right, so 0.6 and 0.8 fall in the
# lower bin of each pair):
#   (.4, .6]: {0.6}       acc 1,   conf 0.6   -> 1/4 * |1 - 0.6|    = 0.1
#   (.6, .8]: {0.8, 0.7}  acc 1/2, conf 0.75  -> 2/4 * |0.5 - 0.75| = 0.125
#   (.8, 1]:  {0.9}       acc 1,   conf 0.9   -> 1/4 * |1 - 0.9|    = 0.025
# ECE = 0.25. With one bin: acc 3/4, conf (0.9 + 0.8 + 0.7 + 0.6) / 4 = 0.75, so ECE = 0.
PROBS = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
LABELS = np.array([0, 1, 1, 1])


def test_hand_worked_example():
    assert expected_calibration_error(PROBS, LABELS, n_bins=5) == pytest.approx(0.25, abs=1e-12)
    assert expected_calibration_error(PROBS, LABELS, n_bins=1) == pytest.approx(0.0, abs=1e-12)
    bins = reliability_bins(PROBS, LABELS, n_bins=5)
    assert isinstance(bins, ReliabilityBins)
    np.testing.assert_array_equal(bins.count, [0, 0, 1, 2, 1])
    np.testing.assert_allclose(bins.confidence[2:], [0.6, 0.75, 0.9], atol=1e-12)
    np.testing.assert_allclose(bins.accuracy[2:], [1.0, 0.5, 1.0], atol=1e-12)
    assert np.isnan(bins.confidence[:2]).all() and np.isnan(bins.accuracy[:2]).all()


def test_torch_and_numpy_inputs_agree():
    ece = expected_calibration_error(torch.tensor(PROBS), torch.tensor(LABELS), n_bins=5)
    assert ece == pytest.approx(0.25, abs=1e-12)
    assert expected_calibration_error(PROBS.tolist(), LABELS.tolist(), n_bins=5) == pytest.approx(0.25)


def test_bin_edges_are_closed_on_the_right():
    # 0.3 belongs to (0.2, 0.3] with 10 bins, although 0.3 * 10 rounds to 3.0000000000000004 in binary.
    probs = np.array([[0.3, 0.3, 0.2, 0.2], [0.4, 0.3, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [1.0, 0.0, 0.0, 0.0]])
    counts = reliability_bins(probs, [0, 0, 0, 0], n_bins=10).count
    np.testing.assert_array_equal(np.flatnonzero(counts), [2, 3, 6, 9])  # (.2,.3], (.3,.4], (.6,.7], (.9,1]


def test_calibrated_predictions_have_near_zero_ece():
    # Binary predictions whose confidence c ~ U(0.5, 1) is the true probability of being right.
    rng = np.random.default_rng(0)
    n = 200_000
    c = rng.uniform(0.5, 1.0, n)
    probs = np.stack([c, 1 - c], axis=1)
    labels = np.where(rng.uniform(size=n) < c, 0, 1)
    # Only sampling noise remains: about 8 bins of ~25,000 examples, each off by a standard error of at most
    # sqrt(0.25 / 25000) = 0.003, so the weighted mean of |gap| is ~0.002; 0.01 is > 3 such errors.
    assert expected_calibration_error(probs, labels) < 0.01


def test_confidently_wrong_predictions_have_ece_equal_to_their_confidence():
    probs = np.tile([0.99, 0.01], (1000, 1))
    labels = np.ones(1000, dtype=int)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.99, abs=1e-12)


@settings(max_examples=40, deadline=None, database=None)
@given(n=st.integers(1, 60), classes=st.integers(2, 5), n_bins=st.integers(1, 20), seed=st.integers(0, 2**31))
def test_ece_is_in_unit_interval_and_one_bin_is_the_global_gap(n, classes, n_bins, seed):
    g = torch.Generator().manual_seed(seed)
    probs = torch.randn(n, classes, generator=g, dtype=torch.float64).mul(3).softmax(dim=1)
    labels = torch.randint(0, classes, (n,), generator=g)
    ece = expected_calibration_error(probs, labels, n_bins=n_bins)
    assert 0.0 <= ece <= 1.0
    confidence, prediction = probs.max(dim=1)
    gap = abs((prediction == labels).double().mean().item() - confidence.mean().item())
    assert expected_calibration_error(probs, labels, n_bins=1) == pytest.approx(gap, abs=1e-12)
    # Finer bins can only reveal more miscalibration: the triangle inequality over merged bins.
    assert ece >= gap - 1e-12
    assert reliability_bins(probs, labels, n_bins=n_bins).count.sum() == n


@pytest.mark.parametrize(
    ("probs", "labels", "kwargs", "error", "pattern"),
    [
        (PROBS * 2, LABELS, {}, ValueError, r"`probs` rows must each sum to 1 within 1e-4"),
        (PROBS + 2e-4, LABELS, {}, ValueError, r"`probs` rows must each sum to 1"),
        (
            PROBS,
            LABELS[:3],
            {},
            ValueError,
            r"`labels` must have shape \(4,\). Received: labels with shape \(3,\)",
        ),
        (PROBS[:, 0], LABELS, {}, ValueError, r"`probs` must be a non-empty 2-D array"),
        (PROBS, LABELS, {"n_bins": 0}, ValueError, r"`n_bins` must be an integer >= 1. Received: n_bins=0"),
        (PROBS, LABELS, {"n_bins": 2.0}, TypeError, r"`n_bins`.*Received: n_bins=2.0"),
        (PROBS, LABELS + 5, {}, ValueError, r"`labels` must be integer class ids in \[0, 2\)"),
        (PROBS, LABELS.astype(float), {}, ValueError, r"`labels` must be integer class ids"),
        (np.array([[1.5, -0.5]]), [0], {}, ValueError, r"`probs` must hold finite, non-negative"),
        (np.array([[np.nan, 1.0]]), [0], {}, ValueError, r"`probs` must hold finite"),
        ("probs", LABELS, {}, TypeError, r"`probs` must be a numeric tensor or array"),
    ],
)
def test_bad_input_is_rejected(probs, labels, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        expected_calibration_error(probs, labels, **kwargs)
