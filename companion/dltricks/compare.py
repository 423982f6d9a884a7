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
* for accuracies measured on :math:`N_\text{test}` images, one binomial standard error of an accuracy near
  :math:`\bar p` (the mean of both arms). Every seed is scored on the same test images, so this error does
  not shrink with more seeds: a difference smaller than it could come from which images happen to be in the
  test set (about 0.9 points for 2,000 images at 80% accuracy).

With few seeds the *t* quantile is large (12.7 for two seeds, 4.30 for three at 95%), so a small effect is
called "no clear difference" rather than guessed at: that is the honest reading, and more seeds narrow it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dltricks._checks import check_float, check_int, check_type, fail

VERDICTS = ("helps", "no clear difference", "hurts")


@dataclass(frozen=True)
class PairedComparison:
    """The outcome of :func:`compare_paired`; differences are ``treatment - baseline`` in the data's units.

    Attributes:
        diffs: per-seed differences ``treatment - baseline`` (not sign-flipped), shape ``(n,)``.
        mean: their mean.
        std: their sample standard deviation (``ddof=1``).
        half_width: half-width of the paired t confidence interval of the mean difference.
        sampling_error: the test set's binomial standard error (0.0 when ``n_test`` was not given).
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
) -> PairedComparison:
    """Compare a treatment with a baseline measured on the same seeds and word the difference.

    Args:
        treatment: per-seed values with the technique, shape ``(n,)``, ``n >= 2``.
        baseline: per-seed values without it, same seeds in the same order, shape ``(n,)``.
        higher_is_better: ``True`` for accuracies and gains, ``False`` for losses, errors and times.
        n_test: the number of test examples an accuracy was measured on; adds the test set's sampling error
            to the margin. Only for accuracies (values in [0, 1]).
        confidence: level of the paired t interval, in (0, 1); default 0.95.

    Returns:
        A :class:`PairedComparison` whose ``verdict`` is ``"helps"`` when the treatment is better by more than
        the margin, ``"hurts"`` when worse by more than it, and ``"no clear difference"`` otherwise.

    Raises:
        TypeError: if ``higher_is_better`` is not a bool or ``n_test`` not an integer.
        ValueError: if the two arms differ in length, have fewer than two values or non-finite values, if
            ``confidence`` is not in (0, 1), or if ``n_test`` is given for values outside [0, 1].

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
