"""The training-recipe chapter's claims, checked on its recorded results (results/recipe.json)."""

from __future__ import annotations

import math

import pytest
from chapter_results import check_run_metadata, values

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def recipe(results):
    return results("recipe")


def test_run_metadata(recipe):
    check_run_metadata(recipe)


def test_bias_initializer_starts_at_the_prior_entropy_and_the_default_near_ln2(recipe):
    entropy = values(recipe, "prior_entropy")[0]
    with_bias = values(recipe, "init_loss_bias")
    assert (abs(with_bias - entropy) <= 0.01 * entropy).all(), (with_bias, entropy)
    default = values(recipe, "init_loss_default")
    assert (abs(default - math.log(2)) < 0.1 * math.log(2)).all(), default


def test_symmetric_rescaling_reaches_the_target_loss_in_fewer_epochs_than_raw_pixels(recipe):
    assert values(recipe, "epochs_to_target_sym").mean() < values(recipe, "epochs_to_target_raw").mean()


@pytest.mark.parametrize("bug", ["reshape", "train_mode", "test_stats"])
def test_each_planted_bug_is_caught_without_a_false_alarm(recipe, bug):
    assert recipe["results"][f"bug_caught_{bug}"]["value"] == "yes"
    assert recipe["results"][f"bug_false_alarm_{bug}"]["value"] == "no"


def test_resumed_run_equals_the_uninterrupted_one(recipe):
    assert recipe["results"]["resume_same_weights"]["value"] == "yes"
    assert recipe["results"]["resume_same_history"]["value"] == "yes"
    assert recipe["results"]["repro_same"]["value"] == "yes"


def test_sigmoid_outputs_beat_thresholded_softmax_on_multi_label_targets(recipe):
    assert values(recipe, "ml_sigmoid").mean() > values(recipe, "ml_softmax_thr").mean()


def test_rebalancing_raises_minority_recall(recipe):
    base = values(recipe, "recall_none").mean()
    for key in ("over", "under", "weights"):
        assert values(recipe, f"recall_{key}").mean() > base, key


def test_overfitting_one_example_and_one_batch_passes(recipe):
    assert recipe["results"]["overfit_one"]["value"].startswith("passed")
    assert recipe["results"]["overfit_batch"]["value"].startswith("passed")
