"""Adam: bias-corrected running averages of the gradient and of its square (Kingma & Ba, Algorithm 1)."""

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
)


class Adam(DLOptimizer):
    r"""Adam (Kingma & Ba, 2015, Algorithm 1), optionally AMSGrad: the same update as ``torch.optim.Adam``.

    With learning rate :math:`\eta`, decay rates :math:`\beta_1, \beta_2` and L2 weight decay
    :math:`\lambda`, step :math:`t` does

    .. math::

        g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
        \hat m_t &= m_t / (1-\beta_1^t), \qquad\qquad\quad\ \hat v_t = v_t / (1-\beta_2^t) \\
        \theta_t &= \theta_{t-1} - \eta\, \hat m_t / \big(\sqrt{\hat v_t} + \epsilon\big)

    (``exp_avg`` :math:`= m`, ``exp_avg_sq`` :math:`= v`, both from 0, ``step`` :math:`= t`). The bias
    corrections undo the pull of the zero initialization towards 0 in the first steps. With ``amsgrad``
    (Reddi et al., 2018) the denominator uses the running maximum ``max_exp_avg_sq``
    :math:`v^{\max}_t = \max(v^{\max}_{t-1}, v_t)` in place of :math:`v_t`, so that the effective step
    never grows, the fix of their counterexample to Adam's convergence. ``weight_decay`` here is L2: it
    enters :math:`m` and :math:`v` and is therefore rescaled per coordinate; ``AdamW`` decouples it.

    Keras differences (``keras.optimizers.Adam``; tested in ``tests/test_optim_keras.py``):

    * Keras uses the "epsilon hat" form of Kingma & Ba's sec. 2: :math:`\alpha_t = \eta
      \sqrt{1-\beta_2^t}/(1-\beta_1^t)`, :math:`\theta_t = \theta_{t-1} - \alpha_t\, m_t /
      (\sqrt{v_t} + \hat\epsilon)`. Written as above, that is :math:`\epsilon = \hat\epsilon /
      \sqrt{1-\beta_2^t}`, an :math:`\epsilon` that starts :math:`1/\sqrt{1-\beta_2} \approx 31.6` times
      larger (for :math:`\beta_2 = 0.999`) and decays to :math:`\hat\epsilon`. The two agree when
      :math:`\epsilon` is negligible next to :math:`\sqrt{\hat v_t}`; to reproduce Keras exactly, set
      ``group["eps"] = eps_keras / sqrt(1 - beta2**t)`` before step :math:`t`. Keras' default ``epsilon`` is
      1e-7 (here 1e-8).
    * Keras' ``weight_decay`` (on any optimizer) is decoupled, :math:`\theta \leftarrow \theta -
      \eta\lambda\theta` before the update: ``keras.optimizers.Adam(weight_decay=w)`` is ``AdamW``, not
      ``Adam(weight_decay=w)``.
    * ``amsgrad`` takes the same maximum of the raw :math:`v_t`, with the same :math:`\hat\epsilon` form.

    Args:
        params: the tensors to optimize, or param-group dicts.
        lr: the learning rate :math:`\eta` (>= 0).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon` (> 0), added to :math:`\sqrt{\hat v_t}`.
        weight_decay: :math:`\lambda` (>= 0), L2 added to the gradient.
        amsgrad: use the running maximum of :math:`v_t` (AMSGrad).
        foreach: ``True``/``False`` for the multi-tensor path or the loop; ``None`` chooses (see ``SGD``).
        maximize: follow the gradient upwards (maximize the objective), as ``torch.optim``'s flag: the
            gradient is negated before the update.
        decoupled_weight_decay: decay the weights outside the adaptive update, :math:`\theta \leftarrow
            (1 - \eta\lambda)\theta` (``AdamW``), as ``torch.optim.Adam``'s flag of the same name.

    References:
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (Algorithm 1; the
        :math:`\hat\epsilon` form at the end of sec. 2);
        Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
    """

    TORCH_KEYS = {"capturable": False, "differentiable": False, "fused": None}
    SETDEFAULTS = {"amsgrad": False, "decoupled_weight_decay": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "foreach": foreach,
            "maximize": maximize,
            # Kept in every group, as in torch.optim, where AdamW is Adam with this key set.
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    @staticmethod
    def _check_hyper(hyper: dict[str, Any]) -> None:
        check_lr(hyper["lr"])
        check_betas(hyper["betas"])
        check_positive("eps", hyper["eps"])
        check_nonnegative("weight_decay", hyper["weight_decay"])
        check_bool("amsgrad", hyper["amsgrad"])
        check_bool("decoupled_weight_decay", hyper["decoupled_weight_decay"])
        check_foreach(hyper["foreach"])

    def _init_state(self, p: torch.Tensor, state: dict[str, Any], group: Group) -> None:
        state["step"] = new_step()
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _single_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for param, grad, state in zip(params, grads, states):
            state["step"] += 1
            t = state["step"].item()
            if wd != 0:
                if group["decoupled_weight_decay"]:
                    param.mul_(1 - lr * wd)  # AdamW: theta <- (1 - eta lambda) theta, outside m and v
                else:
                    grad = grad.add(param, alpha=wd)  # Adam: g_t = grad f + lambda * theta
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            # m_t = beta1 m_{t-1} + (1 - beta1) g_t, computed as m + (1 - beta1)(g - m)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v_t = beta2 v + (1 - beta2) g^2
            bias_correction1 = 1 - beta1**t  # m_hat = m_t / (1 - beta1^t) ...
            bias_correction2 = 1 - beta2**t  # v_hat = v_t / (1 - beta2^t)
            if group["amsgrad"]:
                torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                v = state["max_exp_avg_sq"]  # AMSGrad: v_max_t = max(v_max_{t-1}, v_t)
            else:
                v = exp_avg_sq
            denom = (v.sqrt() / bias_correction2**0.5).add_(eps)  # sqrt(v_hat) + eps
            # ... folded into the step: theta_t = theta_{t-1} - (eta / (1 - beta1^t)) m_t / denom
            param.addcdiv_(exp_avg, denom, value=-(lr / bias_correction1))

    def _multi_tensor(self, group: Group, params: Tensors, grads: Tensors, states: States) -> None:
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        ts = increment_steps([s["step"] for s in states])
        if wd != 0:
            if group["decoupled_weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * wd)
            else:
                grads = torch._foreach_add(grads, params, alpha=wd)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        step_sizes = [-(lr / (1 - beta1**t)) for t in ts]
        bias_correction2_sqrt = [(1 - beta2**t) ** 0.5 for t in ts]
        if group["amsgrad"]:
            max_exp_avg_sqs = [s["max_exp_avg_sq"] for s in states]
            torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
            denom = torch._foreach_sqrt(max_exp_avg_sqs)
        else:
            denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_sizes)
