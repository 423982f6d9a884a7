"""The Vanishing and exploding gradients chapter's claims, checked on its recorded results
(results/gradients.json)."""

from __future__ import annotations

import pytest
from chapter_results import assert_paired_outcomes, check_run_metadata, comparison, values

pytestmark = pytest.mark.book

CHANCE = 0.10  # ten balanced classes


@pytest.fixture(scope="module")
def grad(results):
    return results("gradients")


def test_run_metadata(grad):
    check_run_metadata(grad)


def test_sigmoid_with_glorot_vanishes_while_relu_with_he_stays_within_a_factor_of_ten(grad):
    # First hidden layer's gradient norm over the last hidden layer's, at initialization, per seed.
    assert (values(grad, "ratio_sigmoid_glorot") < 1e-3).all()
    he = values(grad, "ratio_relu_he")
    assert ((he > 0.1) & (he < 10)).all(), he


def test_sigmoid_with_unit_normal_weights_saturates_rather_than_vanishes(grad):
    # What the chapter reports instead of the textbook claim: most sigmoid outputs are pinned near 0 or 1,
    # but the gradient ratio stays far above the 1e-3 that would mean vanishing.
    assert values(grad, "sat_sigmoid_n01").mean() > 0.3
    assert (values(grad, "ratio_sigmoid_n01") > 1e-3).all()


def test_fifty_layer_plain_sigmoid_stays_at_chance_while_batch_norm_and_residual_learn(grad):
    assert values(grad, "deeper")[0] == 50
    plain = values(grad, "deep50_acc_plain_sigmoid")
    assert (plain <= values(grad, "learn_bar")[0]).all(), plain
    # "learn": clearly better than the plain sigmoid network by the shared rule (paired over seeds, beyond
    # the seed spread and the test set's sampling error), not a fixed accuracy tuned to one run. Against the
    # plain ReLU network the verdict depends on the budget (the full profile trains it far longer), so the
    # prose only quotes it.
    for key in ("bn_sigmoid", "residual_relu"):
        assert comparison(grad, f"deep50_{key}_vs_plain_sigmoid").verdict == "helps", key
        comparison(grad, f"deep50_{key}_vs_plain_relu")
    words = grad["results"]["deep50_plain_sigmoid_words"]["value"]
    assert words == "stays at chance on every seed", words


def test_the_learns_wording_follows_the_recorded_accuracies(grad):
    bar = values(grad, "learn_bar")[0]
    assert bar == pytest.approx(CHANCE + 3 * (CHANCE * (1 - CHANCE) / values(grad, "n_test_grad")[0]) ** 0.5)
    acc = values(grad, "deep_acc_sigmoid_glorot")
    words = grad["results"]["sigmoid_glorot_words"]["value"]
    assert ("stays at chance" in words) == (acc <= bar).all(), (words, acc)


def test_layerwise_pretraining_trains_the_deep_sigmoid_network_that_does_not_learn_without_it(grad):
    # Pre-training plus fine-tuning costs no more than about the baseline's epochs (multiply-adds)...
    assert (values(grad, "pre_budget_epochs") <= values(grad, "epochs")[0] + 0.5).all()
    # ... the baseline stays at chance, the pre-trained stack alone is above it, and fine-tuned it clearly
    # beats the baseline by the shared rule.
    bar = values(grad, "learn_bar")[0]
    assert (values(grad, "deep_acc_sigmoid_glorot") <= bar).all()
    assert (values(grad, "pre_acc_stacked") > bar).all()
    assert comparison(grad, "pre_vs_none").verdict == "helps"


def test_l1_and_l2_shrink_the_bound_on_the_backward_gain(grad):
    # log10 of the product of the layers' spectral norms, per seed, after the same training budget.
    none = values(grad, "reg_spec_none")
    for key in ("l2", "l1"):
        assert (values(grad, f"reg_spec_{key}") < none).all(), key
        comparison(grad, f"reg_{key}_vs_none")
    assert "not consistently" not in grad["results"]["reg_l2_spec_words"]["value"]


def test_exploding_rnn_goes_non_finite_without_clipping_and_stays_finite_with_it(grad):
    n = len(grad["seeds"])
    assert values(grad, "rnn_finite_none")[0] == 0
    assert values(grad, "rnn_finite_norm")[0] == n
    assert values(grad, "rnn_finite_value")[0] == n


def test_the_source_articles_clipping_example(grad):
    assert values(grad, "clip_value_0")[0] == pytest.approx(0.9, abs=1e-7)
    assert values(grad, "clip_value_1")[0] == pytest.approx(1.0, abs=1e-7)
    assert values(grad, "clip_norm_0")[0] == pytest.approx(0.00899964, abs=1e-7)
    assert values(grad, "clip_norm_1")[0] == pytest.approx(0.99995950, abs=1e-7)


def test_batch_norm_parity_and_the_hidden_initialization_bug(grad):
    assert values(grad, "bn_parity_err")[0] < 1e-12
    # Without batch norm the 10x bug scales the logits of the 10-layer ReLU net by 10^11 (homogeneity) ...
    assert values(grad, "bug_logit_ratio")[0] == pytest.approx(1e11, rel=1e-3)
    # ... with it, only the pre-normalization statistics show the bug.
    assert values(grad, "bug_pre_std_bn")[0] == pytest.approx(10 * values(grad, "ok_pre_std_bn")[0], rel=1e-3)


def test_selu_self_normalizes_at_depth(grad):
    assert abs(values(grad, "selu_last_std").mean() - 1) < 0.2


def test_every_worded_comparison_matches_the_shared_rule(grad):
    # The prose words these differences by their recorded verdicts; each must be what the shared rule gives.
    keys = [k for k, e in grad["results"].items() if "comparison" in e]
    assert {
        "deep50_bn_sigmoid_vs_plain_relu",
        "deep50_residual_relu_vs_plain_relu",
        "pre_vs_none",
        "reg_l2_vs_none",
        "reg_l1_vs_none",
        "deep_n01_vs_tanh",
    } <= set(keys), keys
    for key in keys:
        comparison(grad, key)


def test_accuracy_comparisons_use_the_paired_sampling_error(grad):
    # Both arms are scored on the same test images: each accuracy comparison records which images each seed's
    # models got right (as counts of the per-image difference), so its margin is the paired error. Two are
    # recorded only when no run diverged (deep_relu_vs_tanh, rnn_value_vs_norm); the rest always are.
    always = [
        f"deep50_{a}_vs_plain_{b}" for a in ("bn_sigmoid", "residual_relu") for b in ("relu", "sigmoid")
    ]
    always += ["deep_n01_vs_tanh", "pre_vs_none", "reg_l2_vs_none", "reg_l1_vs_none"]
    optional = ("deep_relu_vs_tanh", "rnn_value_vs_norm")
    sometimes = [k for k in optional if "comparison" in grad["results"].get(k, {})]
    for key in always + sometimes:
        assert_paired_outcomes(grad, key)
