r"""Fair comparisons: every arm gets the same tuning budget, chosen on validation data, reported on test.

A comparison between two training recipes is decided as often by how well each was tuned as by the recipes
themselves: a baseline run at one untuned learning rate against a treatment that is the best of seven
configurations measures the tuning, not the treatment. This module makes the fair version the easy one.

The protocol, for each arm and each seed :math:`s`:

1. train every configuration :math:`c` of the arm's grid (the same number of configurations in every arm:
   the *budget*), scoring it on a validation split, :math:`v_{c,s}`, and on the test set, :math:`t_{c,s}`;
2. choose :math:`\hat c_s = \arg\max_c v_{c,s}` (``argmin`` for losses): the configuration a practitioner
   would have shipped, seen only through validation data. Ties go to the first configuration in the grid;
   a run whose validation score is not finite (it diverged) is never chosen;
3. report :math:`t_{\hat c_s, s}`.

When ``train`` also returns which test images the run got right (a third element, a boolean vector), the arm
keeps it, and :func:`compare_tuned` compares two arms with the *paired* sampling error of the chosen runs
(:class:`dltricks.compare.PairedOutcomes`) instead of the binomial stand-in of ``n_test``.

Choosing per seed repeats the whole procedure (tune, then train) on every seed, so the spread over seeds
includes the noise of the choice itself, as it would for a reader who reruns the recipe. The two arms'
reported test scores are then compared pair by pair with :func:`dltricks.compare.compare_paired`.

Same *initialization* is the caller's part: build each seed's model from the same seed in every arm (e.g.
``torch.manual_seed(seed)`` right before constructing it, with the same initializer), so that the arms differ
only in what is being compared.

References:
    Bouthillier et al. (2021), "Accounting for variance in machine learning benchmarks", MLSys: compare
    procedures, tuning included, over repeated runs. Lipton & Steinhardt (2019), "Troubling trends in machine
    learning scholarship", Queue 17(1): gains that vanish once the baseline is tuned as well.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dltricks._checks import check_int, check_type, fail
from dltricks.compare import PairedComparison, PairedOutcomes, compare_paired


@dataclass(frozen=True)
class TunedArm:
    """One arm of a comparison: its grid of configurations, their scores per seed, and the choice.

    Attributes:
        name: what the arm is, e.g. ``"fine-tune everything"``.
        configs: the configurations tried, each a mapping of hyperparameter names to values; their number is
            the arm's tuning budget.
        seeds: the seeds, one column each.
        val: validation scores, shape ``(n_configs, n_seeds)``; NaN marks a run that diverged.
        test: test scores, shape ``(n_configs, n_seeds)``.
        higher_is_better: ``True`` for accuracies, ``False`` for losses and errors.
        correct: optional; whether each run got each test image right, booleans of shape
            ``(n_configs, n_seeds, n_test)``, with ``test`` their means (accuracies). ``None`` when the
            runs did not report it.
    """

    name: str
    configs: tuple[Mapping[str, Any], ...]
    seeds: tuple[int, ...]
    val: np.ndarray
    test: np.ndarray
    higher_is_better: bool = True
    correct: np.ndarray | None = None

    @property
    def budget(self) -> int:
        """The number of configurations tried on every seed."""
        return len(self.configs)

    @property
    def chosen(self) -> np.ndarray:
        """Per seed, the index of the configuration with the best validation score, shape ``(n_seeds,)``."""
        return _choose(self.val, self.higher_is_better, self.name, self.seeds)

    @property
    def best_val(self) -> np.ndarray:
        """The chosen configurations' validation scores, shape ``(n_seeds,)``."""
        return self.val[self.chosen, np.arange(len(self.seeds))]

    @property
    def best_test(self) -> np.ndarray:
        """The chosen configurations' test scores, shape ``(n_seeds,)``: what the arm reports."""
        return self.test[self.chosen, np.arange(len(self.seeds))]

    @property
    def chosen_correct(self) -> np.ndarray | None:
        """The chosen runs' per-image test correctness, shape ``(n_seeds, n_test)``; ``None`` without it."""
        if self.correct is None:
            return None
        return self.correct[self.chosen, np.arange(len(self.seeds))]

    def chosen_configs(self) -> list[Mapping[str, Any]]:
        """The configuration chosen on each seed, in seed order."""
        return [self.configs[i] for i in self.chosen]

    def describe_choice(self) -> str:
        """One phrase for the prose, e.g. ``"lr=0.003 in 2 of 3 seeds, lr=0.01 in 1"``."""
        counts = Counter(int(i) for i in self.chosen)
        order = sorted(counts, key=lambda i: (-counts[i], i))
        parts = [f"{_config_text(self.configs[i])} in {counts[i]}" for i in order]
        parts[0] += f" of {len(self.seeds)} seeds"
        return ", ".join(parts)


