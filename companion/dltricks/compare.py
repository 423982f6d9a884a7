r"""Paired comparisons over seeds, turned into words: *helps*, *no clear difference* or *hurts*.

Every chapter compares a treatment with a baseline trained on the same seeds (same data split, same initial
weights where the model allows). No chapter words such a difference by hand: it calls
:func:`compare_paired`, records the result with :func:`dltricks.book.record_comparison`, and the claim tests
recompute the verdict from the recorded per-seed values with this same function.

The rule. Let :math:`d_i = t_i - b_i` be the paired differences over :math:`n \ge 2` seeds, oriented so
that a positive :math:`d` is better (for a loss, ``higher_is_better=False`` flips the sign). The difference
is clear when its mean exceeds a margin

.. math::

    m = \max\Big(t_{1-\alpha/2,\,n-1}\,\frac{s_d}{\sqrt n},\;
                 \sqrt{\bar p (1-\bar p) / N_\text{test}}\Big),

the larger of

* the half-width of the paired *t* confidence interval over seeds (Student 1908; the usual paired *t*-test at
  level :math:`\alpha`, two-sided): differences inside it are within the seed-to-seed spread; and
* for accuracies measured on :math:`N_\text{test}` images, the test set's sampling error. Every seed is
  scored on the same test images, so this error does not shrink with more seeds: a difference smaller than
  it could come from which images happen to be in the test set. Given only ``n_test``, it is one binomial
  standard error of an accuracy near :math:`\bar p` (the mean of both arms; about 0.9 points for 2,000
  images at 80% accuracy), a stand-in that ignores the pairing. Given the per-image outcomes
  (:class:`PairedOutcomes`), it is the standard error of the *paired* difference: with
  :math:`k_j = \sum_s (c^t_{s,j} - c^b_{s,j})`, where :math:`c_{s,j} \in \{0, 1\}` says whether seed
  :math:`s`'s model got test image :math:`j` right, the seed-mean difference is :math:`\bar k / n` and its
  error over the choice of images is :math:`\operatorname{sd}_j(k_j / n) / \sqrt{N_\text{test}}`. Two arms
  that get mostly the same images right have a paired error well below the binomial one (McNemar 1947);
  two arms that disagree on many images, a larger one.

With few seeds the *t* quantile is large (12.7 for two seeds, 4.30 for three at 95%), so a small effect is
called "no clear difference" rather than guessed at: that is the honest reading, and more seeds narrow it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dltricks._checks import check_float, check_int, check_type, fail

VERDICTS = ("helps", "no clear difference", "hurts")


@dataclass(frozen=True)
class PairedOutcomes:
    """Which test images two arms got right, per seed, reduced to what the paired sampling error needs.

    For seed ``s`` and test image ``j``, ``k_j = sum_s (treatment_correct[s, j] - baseline_correct[s, j])``
    lies in ``-n_seeds .. n_seeds``; only how many images have each ``k`` matters, so that is what is kept
    (small enough to record in a chapter's results, and enough to recompute the comparison).

    Attributes:
        counts: ``counts[i]`` is the number of test images with ``k_j = i - n_seeds``; length
            ``2 * n_seeds + 1``.
        n_seeds: the number of seeds (models per arm).

    References:
        McNemar (1947), "Note on the sampling error of the difference between correlated proportions or
        percentages", Psychometrika 12(2): the error of a difference of accuracies on the same examples.
    """

    counts: tuple[int, ...]
    n_seeds: int

    def __post_init__(self) -> None:
        check_int("n_seeds", self.n_seeds, minimum=1)
        if isinstance(self.counts, (str, bytes)) or not hasattr(self.counts, "__len__"):
            fail("counts", "a sequence of image counts, one per value of k", self.counts, TypeError)
        if len(self.counts) != 2 * self.n_seeds + 1:
            fail("counts", f"of length 2 * n_seeds + 1 = {2 * self.n_seeds + 1}", self.counts)
        for c in self.counts:
            if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 0:
                fail("counts", "non-negative integers (numbers of test images)", self.counts, TypeError)
        if sum(self.counts) < 2:
            fail("counts", "at least two test images in all", self.counts)
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))

    @classmethod
    def from_correct(cls, treatment_correct: Any, baseline_correct: Any) -> PairedOutcomes:
        """From per-seed, per-image correctness of both arms, each of shape ``(n_seeds, n_test)``.

        Row ``s`` of both arrays is seed ``s``'s model, scored on the same test images in the same order.

        Raises:
            TypeError: if either is not an array of booleans or 0/1.
            ValueError: if the shapes differ or are not two-dimensional, or there are fewer than two images.
        """
        arrays = []
        for name, value in (("treatment_correct", treatment_correct), ("baseline_correct", baseline_correct)):
            try:
                arr = np.asarray(value)
            except (TypeError, ValueError):
                fail(name, "an array of booleans of shape (n_seeds, n_test)", value, TypeError)
            if arr.dtype != bool and not (np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all()):
                fail(
                    name,
                    "booleans (or 0/1): whether each seed's model got each image right",
                    value,
                    TypeError,
                )
            if arr.ndim != 2:
                fail(name, f"two-dimensional, (n_seeds, n_test), not of shape {arr.shape}", value)
            arrays.append(arr.astype(np.int64))
        if arrays[0].shape != arrays[1].shape:
            fail(
                "baseline_correct", f"of the treatment's shape {arrays[0].shape}", f"shape {arrays[1].shape}"
            )
        n = arrays[0].shape[0]
        k = (arrays[0] - arrays[1]).sum(axis=0)
        return cls(tuple(int(c) for c in np.bincount(k + n, minlength=2 * n + 1)), n)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, ``{"counts": [...], "n_seeds": n}``; ``PairedOutcomes(**d)`` reads it back."""
        return {"counts": list(self.counts), "n_seeds": self.n_seeds}

    @property
    def n_test(self) -> int:
        """The number of test images."""
        return sum(self.counts)

    def _values(self) -> tuple[np.ndarray, np.ndarray]:
        return np.arange(-self.n_seeds, self.n_seeds + 1) / self.n_seeds, np.asarray(self.counts, float)

    @property
    def mean_difference(self) -> float:
        """The seed-mean difference in accuracy, treatment minus baseline (a fraction)."""
        d, w = self._values()
        return float((d * w).sum() / w.sum())

    @property
    def sampling_error(self) -> float:
        """The standard error of :attr:`mean_difference` over the choice of test images (a fraction)."""
        d, w = self._values()
        mean = (d * w).sum() / w.sum()
        var = float((w * (d - mean) ** 2).sum() / (w.sum() - 1))
        return math.sqrt(var / w.sum())


@dataclass(frozen=True)
class PairedComparison:
    """The outcome of :func:`compare_paired`; differences are ``treatment - baseline`` in the data's units.

    Attributes:
        diffs: per-seed differences ``treatment - baseline`` (not sign-flipped), shape ``(n,)``.
        mean: their mean.
        std: their sample standard deviation (``ddof=1``).
        half_width: half-width of the paired t confidence interval of the mean difference.
        sampling_error: the test set's sampling error: paired when ``outcomes`` were given, else binomial
            (0.0 when neither ``n_test`` nor ``outcomes`` was given).
        margin: ``max(half_width, sampling_error)``; a mean difference beyond it is clear.
        verdict: ``"helps"``, ``"no clear difference"`` or ``"hurts"``, from the treatment's point of view.
        n_better: seeds in which the treatment was strictly better than the baseline.
        higher_is_better: whether larger values of the quantity are better (accuracy) or worse (loss).
    """

    diffs: np.ndarray
    mean: float
    std: float
    half_width: float
    sampling_error: float
    margin: float
    verdict: str
    n_better: int
    higher_is_better: bool

    @property
    def n(self) -> int:
        """Number of paired seeds."""
        return int(self.diffs.size)

    @property
    def clear(self) -> bool:
        """Whether the verdict is a clear one (helps or hurts)."""
        return self.verdict != "no clear difference"

    def describe(self, fmt: str = "{:+.3g}", unit: str = "seeds") -> str:
        """One phrase for the prose, e.g. ``"+1.2% ± 0.8% (helps; better in 5 of 5 seeds)"``.

        Args:
            fmt: a ``str.format`` pattern for the mean and the std (e.g. ``"{:+.1%}"``).
            unit: what the pairs are, for the phrase: ``"seeds"`` (default), or e.g. ``"data sets"``.
        """
        spread = fmt.format(self.std).lstrip("+")
        return (
            f"{fmt.format(self.mean)} ± {spread} ({self.verdict}; "
            f"better in {self.n_better} of {self.n} {unit})"
        )


def compare_paired(
    treatment: Sequence[float] | np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    *,
    higher_is_better: bool = True,
    n_test: int | None = None,
    confidence: float = 0.95,
    outcomes: PairedOutcomes | None = None,
) -> PairedComparison:
    """Compare a treatment with a baseline measured on the same seeds and word the difference.

    Args:
        treatment: per-seed values with the technique, shape ``(n,)``, ``n >= 2``.
        baseline: per-seed values without it, same seeds in the same order, shape ``(n,)``.
        higher_is_better: ``True`` for accuracies and gains, ``False`` for losses, errors and times.
        n_test: the number of test examples an accuracy was measured on; adds the test set's sampling error
            (binomial, unpaired) to the margin. Only for accuracies (values in [0, 1]).
        confidence: level of the paired t interval, in (0, 1); default 0.95.
        outcomes: which test images each arm's models got right (:class:`PairedOutcomes`); adds the paired
            sampling error instead of the binomial one. Its seed-mean difference must be the accuracies'.

    Returns:
        A :class:`PairedComparison` whose ``verdict`` is ``"helps"`` when the treatment is better by more than
        the margin, ``"hurts"`` when worse by more than it, and ``"no clear difference"`` otherwise.

    Raises:
        TypeError: if ``higher_is_better`` is not a bool or ``n_test`` not an integer.
        ValueError: if the two arms differ in length, have fewer than two values or non-finite values, if
            ``confidence`` is not in (0, 1), if ``n_test`` or ``outcomes`` is given for values outside [0, 1],
            or if ``outcomes`` has another number of seeds or images (``n_test``), or another mean difference.

    References:
        Student (1908), "The probable error of a mean", Biometrika 6(1); the paired t interval.
    """
    from scipy import stats  # imported here: only comparisons need scipy

    t = _as_values("treatment", treatment)
    b = _as_values("baseline", baseline)
    if t.size != b.size:
        fail("baseline", f"as long as `treatment` ({t.size} values, one per seed)", baseline)
    if t.size < 2:
        fail("treatment", "at least two per-seed values (one seed has no spread to judge by)", treatment)
    check_type("higher_is_better", higher_is_better, bool, "a bool")
    level = check_float("confidence", confidence, minimum=0.0, maximum=1.0, min_inclusive=False,
                        max_inclusive=False)  # fmt: skip

    diffs = t - b
    mean, std = float(diffs.mean()), float(diffs.std(ddof=1))
    half_width = float(stats.t.ppf(0.5 + level / 2, df=diffs.size - 1)) * std / math.sqrt(diffs.size)
    sampling_error = 0.0
    if n_test is not None:
        check_int("n_test", n_test, minimum=1)
        both = np.concatenate([t, b])
        if both.min() < 0.0 or both.max() > 1.0:
            fail("n_test", "given only for accuracies (values in [0, 1])", n_test)
        p = float(both.mean())
        sampling_error = math.sqrt(p * (1.0 - p) / n_test)
    if outcomes is not None:
        check_type("outcomes", outcomes, PairedOutcomes, "a PairedOutcomes (PairedOutcomes.from_correct)")
        both = np.concatenate([t, b])
        if both.min() < 0.0 or both.max() > 1.0:
            fail("outcomes", "given only for accuracies (values in [0, 1])", outcomes)
        if outcomes.n_seeds != t.size:
            fail("outcomes", f"of {t.size} seeds, one per value", f"{outcomes.n_seeds} seeds")
        if n_test is not None and outcomes.n_test != n_test:
            fail("outcomes", f"over n_test = {n_test} images", f"{outcomes.n_test} images")
        if abs(outcomes.mean_difference - mean) > 1e-9:
            fail("outcomes", f"with the accuracies' mean difference {mean:.6g} (the same models and images)",
                 f"mean difference {outcomes.mean_difference:.6g}")  # fmt: skip
        sampling_error = outcomes.sampling_error
    margin = max(half_width, sampling_error)

    sign = 1.0 if higher_is_better else -1.0
    gain = sign * mean
    verdict = "helps" if gain > margin else "hurts" if -gain > margin else "no clear difference"
    return PairedComparison(
        diffs=diffs,
        mean=mean,
        std=std,
        half_width=half_width,
        sampling_error=sampling_error,
        margin=margin,
        verdict=verdict,
        n_better=int(np.sum(sign * diffs > 0)),
        higher_is_better=higher_is_better,
    )


def _as_values(name: str, value: Sequence[float] | np.ndarray) -> np.ndarray:
    if isinstance(value, (str, bytes)):
        fail(name, "a sequence of numbers", value, TypeError)
    try:
        arr = np.asarray(value, dtype=float).ravel()
    except (TypeError, ValueError):
        fail(name, "a sequence of numbers", value, TypeError)
    if not np.all(np.isfinite(arr)):
        fail(name, "finite numbers (a diverged run needs its own handling, not an average)", value)
    return arr
