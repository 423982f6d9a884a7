"""Equal-budget tuning on validation (dltricks.tuning) and its record for the claim tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from chapter_results import tuned_comparison
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dltricks import book
from dltricks.compare import PairedOutcomes, compare_paired
from dltricks.tuning import TunedArm, compare_tuned, from_scores, tune

LRS = [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-2}]


def test_the_choice_is_made_on_validation_and_the_test_score_of_that_choice_is_reported():
    # Config 2 has the best test score on every seed but the worst validation score: never chosen.
    val = [[0.80, 0.81], [0.85, 0.79], [0.70, 0.70]]
    test = [[0.60, 0.61], [0.62, 0.63], [0.99, 0.99]]
    arm = from_scores("a", LRS, [0, 1], val, test)
    assert arm.chosen.tolist() == [1, 0]
    assert arm.best_val.tolist() == [0.85, 0.81]
    assert arm.best_test.tolist() == [0.62, 0.61]
    assert arm.chosen_configs() == [{"lr": 3e-3}, {"lr": 1e-3}]
    assert arm.budget == 3


def test_losses_choose_the_smallest_validation_score():
    arm = from_scores("a", LRS, [0], [[0.3], [0.2], [0.4]], [[1.0], [2.0], [3.0]], higher_is_better=False)
    assert arm.chosen.tolist() == [1] and arm.best_test.tolist() == [2.0]


def test_ties_go_to_the_first_configuration_and_a_diverged_run_is_never_chosen():
    val = [[np.nan, 0.5], [0.7, 0.5], [0.7, np.inf * 0]]  # inf * 0 is NaN
    arm = from_scores("a", LRS, [3, 4], val, np.zeros((3, 2)))
    assert arm.chosen.tolist() == [1, 0]
    # +inf is not finite either: it is a diverged loss, not the best accuracy.
    arm = from_scores("a", LRS[:2], [3], [[np.inf], [0.1]], [[0.0], [1.0]])
    assert arm.chosen.tolist() == [1]


def test_a_seed_on_which_every_run_diverged_is_refused_by_name():
    with pytest.raises(ValueError, match=r"`val`.*'sgd'.*seed 8: all 2 runs diverged"):
        from_scores("sgd", LRS[:2], [7, 8], [[0.5, np.nan], [0.6, np.nan]], np.zeros((2, 2)))


def test_tune_runs_every_configuration_on_every_seed_once_and_agrees_with_from_scores():
    calls = []

    def train(config, seed):
        calls.append((config["lr"], seed))
        # A made-up response surface: the middle rate is best on validation, the last on test.
        return 1.0 - abs(np.log10(config["lr"]) + 2.5) + 0.01 * seed, config["lr"] * 10 + seed

    arm = tune("sgd", train, LRS, [5, 6])
    assert sorted(calls) == sorted((c["lr"], s) for c in LRS for s in (5, 6))
    assert len(calls) == 6
    assert arm.chosen.tolist() == [1, 1]
    np.testing.assert_allclose(arm.best_test, [3e-3 * 10 + 5, 3e-3 * 10 + 6])
    again = from_scores("sgd", LRS, [5, 6], arm.val, arm.test)
    assert again.chosen.tolist() == arm.chosen.tolist()
    assert arm.describe_choice() == "lr=0.003 in 2 of 2 seeds"


def test_tune_shows_a_progress_bar_when_asked(capsys):
    tune("sgd", lambda c, s: (0.5, 0.5), LRS, [0, 1], progress=True)
    assert "sgd" in capsys.readouterr().err


def test_tune_keeps_going_past_a_diverged_configuration():
    arm = tune("sgd", lambda c, s: (float("nan"), 0.1) if c["lr"] == 1e-2 else (c["lr"], 0.5), LRS, [0])
    assert arm.chosen.tolist() == [1] and np.isnan(arm.val[2, 0])


def test_describe_choice_lists_the_most_frequent_choice_first():
    val = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.9], [0.0, 0.0, 0.0]])
    arm = from_scores("a", LRS, [0, 1, 2], val, val)
    assert arm.describe_choice() == "lr=0.003 in 2 of 3 seeds, lr=0.001 in 1"
    named = from_scores("b", [{"T": 4, "alpha": 0.9}], [0, 1], [[1, 1]], [[1, 1]])
    assert named.describe_choice() == "T=4, alpha=0.9 in 2 of 2 seeds"


def test_compare_tuned_is_the_paired_comparison_of_the_chosen_test_scores():
    rng = np.random.default_rng(0)
    t = from_scores("t", LRS, [0, 1, 2, 3], rng.uniform(size=(3, 4)), rng.uniform(size=(3, 4)))
    b = from_scores("b", LRS, [0, 1, 2, 3], rng.uniform(size=(3, 4)), rng.uniform(size=(3, 4)))
    got = compare_tuned(t, b, n_test=500)
    want = compare_paired(t.best_test, b.best_test, n_test=500)
    assert got.verdict == want.verdict and got.margin == want.margin
    np.testing.assert_array_equal(got.diffs, want.diffs)


def test_an_arm_tuned_more_often_than_the_other_is_refused():
    t = from_scores("distilled", LRS, [0, 1], np.ones((3, 2)), np.ones((3, 2)))
    b = from_scores("alone", LRS[:1], [0, 1], np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(
        ValueError, match=r"`baseline` must be given the treatment's tuning budget \(3 .*'alone' with 1"
    ):
        compare_tuned(t, b)


def test_arms_on_other_seeds_or_in_other_directions_are_refused():
    t = from_scores("t", LRS[:1], [0, 1], np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"`baseline` must be tuned on the treatment's seeds \[0, 1\]"):
        compare_tuned(t, from_scores("b", LRS[:1], [1, 0], np.ones((1, 2)), np.ones((1, 2))))
    loss = from_scores("b", LRS[:1], [0, 1], np.ones((1, 2)), np.ones((1, 2)), higher_is_better=False)
    with pytest.raises(ValueError, match="same direction"):
        compare_tuned(t, loss)
    with pytest.raises(TypeError, match="`treatment` must be a TunedArm"):
        compare_tuned([0.5, 0.6], t)
    with pytest.raises(TypeError, match="`baseline` must be a TunedArm"):
        compare_tuned(t, [0.5, 0.6])


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"configs": []}, ValueError, "`configs` must be at least one configuration"),
        ({"configs": {"lr": 1}}, TypeError, "`configs` must be a sequence of mappings"),
        ({"configs": [{"lr": 1}, 0.1]}, TypeError, "`configs` must be a sequence of mappings"),
        ({"seeds": []}, ValueError, "`seeds` must be a non-empty sequence"),
        ({"seeds": 3}, TypeError, "`seeds` must be a non-empty sequence"),
        ({"seeds": [1, 1]}, ValueError, r"`seeds` must be distinct seeds.*\[1, 1\]"),
        ({"seeds": [1.0]}, TypeError, r"`seeds\[i\]` must be an integer"),
        ({"val": [[0.5]]}, ValueError, r"`val` must be of shape \(1, 2\) \(configs, seeds\), not \(1, 1\)"),
        ({"test": [["a", "b"]]}, TypeError, "`test` must be an array of numbers"),
        ({"name": 3}, TypeError, "`name` must be a string"),
        ({"higher_is_better": 1}, TypeError, "`higher_is_better` must be a bool"),
    ],
)
def test_from_scores_rejects_bad_input_by_name(kwargs, error, pattern):
    args = {"name": "a", "configs": [{"lr": 1}], "seeds": [0, 1], "val": [[0.5, 0.5]], "test": [[0.5, 0.5]]}
    args |= kwargs
    with pytest.raises(error, match=pattern):
        name, configs, seeds = args.pop("name"), args.pop("configs"), args.pop("seeds")
        from_scores(name, configs, seeds, args.pop("val"), args.pop("test"), **args)


@pytest.mark.parametrize(
    ("train", "pattern"),
    [
        (lambda c, s: 0.5, r"`train` must be a callable returning a tuple"),
        (lambda c, s: (0.5, 0.5, 0.5), r"`train\(...\)\[2\]` must be the run's per-image test"),
        (lambda c, s: (0.5, 0.5, 0.5, 0.5), r"`train` must be a callable returning a tuple"),
        (lambda c, s: ("high", 0.5), r"`train\(...\)\[0\]` must be a number"),
        (lambda c, s: (0.5, True), r"`train\(...\)\[1\]` must be a number"),
    ],
)
def test_tune_rejects_a_train_function_that_does_not_return_two_scores(train, pattern):
    with pytest.raises(TypeError, match=pattern):
        tune("a", train, LRS, [0])


def test_tune_rejects_a_train_that_is_not_callable():
    with pytest.raises(TypeError, match="`train` must be a callable"):
        tune("a", "fit", LRS, [0])


def test_the_scores_of_an_arm_cannot_be_changed_after_the_choice():
    arm = from_scores("a", LRS, [0], [[0.1], [0.2], [0.3]], [[0.1], [0.2], [0.3]])
    with pytest.raises(ValueError, match="read-only"):
        arm.val[0, 0] = 1.0
    assert isinstance(arm, TunedArm)


@settings(max_examples=60, deadline=None)
@given(
    val=arrays(float, (4, 3), elements=st.floats(0, 1, allow_nan=False, width=32), unique=True),
    perm=st.permutations(range(4)),
)
def test_the_chosen_configuration_does_not_depend_on_the_grids_order(val, perm):
    test = val[::-1].copy()
    arm = from_scores("a", [{"i": i} for i in range(4)], [0, 1, 2], val, test)
    shuffled = from_scores("a", [{"i": i} for i in perm], [0, 1, 2], val[list(perm)], test[list(perm)])
    assert [c["i"] for c in arm.chosen_configs()] == [c["i"] for c in shuffled.chosen_configs()]
    np.testing.assert_array_equal(arm.best_val, val.max(axis=0))
    np.testing.assert_array_equal(arm.best_test, shuffled.best_test)


def test_the_record_lets_a_claim_test_redo_the_choice_and_catches_one_made_on_test(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "_current", None)
    chapter = book.start_chapter(
        "tuned", profile="quick", device="cpu", seeds=[0, 1, 2], results_dir=tmp_path
    )
    rng = np.random.default_rng(1)
    t = from_scores("t", LRS, [0, 1, 2], rng.uniform(size=(3, 3)), 0.8 + 0.01 * rng.uniform(size=(3, 3)))
    b = from_scores("b", LRS, [0, 1, 2], rng.uniform(size=(3, 3)), 0.7 + 0.01 * rng.uniform(size=(3, 3)))
    result = book.record_tuned_comparison("fair", t, b, "{:+.1%}", n_test=10_000, glue=False)
    run = json.loads(chapter.path.read_text())
    assert run["results"]["fair_treatment_choice"]["value"] == t.describe_choice()
    assert run["results"]["fair_verdict"]["value"] == result.verdict == "helps"
    assert tuned_comparison(run, "fair").verdict == "helps"

    # A chapter that reported the test-best configuration instead of the validation-best one is caught.
    picked_on_test = json.loads(chapter.path.read_text())
    best_on_test = np.asarray(t.test).max(axis=0)
    assert not np.array_equal(best_on_test, t.best_test)  # these grids do tell the two choices apart
    picked_on_test["results"]["fair"]["comparison"]["treatment"] = best_on_test.tolist()
    with pytest.raises(AssertionError):
        tuned_comparison(picked_on_test, "fair")
    tampered = json.loads(chapter.path.read_text())
    tampered["results"]["fair"]["tuning"]["treatment"]["chosen"] = [0, 0, 0]
    tampered["results"]["fair"]["tuning"]["treatment"]["val"] = [[0.0] * 3, [1.0] * 3, [0.0] * 3]
    with pytest.raises(AssertionError):
        tuned_comparison(tampered, "fair")


def test_record_tuned_comparison_refuses_an_unfair_pair_before_recording(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "_current", None)
    chapter = book.start_chapter("unfair", profile="quick", device="cpu", seeds=[0, 1], results_dir=tmp_path)
    t = from_scores("t", LRS, [0, 1], np.ones((3, 2)), np.ones((3, 2)))
    b = from_scores("b", LRS[:1], [0, 1], np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="tuning budget"):
        book.record_tuned_comparison("unfair", t, b, glue=False)
    assert "unfair" not in chapter.results


# --- refusals word for word (mutation testing, issue 25) ---------------------------------------------------


def _arm(**kwargs):
    args = {"name": "a", "configs": [{"lr": 1}], "seeds": [0, 1], "val": [[0.5, 0.5]], "test": [[0.5, 0.5]]}
    args |= kwargs
    return from_scores(
        args.pop("name"), args.pop("configs"), args.pop("seeds"), args.pop("val"), args.pop("test"), **args
    )


_TWO = {"configs": [{"lr": 1}, {"lr": 2}], "val": [[0.5, 0.5]] * 2, "test": [[0.5, 0.5]] * 2, "name": "b"}


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: _arm(configs=[]),
            ValueError,
            "`configs` must be at least one configuration. Received: configs=[]",
        ),
        (
            lambda: _arm(configs="ab"),
            TypeError,
            "`configs` must be a sequence of mappings (one configuration each). Received: configs='ab'",
        ),
        (
            lambda: _arm(configs=[{"lr": 1}, 0.1]),
            TypeError,
            "`configs` must be a sequence of mappings (one configuration each). "
            "Received: configs=[{'lr': 1}, 0.1]",
        ),
        (
            lambda: _arm(seeds=[]),
            ValueError,
            "`seeds` must be a non-empty sequence of integers. Received: seeds=[]",
        ),
        (
            lambda: _arm(seeds="01"),
            TypeError,
            "`seeds` must be a non-empty sequence of integers. Received: seeds='01'",
        ),
        (
            lambda: _arm(seeds=3),
            TypeError,
            "`seeds` must be a non-empty sequence of integers. Received: seeds=3",
        ),
        (
            lambda: _arm(seeds=[1, 1]),
            ValueError,
            "`seeds` must be distinct seeds (a repeated seed is the same run twice). Received: seeds=[1, 1]",
        ),
        (lambda: _arm(seeds=[1.0]), TypeError, "`seeds[i]` must be an integer. Received: seeds[i]=1.0"),
        (
            lambda: _arm(val=[[0.5]]),
            ValueError,
            "`val` must be of shape (1, 2) (configs, seeds), not (1, 1). Received: val=[[0.5]]",
        ),
        (
            lambda: _arm(test=[["a", "b"]]),
            TypeError,
            "`test` must be an array of numbers of shape (1, 2) (configs, seeds). "
            "Received: test=[['a', 'b']]",
        ),
        (lambda: _arm(name=3), TypeError, "`name` must be a string. Received: name=3"),
        (
            lambda: _arm(higher_is_better=1),
            TypeError,
            "`higher_is_better` must be a bool. Received: higher_is_better=1",
        ),
        (
            lambda: _arm(val=[[0.5, float("nan")]]),
            ValueError,
            "`val` must be a finite validation score for at least one configuration of 'a' on every seed. "
            "Received: val='seed 1: all 1 runs diverged'",
        ),
        (
            lambda: tune("a", lambda c, s: 0.5, LRS, [0]),
            TypeError,
            "`train` must be a callable returning a tuple (val_score, test_score[, test_correct]). "
            "Received: train=0.5",
        ),
        (
            lambda: tune("a", lambda c, s: ("high", 0.5), LRS, [0]),
            TypeError,
            "`train(...)[0]` must be a number (the score). Received: train(...)[0]='high'",
        ),
        (
            lambda: tune("a", lambda c, s: (0.5, None), LRS, [0]),
            TypeError,
            "`train(...)[1]` must be a number (the score). Received: train(...)[1]=None",
        ),
        (
            lambda: tune("a", lambda c, s: (0.5, True), LRS, [0]),
            TypeError,
            "`train(...)[1]` must be a number (the score). Received: train(...)[1]=True",
        ),
        (
            lambda: tune("a", "fit", LRS, [0]),
            TypeError,
            "`train` must be a callable train(config, seed) -> (val_score, test_score). "
            "Received: train='fit'",
        ),
        (
            lambda: compare_tuned(_arm(), _arm(seeds=[0, 2])),
            ValueError,
            "`baseline` must be tuned on the treatment's seeds [0, 1]. Received: baseline=[0, 2]",
        ),
        (
            lambda: compare_tuned(_arm(), _arm(**_TWO)),
            ValueError,
            "`baseline` must be given the treatment's tuning budget (1 configurations; an arm tuned more "
            "often wins by tuning alone). Received: baseline=\"'b' with 2\"",
        ),
        (
            lambda: compare_tuned(_arm(), _arm(higher_is_better=False)),
            ValueError,
            "`baseline` must be scored in the same direction as the treatment. Received: baseline=False",
        ),
        (
            lambda: compare_tuned(1, _arm()),
            TypeError,
            "`treatment` must be a TunedArm (from tune or from_scores). Received: treatment=1",
        ),
        (
            lambda: compare_tuned(_arm(), "x"),
            TypeError,
            "`baseline` must be a TunedArm (from tune or from_scores). Received: baseline='x'",
        ),
    ],
)
def test_tuning_refusals_word_for_word(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message


def test_tuning_defaults(capsys):
    """Higher is better, no progress bar, read-only scores, compare_paired's own defaults."""
    arm = TunedArm("a", ({"lr": 1},), (0,), np.array([[0.5]]), np.array([[0.5]]))
    assert arm.higher_is_better is True
    tuned = tune("quiet", lambda c, s: (c["lr"], -c["lr"]), LRS, [0])
    assert capsys.readouterr().err == ""  # no bar unless asked
    assert tuned.higher_is_better is True and tuned.chosen.tolist() == [2]  # the largest validation score
    with pytest.raises(ValueError, match="read-only"):
        tuned.test[0, 0] = 1.0
    rng = np.random.default_rng(1)
    t = from_scores("t", LRS, [0, 1, 2], rng.uniform(size=(3, 3)), rng.uniform(size=(3, 3)))
    b = from_scores("b", LRS, [0, 1, 2], rng.uniform(size=(3, 3)), rng.uniform(size=(3, 3)))
    assert t.higher_is_better is True
    got, want = compare_tuned(t, b), compare_paired(t.best_test, b.best_test, confidence=0.95, n_test=None)
    assert got.verdict == want.verdict and got.half_width == want.half_width
    assert got.sampling_error == want.sampling_error