def tune(
    name: str,
    train: Callable[[Mapping[str, Any], int], tuple[Any, ...]],
    configs: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    *,
    higher_is_better: bool = True,
    progress: bool = False,
) -> TunedArm:
    """Train every configuration on every seed, scoring each on validation and on test.

    Args:
        name: what the arm is, for messages and the prose.
        train: ``train(config, seed) -> (val_score, test_score)``, or ``(val_score, test_score,
            test_correct)`` with ``test_correct`` the run's per-image correctness on the test set (booleans,
            shape ``(n_test,)``, the same images in the same order in every run; ``test_score`` its mean),
            so that comparisons use the paired sampling error. Every run returns the same form. It must
            choose nothing from the test set (early stopping, too, watches validation only). A diverged run
            returns a non-finite validation score (``float("nan")``) rather than raising, so the grid can go
            on.
        configs: the configurations, e.g. ``[{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-2}]``; at least one.
        seeds: the seeds; at least one, no repeats.
        higher_is_better: ``True`` for accuracies, ``False`` for losses and errors.
        progress: show a tqdm progress bar over the ``len(configs) * len(seeds)`` runs.

    Returns:
        A :class:`TunedArm`; its ``best_test`` are the per-seed test scores of the configuration chosen on
        validation.

    Raises:
        TypeError: if ``train`` is not callable, a configuration is not a mapping, ``higher_is_better`` is not
            a bool, or ``train`` does not return two numbers (and, optionally, the per-image correctness).
        ValueError: if some runs return the per-image correctness and others do not; as
            :func:`from_scores`.
    """
    if not callable(train):
        fail("train", "a callable train(config, seed) -> (val_score, test_score)", train, TypeError)
    configs_t, seeds_t = _check_grid(configs, seeds)
    val = np.full((len(configs_t), len(seeds_t)), np.nan)
    test = np.full_like(val, np.nan)
    correct: list[list[Any]] = [[None] * len(seeds_t) for _ in configs_t]
    forms = set()
    runs = [(c, s) for s in range(len(seeds_t)) for c in range(len(configs_t))]
    if progress:
        from tqdm.auto import tqdm

        runs = tqdm(runs, desc=name, leave=False)
    for c, s in runs:
        out = train(configs_t[c], seeds_t[s])
        if not (isinstance(out, tuple) and len(out) in (2, 3)):
            fail("train", "a callable returning a tuple (val_score, test_score[, test_correct])", out,
                 TypeError)  # fmt: skip
        forms.add(len(out))
        if len(forms) > 1:
            fail("train", "returning the same form in every run: with test_correct in all or in none",
                 f"{len(out)} values for {_config_text(configs_t[c])} on seed {seeds_t[s]}")  # fmt: skip
        val[c, s], test[c, s] = (_score("train(...)[0]", out[0]), _score("train(...)[1]", out[1]))
        if len(out) == 3:
            correct[c][s] = np.asarray(out[2])
            if correct[c][s].ndim != 1:
                fail("train(...)[2]", "the run's per-image test correctness, a vector of shape (n_test,)",
                     out[2], TypeError)  # fmt: skip
    if forms == {3}:
        lengths = {v.shape for row in correct for v in row}
        if len(lengths) > 1:
            fail("train", "returning test_correct for the same test images in every run",
                 f"shapes {sorted(lengths)}")  # fmt: skip
        return from_scores(name, configs_t, seeds_t, val, test, higher_is_better=higher_is_better,
                           correct=np.stack([np.stack(row) for row in correct]))  # fmt: skip
    return from_scores(name, configs_t, seeds_t, val, test, higher_is_better=higher_is_better)


