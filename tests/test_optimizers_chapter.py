"""The Optimizers chapter's claims, checked on its recorded results (results/optimizers.json)."""

from __future__ import annotations

import numpy as np
import pytest
from chapter_results import check_run_metadata, comparison, values

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def opt(results):
    return results("optimizers")


def test_run_metadata(opt):
    check_run_metadata(opt)


def test_parity_with_torch_optim_is_within_the_stated_tolerance(opt):
    tolerance = values(opt, "parity_tolerance")[0]
    assert tolerance <= 1e-12
    assert values(opt, "parity_max")[0] <= tolerance
    for name in ("sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "nadam"):
        assert values(opt, f"parity_{name}")[0] <= tolerance, name


def test_momentum_reaches_the_optimum_first_and_lr_06_diverges_along_x2(opt):
    assert values(opt, "mom_steps")[0] < values(opt, "gd_steps")[0]
    # Started at (-5, -2): after 30 steps at lr 0.6, x1 has shrunk by 0.88^30 while x2 has grown by 1.4^30.
    assert values(opt, "gd06_x1")[0] < 0.5
    assert values(opt, "gd06_x2")[0] > 1e3


def test_adagrad_effective_step_decreases_monotonically(opt):
    assert opt["results"]["adagrad_monotone"]["value"] == "yes"
    assert values(opt, "adagrad_eff_last")[0] < values(opt, "adagrad_eff_first")[0]


def test_noise_escapes_the_saddle(opt):
    assert values(opt, "saddle_clean_y")[0] == 0.0
    f = values(opt, "saddle_noisy_f_draws")
    assert len(f) >= 20
    assert (f < 0).all()
    assert opt["results"]["saddle_escaped"]["value"] == f"{len(f)} of {len(f)}"


def test_adam_without_bias_correction_takes_larger_first_steps(opt):
    # (1 - b1) / sqrt(1 - b2) at the default betas; the prose says "larger", never "smaller".
    assert values(opt, "adam_nocorr_first")[0] == pytest.approx(0.1 / np.sqrt(0.001))
    assert values(opt, "adam_nocorr_peak")[0] > values(opt, "adam_nocorr_first")[0] > 1


def test_training_at_the_range_test_suggestion_does_not_diverge(opt):
    assert values(opt, "suggested_finite")[0] == len(opt["seeds"])
    assert values(opt, "range_suggestion")[0] < values(opt, "range_min_lr")[0]
    assert (values(opt, "suggested_acc") > 0.5).all()


def test_minibatch_gradient_variance_falls_about_as_one_over_batch_size(opt):
    assert -1.3 < values(opt, "noise_slope")[0] < -0.7


def test_the_optimizer_table_names_the_measured_winner(opt):
    # The chapter's winner must be the optimizer with the highest mean, and its wording about the margin
    # must match the paired numbers it recorded.
    names = {
        "SGD": "sgd",
        "SGD + momentum": "sgd_momentum",
        "SGD + Nesterov": "sgd_nesterov",
        "AdaGrad": "adagrad",
        "RMSProp": "rmsprop",
        "AdaDelta": "adadelta",
        "Adam": "adam",
        "AdamW": "adamw",
        "Nadam": "nadam",
    }
    means = {name: values(opt, f"cmp_val_{key}").mean() for name, key in names.items()}
    winner = opt["results"]["cmp_winner"]["value"]
    assert means[winner] == max(means.values())
    # The margin's wording is the shared rule's, recomputed from the recorded per-seed values.
    margin = comparison(opt, "cmp_margin")
    np.testing.assert_allclose(
        margin.diffs,
        values(opt, f"cmp_val_{names[winner]}")
        - values(opt, f"cmp_val_{names[opt['results']['cmp_runner_up']['value']]}"),
    )
    assert margin.verdict != "hurts"  # the winner has the higher mean


def test_every_worded_comparison_matches_the_shared_rule(opt):
    keys = [k for k, e in opt["results"].items() if "comparison" in e]
    assert len(keys) >= 8, keys
    for key in keys:
        comparison(opt, key)
    counts = [values(opt, f"sched_n_{k}")[0] for k in ("helps", "none", "hurts")]
    assert sum(counts) == values(opt, "sched_n_decaying")[0]