def test_the_progress_bar_is_cleared_when_done_and_tune_passes_the_direction_on(capsys):
    tune("sgd", lambda c, s: (0.5, 0.5), LRS, [0, 1], progress=True)
    err = capsys.readouterr().err
    assert "sgd" in err and not err.endswith("\n")  # leave=False: the finished bar is erased, not kept
    losses = tune("l", lambda c, s: (c["lr"], 0.0), LRS, [0], higher_is_better=False)
    assert losses.higher_is_better is False and losses.chosen.tolist() == [0]


def test_describe_choice_writes_floats_with_g_and_everything_else_as_is():
    arm = from_scores("a", [{"wd": 1.0, "opt": "sgd", "T": 4}], [0], [[1.0]], [[1.0]])
    assert arm.describe_choice() == "wd=1, opt=sgd, T=4 in 1 of 1 seeds"


def test_compare_tuned_passes_confidence_and_outcomes_on():
    rng = np.random.default_rng(2)
    t_correct, b_correct = rng.integers(0, 2, (3, 50)), rng.integers(0, 2, (3, 50))
    t = from_scores("t", LRS[:1], [0, 1, 2], [[1.0] * 3], [t_correct.mean(axis=1)])
    b = from_scores("b", LRS[:1], [0, 1, 2], [[1.0] * 3], [b_correct.mean(axis=1)])
    outcomes = PairedOutcomes.from_correct(t_correct, b_correct)
    got = compare_tuned(t, b, confidence=0.8, outcomes=outcomes)
    want = compare_paired(t.best_test, b.best_test, confidence=0.8, outcomes=outcomes)
    assert got.half_width == want.half_width != compare_paired(t.best_test, b.best_test).half_width
    assert (
        got.sampling_error == want.sampling_error != compare_paired(t.best_test, b.best_test).sampling_error
    )