def from_scores(
    name: str,
    configs: Sequence[Mapping[str, Any]],
    seeds: Sequence[int],
    val: Sequence[Sequence[float]] | np.ndarray,
    test: Sequence[Sequence[float]] | np.ndarray,
    *,
    higher_is_better: bool = True,
    correct: Any = None,
) -> TunedArm:
    """A :class:`TunedArm` from scores computed elsewhere (a grid the chapter already ran).

    Args:
        name: what the arm is.
        configs: the configurations, one row of ``val`` and ``test`` each.
        seeds: the seeds, one column each.
        val: validation scores, shape ``(len(configs), len(seeds))``; NaN for a diverged run.
        test: test scores, same shape.
        higher_is_better: ``True`` for accuracies, ``False`` for losses and errors.
        correct: optional per-image test correctness of every run, booleans (or 0/1) of shape
            ``(len(configs), len(seeds), n_test)``; ``test`` must be their means (accuracies).

    Raises:
        TypeError: if ``name`` is not a string, a configuration is not a mapping, ``higher_is_better`` is
            not a bool, or ``correct`` is not an array of booleans.
        ValueError: if there are no configurations or seeds, a seed repeats, the score arrays have another
            shape, on some seed no configuration has a finite validation score, or ``correct`` has another
            shape or means other than ``test``.
    """
    check_type("name", name, str, "a string")
    check_type("higher_is_better", higher_is_better, bool, "a bool")
    configs_t, seeds_t = _check_grid(configs, seeds)
    shape = (len(configs_t), len(seeds_t))
    arrays = []
    for label, scores in (("val", val), ("test", test)):
        try:
            arr = np.array(scores, dtype=float)
        except (TypeError, ValueError):
            fail(label, f"an array of numbers of shape {shape} (configs, seeds)", scores, TypeError)
        if arr.shape != shape:
            fail(label, f"of shape {shape} (configs, seeds), not {arr.shape}", scores)
        arr.setflags(write=False)
        arrays.append(arr)
    right = None if correct is None else _check_correct(correct, arrays[1], higher_is_better)
    arm = TunedArm(name, configs_t, seeds_t, arrays[0], arrays[1], higher_is_better, right)
    arm.chosen  # noqa: B018 -- fail now, not later, if a seed has nothing to choose
    return arm


def join_seeds(arms: Sequence[TunedArm], name: str | None = None) -> TunedArm:
    """One arm from arms tuned on different seeds with the same grid (e.g. one :func:`tune` call per seed).

    Args:
        arms: :class:`TunedArm` s with the same configurations and direction, on disjoint seeds; all with
            their per-image correctness (on the same number of test images) or all without.
        name: the joined arm's name; default: the first arm's.

    Returns:
        A :class:`TunedArm` over the arms' seeds in the order given, with their grids side by side.

    Raises:
        TypeError: if ``arms`` is not a non-empty sequence of :class:`TunedArm` s.
        ValueError: if the arms' configurations or directions differ, a seed repeats, or some carry
            correctness and others do not (or on another number of images).
    """
    if isinstance(arms, (str, bytes)) or not isinstance(arms, Sequence) or not arms:
        fail("arms", "a non-empty sequence of TunedArms", arms, TypeError)
    for arm in arms:
        check_type("arms[i]", arm, TunedArm, "a TunedArm (from tune or from_scores)")
    first = arms[0]
    for arm in arms[1:]:
        if arm.configs != first.configs:
            fail("arms", f"tuned on one grid ({first.budget} configurations of {first.name!r})",
                 f"{arm.name!r} with {[dict(c) for c in arm.configs]}")  # fmt: skip
        if arm.higher_is_better != first.higher_is_better:
            fail(
                "arms",
                "scored in one direction",
                f"{arm.name!r} with higher_is_better={arm.higher_is_better}",
            )
    if len({a.correct is None for a in arms}) > 1:
        fail("arms", "all carrying per-image test correctness, or none", [a.name for a in arms])
    correct = None
    if first.correct is not None:
        sizes = sorted({a.correct.shape[2] for a in arms if a.correct is not None})
        if len(sizes) > 1:
            fail("arms", "scored on the same number of test images", f"sizes {sizes}")
        correct = np.concatenate([a.correct for a in arms if a.correct is not None], axis=1)
    return from_scores(
        first.name if name is None else name,
        first.configs,
        [s for a in arms for s in a.seeds],
        np.hstack([a.val for a in arms]),
        np.hstack([a.test for a in arms]),
        higher_is_better=first.higher_is_better,
        correct=correct,
    )


