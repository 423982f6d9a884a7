"""Stochastic gradient descent with heavy-ball or Nesterov momentum, written to be read against the papers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dltricks._checks import fail
from dltricks.optim._base import (
    DLOptimizer,
    Group,
    States,
    Tensors,
    check_bool,
    check_foreach,
    check_lr,
    check_nonnegative,
    check_unit,
)


class SGD(DLOptimizer):
    r"""Stochastic gradient descent, optionally with momentum: the same update as ``torch.optim.SGD``.

    With learning rate :math:`\eta`, L2 weight decay :math:`\lambda`, momentum :math:`\mu` and dampening
    :math:`\tau`, step :math:`t` does

    .. math::

        g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        b_t &= \begin{cases} g_1 & t = 1 \\ \mu\, b_{t-1} + (1-\tau)\, g_t & t > 1 \end{cases} \\
        \theta_t &= \theta_{t-1} - \eta\, b_t \qquad\qquad\quad\ \text{(heavy ball)} \\
        \theta_t &= \theta_{t-1} - \eta\,(g_t + \mu\, b_t) \qquad \text{(Nesterov)}

    and :math:`\theta_t = \theta_{t-1} - \eta\, g_t` without momentum. The buffer :math:`b_t`
    (``state["momentum_buffer"]``) is a running sum of gradients, not a velocity: the learning rate
    multiplies it only when the step is taken. For a constant :math:`\eta` this is Polyak's (1964) heavy
    ball, :math:`\theta_t = \theta_{t-1} - \eta g_t + \mu(\theta_{t-1} - \theta_{t-2})`, and the Nesterov
    line is Sutskever et al.'s (2013, eqs. 3-4) accelerated gradient rewritten in the look-ahead variable
    :math:`\theta + \mu v`, so that only the gradient at the current parameters is needed.

    Keras differences (``keras.optimizers.SGD``; tested in ``tests/test_optim_keras.py``):

    * Keras keeps a velocity with the learning rate inside, :math:`v_t = \mu v_{t-1} - \eta_t g_t`,
      :math:`\theta_t = \theta_{t-1} + v_t` (Nesterov: :math:`\theta_t = \theta_{t-1} + \mu v_t - \eta_t
      g_t`), :math:`v_0 = 0`. With a constant rate :math:`v_t = -\eta b_t` exactly and the trajectories
      agree. When the rate changes from :math:`\eta` to :math:`\eta'`, Keras' velocity still carries the
      steps taken at :math:`\eta`, whereas here the whole buffer is applied at :math:`\eta'` at once. To
      reproduce Keras, multiply every ``momentum_buffer`` by :math:`\eta/\eta'` when changing the rate.
    * Keras has no dampening, its ``weight_decay`` is decoupled (:math:`\theta \leftarrow \theta -
      \eta\lambda\theta` before the update; the same as here without momentum, different with it), and
      its default learning rate is 0.01 (here 1e-3, as torch).

    Unlike ``torch.optim.SGD(foreach=True, nesterov=True)``, which adds the momentum into ``p.grad`` in
    place, neither path here modifies the gradients.

    Args:
        params: the tensors to optimize, or param-group dicts (as for any ``torch.optim`` optimizer).
        lr: the learning rate :math:`\eta` (>= 0).
        momentum: :math:`\mu` (>= 0); 0 is plain SGD, 0.9 the usual choice.
        dampening: :math:`\tau` in [0, 1], the fraction of each new gradient left out of the buffer.
        weight_decay: :math:`\lambda` (>= 0), added to the gradient as the gradient of
            :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2`.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
        foreach: ``True`` for the multi-tensor path, ``False`` for the per-parameter loop, ``None`` for the
            multi-tensor path whenever all parameters are on the CPU or a CUDA device.
        maximize: follow the gradient upwards (maximize the objective), as ``torch.optim``'s flag: the
            gradient is negated before the update.

    References:
        Polyak, "Some methods of speeding up the convergence of iteration methods", USSR Computational
        Mathematics and Mathematical Physics 4(5), 1964 (the heavy ball);
        Sutskever, Martens, Dahl & Hinton, "On the importance of initialization and momentum in deep
        learning", ICML 2013 (classical momentum, eqs. 1-2, and Nesterov's accelerated gradient, eqs. 3-4).
    """

    TORCH_KEYS = {"differentiable": False, "fused": None}
    SETDEFAULTS = {"nesterov": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyper(hyper: dict[str, Any]) -> None:
        check_lr(hyper["lr"])
        momentum = check_nonnegative("momentum", hyper["momentum"])
        dampening = check_unit("dampening", hyper["dampening"])
        check_nonnegative("weight_decay", hyper["weight_decay"])
        if check_bool("nesterov", hyper["nesterov"]):
            if momentum <= 0:
                fail("momentum", "> 0 when nesterov=True", hyper["momentum"])
            if dampening != 0:
                fail("dampening", "0 when nesterov=True", hyper["dampening"])
        check_foreach(hyper["foreach"])

    def _needs_state(self, group: Group) -> bool:
        return group["momentum"] != 0

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: Group) -> None:
        # Nothing to allocate: the buffer starts as a copy of the first gradient (see _single_tensor).
        pass

    def _single_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, mu, tau, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        for i, (param, grad) in enumerate(zip(params, grads)):
            if wd != 0:
                grad = grad.add(param, alpha=wd)  # g_t = grad f + lambda * theta (out of place: p.grad stays)
            if mu != 0:
                state = states[i]
                buf = state.get("momentum_buffer")
                if buf is None:
                    # b_1 = g_1: starting from the gradient rather than from zero skips the dampening once
                    # and makes the first step a full gradient step, as in torch.
                    buf = state["momentum_buffer"] = grad.detach().clone()
                else:
                    buf.mul_(mu).add_(grad, alpha=1 - tau)  # b_t = mu b_{t-1} + (1 - tau) g_t
                if group["nesterov"]:
                    grad = grad.add(buf, alpha=mu)  # look ahead: g_t + mu b_t (Sutskever et al. eq. 3)
                else:
                    grad = buf  # heavy ball: step along the accumulated direction (Polyak)
            param.add_(grad, alpha=-lr)  # theta_t = theta_{t-1} - eta * direction

    def _multi_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, mu, tau, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if mu != 0:
            bufs: list[Any] = [s.get("momentum_buffer") for s in states]  # None before a first gradient
            if all(b is not None for b in bufs):
                torch._foreach_mul_(bufs, mu)
                torch._foreach_add_(bufs, grads, alpha=1 - tau)
            else:  # the first step of some parameter: its buffer is born as a copy of its gradient
                for i, (b, g) in enumerate(zip(bufs, grads)):
                    if b is None:
                        bufs[i] = states[i]["momentum_buffer"] = g.detach().clone()
                    else:
                        b.mul_(mu).add_(g, alpha=1 - tau)
            if group["nesterov"]:
                grads = torch._foreach_add(grads, bufs, alpha=mu)  # new tensors: p.grad is not touched
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)