def test_configs_that_are_not_a_sequence_are_refused_by_name():
    with pytest.raises(TypeError) as raised:
        _arm(configs=3)
    assert (
        str(raised.value)
        == "`configs` must be a sequence of mappings (one configuration each). Received: configs=3"
    )


def test_compare_tuned_passes_the_direction_and_n_test_on():
    """Mutation survivors of compare_tuned (higher_is_better and n_test dropped, n_test set to None): with
    losses, lower is better; with equal per-seed differences the t interval is 0, so only n_test's sampling
    error can make the verdict unclear."""
    configs, seeds = [{"lr": 0.1}, {"lr": 1.0}], [0, 1, 2]
    val = [[0.5, 0.5, 0.5], [0.6, 0.6, 0.6]]  # losses: the first configuration wins on every seed
    low = from_scores("low", configs, seeds, val, [[0.30, 0.31, 0.32], [9, 9, 9]], higher_is_better=False)
    high = from_scores("high", configs, seeds, val, [[0.40, 0.41, 0.42], [9, 9, 9]], higher_is_better=False)
    result = compare_tuned(low, high)
    assert result.verdict == "helps" and result.higher_is_better is False  # a lower loss is better
    assert compare_tuned(high, low).verdict == "hurts"
    acc = dict(configs=configs, seeds=seeds, val=[[0.8] * 3, [0.7] * 3])
    treat = from_scores("t", **acc, test=[[0.81, 0.82, 0.83], [0.1] * 3])
    base = from_scores("b", **acc, test=[[0.80, 0.81, 0.82], [0.1] * 3])
    assert compare_tuned(treat, base).verdict == "helps"  # +1 point on every seed, no test-set error given
    small = compare_tuned(treat, base, n_test=100)
    expected = compare_paired(treat.best_test, base.best_test, n_test=100)
    assert small.sampling_error == expected.sampling_error > 0
    assert small.verdict == "no clear difference"  # 100 test images cannot resolve one point