def compare_tuned(
    treatment: TunedArm,
    baseline: TunedArm,
    *,
    n_test: int | None = None,
    confidence: float = 0.95,
    outcomes: PairedOutcomes | None = None,
) -> PairedComparison:
    """Compare two tuned arms on their chosen configurations' test scores, paired by seed.

    Args:
        treatment: the arm with the technique.
        baseline: the arm without it; the same seeds in the same order and the same budget.
        n_test, confidence: as in :func:`dltricks.compare.compare_paired`.
        outcomes: as in :func:`dltricks.compare.compare_paired`, for the configurations each arm chose.
            Leave it out when both arms carry their per-image correctness (``correct``): it is then
            computed from the chosen runs (:func:`paired_outcomes`).

    Returns:
        The :class:`~dltricks.compare.PairedComparison` of ``treatment.best_test`` against
        ``baseline.best_test``.

    Raises:
        TypeError: if either arm is not a :class:`TunedArm`.
        ValueError: if the arms were tuned on different seeds, with different budgets, or with opposite
            ``higher_is_better``; as :func:`paired_outcomes`; if ``outcomes`` is given although both arms
            carry their correctness; and as :func:`~dltricks.compare.compare_paired`.
    """
    check_type("treatment", treatment, TunedArm, "a TunedArm (from tune or from_scores)")
    check_type("baseline", baseline, TunedArm, "a TunedArm (from tune or from_scores)")
    if baseline.seeds != treatment.seeds:
        fail("baseline", f"tuned on the treatment's seeds {list(treatment.seeds)}", list(baseline.seeds))
    if baseline.budget != treatment.budget:
        fail(
            "baseline",
            f"given the treatment's tuning budget ({treatment.budget} configurations; "
            "an arm tuned more often wins by tuning alone)",
            f"{baseline.name!r} with {baseline.budget}",
        )
    if baseline.higher_is_better != treatment.higher_is_better:
        fail("baseline", "scored in the same direction as the treatment", baseline.higher_is_better)
    own = paired_outcomes(treatment, baseline)
    if own is not None:
        if outcomes is not None:
            fail("outcomes", "left out: both arms carry their per-image correctness, which gives them",
                 outcomes)  # fmt: skip
        outcomes = own
    return compare_paired(
        treatment.best_test,
        baseline.best_test,
        higher_is_better=treatment.higher_is_better,
        n_test=n_test,
        confidence=confidence,
        outcomes=outcomes,
    )


