"""Norm penalties on the weights: L2 (weight decay) and L1, and the proximal step that makes L1 sparse.

Conventions, stated because the frameworks differ:

* ``l2_penalty(params, wd)`` is ``wd / 2 * sum(w**2)``; its gradient ``wd * w`` is exactly what
  ``torch.optim.SGD(weight_decay=wd)`` adds to every gradient, so for plain SGD the two give the same steps.
* Keras' ``regularizers.L2(l2)`` adds ``l2 * sum(w**2)`` (no one-half): ``L2(wd / 2)`` matches the above.
  :func:`keras_l2_factor` does the conversion.
* Keras and this book penalise only the kernels (weight matrices), not biases; :func:`weights_only`
  selects them. ``torch.optim``'s ``weight_decay`` decays every parameter it is given.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from dltricks._checks import check_float, check_tensors, check_type
from dltricks.callbacks import Callback, TrainState


def weights_only(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with two or more dimensions (linear and conv kernels), not biases or norm scales.

    Raises:
        TypeError: for a ``model`` of the wrong type.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    return [p for p in model.parameters() if p.ndim > 1]


def l2_penalty(params: Iterable[torch.Tensor], weight_decay: float) -> torch.Tensor:
    r"""The L2 penalty :math:`\frac{\lambda}{2}\sum_i w_i^2` over ``params``.

    Adding it to the loss adds :math:`\lambda w` to each gradient, the same as SGD's ``weight_decay``.

    Raises:
        TypeError: for a ``params`` or ``weight_decay`` of the wrong type.
        ValueError: for a ``params`` or ``weight_decay`` out of its allowed range.

    References:
        Krogh & Hertz, "A Simple Weight Decay Can Improve Generalization", NeurIPS 1991.
    """
    wd = check_float("weight_decay", weight_decay, minimum=0.0)
    terms = [p.pow(2).sum() for p in check_tensors("params", params)]
    return 0.5 * wd * torch.stack(terms).sum()


def l1_penalty(params: Iterable[torch.Tensor], strength: float) -> torch.Tensor:
    r"""The L1 penalty :math:`\lambda \sum_i |w_i|` over ``params`` (Keras' ``regularizers.L1``).

    Its (sub)gradient :math:`\lambda\,\mathrm{sign}(w)` pushes weights towards zero but, with a gradient
    step, they overshoot and oscillate around it: few become *exactly* zero. See :class:`L1Proximal`.

    Raises:
        TypeError: for a ``params`` or ``strength`` of the wrong type.
        ValueError: for a ``params`` or ``strength`` out of its allowed range.
    """
    lam = check_float("strength", strength, minimum=0.0)
    return lam * torch.stack([p.abs().sum() for p in check_tensors("params", params)]).sum()


@torch.no_grad()
def soft_threshold_(params: Iterable[torch.Tensor], threshold: float) -> None:
    r"""In place :math:`w \leftarrow \mathrm{sign}(w)\max(|w| - t, 0)`: the proximal map of :math:`t\|w\|_1`.

    Raises:
        TypeError: for a ``params`` or ``threshold`` of the wrong type.
        ValueError: for a ``params`` or ``threshold`` out of its allowed range.

    References:
        Donoho, "De-noising by soft-thresholding", IEEE Trans. Inf. Theory, 1995;
        Beck & Teboulle, "A Fast Iterative Shrinkage-Thresholding Algorithm", SIAM J. Imaging Sci.,
        2009, eq. 1.4.
    """
    t = check_float("threshold", threshold, minimum=0.0)
    for p in check_tensors("params", params):
        p.copy_(p.sign() * (p.abs() - t).clamp_min(0.0))


class L1Proximal(Callback):
    r"""Proximal-gradient L1: after each optimizer step, soft-threshold the weights by ``lr * strength``.

    The gradient step minimizes the data loss; the threshold then solves the L1 part exactly, so weights
    whose pull from the data is weaker than ``strength`` land on exactly zero (ISTA, Beck & Teboulle 2009).

    Args:
        params: the tensors to sparsify (e.g. ``weights_only(model)``).
        strength: the L1 coefficient :math:`\lambda` (>= 0).

    Raises:
        TypeError: for a ``params`` or ``strength`` of the wrong type.
        ValueError: for a ``params`` or ``strength`` out of its allowed range.
    """

    def __init__(self, params: Iterable[torch.Tensor], strength: float) -> None:
        self.params = check_tensors("params", params)
        self.strength = check_float("strength", strength, minimum=0.0)

    def on_step_end(self, state: TrainState) -> None:
        lr = state.optimizer.param_groups[0]["lr"]
        soft_threshold_(self.params, float(lr) * self.strength)


def zero_fraction(params: Iterable[torch.Tensor]) -> float:
    """Fraction of entries that are exactly zero across ``params``.

    Raises:
        TypeError: for a ``params`` of the wrong type.
        ValueError: for a ``params`` out of its allowed range.
    """
    tensors = check_tensors("params", params)
    total = sum(p.numel() for p in tensors)
    return sum(int((p == 0).sum()) for p in tensors) / total


def keras_l2_factor(weight_decay: float) -> float:
    """The Keras ``L2(l2)`` factor equal to :func:`l2_penalty`'s ``weight_decay``: ``weight_decay / 2``.

    Raises:
        TypeError: for a ``weight_decay`` of the wrong type.
        ValueError: for a ``weight_decay`` out of its allowed range.
    """
    return check_float("weight_decay", weight_decay, minimum=0.0) / 2.0