# --- per-image correctness: the paired sampling error through a tuned grid (issue 24) ----------------------


def _correct_grid(rng, n_configs, n_seeds, n_test, p):
    """Random per-image correctness, (configs, seeds, n_test), and its means (the test accuracies)."""
    correct = rng.uniform(size=(n_configs, n_seeds, n_test)) < p
    return correct, correct.mean(axis=2)


def test_tune_keeps_each_runs_correctness_and_compare_tuned_uses_the_chosen_runs_paired_error():
    rng = np.random.default_rng(3)
    n_test, seeds = 400, [0, 1, 2]
    base_right = rng.uniform(size=(3, 3, n_test)) < 0.8  # (config, seed, image)
    # The treatment gets the baseline's images right and, in addition, a few more: the arms agree on
    # almost every image, so the paired error is far below the binomial one.
    flips = rng.uniform(size=base_right.shape) < 0.03
    treat_right = base_right | flips

    def arm(right):
        def train(config, seed):
            c, s = LRS.index(config), seeds.index(seed)
            val = [0.5, 0.9, 0.7][c] + 0.01 * s  # the middle configuration is chosen on every seed
            return val, float(right[c, s].mean()), right[c, s]

        return train

    t, b = tune("t", arm(treat_right), LRS, seeds), tune("b", arm(base_right), LRS, seeds)
    assert t.correct.shape == (3, 3, n_test) and t.correct.dtype == bool
    np.testing.assert_array_equal(t.correct, treat_right)
    np.testing.assert_array_equal(t.chosen_correct, treat_right[1])  # config 1 on every seed
    with pytest.raises(ValueError, match="read-only"):
        t.correct[0, 0, 0] = False
    got = compare_tuned(t, b)
    want = PairedOutcomes.from_correct(treat_right[1], base_right[1])
    assert got.sampling_error == want.sampling_error
    plain = [from_scores(a.name, LRS, seeds, a.val, a.test) for a in (t, b)]
    binomial = compare_tuned(*plain, n_test=n_test)
    assert got.sampling_error < binomial.sampling_error / 3
    assert got.mean == binomial.mean and got.half_width == binomial.half_width


