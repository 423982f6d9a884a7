"""AdamW: Adam with the weight decay taken out of the adaptive update (Loshchilov & Hutter, Algorithm 2)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dltricks.optim.adam import Adam


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), the update of ``torch.optim.AdamW``.

    Step :math:`t` first shrinks the parameters, then takes Adam's step on the plain gradient:

    .. math::

        \theta_{t-1} &\leftarrow (1 - \eta\lambda)\, \theta_{t-1} \\
        g_t &= \nabla f(\theta_{t-1}) \quad\text{(no } \lambda\theta \text{ term)} \\
        \theta_t &= \theta_{t-1} - \eta\, \hat m_t / \big(\sqrt{\hat v_t} + \epsilon\big)

    with :math:`\hat m_t, \hat v_t` as in ``Adam`` (the state is the same; ``amsgrad`` likewise). With L2
    (``Adam(weight_decay=...)``) the decay term :math:`\lambda\theta` is divided by :math:`\sqrt{\hat v_t}`
    like the gradient, so weights with large gradients are hardly regularized; decoupled, every weight
    decays at the same relative rate :math:`\eta\lambda` per step. Loshchilov & Hutter write the decay as
    :math:`\eta_t \lambda \theta` with a schedule multiplier :math:`\eta_t`; here, as in torch, it is
    :math:`\eta\lambda\theta` with the current learning rate, so a learning-rate schedule scales both.

    Keras differences (``keras.optimizers.AdamW``): the decay is the same (:math:`\theta \leftarrow \theta
    - \eta\lambda\theta` before the update); the :math:`\hat\epsilon` placement of ``Adam`` applies, and
    Keras' defaults are ``weight_decay=0.004`` (here 1e-2) and ``epsilon=1e-7`` (here 1e-8).

    Args:
        params: the tensors to optimize, or param-group dicts.
        lr: the learning rate :math:`\eta` (>= 0).
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1).
        eps: :math:`\epsilon` (> 0).
        weight_decay: :math:`\lambda` (>= 0), decoupled.
        amsgrad: use the running maximum of :math:`v_t` (AMSGrad).
        foreach: ``True``/``False`` for the multi-tensor path or the loop; ``None`` chooses (see ``SGD``).
        maximize: maximize the objective (the gradient is negated), as ``torch.optim.AdamW``.

    References:
        Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (Algorithm 2);
        Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         decoupled_weight_decay=True)  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        # As torch.optim.AdamW: whatever state dict is loaded (e.g. one saved by Adam), AdamW decouples.
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
