"""The Knowledge distillation chapter's claims, checked on the numbers its executed run recorded."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from chapter_results import assert_paired_outcomes, check_run_metadata, comparison, tuned_comparison, values

pytestmark = pytest.mark.book
SOURCE = (Path(__file__).resolve().parents[1] / "book" / "distillation.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def kd(results):
    return results("distillation")


def comparisons(run):
    return {k: v for k, v in run["results"].items() if "comparison" in v}


def test_run_metadata(kd):
    check_run_metadata(kd)


def test_loss_and_gradient_agree_with_the_formula_and_keras(kd):
    assert values(kd, "check_loss_rel_err")[0] < 1e-12
    assert values(kd, "check_grad_max_err")[0] < 1e-12
    assert values(kd, "check_mean_factor")[0] == pytest.approx(0.1, rel=1e-9)  # 10 classes
    if kd["results"]["check_keras_rel_err"]["value"] != "not run (no TensorFlow)":
        assert values(kd, "check_keras_rel_err")[0] < 1e-4
        # The chapter says Keras' default string loss gives a different value; it must still be so.
        assert abs(values(kd, "check_keras_default_ratio")[0] - 1) > 0.05


def test_pytorch_warns_about_the_mean_reduction_as_the_page_says(kd):
    """The page says `KLDivLoss(reduction="mean")` warns and quotes it (issue 24: it said "silently")."""
    text = kd["results"]["check_mean_warning"]["value"]
    assert "'mean' divides the total loss by both the batch size and the support size" in text, text
    if kd["results"]["keras_version"]["value"] != "(not installed)":
        assert kd["results"]["keras_version"]["value"] == kd["versions"]["keras"]


BUDGETS = ("b1", "b4")


def test_fidelity_is_measured_against_the_same_seeds_teacher(kd):
    """Top-1 agreement and KL(teacher || student) on the test images (Stanton et al. 2021), per seed."""
    n_seeds = len(kd["seeds"])
    for b in BUDGETS:
        for k in ("distilled", "alone"):
            agree, kl = values(kd, f"agree_{k}_{b}"), values(kd, f"kl_{k}_{b}")
            assert agree.shape == kl.shape == (n_seeds,)
            assert ((agree > 0.5) & (agree <= 1)).all(), agree  # both students are far above chance (10%)
            assert (kl >= 0).all() and np.isfinite(kl).all(), kl
        c = kd["results"][f"agree_kd_vs_alone_{b}"]["comparison"]
        np.testing.assert_allclose(c["treatment"], values(kd, f"agree_distilled_{b}"))
        np.testing.assert_allclose(c["baseline"], values(kd, f"agree_alone_{b}"))
        c = kd["results"][f"kl_kd_vs_alone_{b}"]["comparison"]
        np.testing.assert_allclose(c["treatment"], -values(kd, f"kl_distilled_{b}"))


TUNED = [f"{k}_{b}" for b in BUDGETS for k in ("kd_vs_alone_tuned", "kd_vs_smoothing", "smoothing_vs_alone")]
PAIRED = ["teacher_vs_alone", "ensemble_vs_teacher"] + [
    f"{k}_{b}"
    for b in BUDGETS
    for k in ("kd_vs_alone", "mid_vs_high_t_narrow", "mid_vs_high_t_student", "mid_vs_high_t_wide",
              "unlabeled_vs_labeled", "omit_kd_vs_control", "few_soft_vs_hard", "ens_vs_single",
              "peer_vs_alone", "clipped_vs_unclipped")
]  # fmt: skip


def test_every_comparison_verdict_is_recomputed_from_the_recorded_values(kd):
    found = comparisons(kd)
    assert set(TUNED + PAIRED) <= set(found)
    for name in found:
        result = comparison(kd, name)  # recomputes the verdict, with the recorded per-image outcomes
        text = kd["results"][f"{name}_text"]["value"]
        assert f"({result.verdict}; better in {result.n_better} of {result.n} seeds)" in text, (name, text)
    for name in PAIRED + TUNED:  # test-set accuracies: the paired sampling error, not the binomial one
        if name != "omit_kd_vs_control_b1" and name != "omit_kd_vs_control_b4":
            assert_paired_outcomes(kd, name, n_test=values(kd, "n_test")[0])
    for name in TUNED:  # each arm's choice is redone on validation from the recorded grids
        tuned_comparison(kd, name)


def test_every_arm_had_the_same_tuning_budget_chosen_on_validation(kd):
    for b in BUDGETS:
        grids = kd["results"][f"kd_vs_alone_tuned_{b}"]["tuning"]
        other = kd["results"][f"kd_vs_smoothing_{b}"]["tuning"]
        budgets = {len(grids["treatment"]["configs"]), len(grids["baseline"]["configs"]),
                   len(other["baseline"]["configs"])}  # fmt: skip
        assert budgets == {3}, budgets
        assert {"weight_decay": 0.0} in grids["baseline"]["configs"]  # the paper's student is one of them


def test_the_prose_words_comparisons_only_through_glue(kd):
    prose = re.sub(r"```\{code-cell\}.*?```", "", SOURCE, flags=re.S)
    for name in comparisons(kd):
        if f"{name}_text" in prose:
            assert f"{{glue:text}}`{name}_text`" in prose
    # No hand-written verdict next to a comparison: the words come from the recorded `_text` values.
    for phrase in (
        "distillation helps",
        "distillation hurts",
        "distilled student is better",
        "the ensemble's gain",
    ):
        assert phrase not in prose.lower(), phrase


def test_no_student_is_broken(kd):
    """Every student, at every budget and seed, is within 25% (in errors) of the worse of the paper's two
    (a diverged or stalled run, as one distilled student at first seed 202 once was, fails this)."""
    n_test = values(kd, "n_test")[0]
    for b in BUDGETS:
        worst = np.maximum(values(kd, f"err_alone_{b}").max(), values(kd, "err_teacher").max())
        arms = ("distilled", "alone", "alone_tuned", "smoothing_tuned", "distilled_tuned", "from_ensemble",
                "from_peer")  # fmt: skip
        keys = [f"err_{k}_{b}" for k in arms]
        for key in keys:
            errs = values(kd, key)
            assert ((errs >= 0) & (errs <= n_test)).all(), key
            assert (errs < 1.25 * worst).all(), (key, errs, worst)
        c = kd["results"][f"kd_vs_alone_{b}"]["comparison"]
        np.testing.assert_allclose(c["treatment"], 1 - values(kd, f"err_distilled_{b}") / n_test, atol=1e-12)
        np.testing.assert_allclose(c["baseline"], 1 - values(kd, f"err_alone_{b}") / n_test, atol=1e-12)
        # The students of the other widths, at T = 4 and T = 20 (the narrow one collapsed to chance once,
        # before the gradients were clipped).
        for width in ("narrow", "student", "wide"):
            c = kd["results"][f"mid_vs_high_t_{width}_{b}"]["comparison"]
            for acc in (c["treatment"], c["baseline"]):
                assert (n_test * (1 - np.asarray(acc)) < 1.25 * worst).all(), (width, b, acc, worst)


def test_clipping_binds_where_the_page_says_and_only_there(kd):
    """The page: unclipped, the narrow student at T = 20 reaches gradient norms far above the bound, which
    hard-label training almost never reaches; clipping never costs accuracy there. (Seen: hard-label runs'
    largest norm a median 5-7, clipped on <= 0.1% of steps; unclipped T = 20 runs 18-380.)"""
    clip = values(kd, "clip_norm")[0]
    assert values(kd, "clipped_hard")[0] < 0.01  # "almost as it was"
    assert values(kd, "clipped_t20")[0] > values(kd, "clipped_hard")[0]
    hard = np.median(values(kd, "grad_max_hard"))  # per seed: the largest of its hard-label runs
    for b in BUDGETS:
        free = values(kd, f"grad_max_unclipped_{b}")
        assert free.min() > clip, free  # every unclipped run has steps the bound would have cut
        assert np.median(free) > 2 * hard, (free, hard)
        dead = values(kd, f"dead_unclipped_{b}")
        assert ((dead >= 0) & (dead <= 1)).all(), dead
        assert comparison(kd, f"clipped_vs_unclipped_{b}").verdict != "hurts"


def test_omitted_class_is_learned_from_soft_targets_and_not_from_labels(kd):
    teacher = values(kd, "omit_teacher_cls_acc")
    for b in BUDGETS:
        for arm in ("distilled", "control"):
            before, after = values(kd, f"omit_{arm}_before_cls_{b}"), values(kd, f"omit_{arm}_after_cls_{b}")
            # The shift is >= 0 and only raises one class's logit, so the omitted class can only gain.
            assert (values(kd, f"omit_{arm}_shift_{b}") >= 0).all() and (after >= before - 1e-12).all()
        # The control never saw a dress with its label: before the shift it (almost) never says "dress".
        assert values(kd, f"omit_control_before_cls_{b}").max() < 0.02
        # After the shift the distilled student gets a substantial share of a class it never saw; thresholds
        # from the spread: the mean less three standard deviations stays above a quarter of the teacher's.
        after = values(kd, f"omit_distilled_after_cls_{b}")
        assert after.mean() - 3 * after.std(ddof=1) > 0.25 * teacher.mean(), (after, teacher)


def test_a_larger_unlabeled_transfer_set_gets_about_the_same_number_of_steps(kd):
    for b in BUDGETS:
        labeled, all_ = values(kd, f"steps_labeled_{b}")[0], values(kd, f"steps_all_{b}")[0]
        assert abs(all_ / labeled - 1) < 0.1, (labeled, all_)


def test_few_data_students_are_both_early_stopped_within_the_budget(kd):
    for b in BUDGETS:
        for kind in ("hard", "soft"):
            best = values(kd, f"few_best_epoch_{kind}_{b}")
            assert ((best >= 1) & (best <= values(kd, f"few_max_epochs_{b}")[0])).all(), (kind, best)


def test_alpha_is_chosen_on_validation_images(kd):
    for b in BUDGETS:
        prefix = "val_acc_alpha_"
        alphas = sorted(float(k[len(prefix) : -len(b) - 1].replace("_", ".")) for k in kd["results"]
                        if k.startswith(prefix) and k.endswith(b))  # fmt: skip
        assert len(alphas) >= 3, alphas
        val = {a: values(kd, f"{prefix}{a:g}_{b}".replace(".", "_")).mean() for a in alphas}
        assert values(kd, f"alpha_best_{b}")[0] == max(val, key=val.get)


def test_the_verdicts_the_argument_rests_on(kd):
    """Held at first seeds 0, 404, 505 and 606 (quick): the teacher beats the student alone; at x4 the
    distilled student gains from the longer budget and beats the student alone in every seed, at the paper's
    setting and tuned against tuned, and that lead grows with the budget; soft targets beat
    early-stopped hard labels on few images; the distilled student beats its labels-only control on the
    omitted class in every seed; the distilled student agrees more with its teacher at x4."""
    helps = ["teacher_vs_alone", "distilled_b4_vs_b1",
             "agree_kd_vs_alone_b4", "kl_kd_vs_alone_b4", "few_soft_vs_hard_b4"]  # fmt: skip
    pinned = dict.fromkeys(helps, "helps")
    for name, verdict in pinned.items():
        assert comparison(kd, name).verdict == verdict, name
    # Soft against hard targets on few images at x1: better in every seed at every first seed tried, "helps"
    # at first seeds 0, 404, 505 and 606 in the last session; in this session's CI run (the chapter's code
    # unchanged, another machine) first seed 0 gave +5.28% +- 2.37%, inside three seeds' t interval (5.88).
    few = comparison(kd, "few_soft_vs_hard_b1")
    assert few.verdict != "hurts" and few.n_better == few.n
    assert comparison(kd, "kd_vs_alone_tuned_b1").verdict != "hurts"
    # Distilled against alone at x4, at the paper's setting and tuned against tuned: better in every seed at
    # every first seed tried (12 of 12 each), "helps" at 0, 404 and 505; at 606, where the teacher's own lead
    # is smallest (+0.76%), +0.56% +- 0.30% and +0.60% +- 0.26% lie inside three seeds' t interval.
    for name in ("kd_vs_alone_b4", "kd_vs_alone_tuned_b4"):
        result = comparison(kd, name)
        assert result.verdict != "hurts" and result.n_better == result.n, name
    # The omitted class: after the bias shift the distilled student beats its labels-only control on the
    # dresses in every seed. The control's recovery by exclusion is bimodal (0%, 29% and 63% at first seed
    # 505), so with three seeds the paired t interval may not call the mean clear: "helps" at first seeds 0
    # and 404, "no clear difference" at 505.
    for b in BUDGETS:
        result = comparison(kd, f"omit_kd_vs_control_{b}")
        assert result.verdict != "hurts" and result.n_better == result.n, b
    # Patience (Beyer et al. 2022): the longer budget never costs the tuned distilled student, and its lead
    # over the tuned student alone is larger at x4 than at x1 (+0.6 and +1.4 points at first seeds 0, 404;
    # the difference of differences is only worded "helps" when the seeds agree closely enough).
    assert comparison(kd, "distilled_tuned_b4_vs_b1").verdict != "hurts"
    assert comparison(kd, "kd_lead_b4_vs_b1").mean > 0
    # The ensemble of three teachers is not called better than one unless the paired margin says so.
    assert comparison(kd, "ensemble_vs_teacher").verdict != "hurts"


def test_size_and_speed_of_teacher_and_student(kd):
    assert values(kd, "params_ratio")[0] > 1.5  # 5.7 in quick (512-512 vs 128-128), 1.9 in full
    assert values(kd, "time_ratio")[0] > 1


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_cells_ran(kd):
    assert kd["results"]["keras_ran"]["value"] == "ran"
    assert values(kd, "keras_teacher_max_diff")[0] < 1e-3
    n_test = values(kd, "n_test")[0]
    assert 0 < values(kd, "keras_err_distilled")[0] < 0.5 * n_test