def test_the_paired_error_can_make_a_difference_clear_that_the_binomial_one_hides():
    """Two arms that get the same 400 images right but 6 (1.5 points): the binomial error of an 80%
    accuracy on 400 images is 2 points, so n_test alone calls it unclear; paired, the 6 images are a
    clear gain (the per-seed differences are equal, so the t interval is 0)."""
    base = np.zeros((1, 3, 400), bool)
    base[..., :320] = True
    treat = base.copy()
    treat[..., 320:326] = True
    t = from_scores("t", LRS[:1], [0, 1, 2], [[1.0] * 3], treat.mean(axis=2), correct=treat)
    b = from_scores("b", LRS[:1], [0, 1, 2], [[1.0] * 3], base.mean(axis=2), correct=base)
    assert compare_tuned(t, b).verdict == "helps"
    plain = [from_scores(a.name, a.configs, a.seeds, a.val, a.test) for a in (t, b)]
    assert compare_tuned(*plain, n_test=400).verdict == "no clear difference"
    # n_test may still be given with per-image outcomes; it must then agree with them.
    assert compare_tuned(t, b, n_test=400).verdict == "helps"
    with pytest.raises(ValueError, match="`outcomes` must be over n_test = 399 images"):
        compare_tuned(t, b, n_test=399)


