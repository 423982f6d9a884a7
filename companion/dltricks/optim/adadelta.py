"""Adadelta: steps whose units match the parameters', from running averages of squared gradients and steps."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dltricks.optim._base import (
    DLOptimizer,
    Group,
    States,
    Tensors,
    bump_steps,
    check_foreach,
    check_lr,
    check_nonnegative,
    check_positive,
    check_unit,
    new_step,
)


class Adadelta(DLOptimizer):
    r"""Adadelta (Zeiler, 2012, Algorithm 1): the same update as ``torch.optim.Adadelta``.

    With decay :math:`\rho`, L2 weight decay :math:`\lambda` and a learning rate :math:`\eta` that scales
    the step (the paper has none, i.e. :math:`\eta = 1`, the default), step :math:`t` does

    .. math::

        g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        E[g^2]_t &= \rho\, E[g^2]_{t-1} + (1-\rho)\, g_t^2 \\
        \Delta_t &= \frac{\sqrt{E[\Delta^2]_{t-1} + \epsilon}}{\sqrt{E[g^2]_t + \epsilon}}\; g_t \\
        E[\Delta^2]_t &= \rho\, E[\Delta^2]_{t-1} + (1-\rho)\, \Delta_t^2 \\
        \theta_t &= \theta_{t-1} - \eta\, \Delta_t

    (``square_avg`` :math:`= E[g^2]`, ``acc_delta`` :math:`= E[\Delta^2]`, both starting at 0). The ratio
    of two RMS values gives the step the units of the parameters (Zeiler's "units" argument, sec. 3.2),
    and :math:`\epsilon` both prevents a division by zero and sets the size of the first steps,
    :math:`\sqrt{\epsilon}/\sqrt{(1-\rho) g_1^2 + \epsilon}\, g_1`, from which the step scale grows.
    Nothing in the update decays, which has a cost on deterministic problems: on Rosenbrock's curved valley
    (from (-1.2, 1), defaults) it reaches the valley within 1000 steps and then cycles across it without
    approaching the minimum, where the other optimizers here converge (``tests/test_optim.py``).

    Keras differences (``keras.optimizers.Adadelta``; tested in ``tests/test_optim_keras.py``): the same
    formula, :math:`\epsilon` inside both roots. Only the defaults differ: Keras has ``learning_rate=0.001``
    (here 1.0, the paper's), ``rho=0.95`` (here 0.9) and ``epsilon=1e-7`` (here 1e-6); with Keras'
    learning rate the steps are a thousandth of the paper's. Keras' ``weight_decay`` is decoupled
    (:math:`\theta \leftarrow \theta - \eta\lambda\theta`), here it is L2 added to the gradient.

    Args:
        params: the tensors to optimize, or param-group dicts.
        lr: the learning rate :math:`\eta` (>= 0), a multiplier of Zeiler's step.
        rho: the decay :math:`\rho` in [0, 1].
        eps: :math:`\epsilon` (> 0).
        weight_decay: :math:`\lambda` (>= 0).
        foreach: ``True``/``False`` for the multi-tensor path or the loop; ``None`` chooses (see ``SGD``).
        maximize: follow the gradient upwards (maximize the objective), as ``torch.optim``'s flag: the
            gradient is negated before the update.

    References:
        Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012 (Algorithm 1).
    """

    TORCH_KEYS = {"capturable": False, "differentiable": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyper(hyper: dict[str, Any]) -> None:
        check_lr(hyper["lr"])
        check_unit("rho", hyper["rho"])
        check_positive("eps", hyper["eps"])
        check_nonnegative("weight_decay", hyper["weight_decay"])
        check_foreach(hyper["foreach"])

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: Group) -> None:
        state["step"] = new_step()  # not used by the update; kept because torch.optim keeps it
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["acc_delta"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _single_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, rho, eps, wd = group["lr"], group["rho"], group["eps"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            if wd != 0:
                grad = grad.add(param, alpha=wd)  # g_t = grad f + lambda * theta
            square_avg, acc_delta = state["square_avg"], state["acc_delta"]
            square_avg.mul_(rho).addcmul_(grad, grad, value=1 - rho)  # E[g^2]_t
            std = square_avg.add(eps).sqrt_()  # RMS[g]_t = sqrt(E[g^2]_t + eps)
            delta = acc_delta.add(eps).sqrt_()  # RMS[Delta]_{t-1} = sqrt(E[Delta^2]_{t-1} + eps)
            delta.div_(std).mul_(grad)  # Delta_t = RMS[Delta]_{t-1} / RMS[g]_t * g_t
            acc_delta.mul_(rho).addcmul_(delta, delta, value=1 - rho)  # E[Delta^2]_t
            param.add_(delta, alpha=-lr)  # theta_t = theta_{t-1} - eta Delta_t

    def _multi_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, rho, eps, wd = group["lr"], group["rho"], group["eps"], group["weight_decay"]
        square_avgs = [s["square_avg"] for s in states]
        acc_deltas = [s["acc_delta"] for s in states]
        bump_steps([s["step"] for s in states])
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        torch._foreach_mul_(square_avgs, rho)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
        std = torch._foreach_add(square_avgs, eps)
        torch._foreach_sqrt_(std)
        deltas = torch._foreach_add(acc_deltas, eps)
        torch._foreach_sqrt_(deltas)
        torch._foreach_div_(deltas, std)
        torch._foreach_mul_(deltas, grads)
        torch._foreach_mul_(acc_deltas, rho)
        torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)
        torch._foreach_add_(params, deltas, alpha=-lr)
