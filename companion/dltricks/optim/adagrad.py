"""Adagrad: per-coordinate learning rates that shrink with the sum of the squared gradients seen so far."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dltricks.optim._base import (
    DLOptimizer,
    Group,
    States,
    Tensors,
    check_foreach,
    check_lr,
    check_nonnegative,
    check_positive,
    increment_steps,
    new_step,
)


class Adagrad(DLOptimizer):
    r"""Adagrad (Duchi et al., 2011), diagonal version: the same update as ``torch.optim.Adagrad``.

    With learning rate :math:`\eta`, learning-rate decay :math:`\delta`, L2 weight decay :math:`\lambda`
    and :math:`s_0` = ``initial_accumulator_value``, step :math:`t` does, per coordinate,

    .. math::

        g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        \eta_t &= \eta \,/\, \big(1 + (t-1)\,\delta\big) \\
        s_t &= s_{t-1} + g_t^2 \\
        \theta_t &= \theta_{t-1} - \eta_t\, g_t \,/\, \big(\sqrt{s_t} + \epsilon\big)

    (``state["sum"]`` is :math:`s_t`). The effective step size of a coordinate,
    :math:`\eta_t / (\sqrt{s_t} + \epsilon)`, decreases monotonically: :math:`s_t` never shrinks (strictly
    so whenever :math:`g_t \ne 0`) and :math:`\eta_t` never grows. Coordinates with large or frequent
    gradients slow down first and rare features keep large steps, the method's point; on long non-convex
    runs the same monotone decay eventually stalls learning, which RMSprop and Adadelta address. Duchi et al.
    write the update with :math:`\mathrm{diag}(G_t)^{-1/2}`, :math:`G_t = \sum_{\tau \le t} g_\tau
    g_\tau^\top`; :math:`\epsilon` guards the division before any gradient has been seen.

    Keras differences (``keras.optimizers.Adagrad``; tested in ``tests/test_optim_keras.py``):

    * Keras puts :math:`\epsilon` inside the root, :math:`\theta_t = \theta_{t-1} - \eta\, g_t /
      \sqrt{s_t + \epsilon}` (Keras' effective step is :math:`\eta/\sqrt{s_t+\epsilon}`), with
      ``epsilon=1e-7``; the two agree when :math:`s_t \gg \epsilon`.
    * Keras starts the accumulator at ``initial_accumulator_value=0.1`` (here 0, as torch) and uses
      ``learning_rate=0.001`` (here 0.01); it has no ``lr_decay``. With ``initial_accumulator_value=0.1`` and
      a small ``eps`` the two agree. From 0, the first step here is :math:`\eta\,\mathrm{sign}(g_1)` in every
      coordinate.

    Args:
        params: the tensors to optimize, or param-group dicts.
        lr: the learning rate :math:`\eta` (>= 0).
        lr_decay: :math:`\delta` (>= 0).
        weight_decay: :math:`\lambda` (>= 0), L2 added to the gradient.
        initial_accumulator_value: :math:`s_0` (>= 0).
        eps: :math:`\epsilon` (> 0), added to :math:`\sqrt{s_t}`.
        foreach: ``True``/``False`` for the multi-tensor path or the loop; ``None`` chooses (see ``SGD``).
        maximize: follow the gradient upwards (maximize the objective), as ``torch.optim``'s flag: the
            gradient is negated before the update.

    References:
        Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
        Optimization", JMLR 12, 2011 (the diagonal variant, sec. 1 and Figure 1).
    """

    TORCH_KEYS = {"differentiable": False, "fused": None}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)
        # Like torch.optim.Adagrad, create the state at once rather than at the first step, so that a
        # state dict taken before training already holds the accumulators.
        for group in self.param_groups:
            for p in group["params"]:
                self._init_state(p, self.state[p], group)

    @staticmethod
    def _check_hyper(hyper: dict[str, Any]) -> None:
        check_lr(hyper["lr"])
        check_nonnegative("lr_decay", hyper["lr_decay"])
        check_nonnegative("weight_decay", hyper["weight_decay"])
        check_nonnegative("initial_accumulator_value", hyper["initial_accumulator_value"])
        check_positive("eps", hyper["eps"])
        check_foreach(hyper["foreach"])

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: Group) -> None:
        state["step"] = new_step()
        s0 = group["initial_accumulator_value"]
        state["sum"] = torch.full_like(p, s0, memory_format=torch.preserve_format)

    def _single_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, lr_decay, wd, eps = group["lr"], group["lr_decay"], group["weight_decay"], group["eps"]
        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            t = state["step"].item()
            if wd != 0:
                grad = grad.add(param, alpha=wd)  # g_t = grad f + lambda * theta
            clr = lr / (1 + (t - 1) * lr_decay)  # eta_t = eta / (1 + (t - 1) delta)
            state["sum"].addcmul_(grad, grad, value=1)  # s_t = s_{t-1} + g_t^2
            std = state["sum"].sqrt().add_(eps)  # sqrt(s_t) + eps
            param.addcdiv_(grad, std, value=-clr)  # theta_t = theta_{t-1} - eta_t g_t / (sqrt(s_t) + eps)

    def _multi_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, lr_decay, wd, eps = group["lr"], group["lr_decay"], group["weight_decay"], group["eps"]
        sums = [s["sum"] for s in states]
        ts = increment_steps([s["step"] for s in states])
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        minus_clr = [-lr / (1 + (t - 1) * lr_decay) for t in ts]
        torch._foreach_addcmul_(sums, grads, grads, value=1)
        std = torch._foreach_sqrt(sums)
        torch._foreach_add_(std, eps)
        # Scale the numerator first and divide with value 1 (as torch's foreach Adagrad): the same number
        # as addcdiv with value=-clr up to one rounding.
        numerator = torch._foreach_mul(grads, minus_clr)
        torch._foreach_addcdiv_(params, numerator, std)