def test_record_tuned_comparison_records_the_outcomes_it_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "_current", None)
    chapter = book.start_chapter(
        "paired", profile="quick", device="cpu", seeds=[0, 1, 2], results_dir=tmp_path
    )
    rng = np.random.default_rng(4)
    tc, tt = _correct_grid(rng, 3, 3, 300, 0.85)
    bc, bt = _correct_grid(rng, 3, 3, 300, 0.75)
    val = rng.uniform(size=(3, 3))
    t = from_scores("t", LRS, [0, 1, 2], val, tt, correct=tc)
    b = from_scores("b", LRS, [0, 1, 2], val, bt, correct=bc)
    result = book.record_tuned_comparison("paired", t, b, "{:+.1%}", glue=False)
    run = json.loads(chapter.path.read_text())
    recorded = run["results"]["paired"]["comparison"]["outcomes"]
    assert recorded == PairedOutcomes.from_correct(t.chosen_correct, b.chosen_correct).to_dict()
    assert result.sampling_error == PairedOutcomes(**recorded).sampling_error > 0
    assert tuned_comparison(run, "paired").verdict == result.verdict == "helps"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: from_scores("a", LRS[:1], [0], [[0.5]], [[0.5]], correct=[[[True, False, True]]]),
            ValueError,
            "`test` must be the means of `correct` (the accuracies of the same runs on the same images). "
            "Received: test='0.5 for config 0, seed index 0, whose correctness has mean 0.666667'",
        ),
        (
            lambda: from_scores("a", LRS[:1], [0, 1], [[0.5, 0.5]], [[0.5, 0.5]], correct=[[True, False]]),
            ValueError,
            "`correct` must be of shape (1, 2, 'n_test') (configs, seeds, n_test >= 2). "
            "Received: correct='shape (1, 2)'",
        ),
        (
            lambda: from_scores("a", LRS[:1], [0], [[0.5]], [[1.0]], correct=[[[True]]]),
            ValueError,
            "`correct` must be of shape (1, 1, 'n_test') (configs, seeds, n_test >= 2). "
            "Received: correct='shape (1, 1, 1)'",
        ),
        (
            lambda: from_scores("a", LRS[:1], [0], [[0.5]], [[0.5]], correct=[[[0.5, 0.5]]]),
            TypeError,
            "`correct` must be booleans (or 0/1): whether each run got each test image right. "
            "Received: correct=[[[0.5, 0.5]]]",
        ),
        (
            lambda: from_scores("a", LRS[:1], [0], [[0.5]], [[0.5]], correct=[[["y", "n"]]]),
            TypeError,
            "`correct` must be booleans (or 0/1): whether each run got each test image right. "
            "Received: correct=[[['y', 'n']]]",
        ),
        (
            lambda: from_scores(
                "a", LRS[:1], [0], [[0.5]], [[0.5]], correct=[[[True, False]]], higher_is_better=False
            ),
            ValueError,
            "`correct` must be given only for accuracies (higher_is_better=True). "
            "Received: correct='per-image correctness'",
        ),
        (
            lambda: tune(
                "a", lambda c, s: (0.5, 0.5, [True, False]) if c["lr"] < 0.005 else (0.5, 0.5), LRS, [0]
            ),
            ValueError,
            "`train` must be returning the same form in every run: with test_correct in all or in none. "
            "Received: train='2 values for lr=0.01 on seed 0'",
        ),
        (
            lambda: tune("a", lambda c, s: (0.5, 0.5, [True, False] * (1 + (c["lr"] > 0.005))), LRS, [0]),
            ValueError,
            "`train` must be returning test_correct for the same test images in every run. "
            "Received: train='shapes [(2,), (4,)]'",
        ),
        (
            lambda: compare_tuned(_arm(), _arm(test=[[0.5, 0.5]], correct=[[[True, False]] * 2])),
            ValueError,
            "`treatment` must be carrying per-image test correctness, as the baseline does (or neither "
            "should). Received: treatment='a'",
        ),
        (
            lambda: compare_tuned(_arm(correct=[[[True, False]] * 2]), _arm(name="b")),
            ValueError,
            "`baseline` must be carrying per-image test correctness, as the treatment does (or neither "
            "should). Received: baseline='b'",
        ),
        (
            lambda: compare_tuned(
                _arm(correct=[[[True, False]] * 2]), _arm(correct=[[[True, False, True, False]] * 2])
            ),
            ValueError,
            "`baseline` must be scored on the treatment's 2 test images. Received: baseline='4 images'",
        ),
        (
            lambda: compare_tuned(
                _arm(correct=[[[True, False]] * 2]),
                _arm(correct=[[[False, True]] * 2]),
                outcomes=PairedOutcomes((0, 0, 2, 0, 0), 2),
            ),
            ValueError,
            "`outcomes` must be left out: both arms carry their per-image correctness, which gives them. "
            "Received: outcomes=PairedOutcomes(counts=(0, 0, 2, 0, 0), n_seeds=2)",
        ),
    ],
)
def test_per_image_correctness_refusals_word_for_word(call, error, message):
    with pytest.raises(error) as raised:
        call()
    assert str(raised.value) == message


