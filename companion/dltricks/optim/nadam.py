"""NAdam: Adam with Nesterov momentum and a warming-up momentum schedule (Dozat, 2016)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from dltricks.optim._base import (
    DLOptimizer,
    Group,
    States,
    Tensors,
    check_betas,
    check_bool,
    check_foreach,
    check_lr,
    check_nonnegative,
    check_positive,
    increment_steps,
    new_step,
    scalar_dtype,
)


class NAdam(DLOptimizer):
    r"""NAdam (Dozat, 2016): the same update as ``torch.optim.NAdam``.

    With learning rate :math:`\eta`, :math:`\beta_1, \beta_2`, L2 weight decay :math:`\lambda` and momentum
    decay :math:`\psi`, step :math:`t` does

    .. math::

        g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        \mu_t &= \beta_1 \big(1 - \tfrac12\, 0.96^{t\psi}\big), \qquad
            \mu_{t+1} = \beta_1 \big(1 - \tfrac12\, 0.96^{(t+1)\psi}\big), \qquad
            \Pi_t = \textstyle\prod_{i \le t} \mu_i \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2,
            \qquad \hat v_t = v_t / (1-\beta_2^t) \\
        \theta_t &= \theta_{t-1} - \eta \left[ \frac{1-\mu_t}{1-\Pi_t}\, g_t
            + \frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\, m_t \right] \Big/ \big(\sqrt{\hat v_t} + \epsilon\big)

    (``exp_avg`` :math:`= m`, ``exp_avg_sq`` :math:`= v`, ``mu_product`` :math:`= \Pi_t`, a float32
    scalar like ``step``). The bracket is Nesterov's look-ahead applied to Adam's bias-corrected momentum:
    the current gradient with this step's weight and the momentum with the *next* step's
    :math:`\mu_{t+1}`. The schedule warms the momentum up from :math:`\beta_1/2` towards :math:`\beta_1`;
    Dozat uses :math:`0.96^{t/250}`, i.e. :math:`\psi = 0.004`, the default.

    Keras differences (``keras.optimizers.Nadam``; tested in ``tests/test_optim_keras.py``): Keras' schedule
    is :math:`u_t = \beta_1 (1 - \tfrac12\, 0.96^{t})`, without the 1/250: it reaches :math:`\beta_1` within
    a few dozen steps instead of tens of thousands. Otherwise the update is the same, with :math:`\epsilon`
    added to :math:`\sqrt{\hat v_t}` as here, so ``NAdam(momentum_decay=1.0)`` reproduces Keras' Nadam.
    Keras' defaults are ``learning_rate=0.001`` (here 2e-3) and ``epsilon=1e-7`` (here 1e-8).

    Args:
        params: the tensors to optimize, or param-group dicts.
        lr: the learning rate :math:`\eta` (>= 0).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon` (> 0).
        weight_decay: :math:`\lambda` (>= 0), L2 added to the gradient.
        momentum_decay: :math:`\psi` (>= 0).
        decoupled_weight_decay: decay the weights outside the update, :math:`\theta \leftarrow (1 -
            \eta\lambda)\theta`, as ``torch.optim.NAdam``'s flag (NAdamW).
        foreach: ``True``/``False`` for the multi-tensor path or the loop; ``None`` chooses (see ``SGD``).
        maximize: follow the gradient upwards (maximize the objective), as ``torch.optim``'s flag: the
            gradient is negated before the update.

    References:
        Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop track (Algorithm 2);
        Sutskever, Martens, Dahl & Hinton, "On the importance of initialization and momentum in deep
        learning", ICML 2013 (the momentum schedule).
    """

    TORCH_KEYS = {"capturable": False, "differentiable": False}
    SETDEFAULTS = {"decoupled_weight_decay": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            # torch.optim.NAdam's option for AdamW-style decay (NAdamW), as torch's positional argument.
            "decoupled_weight_decay": decoupled_weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyper(hyper: dict[str, Any]) -> None:
        check_lr(hyper["lr"])
        check_betas(hyper["betas"])
        check_positive("eps", hyper["eps"])
        check_nonnegative("weight_decay", hyper["weight_decay"])
        check_nonnegative("momentum_decay", hyper["momentum_decay"])
        check_bool("decoupled_weight_decay", hyper["decoupled_weight_decay"])
        check_foreach(hyper["foreach"])

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: Group) -> None:
        state["step"] = new_step()
        # Pi_0 = 1, kept as a 0-dim tensor in the step's dtype (float32), exactly as torch does: the product
        # is then rounded to float32 after every factor, and matching that rounding keeps the two
        # implementations identical to the last bit.
        state["mu_product"] = torch.tensor(1.0, dtype=scalar_dtype())
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _single_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        psi = group["momentum_decay"]
        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            t = state["step"].item()
            bias_correction2 = 1 - beta2**t
            if wd != 0:
                if group["decoupled_weight_decay"]:
                    param.mul_(1 - lr * wd)
                else:
                    grad = grad.add(param, alpha=wd)  # g_t = grad f + lambda * theta
            mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))  # mu_t: this step's momentum
            mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))  # mu_{t+1}: the look-ahead's
            state["mu_product"] *= mu  # Pi_t = Pi_{t-1} mu_t (in float32)
            mu_product = state["mu_product"].item()
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, 1 - beta1)  # m_t = beta1 m_{t-1} + (1 - beta1) g_t
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v_t
            denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps)  # sqrt(v_hat_t) + eps
            # theta_t = theta_{t-1} - eta (1 - mu_t) / (1 - Pi_t) g_t / denom        (the gradient's part)
            param.addcdiv_(grad, denom, value=-lr * (1.0 - mu) / (1.0 - mu_product))
            #                       - eta mu_{t+1} / (1 - Pi_t mu_{t+1}) m_t / denom  (the momentum's part)
            param.addcdiv_(exp_avg, denom, value=(-lr * mu_next) / (1.0 - mu_product * mu_next))

    def _multi_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        psi = group["momentum_decay"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        mu_products = [s["mu_product"] for s in states]
        ts = increment_steps([s["step"] for s in states])
        if wd != 0:
            if group["decoupled_weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = torch._foreach_add(grads, params, alpha=wd)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        mus = [beta1 * (1.0 - 0.5 * 0.96 ** (t * psi)) for t in ts]
        mu_nexts = [beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi)) for t in ts]
        torch._foreach_mul_(mu_products, mus)
        torch._foreach_div_(denom, [(1 - beta2**t) ** 0.5 for t in ts])
        torch._foreach_add_(denom, eps)
        products = [m.item() for m in mu_products]
        grad_sizes = [-(lr * (1.0 - mu) / (1.0 - pi)) for mu, pi in zip(mus, products)]
        momentum_sizes = [-(lr * mn / (1.0 - pi * mn)) for mn, pi in zip(mu_nexts, products)]
        torch._foreach_addcdiv_(params, grads, denom, grad_sizes)
        torch._foreach_addcdiv_(params, exp_avgs, denom, momentum_sizes)
