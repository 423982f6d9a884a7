"""Calibration: does a classifier's confidence match how often it is right?

A model is calibrated when, among the examples it predicts with confidence 0.8, 80 % are correct. The
reliability diagram bins the examples by confidence and compares each bin's mean confidence with its
accuracy; the expected calibration error (ECE) is the gap averaged over the bins, weighted by their size.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch

from dltricks._checks import check_int


class ReliabilityBins(NamedTuple):
    """Per-bin statistics of :func:`reliability_bins`, numpy arrays of length ``n_bins``."""

    confidence: np.ndarray
    """Mean confidence (max probability) of the bin's examples; NaN for an empty bin."""
    accuracy: np.ndarray
    """Fraction of the bin's examples whose arg-max class is the label; NaN for an empty bin."""
    count: np.ndarray  # type: ignore[assignment]  # shadows tuple.count on purpose: the bin counts
    """Number of examples in the bin (integers)."""


def reliability_bins(probs: torch.Tensor | np.ndarray, labels: Any, *, n_bins: int = 15) -> ReliabilityBins:
    r"""Group the examples into equal-width confidence bins and summarize each bin.

    The confidence of example :math:`i` is :math:`\hat p_i = \max_k p_{ik}`, its prediction
    :math:`\hat y_i = \arg\max_k p_{ik}`. Bin :math:`b = 0, \dots, M-1` holds the examples with
    :math:`\hat p_i \in \big(\tfrac{b}{M}, \tfrac{b+1}{M}\big]` (closed on the right), and

    .. math::

        \mathrm{acc}(B_b) = \frac{1}{|B_b|} \sum_{i \in B_b} \mathbf{1}[\hat y_i = y_i], \qquad
        \mathrm{conf}(B_b) = \frac{1}{|B_b|} \sum_{i \in B_b} \hat p_i .

    Confidences are binned as float64 values of what was given: a float32 0.3 is 0.30000001192..., so it
    falls in the bin above 0.3.

    Args:
        probs: probabilities ``(N, C)``, each row summing to 1 within 1e-4 (apply softmax to logits first).
        labels: integer class ids ``(N,)`` in ``[0, C)``; a tensor, an array or a sequence.
        n_bins: number of bins :math:`M` (>= 1).

    Raises:
        TypeError: for a ``n_bins`` of the wrong type.
        ValueError: for a ``n_bins`` out of its allowed range.

    References:
        Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017, sec. 2
        (reliability diagrams, the bins :math:`B_m` and :math:`\mathrm{acc}`, :math:`\mathrm{conf}`).
    """
    n_bins = check_int("n_bins", n_bins, minimum=1)
    p, y = _check_inputs(probs, labels)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    # Edges b / M computed by exact division, so a confidence written as 0.3 falls in (0.2, 0.3] for M = 10
    # (0.3 * 10 would round up to 3.0000000000000004 and land one bin too high).
    edges = np.arange(n_bins + 1) / n_bins
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: 0 / 0 -> NaN, on purpose
        conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(index, weights=correct, minlength=n_bins) / count
    return ReliabilityBins(conf, acc, count)


def expected_calibration_error(probs: torch.Tensor | np.ndarray, labels: Any, *, n_bins: int = 15) -> float:
    r"""The expected calibration error over ``n_bins`` equal-width confidence bins.

    .. math::

        \mathrm{ECE} = \sum_{b=0}^{M-1} \frac{|B_b|}{N}\, \big|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)\big|,

    with the bins of :func:`reliability_bins`. It is 0 for a calibrated model (up to sampling noise, which
    grows with ``n_bins`` / N) and at most 1.

    Args:
        probs: probabilities ``(N, C)``, rows summing to 1 within 1e-4.
        labels: integer class ids ``(N,)``.
        n_bins: number of bins :math:`M` (>= 1); 15 as in Guo et al.

    References:
        Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural Networks", ICML 2017, eq. 3;
        Naeini, Cooper & Hauskrecht, "Obtaining Well Calibrated Probabilities Using Bayesian Binning",
        AAAI 2015 (where the ECE was introduced).
    """
    bins = reliability_bins(probs, labels, n_bins=n_bins)
    full = bins.count > 0
    weights = bins.count[full] / bins.count.sum()
    return float(np.sum(weights * np.abs(bins.accuracy[full] - bins.confidence[full])))


def _check_inputs(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _to_numpy("probs", probs).astype(np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(
            f"`probs` must be a non-empty 2-D array (N, C). Received: probs with shape {p.shape}"
        )
    if not np.all(np.isfinite(p) & (p >= 0)):
        bad = p[~(np.isfinite(p) & (p >= 0))][0]
        raise ValueError(
            f"`probs` must hold finite, non-negative probabilities. Received: probs with an entry {bad!r}"
        )
    worst = np.abs(p.sum(axis=1) - 1.0).max()
    if worst > 1e-4:
        raise ValueError(
            "`probs` rows must each sum to 1 within 1e-4 (are these logits? apply softmax first). "
            f"Received: probs with a row sum off by {worst:.3g}"
        )
    y = _to_numpy("labels", labels)
    if y.shape != (p.shape[0],):
        raise ValueError(f"`labels` must have shape ({p.shape[0]},). Received: labels with shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= p.shape[1])):
        raise ValueError(
            f"`labels` must be integer class ids in [0, {p.shape[1]}). "
            f"Received: labels with dtype {y.dtype} and range [{y.min()!r}, {y.max()!r}]"
        )
    return p, y


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        # numpy has no bfloat16; float64 holds every torch float exactly.
        return (value.double() if value.is_floating_point() else value).numpy()
    array = np.asarray(value)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"`{name}` must be a numeric tensor or array. Received: {name}={value!r}")
    return array