def test_paired_outcomes_is_none_without_correctness_and_refuses_what_is_not_an_arm():
    from dltricks.tuning import paired_outcomes

    assert paired_outcomes(_arm(), _arm()) is None
    with pytest.raises(TypeError, match="`treatment` must be a TunedArm"):
        paired_outcomes(None, _arm())
    with pytest.raises(TypeError, match="`baseline` must be a TunedArm"):
        paired_outcomes(_arm(), None)
    a, b = _arm(correct=[[[True, False]] * 2]), _arm(correct=[[[True, True]] * 2], test=[[1.0, 1.0]])
    assert paired_outcomes(a, b) == PairedOutcomes.from_correct([[True, False]] * 2, [[True, True]] * 2)


def test_join_seeds_puts_one_seed_grids_side_by_side_with_their_correctness():
    from dltricks.tuning import join_seeds

    rng = np.random.default_rng(5)
    parts = []
    for seed in (7, 3, 9):
        right = rng.uniform(size=(3, 1, 60)) < 0.7
        parts.append(
            from_scores("arm", LRS, [seed], rng.uniform(size=(3, 1)), right.mean(axis=2), correct=right)
        )
    joined = join_seeds(parts)
    assert joined.seeds == (7, 3, 9) and joined.name == "arm" and joined.configs == parts[0].configs
    np.testing.assert_array_equal(joined.val, np.hstack([p.val for p in parts]))
    np.testing.assert_array_equal(joined.test, np.hstack([p.test for p in parts]))
    np.testing.assert_array_equal(joined.correct, np.concatenate([p.correct for p in parts], axis=1))
    np.testing.assert_array_equal(joined.best_test, [p.best_test[0] for p in parts])
    assert join_seeds(parts, name="other").name == "other"
    plain = join_seeds([from_scores("l", LRS, [s], p.val, p.test, higher_is_better=False) for s, p in
                        zip((1, 2, 3), parts)])  # fmt: skip
    assert plain.correct is None and plain.higher_is_better is False and plain.seeds == (1, 2, 3)


