"""The Generalization chapter's claims, checked on the numbers its executed run recorded.

Each test reads ``_build/.../results/generalization.json`` (per-seed values, not the glued text) and checks
one claim the prose makes. Tolerances are stated in the test names or next to the assertion.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from chapter_results import check_run_metadata, values

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def gen(results):
    return results("generalization")


def test_run_metadata(gen):
    check_run_metadata(gen)


def test_a_high_degree_polynomial_on_few_points_has_test_error_above_10x_training_error(gen):
    log_ratio = values(gen, "poly_high_log10_ratio")
    assert (log_ratio > 1).all(), f"test/train ratios 10**{log_ratio}"
    # and the ratio is consistent with the recorded errors
    ratio = values(gen, "poly_high_test_mse") / values(gen, "poly_high_train_mse")
    np.testing.assert_allclose(np.log10(ratio), log_ratio, rtol=1e-6)


def test_the_cubic_is_near_the_noise_floor(gen):
    assert values(gen, "poly_cubic_test_mse").mean() < 0.02  # noise variance 0.01


def test_mean_train_test_gap_shrinks_as_the_training_set_grows(gen):
    sizes = [int(n) for n in gen["results"]["mlp_sizes"]["values"]]
    means = [values(gen, f"mlp_gap_{n}").mean() for n in sizes]
    assert all(a > b for a, b in zip(means, means[1:])), dict(zip(sizes, means))


def test_weight_decay_chosen_by_validation_lowers_test_error(gen):
    change = values(gen, "wd_test_loss_change")  # paired per seed: chosen - none, test cross-entropy
    assert change.mean() < 0
    # Not just a mean below zero: the paired change is at least two standard errors below zero.
    se = change.std(ddof=1) / math.sqrt(len(change))
    assert change.mean() < -2 * se, f"change {change}"
    assert (values(gen, "wd_chosen") > 0).all()


def test_l1_gives_more_exact_zeros_than_l2_at_comparable_accuracy(gen):
    l1, l2 = values(gen, "l1_zero_frac"), values(gen, "l2_zero_frac")
    assert l1.mean() > l2.mean() + 0.05  # at least 5 percentage points more weights exactly zero
    assert (l1 > l2).all()
    # "comparable": mean test accuracies within 2 percentage points
    assert abs(values(gen, "l1_test_acc").mean() - values(gen, "l2_test_acc").mean()) < 0.02


def test_the_l1_loss_term_gives_no_exact_zeros(gen):
    assert values(gen, "l1_sub_zero_frac").max() < 0.01


def test_surrogate_of_a_deterministic_simulator_keeps_improving(gen):
    first, last = values(gen, "sur_exact_test_first"), values(gen, "sur_exact_test_last")
    assert (last < first).all()
    assert values(gen, "sur_noisy_test_last").mean() > last.mean()


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_cells_ran_and_recorded_results(gen):
    assert gen["results"]["keras_ran"]["value"] == "ran"
    for key in (
        "keras_test_loss_none",
        "keras_test_loss_chosen",
        "keras_test_acc_none",
        "keras_test_acc_chosen",
    ):
        assert len(values(gen, key)) == len(gen["seeds"])
    assert "tensorflow" in gen["versions"]
