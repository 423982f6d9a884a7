"""The Dropout chapter's claims, checked on the numbers its executed run recorded (results/dropout.json)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from chapter_results import assert_paired_outcomes, check_run_metadata, comparison, values

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def drop(results):
    return results("dropout")


def test_run_metadata(drop):
    check_run_metadata(drop)


def test_dropout_05_does_not_widen_the_train_test_gap(drop):
    # The prose quotes the verdict, whatever it is; how much the gap narrows depends on the budget (about
    # 5 points in quick, about 1 in full), so the test asks only what holds at both: never clearly wider.
    assert comparison(drop, "gap_change_p05").verdict != "hurts"
    comparison(drop, "test_acc_change_p05")


def test_dropout_does_not_speed_training_up(drop):
    assert comparison(drop, "epochs_to_99_change_p05").verdict != "helps"


def test_early_stopping_stops_within_budget_and_restores_the_best_epoch(drop):
    budget = values(drop, "es_budget")[0]
    assert (values(drop, "es_epochs_run") <= budget).all()
    assert (values(drop, "es_best_epoch") <= values(drop, "es_epochs_run")).all()
    # The restored weights are one of the evaluated epochs' weights, so they cannot beat the best one seen
    # (up to the rounding of an accuracy evaluated twice).
    assert (values(drop, "es_acc_shortfall") >= -1e-9).all()
    # The size of the shortfall is worded against the validation set's sampling error, not a fixed threshold.
    within = values(drop, "es_acc_shortfall").mean() <= values(drop, "es_val_se")[0]
    assert drop["results"]["es_shortfall_words"]["value"] == ("within" if within else "beyond")
    assert drop["results"]["es_shortfall_reading"]["value"].startswith(
        "a shortfall within" if within else "a shortfall beyond"
    )
    comparison(drop, "es_vs_full_budget")


def test_max_norm_binds_on_a_sizeable_share_of_the_hidden_units(drop):
    # The radius is the median norm the unconstrained hidden units reach, so the constraint binds on a
    # sizeable share of units at the end of training (not on a few percent, not on all of them).
    for key in ("boundary_maxnorm", "boundary_dropout_maxnorm"):
        share = values(drop, key)
        assert ((share > 0.15) & (share < 0.95)).all(), (key, share)
    # The radius lies above the median initial norm: the units grow into it rather than start on it.
    assert values(drop, "max_norm_value")[0] > values(drop, "max_norm_init")[0]
    for key in ("cmp_vs_none_maxnorm", "maxnorm_with_dropout", "maxnorm_gap_change", "maxnorm_loss_change"):
        comparison(drop, key)


def test_augmentation_is_worded_by_the_shared_rule(drop):
    assert values(drop, "n_train")[0] == 1000
    assert comparison(drop, "aug_test_acc_change").verdict != "hurts"


def test_mc_dropout_calibration_is_reported_consistently(drop):
    # The chapter reports either direction; the test checks the numbers are sane and the words match them.
    for key in ("mc_ece_det", "mc_ece_mc", "mc_ece_nodrop"):
        assert ((values(drop, key) >= 0) & (values(drop, key) <= 1)).all()
    result = comparison(drop, "mc_ece_change")
    np.testing.assert_allclose(
        result.diffs, values(drop, "mc_ece_mc") - values(drop, "mc_ece_det"), atol=1e-9
    )


def test_the_comparison_table_is_worded_by_the_shared_rule(drop):
    keys = [k for k in drop["results"] if k.startswith("cmp_vs_none_") and "comparison" in drop["results"][k]]
    assert len(keys) == 5, keys
    for key in keys:
        comparison(drop, key)


def test_accuracy_comparisons_use_the_paired_sampling_error(drop):
    # Both arms are scored on the same test images: each accuracy comparison records which images each seed's
    # models got right (as counts of the per-image difference), so its margin is the paired error.
    keys = ["test_acc_change_p05", "maxnorm_with_dropout", "es_vs_full_budget", "aug_test_acc_change"]
    keys += [k for k, e in drop["results"].items() if k.startswith("cmp_vs_none_") and "comparison" in e]
    assert len(keys) == 9, keys
    for key in keys:
        assert_paired_outcomes(drop, key)


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_cells_ran_and_recorded_results(drop):
    assert drop["results"]["keras_ran"]["value"] == "ran"
    assert len(values(drop, "keras_test_acc")) == len(drop["seeds"])
    assert (values(drop, "keras_epochs_run") >= 1).all()
    # Initialized like PyTorch's layers and with the same radius, max-norm binds on some units, not on all of
    # them, and on a share comparable with the PyTorch run of the same seed at the same epoch.
    keras_share, torch_share = values(drop, "keras_boundary"), values(drop, "keras_torch_boundary")
    assert (keras_share < 0.95).all(), keras_share
    assert (np.abs(keras_share - torch_share) < 0.3).all(), (keras_share, torch_share)


def test_every_worded_comparison_matches_the_shared_rule(drop):
    # Every paired difference the prose words (helps / no clear difference / hurts) was recorded with
    # dltricks.book.record_comparison; recompute each verdict from the recorded per-seed values.
    keys = [k for k, e in drop["results"].items() if "comparison" in e]
    assert keys
    for key in keys:
        comparison(drop, key)