@pytest.mark.parametrize(
    ("arms", "error", "message"),
    [
        ([], TypeError, "`arms` must be a non-empty sequence of TunedArms. Received: arms=[]"),
        ("ab", TypeError, "`arms` must be a non-empty sequence of TunedArms. Received: arms='ab'"),
        (
            [1],
            TypeError,
            "`arms[i]` must be a TunedArm (from tune or from_scores). Received: arms[i]=1",
        ),
        (
            [
                _arm(seeds=[0], val=[[0.5]], test=[[0.5]]),
                _arm(seeds=[1], val=[[0.5]], test=[[0.5]], configs=[{"lr": 2}]),
            ],
            ValueError,
            "`arms` must be tuned on one grid (1 configurations of 'a'). "
            "Received: arms=\"'a' with [{'lr': 2}]\"",
        ),
        (
            [
                _arm(seeds=[0], val=[[0.5]], test=[[0.5]]),
                _arm(seeds=[1], val=[[0.5]], test=[[0.5]], higher_is_better=False),
            ],
            ValueError,
            "`arms` must be scored in one direction. Received: arms=\"'a' with higher_is_better=False\"",
        ),
        (
            [_arm(seeds=[0], val=[[0.5]], test=[[0.5]]), _arm(seeds=[0], val=[[0.5]], test=[[0.5]])],
            ValueError,
            "`seeds` must be distinct seeds (a repeated seed is the same run twice). Received: seeds=[0, 0]",
        ),
        (
            [
                _arm(seeds=[0], val=[[0.5]], test=[[0.5]], correct=[[[True, False]]]),
                _arm(seeds=[1], val=[[0.5]], test=[[0.5]], name="b"),
            ],
            ValueError,
            "`arms` must be all carrying per-image test correctness, or none. Received: arms=['a', 'b']",
        ),
        (
            [
                _arm(seeds=[0], val=[[0.5]], test=[[0.5]], correct=[[[True, False]]]),
                _arm(seeds=[1], val=[[0.5]], test=[[0.5]], correct=[[[True, False, True, False]]]),
            ],
            ValueError,
            "`arms` must be scored on the same number of test images. Received: arms='sizes [2, 4]'",
        ),
    ],
)
def test_join_seeds_refusals_word_for_word(arms, error, message):
    from dltricks.tuning import join_seeds

    with pytest.raises(error) as raised:
        join_seeds(arms)
    assert str(raised.value) == message


def test_correct_refusals_and_acceptances_the_mutants_found():
    """Mutation survivors of from_scores(correct=...) and tune's third value (issue 25)."""
    # A ragged array cannot be made: refused as a TypeError naming `correct`.
    with pytest.raises(TypeError) as raised:
        from_scores("a", LRS[:1], [0, 1], [[0.5, 0.5]], [[0.5, 0.5]], correct=[[[True], [True, False]]])
    assert str(raised.value) == (
        "`correct` must be an array of booleans of shape (configs, seeds, n_test). "
        "Received: correct=[[[True], [True, False]]]"
    )
    # 0/1 integers are accepted (and kept as booleans), zeros included.
    arm = from_scores("a", LRS[:1], [0], [[0.5]], [[0.25]], correct=[[[0, 1, 0, 0]]])
    assert arm.correct.dtype == bool and arm.correct.tolist() == [[[False, True, False, False]]]
    # The refused cell is the one whose test score is furthest from its correctness' mean, named by config and
    # seed index: here config 1 on seed index 0 (not the cell with the largest scores).
    right = np.ones((2, 3, 4), bool)
    test = right.mean(axis=2).copy()
    test[1, 0] = 0.5
    with pytest.raises(ValueError) as raised:
        from_scores("a", LRS[:2], [0, 1, 2], np.ones((2, 3)), test, correct=right)
    assert str(raised.value).endswith(
        "Received: test='0.5 for config 1, seed index 0, whose correctness has mean 1'"
    )
    # A difference of exactly 1e-9 is within the tolerance (the bound is inclusive).
    assert from_scores("a", LRS[:1], [0], [[0.5]], [[1e-9]], correct=[[[False, False]]]).test[0, 0] == 1e-9
    # tune's third value must be a vector; the message shows what was returned.
    with pytest.raises(TypeError) as raised:
        tune("a", lambda c, s: (0.5, 0.5, 0.5), LRS, [0])
    assert str(raised.value) == (
        "`train(...)[2]` must be the run's per-image test correctness, a vector of shape (n_test,). "
        "Received: train(...)[2]=0.5"
    )
    # tune passes higher_is_better on with per-image correctness too: losses cannot carry it.
    with pytest.raises(ValueError, match="given only for accuracies"):
        tune("l", lambda c, s: (0.5, 0.5, [True, False]), LRS, [0], higher_is_better=False)


def test_correct_as_an_object_array_is_refused_even_of_zeros_and_ones():
    """Mutation survivor (issue 25): only boolean or numeric arrays are read."""
    with pytest.raises(TypeError, match="`correct` must be booleans"):
        from_scores("a", LRS[:1], [0], [[0.5]], [[0.5]], correct=np.array([[[0, 1]]], dtype=object))
