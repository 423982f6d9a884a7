"""The Dropout chapter's claims, checked on the numbers its executed run recorded (results/dropout.json)."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
from chapter_results import check_run_metadata, values

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def drop(results):
    return results("dropout")


def test_run_metadata(drop):
    check_run_metadata(drop)


def test_dropout_05_narrows_the_mean_train_test_gap(drop):
    assert values(drop, "gap_p05").mean() < values(drop, "gap_p0").mean()
    change = values(drop, "gap_change_p05")  # paired per seed
    se = change.std(ddof=1) / math.sqrt(len(change))
    assert change.mean() < -2 * se, change


def test_dropout_slows_training(drop):
    assert values(drop, "epochs_to_99_p05").mean() > values(drop, "epochs_to_99_p0").mean()


def test_early_stopping_ends_near_the_best_validation_accuracy_within_budget(drop):
    budget = values(drop, "es_budget")[0]
    assert (values(drop, "es_epochs_run") < budget).all()
    assert values(drop, "es_acc_shortfall").mean() <= 0.005  # within 0.5 percentage points, on average
    assert (values(drop, "es_acc_shortfall") >= 0).all()


def test_augmentation_raises_mean_test_accuracy_with_1000_images(drop):
    assert values(drop, "n_train")[0] == 1000
    assert values(drop, "aug_test_acc_change").mean() > 0


def test_mc_dropout_calibration_is_reported_consistently(drop):
    # The chapter reports either direction; the test checks the numbers are sane and the words match them.
    for key in ("mc_ece_det", "mc_ece_mc", "mc_ece_nodrop"):
        assert ((values(drop, key) >= 0) & (values(drop, key) <= 1)).all()
    change = values(drop, "mc_ece_change").mean()
    assert drop["results"]["mc_ece_verdict"]["value"] == ("lower" if change < 0 else "higher")
    np.testing.assert_allclose(
        change, values(drop, "mc_ece_mc").mean() - values(drop, "mc_ece_det").mean(), atol=1e-9
    )


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_cells_ran_and_recorded_results(drop):
    assert drop["results"]["keras_ran"]["value"] == "ran"
    assert len(values(drop, "keras_test_acc")) == len(drop["seeds"])
    assert (values(drop, "keras_epochs_run") >= 1).all()
