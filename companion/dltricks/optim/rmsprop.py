"""RMSprop: divide each gradient by a running root-mean-square of its recent magnitudes."""

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
    check_bool,
    check_foreach,
    check_lr,
    check_nonnegative,
    check_positive,
    check_unit,
    new_step,
)


class RMSprop(DLOptimizer):
    r"""RMSprop (Tieleman & Hinton, 2012), optionally centered (Graves, 2013): as ``torch.optim.RMSprop``.

    With learning rate :math:`\eta`, smoothing constant :math:`\alpha`, L2 weight decay :math:`\lambda` and
    momentum :math:`\mu`, step :math:`t` does

    .. math::

        g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        v_t &= \alpha\, v_{t-1} + (1-\alpha)\, g_t^2 \\
        \bar g_t &= \alpha\, \bar g_{t-1} + (1-\alpha)\, g_t \qquad \text{(centered only)} \\
        d_t &= \sqrt{v_t} + \epsilon \quad\text{or, centered,}\quad
            d_t = \sqrt{v_t - \bar g_t^2} + \epsilon \\
        b_t &= \mu\, b_{t-1} + g_t / d_t, \quad \theta_t = \theta_{t-1} - \eta\, b_t
            \qquad \text{(with momentum)} \\
        \theta_t &= \theta_{t-1} - \eta\, g_t / d_t \qquad\qquad\qquad\quad\ \text{(without)}

    with ``square_avg`` :math:`= v`, ``grad_avg`` :math:`= \bar g` and ``momentum_buffer`` :math:`= b`, all
    starting at 0. Unlike Adagrad's sum, the running average forgets: the step size follows the recent
    gradient scale instead of decaying for ever. The centered form divides by an estimate of the gradient's
    standard deviation rather than its root mean square.

    Keras differences (``keras.optimizers.RMSprop``; tested in ``tests/test_optim_keras.py``):

    * Keras puts :math:`\epsilon` inside the root: :math:`d_t = \sqrt{v_t + \epsilon}` (centered:
      :math:`\sqrt{v_t - \bar g_t^2 + \epsilon}`), with ``epsilon=1e-7``. The two agree when
      :math:`v_t \gg \epsilon^2` and :math:`v_t \gg \epsilon` respectively, and differ visibly for a large
      :math:`\epsilon` or tiny gradients; no constant :math:`\epsilon` converts one into the other.
    * Keras' momentum holds the learning rate, :math:`b_t = \mu b_{t-1} + \eta_t g_t / d_t`,
      :math:`\theta_t = \theta_{t-1} - b_t`: identical for a constant rate, different after a change of
      rate (as for ``SGD``: rescale ``momentum_buffer`` by :math:`\eta/\eta'` to reproduce Keras).
    * Keras' decay is ``rho=0.9`` (here ``alpha=0.99``) and its learning rate 0.001 (here 0.01).

    Args:
        params: the tensors to optimize, or param-group dicts.
        lr: the learning rate :math:`\eta` (>= 0).
        alpha: the smoothing constant :math:`\alpha` in [0, 1].
        eps: :math:`\epsilon` (> 0), added to the root.
        weight_decay: :math:`\lambda` (>= 0), L2 added to the gradient.
        momentum: :math:`\mu` (>= 0).
        centered: divide by the centered second moment (an estimate of the variance).
        foreach: ``True``/``False`` for the multi-tensor path or the loop; ``None`` chooses (see ``SGD``).
        maximize: follow the gradient upwards (maximize the objective), as ``torch.optim``'s flag: the
            gradient is negated before the update.

    References:
        Tieleman & Hinton, "Lecture 6.5 - rmsprop: Divide the gradient by a running average of its recent
        magnitude", COURSERA: Neural Networks for Machine Learning, 2012;
        Graves, "Generating Sequences With Recurrent Neural Networks", arXiv:1308.0850, 2013 (the centered
        variant with momentum).
    """

    TORCH_KEYS = {"capturable": False, "differentiable": False}
    SETDEFAULTS = {"momentum": 0, "centered": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyper(hyper: dict[str, Any]) -> None:
        check_lr(hyper["lr"])
        check_unit("alpha", hyper["alpha"])
        check_positive("eps", hyper["eps"])
        check_nonnegative("weight_decay", hyper["weight_decay"])
        check_nonnegative("momentum", hyper["momentum"])
        check_bool("centered", hyper["centered"])
        check_foreach(hyper["foreach"])

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: Group) -> None:
        state["step"] = new_step()  # not used by the update; kept because torch.optim keeps it
        state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _single_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        wd, mu = group["weight_decay"], group["momentum"]
        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            if wd != 0:
                grad = grad.add(param, alpha=wd)  # g_t = grad f + lambda * theta
            square_avg = state["square_avg"]
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)  # v_t = alpha v + (1 - alpha) g^2
            if group["centered"]:
                grad_avg = state["grad_avg"]
                grad_avg.lerp_(grad, 1 - alpha)  # gbar_t = alpha gbar + (1 - alpha) g
                avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()  # sqrt(v_t - gbar_t^2)
            else:
                avg = square_avg.sqrt()  # sqrt(v_t): the running RMS of the gradient
            avg = avg.add_(eps)  # d_t
            if mu > 0:
                buf = state["momentum_buffer"]
                buf.mul_(mu).addcdiv_(grad, avg)  # b_t = mu b_{t-1} + g_t / d_t
                param.add_(buf, alpha=-lr)  # theta_t = theta_{t-1} - eta b_t
            else:
                param.addcdiv_(grad, avg, value=-lr)  # theta_t = theta_{t-1} - eta g_t / d_t

    def _multi_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, alpha, eps = group["lr"], group["alpha"], group["eps"]
        wd, mu = group["weight_decay"], group["momentum"]
        square_avgs = [s["square_avg"] for s in states]
        bump_steps([s["step"] for s in states])
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        torch._foreach_mul_(square_avgs, alpha)
        torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
        if group["centered"]:
            grad_avgs = [s["grad_avg"] for s in states]
            torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
            avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
            torch._foreach_sqrt_(avg)
        else:
            avg = torch._foreach_sqrt(square_avgs)
        torch._foreach_add_(avg, eps)
        if mu > 0:
            bufs = [s["momentum_buffer"] for s in states]
            torch._foreach_mul_(bufs, mu)
            torch._foreach_addcdiv_(bufs, grads, avg)
            torch._foreach_add_(params, bufs, alpha=-lr)
        else:
            torch._foreach_addcdiv_(params, grads, avg, value=-lr)