def paired_outcomes(treatment: TunedArm, baseline: TunedArm) -> PairedOutcomes | None:
    """The per-image outcomes of the runs each arm chose, seed by seed, for the paired sampling error.

    Returns:
        :meth:`PairedOutcomes.from_correct` of ``treatment.chosen_correct`` and ``baseline.chosen_correct``;
        ``None`` when neither arm carries its correctness.

    Raises:
        TypeError: if either arm is not a :class:`TunedArm`.
        ValueError: if only one arm carries its correctness, or the two were scored on different numbers
            of test images.
    """
    check_type("treatment", treatment, TunedArm, "a TunedArm (from tune or from_scores)")
    check_type("baseline", baseline, TunedArm, "a TunedArm (from tune or from_scores)")
    t, b = treatment.chosen_correct, baseline.chosen_correct
    if t is None and b is None:
        return None
    if t is None:
        fail("treatment", "carrying per-image test correctness, as the baseline does (or neither should)",
             treatment.name)  # fmt: skip
    if b is None:
        fail("baseline", "carrying per-image test correctness, as the treatment does (or neither should)",
             baseline.name)  # fmt: skip
    assert t is not None and b is not None  # fail raised above otherwise
    if t.shape != b.shape:
        fail("baseline", f"scored on the treatment's {t.shape[1]} test images", f"{b.shape[1]} images")
    return PairedOutcomes.from_correct(t, b)


def _check_correct(correct: Any, test: np.ndarray, higher_is_better: bool) -> np.ndarray:
    try:
        arr = np.array(correct)
    except (TypeError, ValueError):
        fail("correct", "an array of booleans of shape (configs, seeds, n_test)", correct, TypeError)
    if arr.dtype != bool and not (np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all()):
        fail("correct", "booleans (or 0/1): whether each run got each test image right", correct, TypeError)
    if arr.ndim != 3 or arr.shape[:2] != test.shape or arr.shape[2] < 2:
        fail("correct", f"of shape {test.shape + ('n_test',)} (configs, seeds, n_test >= 2)",
             f"shape {arr.shape}")  # fmt: skip
    if not higher_is_better:
        fail("correct", "given only for accuracies (higher_is_better=True)", "per-image correctness")
    means = arr.mean(axis=2)
    worst = np.unravel_index(np.argmax(np.abs(means - test)), test.shape)
    if abs(means[worst] - test[worst]) > 1e-9:
        fail("test", "the means of `correct` (the accuracies of the same runs on the same images)",
             f"{test[worst]:.6g} for config {worst[0]}, seed index {worst[1]}, whose correctness has "
             f"mean {means[worst]:.6g}")  # fmt: skip
    arr = arr.astype(bool)
    arr.setflags(write=False)
    return arr


def _check_grid(
    configs: Sequence[Mapping[str, Any]], seeds: Sequence[int]
) -> tuple[tuple[Mapping[str, Any], ...], tuple[int, ...]]:
    if isinstance(configs, (str, bytes, Mapping)) or not isinstance(configs, Sequence):
        fail("configs", "a sequence of mappings (one configuration each)", configs, TypeError)
    if not configs:
        fail("configs", "at least one configuration", configs)
    for c in configs:
        if not isinstance(c, Mapping):
            fail("configs", "a sequence of mappings (one configuration each)", configs, TypeError)
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        fail("seeds", "a non-empty sequence of integers", seeds, TypeError)
    if not seeds:
        fail("seeds", "a non-empty sequence of integers", seeds)
    seeds_t = tuple(check_int("seeds[i]", s) for s in seeds)
    if len(set(seeds_t)) != len(seeds_t):
        fail("seeds", "distinct seeds (a repeated seed is the same run twice)", list(seeds))
    return tuple(dict(c) for c in configs), seeds_t


def _choose(val: np.ndarray, higher_is_better: bool, name: str, seeds: tuple[int, ...]) -> np.ndarray:
    oriented = val if higher_is_better else -val
    finite = np.isfinite(oriented)
    for s in np.flatnonzero(~finite.any(axis=0)):
        fail("val", f"a finite validation score for at least one configuration of {name!r} on every seed",
             f"seed {seeds[s]}: all {val.shape[0]} runs diverged")  # fmt: skip
    # argmax returns the first of equal maxima: ties go to the earlier configuration in the grid.
    return np.argmax(np.where(finite, oriented, -np.inf), axis=0)


def _score(name: str, value: Any) -> float:
    if isinstance(value, bool):
        fail(name, "a number (the score)", value, TypeError)
    try:
        return float(value)
    except (TypeError, ValueError):
        fail(name, "a number (the score)", value, TypeError)
    return math.nan  # unreachable: fail raises


def _config_text(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in config.items())
