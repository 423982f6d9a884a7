"""The Knowledge distillation chapter's claims, checked on the numbers its executed run recorded."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from chapter_results import check_run_metadata, values

from dltricks.compare import compare_paired

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


def test_fidelity_is_measured_against_the_same_seeds_teacher(kd):
    """Top-1 agreement and KL(teacher || student) on the test images (Stanton et al. 2021), per seed."""
    n_seeds = len(kd["seeds"])
    for k in ("distilled", "alone"):
        agree, kl = values(kd, f"agree_{k}"), values(kd, f"kl_{k}")
        assert agree.shape == kl.shape == (n_seeds,)
        assert ((agree > 0.5) & (agree <= 1)).all(), agree  # both students are far above chance (10%)
        assert (kl >= 0).all() and np.isfinite(kl).all(), kl
    c = kd["results"]["agree_kd_vs_alone"]["comparison"]
    np.testing.assert_allclose(c["treatment"], values(kd, "agree_distilled"))
    np.testing.assert_allclose(c["baseline"], values(kd, "agree_alone"))
    c = kd["results"]["kl_kd_vs_alone"]["comparison"]
    np.testing.assert_allclose(c["treatment"], -values(kd, "kl_distilled"))


def test_every_comparison_verdict_is_recomputed_from_the_recorded_values(kd):
    found = comparisons(kd)
    assert {"kd_vs_alone", "teacher_vs_alone", "few_soft_vs_hard", "ens_vs_single", "peer_vs_alone",
            "omit_shift_gain", "low_vs_high_t_narrow", "low_vs_high_t_wide", "agree_kd_vs_alone",
            "kl_kd_vs_alone"} <= set(found)  # fmt: skip
    for name, entry in found.items():
        c = entry["comparison"]
        result = compare_paired(c["treatment"], c["baseline"], higher_is_better=c["higher_is_better"],
                                n_test=c["n_test"], confidence=c["confidence"])  # fmt: skip
        assert result.verdict == c["verdict"] == kd["results"][f"{name}_verdict"]["value"], name
        np.testing.assert_allclose(entry["values"], np.subtract(c["treatment"], c["baseline"]), atol=1e-12)
        text = kd["results"][f"{name}_text"]["value"]
        assert f"({result.verdict}; better in {result.n_better} of {result.n} seeds)" in text, (name, text)


def test_the_prose_words_comparisons_only_through_glue(kd):
    prose = re.sub(r"```\{code-cell\}.*?```", "", SOURCE, flags=re.S)
    for name in comparisons(kd):
        if f"{name}_text" in prose:
            assert f"{{glue:text}}`{name}_text`" in prose
    # No hand-written verdict next to a comparison: the words come from the recorded `_text` values.
    for phrase in ("distillation helps", "distillation hurts", "distilled student is better"):
        assert phrase not in prose.lower(), phrase


def test_main_experiment_numbers_are_consistent(kd):
    n_test = values(kd, "n_test")[0]
    for key in ("err_teacher", "err_alone", "err_distilled"):
        errs = values(kd, key)
        assert ((errs >= 0) & (errs <= n_test)).all(), key
    c = kd["results"]["kd_vs_alone"]["comparison"]
    np.testing.assert_allclose(c["treatment"], 1 - values(kd, "err_distilled") / n_test)
    np.testing.assert_allclose(c["baseline"], 1 - values(kd, "err_alone") / n_test)
    # A distilled student is in the neighborhood of its teacher and of the student alone, not broken:
    # within 25% of the worse of the two in errors (the seed spread is a few percent).
    worst = np.maximum(values(kd, "err_alone").mean(), values(kd, "err_teacher").mean())
    assert values(kd, "err_distilled").mean() < 1.25 * worst


def test_omitted_class_is_learned_from_soft_targets_and_the_bias_shift_recovers_it(kd):
    before, after = values(kd, "omit_cls_acc_before"), values(kd, "omit_cls_acc_after")
    teacher = values(kd, "omit_teacher_cls_acc")
    # The shift is >= 0 and only raises one class's logit, so the omitted class can only gain.
    assert (values(kd, "omit_shift") >= 0).all() and (after >= before - 1e-12).all()
    # After the shift the student gets a substantial share of a class it never saw; thresholds from the
    # spread: the mean less three standard deviations stays above a quarter of the teacher's accuracy.
    assert after.mean() - 3 * after.std(ddof=1) > 0.25 * teacher.mean(), (after, teacher)
    # Overall errors: the shift chosen on validation images does not cost more than the seed spread.
    gain = values(kd, "omit_shift_gain")
    assert gain.mean() > -3 * max(gain.std(ddof=1), 1e-3), gain


def test_soft_targets_on_few_examples_beat_hard_labels(kd):
    """At seeds 0, 11 and 23 the soft targets won in every seed, by 3.6 to 5.9 points; the verdict was "helps"
    at two of them and "no clear difference" at the third (three seeds make a wide t interval). The claim
    tested: never "hurts", and a mean gain beyond twice the test set's sampling error."""
    entry = kd["results"]["few_soft_vs_hard"]
    c = entry["comparison"]
    assert c["verdict"] != "hurts"
    p = np.mean(c["treatment"] + c["baseline"])
    sampling_error = np.sqrt(p * (1 - p) / c["n_test"])
    assert np.mean(entry["values"]) > 2 * sampling_error, (entry["values"], sampling_error)


def test_temperature_and_weight_are_chosen_on_validation_images(kd):
    temps = [float(t) for t in kd["results"]["temps"]["value"].split(", ")]
    for width in ("wide", "narrow"):
        means = {t: values(kd, f"val_err_{width}_t{t:g}".replace(".", "_")).mean() for t in temps}
        assert values(kd, f"best_t_{width}")[0] == min(means, key=means.get)
    assert values(kd, "t_best")[0] == values(kd, "best_t_wide")[0]
    alphas = [
        float(k[len("val_err_alpha_") :].replace("_", "."))
        for k in kd["results"]
        if k.startswith("val_err_alpha_")
    ]
    val = {a: values(kd, f"val_err_alpha_{a:g}".replace(".", "_")).mean() for a in alphas if a > 0}
    assert values(kd, "alpha_best")[0] == min(val, key=val.get)
    key = f"err_alpha_{values(kd, 'alpha_best')[0]:g}".replace(".", "_")
    np.testing.assert_array_equal(values(kd, "err_tuned"), values(kd, key))


def test_distillation_with_the_chosen_setting_does_not_lose_to_the_student_alone(kd):
    """Seeds 0, 11 and 23: the tuned student helps or is within the spread, never clearly worse."""
    assert kd["results"]["teacher_vs_alone_verdict"]["value"] == "helps"
    assert kd["results"]["tuned_vs_alone_verdict"]["value"] != "hurts"
    assert values(kd, "err_tuned").mean() < values(kd, "err_alone").mean()


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
