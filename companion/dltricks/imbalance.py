r"""Imbalanced classes: resample the training set, weight the loss, and start the output layer at the prior.

Three remedies for a training set in which some classes are much rarer than others, and one fix for the
first steps of training:

* **Resampling** (:func:`oversample_indices`, :func:`undersample_indices`, :func:`weighted_sampler`):
  present the classes equally often. Buda, Maki & Mazurowski ("A systematic study of the class imbalance
  problem in convolutional neural networks", *Neural Networks* 106, 2018) found random oversampling of the
  minority classes, up to full balance, the best of the simple methods for CNNs, and that it does not
  cause the overfitting it does for classical models; undersampling throws data away and only pays off
  when the majority is very redundant. Resample the *training* split only: validation and test keep the
  real class frequencies, or the scores describe a data set that does not exist.
* **Loss weights** (:func:`class_weights`, :func:`class_weight_dict`): the "balanced" heuristic
  :math:`w_c = n / (C\, n_c)` (King & Zeng, "Logistic regression in rare events data", *Political
  Analysis* 9, 2001; the rule of ``sklearn.utils.class_weight.compute_class_weight("balanced")``), for
  ``F.cross_entropy(weight=...)`` or Keras' ``fit(class_weight=...)``. Every class then carries the same
  total weight, and the mean weight per training example is 1, so the loss keeps its scale.
* **Output-bias initialization** (:func:`prior_bias`, :func:`init_output_bias_`): with a 1:100 imbalance,
  a freshly initialized sigmoid output predicts 0.5 and the first hundreds of steps are spent learning
  the base rate. Setting the bias to the log-odds of the prior makes the network predict the prior from
  the start (Karpathy, "A Recipe for Training Neural Networks", 2019, "init well"; Lin et al., "Focal Loss
  for Dense Object Detection", ICCV 2017, sec. 4.1, :math:`b = -\log((1 - \pi) / \pi)`).

All random draws come from a ``torch.Generator`` seeded with ``seed``, so the indices are reproducible and
independent of the global random state.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import WeightedRandomSampler

from dltricks._checks import check_float, check_int, check_type, fail


def _as_tensor(name: str, labels: Any) -> torch.Tensor:
    if isinstance(labels, torch.Tensor):
        return labels.detach().cpu()
    if isinstance(labels, (str, bytes)):
        fail(name, "a tensor, numpy array or sequence of labels", labels, TypeError)
    try:
        return torch.as_tensor(np.asarray(labels))
    except (TypeError, ValueError, RuntimeError):
        fail(name, "a tensor, numpy array or sequence of labels", labels, TypeError)
    raise AssertionError  # unreachable: fail() raises


def _class_labels(labels: Any, name: str = "labels") -> torch.Tensor:
    """Validate 1-D, non-empty, non-negative integer class labels; return them as an int64 CPU tensor."""
    y = _as_tensor(name, labels)
    if y.ndim != 1 or y.numel() == 0:
        fail(f"{name}.shape", "(N,) with N >= 1: one class index per example", tuple(y.shape))
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        fail(f"{name}.dtype", "an integer dtype (class indices)", y.dtype, TypeError)
    if int(y.min()) < 0:
        i = int((y < 0).nonzero()[0])
        fail(f"{name}[{i}]", "a class index >= 0", int(y[i]))
    return y.long()


def _generator(seed: Any) -> torch.Generator:
    return torch.Generator().manual_seed(check_int("seed", seed, minimum=0))


def _members(y: torch.Tensor) -> list[torch.Tensor]:
    """The example indices of each class present in ``y``, in increasing class order."""
    classes = torch.unique(y)
    return [(y == c).nonzero().squeeze(1) for c in classes]


def oversample_indices(labels: Any, *, seed: int = 0, target: int | None = None) -> torch.Tensor:
    """Indices that keep every example and add random repeats of the smaller classes, in shuffled order.

    Each class ``c`` present with ``n_c`` examples keeps all of them and gets ``target - n_c`` more, drawn
    uniformly with replacement among its own examples (random oversampling, as imbalanced-learn's
    ``RandomOverSampler``). Index the training tensors with the result: ``x[idx], y[idx]``.

    Args:
        labels: 1-D integer class labels of the training set.
        seed: seed of the draws and of the final shuffle.
        target: examples per class afterwards; default (``None``) the largest class's count. It may not
            be smaller than that count, since oversampling never drops an example.

    Returns:
        A shuffled ``torch.long`` tensor of length ``target * number_of_classes_present``.

    Raises:
        TypeError: for a ``target`` of the wrong type.
        ValueError: for a ``target`` out of its allowed range.
    """
    y = _class_labels(labels)
    gen = _generator(seed)
    members = _members(y)
    largest = max(len(m) for m in members)
    t = largest if target is None else check_int("target", target, minimum=largest)
    parts = [torch.arange(len(y))]
    for m in members:
        if t > len(m):
            parts.append(m[torch.randint(len(m), (t - len(m),), generator=gen)])
    idx = torch.cat(parts)
    return idx[torch.randperm(len(idx), generator=gen)]


def undersample_indices(labels: Any, *, seed: int = 0) -> torch.Tensor:
    """Indices of a random subset with as many examples of each class as the smallest class has, shuffled.

    Every class present is subsampled without replacement to the smallest class's count (random
    undersampling); the smallest class keeps all its examples.

    Returns:
        A shuffled ``torch.long`` tensor of length ``min_count * number_of_classes_present``.
    """
    y = _class_labels(labels)
    gen = _generator(seed)
    members = _members(y)
    smallest = min(len(m) for m in members)
    idx = torch.cat([m[torch.randperm(len(m), generator=gen)[:smallest]] for m in members])
    return idx[torch.randperm(len(idx), generator=gen)]


def _counts(labels: Any, num_classes: int | None) -> torch.Tensor:
    y = _class_labels(labels)
    if num_classes is None:
        return torch.bincount(y)
    k = check_int("num_classes", num_classes, minimum=1)
    if int(y.max()) >= k:
        i = int((y >= k).nonzero()[0])
        fail(f"labels[{i}]", f"a class index < num_classes={k}", int(y[i]))
    return torch.bincount(y, minlength=k)


def class_weights(
    labels: Any, num_classes: int | None = None, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    r"""Per-class loss weights :math:`w_c = n / (C\, n_c)`, the "balanced" heuristic.

    :math:`n` is the number of examples, :math:`n_c` those of class :math:`c` and :math:`C` the number of
    classes present. Then :math:`\sum_c n_c w_c = n`: each class contributes the same total weight and the
    average example weight is 1. Equal to ``sklearn.utils.class_weight.compute_class_weight("balanced",
    classes=np.unique(y), y=y)``.

    Args:
        labels: 1-D integer class labels of the training set.
        num_classes: length of the result (the output layer's width); default ``max(labels) + 1``. A class
            with no training example gets weight 0 (no example of it is ever weighted) and does not count
            in :math:`C`.
        dtype: dtype of the result; it must match the logits' for ``F.cross_entropy(weight=...)``.

    Returns:
        A ``(num_classes,)`` tensor, e.g. for ``F.cross_entropy(logits, y, weight=class_weights(y_train))``.

    Raises:
        TypeError: for a ``dtype`` of the wrong type.
    """
    counts = _counts(labels, num_classes).double()
    check_type("dtype", dtype, torch.dtype, "a torch.dtype")
    present = counts > 0
    w = counts.sum() / (present.sum() * counts)
    return torch.where(present, w, torch.zeros_like(w)).to(dtype)


def class_weight_dict(labels: Any) -> dict[int, float]:
    """The balanced weights of the classes present as ``{class: weight}``, Keras' ``class_weight`` format.

    Example: ``model.fit(x, y, class_weight=class_weight_dict(y))``.
    """
    w = class_weights(labels, dtype=torch.float64)
    counts = _counts(labels, None)
    return {c: float(w[c]) for c in range(len(w)) if counts[c] > 0}


def weighted_sampler(
    labels: Any, *, seed: int = 0, num_samples: int | None = None, replacement: bool = True
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing every class equally often in expectation, seeded.

    Each example gets weight ``1 / count(its class)``, so each class has total weight 1 and a draw lands in
    each of the ``C`` classes with probability ``1 / C``. Pass it as ``DataLoader(dataset, sampler=...)``
    (no ``shuffle``). This is oversampling done on the fly: every epoch sees a fresh balanced draw. With
    ``replacement=False`` the draws are not independent and a class can run out, so the balance is only
    approximate; keep the default.

    Args:
        labels: 1-D integer class labels of the training set.
        seed: seed of the sampler's own ``torch.Generator`` (its draws continue across epochs).
        num_samples: draws per epoch; default ``len(labels)``.
        replacement: sample with replacement (default ``True``).

    Raises:
        TypeError: for a ``num_samples`` or ``replacement`` of the wrong type.
        ValueError: for a ``num_samples`` out of its allowed range.
    """
    y = _class_labels(labels)
    check_type("replacement", replacement, bool, "a bool")
    gen = _generator(seed)
    n = len(y) if num_samples is None else check_int(
        "num_samples", num_samples, minimum=1, maximum=None if replacement else len(y)
    )  # fmt: skip
    weights = 1.0 / torch.bincount(y).double()[y]
    # torch's annotation says Sequence[float]; it takes (and converts) a tensor, the documented use.
    return WeightedRandomSampler(weights, n, replacement=replacement, generator=gen)  # type: ignore[arg-type]


def prior_bias(pos: float, neg: float) -> float:
    r"""The output bias :math:`b = \log(\text{pos}/\text{neg})` that makes a sigmoid start at the prior.

    With the output layer's weights near zero the logit is :math:`b` and
    :math:`\sigma(b) = \text{pos} / (\text{pos} + \text{neg})`, the fraction of positives, which minimizes
    the initial binary cross-entropy (to the binary entropy of the prior). ``pos`` and ``neg`` are counts or
    any two positive numbers in the right ratio.

    Raises:
        TypeError: for a ``neg`` or ``pos`` of the wrong type.
        ValueError: for a ``neg`` or ``pos`` out of its allowed range.
    """
    pos = check_float("pos", pos, minimum=0.0, min_inclusive=False)
    neg = check_float("neg", neg, minimum=0.0, min_inclusive=False)
    return math.log(pos) - math.log(neg)  # = log(pos / neg), without overflow for extreme ratios


def _binary_counts(labels: Any) -> tuple[int, int]:
    y = _as_tensor("labels", labels)
    if y.numel() == 0:
        fail("labels", "non-empty", labels)
    if y.is_complex() or not bool(((y == 0) | (y == 1)).all()):
        bad = y.flatten()[~((y.flatten() == 0) | (y.flatten() == 1))][0]
        raise ValueError(
            f"`labels` must be binary, every value 0 or 1. Received: labels containing {bad.item()!r}"
        )
    pos = int((y == 1).sum())
    neg = y.numel() - pos
    if pos == 0 or neg == 0:
        raise ValueError(
            "`labels` must contain both classes, to give a finite log-odds. Received: labels with "
            f"{pos} positives and {neg} negatives"
        )
    return pos, neg


def prior_bias_from_labels(labels: Any) -> float:
    """:func:`prior_bias` from binary 0/1 labels (integer, float or bool; any shape)."""
    return prior_bias(*_binary_counts(labels))


@torch.no_grad()
def init_output_bias_(layer: nn.Linear, labels: Any) -> nn.Linear:
    r"""In place, set the output layer's bias so that the untrained network predicts the class prior.

    * One output (a sigmoid / ``BCEWithLogitsLoss`` head), binary 0/1 ``labels``: :math:`b = \log(p / (1-p))`,
      :math:`p` the fraction of positives (:func:`prior_bias_from_labels`).
    * :math:`C \ge 2` outputs (a softmax / ``cross_entropy`` head), class-index ``labels``:
      :math:`b_c = \log \pi_c`, :math:`\pi_c` the fraction of class :math:`c`; since
      :math:`\sum_c \pi_c = 1`, :math:`\operatorname{softmax}(b) = \pi` exactly.

    The weights are left alone; while they are small the output is close to the prior and the initial loss
    close to the entropy of the labels (exactly, if they are zero), instead of :math:`\log C` or
    :math:`\log 2` plus a large excess for a badly imbalanced set.

    Args:
        layer: the last ``nn.Linear`` of the network, with a bias.
        labels: the training labels.

    Returns:
        ``layer``, for chaining.

    Raises:
        ValueError: if the layer has no bias, the labels are not binary (one output) or not indices below
            ``out_features``, or a class has no example (its log-prior would be :math:`-\infty`).
    """
    check_type("layer", layer, nn.Linear, "an nn.Linear (the output layer)")
    if layer.bias is None:
        fail("layer", "an nn.Linear with a bias (bias=True)", layer)
    if layer.out_features == 1:
        bias = torch.tensor([prior_bias_from_labels(labels)], dtype=torch.float64)
    else:
        counts = _counts(labels, layer.out_features)
        if bool((counts == 0).any()):
            c = int((counts == 0).nonzero()[0])
            raise ValueError(
                f"`labels` must contain every one of the {layer.out_features} classes (log 0 = -inf). "
                f"Received: labels with no example of class {c}"
            )
        bias = torch.log(counts.double() / counts.sum())
    layer.bias.copy_(bias.to(layer.bias.dtype))
    return layer
