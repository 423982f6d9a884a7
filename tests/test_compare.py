"""The shared paired-comparison rule: verdicts from the seed spread and the test set's sampling error."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dltricks import book
from dltricks.compare import VERDICTS, PairedOutcomes, compare_paired


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


# --- the paired sampling error (PairedOutcomes) ---


def correlated_arms(rng, n_seeds, n_test, p=0.88, flip=0.05):
    """Two arms that get mostly the same images right: the baseline disagrees on a fraction ``flip``."""
    treatment = rng.random((n_seeds, n_test)) < p
    baseline = treatment.copy()
    flipped = rng.random((n_seeds, n_test)) < flip
    baseline[flipped] = ~baseline[flipped]
    return treatment, baseline


def test_one_seed_gives_mcnemars_standard_error_of_a_difference_of_correlated_proportions():
    t, b = correlated_arms(np.random.default_rng(1), 1, 5000)
    only_t, only_b = float((t & ~b).mean()), float((~t & b).mean())
    out = PairedOutcomes.from_correct(t, b)
    assert out.mean_difference == pytest.approx(only_t - only_b, abs=1e-15)
    # McNemar (1947): var = (p10 + p01 - (p10 - p01)^2) / N; ddof=1 gives the factor N / (N - 1)
    assert out.sampling_error == pytest.approx(
        math.sqrt((only_t + only_b - (only_t - only_b) ** 2) / (5000 - 1)), rel=1e-12
    )
    assert out.n_test == 5000 and out.n_seeds == 1


def test_the_paired_error_predicts_the_spread_of_the_difference_over_fresh_test_sets():
    """Calibration: the spread over many test sets drawn from one population of images is what it says."""
    rng = np.random.default_rng(2)
    population_t, population_b = correlated_arms(rng, 3, 200_000, flip=0.08)
    observed, predicted = [], []
    for _ in range(400):
        idx = rng.choice(200_000, 2_000, replace=False)
        out = PairedOutcomes.from_correct(population_t[:, idx], population_b[:, idx])
        observed.append(out.mean_difference)
        predicted.append(out.sampling_error)
    # 400 draws: the sample std is within about 3.5% (1 sd) of the truth; 12% is > 3 sd
    assert np.std(observed, ddof=1) == pytest.approx(np.mean(predicted), rel=0.12)


def test_arms_that_agree_have_a_paired_error_well_below_the_binomial_one_and_it_can_decide():
    rng = np.random.default_rng(3)
    t, b = correlated_arms(rng, 3, 10_000, flip=0.02)
    b[:, :40] = False  # the baseline loses 40 images the treatment gets right: +0.4 points, every seed
    t[:, :40] = True
    out = PairedOutcomes.from_correct(t, b)
    acc_t, acc_b = t.mean(1), b.mean(1)
    binomial = compare_paired(acc_t, acc_b, n_test=10_000)
    paired = compare_paired(acc_t, acc_b, outcomes=out, n_test=10_000)
    assert paired.sampling_error < 0.5 * binomial.sampling_error
    assert paired.sampling_error == out.sampling_error
    if binomial.half_width < binomial.sampling_error:  # the binomial error decides the margin there
        assert binomial.margin > paired.margin


def test_identical_arms_have_no_sampling_error_and_swapping_them_flips_the_mean_only():
    t, b = correlated_arms(np.random.default_rng(4), 2, 1000)
    same = PairedOutcomes.from_correct(t, t)
    assert same.mean_difference == 0.0 and same.sampling_error == 0.0
    forward, back = PairedOutcomes.from_correct(t, b), PairedOutcomes.from_correct(b, t)
    assert back.mean_difference == pytest.approx(-forward.mean_difference, abs=1e-15)
    assert back.sampling_error == pytest.approx(forward.sampling_error, rel=1e-12)
    assert back.counts == forward.counts[::-1]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 4), st.integers(2, 60), st.integers(0, 2**32 - 1))
def test_outcomes_do_not_depend_on_the_order_of_the_images(n_seeds, n_test, seed):
    rng = np.random.default_rng(seed)
    t, b = rng.random((n_seeds, n_test)) < 0.7, rng.random((n_seeds, n_test)) < 0.7
    perm = rng.permutation(n_test)
    out = PairedOutcomes.from_correct(t, b)
    assert out == PairedOutcomes.from_correct(t[:, perm], b[:, perm])
    assert out.mean_difference == pytest.approx(float((t.mean(1) - b.mean(1)).mean()), abs=1e-12)
    k = (t.astype(int) - b.astype(int)).sum(0) / n_seeds
    assert out.sampling_error == pytest.approx(float(np.std(k, ddof=1) / math.sqrt(n_test)), abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(treatment=[0.9, 0.9], baseline=[0.8, 0.8], outcomes="x"), TypeError, "outcomes"),
        (dict(treatment=[50.0, 60.0], baseline=[50.0, 61.0]), ValueError, "values in"),
        (dict(treatment=[0.6, 0.6, 0.6], baseline=[0.5, 0.5, 0.5]), ValueError, "of 3 seeds"),
        (dict(treatment=[0.6, 0.6], baseline=[0.5, 0.5], n_test=11), ValueError, "n_test = 11"),
        (dict(treatment=[0.7, 0.7], baseline=[0.5, 0.5]), ValueError, "mean difference"),
    ],
)
def test_outcomes_that_do_not_match_the_accuracies_are_refused(kwargs, error, pattern):
    # two seeds, ten images: treatment right on 6, baseline on 5 (mean difference +0.1)
    t = np.array([[1] * 6 + [0] * 4] * 2, dtype=bool)
    b = np.array([[1] * 5 + [0] * 5] * 2, dtype=bool)
    kwargs.setdefault("outcomes", PairedOutcomes.from_correct(t, b))
    with pytest.raises(error, match=pattern):
        compare_paired(**kwargs)
    ok = compare_paired([0.6, 0.6], [0.5, 0.5], outcomes=PairedOutcomes.from_correct(t, b), n_test=10)
    assert ok.sampling_error == pytest.approx(0.1)  # nine images agree, one differs (k = +2 of 2 seeds)


@pytest.mark.parametrize(
    "args, error, pattern",
    [
        (([[True, False]], [[True]]), ValueError, "baseline_correct"),
        (([True, False], [True, False]), ValueError, "two-dimensional"),
        (([[0.5, 1.0]], [[1, 0]]), TypeError, "treatment_correct"),
        (([["a", "b"]], [[1, 0]]), TypeError, "treatment_correct"),
    ],
)
def test_from_correct_refuses_what_is_not_per_seed_per_image_correctness(args, error, pattern):
    with pytest.raises(error, match=pattern):
        PairedOutcomes.from_correct(*args)


@pytest.mark.parametrize(
    "counts, n_seeds, error, pattern",
    [
        ((1, 2), 1, ValueError, "length 2 \\* n_seeds \\+ 1 = 3"),
        ((1, -1, 2), 1, TypeError, "non-negative integers"),
        ((1, 0.5, 2), 1, TypeError, "non-negative integers"),
        ((0, 1, 0), 1, ValueError, "at least two test images"),
        ((1, 1, 1), 0, ValueError, "n_seeds=0"),
        ("abc", 1, TypeError, "counts"),
    ],
)
def test_outcomes_refuse_counts_that_are_not_image_counts(counts, n_seeds, error, pattern):
    with pytest.raises(error, match=pattern):
        PairedOutcomes(counts, n_seeds)


def test_record_comparison_records_the_outcomes_and_a_claim_test_recomputes_the_paired_margin(
    tmp_path, monkeypatch
):
    from tests.chapter_results import comparison

    monkeypatch.setattr(book, "_current", None)
    book.start_chapter("paired", profile="quick", device="cpu", seeds=[0, 1, 2], results_dir=tmp_path)
    t, b = correlated_arms(np.random.default_rng(5), 3, 4000)
    out = PairedOutcomes.from_correct(t, b)
    res = book.record_comparison("d", t.mean(1), b.mean(1), "{:+.2%}", outcomes=out, glue=False)
    run = book.load_results(tmp_path / "paired.json")
    assert run["results"]["d"]["comparison"]["outcomes"] == {"counts": list(out.counts), "n_seeds": 3}
    again = comparison(run, "d")
    assert again.sampling_error == res.sampling_error == out.sampling_error


# --- refusals word for word, boundaries and defaults pinned (mutation testing) ---

_T = np.array([[1] * 6 + [0] * 4] * 2, dtype=bool)  # two seeds, ten images: +0.1 on each seed
_B = np.array([[1] * 5 + [0] * 5] * 2, dtype=bool)
_OUT = PairedOutcomes.from_correct(_T, _B)
_ACC = "given only for accuracies (values in [0, 1])"


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: compare_paired("ab", [1.0, 2.0]), TypeError,
         "`treatment` must be a sequence of numbers. Received: treatment='ab'"),
        (lambda: compare_paired(["a", "b"], [1.0, 2.0]), TypeError,
         "`treatment` must be a sequence of numbers. Received: treatment=['a', 'b']"),
        (lambda: compare_paired([1.0, 2.0], [[1.0], [2.0, 3.0]]), TypeError,
         "`baseline` must be a sequence of numbers. Received: baseline=[[1.0], [2.0, 3.0]]"),
        (lambda: compare_paired([1.0, 2.0], [1.0, float("inf")]), ValueError,
         "`baseline` must be finite numbers (a diverged run needs its own handling, not an average). "
         "Received: baseline=[1.0, inf]"),
        (lambda: compare_paired([1.0, 2.0], [1.0]), ValueError,
         "`baseline` must be as long as `treatment` (2 values, one per seed). Received: baseline=[1.0]"),
        (lambda: compare_paired([1.0], [1.0]), ValueError,
         "`treatment` must be at least two per-seed values (one seed has no spread to judge by). "
         "Received: treatment=[1.0]"),
        (lambda: compare_paired([1.0, 2.0], [1.0, 2.0], higher_is_better=1), TypeError,
         "`higher_is_better` must be a bool. Received: higher_is_better=1"),
        (lambda: compare_paired([1.0, 2.0], [1.0, 2.0], confidence=0.0), ValueError,
         "`confidence` must be a real number in (0, 1). Received: confidence=0.0"),
        (lambda: compare_paired([1.0, 2.0], [1.0, 2.0], confidence=-0.5), ValueError,
         "`confidence` must be a real number in (0, 1). Received: confidence=-0.5"),
        (lambda: compare_paired([1.5, 1.0], [0.5, 0.5], n_test=10), ValueError,
         f"`n_test` must be {_ACC}. Received: n_test=10"),
        (lambda: compare_paired([1.5, 1.0], [0.5, 0.5], outcomes=_OUT), ValueError,
         f"`outcomes` must be {_ACC}. Received: outcomes={_OUT!r}"),
        (lambda: compare_paired([0.6, 0.6], [0.5, 0.5], outcomes="x"), TypeError,
         "`outcomes` must be a PairedOutcomes (PairedOutcomes.from_correct). Received: outcomes='x'"),
        (lambda: compare_paired([0.6, 0.6, 0.6], [0.5, 0.5, 0.5], outcomes=_OUT), ValueError,
         "`outcomes` must be of 3 seeds, one per value. Received: outcomes='2 seeds'"),
        (lambda: compare_paired([0.6, 0.6], [0.5, 0.5], outcomes=_OUT, n_test=11), ValueError,
         "`outcomes` must be over n_test = 11 images. Received: outcomes='10 images'"),
        (lambda: compare_paired([0.7, 0.7], [0.5, 0.5], outcomes=_OUT), ValueError,
         "`outcomes` must be with the accuracies' mean difference 0.2 (the same models and images). "
         "Received: outcomes='mean difference 0.1'"),
        (lambda: PairedOutcomes("abc", 1), TypeError,
         "`counts` must be a sequence of image counts, one per value of k. Received: counts='abc'"),
        (lambda: PairedOutcomes(5, 1), TypeError,
         "`counts` must be a sequence of image counts, one per value of k. Received: counts=5"),
        (lambda: PairedOutcomes((1, 2, 3), 2), ValueError,
         "`counts` must be of length 2 * n_seeds + 1 = 5. Received: counts=(1, 2, 3)"),
        (lambda: PairedOutcomes((1, -1, 2), 1), TypeError,
         "`counts` must be non-negative integers (numbers of test images). Received: counts=(1, -1, 2)"),
        (lambda: PairedOutcomes((0, 1, 0), 1), ValueError,
         "`counts` must be at least two test images in all. Received: counts=(0, 1, 0)"),
        (lambda: PairedOutcomes.from_correct([[1, 0], [1]], [[1, 0]]), TypeError,
         "`treatment_correct` must be an array of booleans of shape (n_seeds, n_test). "
         "Received: treatment_correct=[[1, 0], [1]]"),
        (lambda: PairedOutcomes.from_correct([[1, 0]], [[0.5, 1.0]]), TypeError,
         "`baseline_correct` must be booleans (or 0/1): whether each seed's model got each image right. "
         "Received: baseline_correct=[[0.5, 1.0]]"),
        (lambda: PairedOutcomes.from_correct([[1, 0]], [1, 0]), ValueError,
         "`baseline_correct` must be two-dimensional, (n_seeds, n_test), not of shape (2,). "
         "Received: baseline_correct=[1, 0]"),
        (lambda: PairedOutcomes.from_correct([[True, False]], [[True]]), ValueError,
         "`baseline_correct` must be of the treatment's shape (1, 2). "
         "Received: baseline_correct='shape (1, 1)'"),
    ],
)  # fmt: skip
def test_refusals_word_for_word(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert str(info.value) == message


def test_accuracies_of_exactly_0_and_1_and_one_test_image_are_accepted():
    res = compare_paired([1.0, 1.0], [0.0, 0.0], n_test=1)  # the bounds of [0, 1] are accuracies too
    assert res.sampling_error == 0.5 and res.verdict == "helps"  # p = 0.5 on one image: sqrt(0.25 / 1)
    out = PairedOutcomes.from_correct(np.ones((2, 3), bool), np.zeros((2, 3), bool))
    assert compare_paired([1.0, 1.0], [0.0, 0.0], outcomes=out).mean == 1.0


def test_the_verdict_needs_more_than_the_margin_a_tie_is_no_clear_difference():
    # Zero spread, so the margin is the binomial error: p = 0.5 on 4 images gives sqrt(0.25 / 4) = 0.25,
    # exactly the difference (all values exact in binary floating point).
    res = compare_paired([0.625, 0.625], [0.375, 0.375], n_test=4)
    assert (res.mean, res.margin, res.half_width) == (0.25, 0.25, 0.0)
    assert res.verdict == "no clear difference"
    assert compare_paired([0.375, 0.375], [0.625, 0.625], n_test=4).verdict == "no clear difference"
    assert compare_paired([0.625, 0.625], [0.375, 0.375], n_test=5).verdict == "helps"  # margin 0.224


def test_a_loss_difference_inside_the_margin_is_no_clear_difference():
    # Five seeds, the treatment's loss lower by 1 on average; the t half-width is 1.81: the difference is
    # inside it (twice the difference would not be).
    d = np.array([-0.8, 0.0, 1.0, 2.0, 2.8])
    b = np.full(5, 10.0)
    res = compare_paired(b - d, b, higher_is_better=False)
    assert 1.0 < res.half_width < 2.0 and res.verdict == "no clear difference"
    assert res.higher_is_better is False and res.n_better == 3
    assert compare_paired(b + d, b).higher_is_better is True


def test_a_tied_seed_is_not_counted_as_better():
    res = compare_paired([0.5, 0.7, 0.9], [0.5, 0.6, 0.7])
    assert res.n_better == 2
    assert compare_paired([0.5, 0.5], [0.6, 0.5], higher_is_better=False).n_better == 1


def test_outcomes_mean_difference_is_matched_within_1e_9():
    same = PairedOutcomes.from_correct(_T, _T)  # mean difference 0
    assert compare_paired([1e-9, 1e-9], [0.0, 0.0], outcomes=same).mean == 1e-9  # rounding tolerated
    with pytest.raises(ValueError, match="mean difference"):
        compare_paired([3e-9, 3e-9], [0.0, 0.0], outcomes=same)


def test_zero_one_integer_arrays_equal_booleans_and_counts_are_plain_ints():
    assert PairedOutcomes.from_correct(_T.astype(int), _B.astype(np.int8)) == _OUT
    out = PairedOutcomes([1, np.int64(2), 3], 1)
    assert out.counts == (1, 2, 3) and all(type(c) is int for c in out.counts)
    assert json.loads(json.dumps(out.to_dict())) == {"counts": [1, 2, 3], "n_seeds": 1}


def test_describe_default_format():
    res = compare_paired([2e-5, 1e-5, 3e-5], [0.0, 0.0, 0.0])
    assert res.describe() == "+2e-05 ± 1e-05 (no clear difference; better in 3 of 3 seeds)"


def test_from_correct_accepts_zero_one_integers_as_well_as_booleans():
    """Mutation survivor (issue 25): 0/1 integer arrays are read as booleans, zeros included."""
    t, b = np.array([[1, 0, 1, 1], [0, 0, 1, 1]]), np.array([[1, 1, 0, 1], [0, 1, 1, 1]])
    assert PairedOutcomes.from_correct(t, b) == PairedOutcomes.from_correct(t.astype(bool), b.astype(bool))


def test_from_correct_refuses_an_object_array_even_of_zeros_and_ones():
    """Mutation survivor (issue 25): only boolean or numeric arrays are read; an object array is refused."""
    t = np.array([[0, 1], [1, 1]], dtype=object)
    with pytest.raises(TypeError, match="`treatment_correct` must be booleans"):
        PairedOutcomes.from_correct(t, t.astype(bool))
