r"""Batch normalization written from its formulas, and the residual connection.

:class:`BatchNorm` follows Ioffe & Szegedy (2015), Algorithm 1, for a mini-batch
:math:`\{x_1, \ldots, x_m\}` of one channel:

.. math::

    \mu_B = \frac{1}{m}\sum_i x_i, \qquad
    \sigma_B^2 = \frac{1}{m}\sum_i (x_i - \mu_B)^2, \qquad
    \hat x_i = \frac{x_i - \mu_B}{\sqrt{\sigma_B^2 + \epsilon}}, \qquad
    y_i = \gamma \hat x_i + \beta.

The backward pass is left to autograd: the forward is plain tensor operations, so the gradients through
:math:`\mu_B` and :math:`\sigma_B^2` (the paper's chain-rule equations in section 3) come out by
themselves. At inference the batch statistics are replaced by running averages (Algorithm 2).

Conventions, stated because the frameworks differ:

* Momentum. torch and this module update ``running = (1 - momentum) * running + momentum * batch``
  with ``momentum=0.1``. Keras' ``BatchNormalization(momentum=0.99)`` weighs the *old* value:
  ``moving = momentum * moving + (1 - momentum) * batch``. So ``keras_momentum = 1 - torch_momentum``.
* Running variance. torch (and this module) averages the *unbiased* batch variance
  :math:`\frac{m}{m-1}\sigma_B^2`, as Algorithm 2 of the paper prescribes for inference; Keras 3 averages the
  *biased* :math:`\sigma_B^2` it normalized with. Both normalize the batch itself with the biased one.
* Epsilon. torch's default is ``1e-5``, Keras' ``1e-3``.
* Channels. torch normalizes over every dimension except dim 1 (``(N, C)`` or ``(N, C, *spatial)``);
  Keras' default ``axis=-1`` is channels-last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from dltricks._checks import check_float, check_int, check_type, fail
from dltricks._modes import restore_modes, save_modes


class BatchNorm(nn.Module):
    r"""Batch normalization over the channel dimension 1 of ``(N, C)`` or ``(N, C, *spatial)`` inputs.

    Same arguments, parameters and buffers (``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked``) as ``nn.BatchNorm1d``/``nn.BatchNorm2d``, so ``state_dict`` s load both ways.

    * Training mode: normalize with the batch mean and biased variance, then update the running averages
      ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased* batch variance
      (``momentum=None``: the cumulative average ``1 / num_batches_tracked`` instead).
    * Evaluation mode: normalize with the running averages, a fixed affine map per channel.
    * ``track_running_stats=False``: no running buffers, batch statistics in both modes.

    Args:
        num_features: the number of channels ``C``.
        eps: :math:`\epsilon`, added to the variance for numerical stability (>= 0).
        momentum: weight of the new batch statistic in the running average, in [0, 1], or ``None``.
            Keras' ``momentum`` is ``1 - momentum``.
        affine: learn the per-channel scale :math:`\gamma` (``weight``, init 1) and shift :math:`\beta`
            (``bias``, init 0).
        track_running_stats: keep running averages for evaluation mode.

    Raises:
        TypeError: for an ``affine``, ``eps``, ``momentum``, ``num_features`` or ``track_running_stats`` of
            the
            wrong type.
        ValueError: for an ``eps``, ``momentum`` or ``num_features`` out of its allowed range; from
            ``forward``, for an input whose dimension 1 is not ``num_features``, or with one value per
            channel in training mode (its variance would be 0).

    References:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
        Covariate Shift", ICML 2015 (Algorithm 1 for training, Algorithm 2 for inference).
    """

    # Buffers, as nn.BatchNorm1d declares them; None when track_running_stats=False, which every use checks
    # on running_mean first.
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.eps = check_float("eps", eps, minimum=0.0)
        self.momentum = None if momentum is None else check_float("momentum", momentum, minimum=0, maximum=1)
        self.affine = check_type("affine", affine, bool, "True or False")
        self.track_running_stats = check_type(
            "track_running_stats", track_running_stats, bool, "True or False"
        )
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features))
            self.register_buffer("running_var", torch.ones(num_features))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, no batch counted: ``nn.BatchNorm1d``'s method of that name."""
        if self.running_mean is not None:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Reset the running statistics, and ``weight`` to 1 and ``bias`` to 0, as ``nn.BatchNorm1d``."""
        self.reset_running_stats()
        if self.weight is not None:
            with torch.no_grad():
                self.weight.fill_(1.0)
                self.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            fail("x.shape", f"(N, {self.num_features}) or (N, {self.num_features}, *spatial)", tuple(x.shape))
        dims = [0, *range(2, x.ndim)]  # every dimension but the channels
        shape = [1, self.num_features] + [1] * (x.ndim - 2)  # broadcast per-channel vectors over x
        if self.training or self.running_mean is None:
            m = x.numel() // self.num_features  # values per channel in this batch
            if self.training and m <= 1:
                # One value per channel has zero variance: x_hat would be 0 whatever the input.
                fail("x.shape", "more than one value per channel in training mode", tuple(x.shape))
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, correction=0)  # the biased variance of Algorithm 1
            if self.training and self.running_mean is not None:
                self._update_running_stats(mean.detach(), var.detach(), m)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.weight is None:
            return x_hat
        return self.weight.view(shape) * x_hat + self.bias.view(shape)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, m: int) -> None:
        self.num_batches_tracked.add_(1)
        # momentum=None: the cumulative average, 1/k on the k-th batch (torch's convention).
        rate = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (m / (m - 1))  # Bessel's correction, as Algorithm 2 uses for inference
        self.running_mean.mul_(1 - rate).add_(rate * mean)
        self.running_var.mul_(1 - rate).add_(rate * unbiased)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


BATCHNORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, BatchNorm)


@torch.no_grad()
def update_bn(loader: Iterable[Any], model: nn.Module, device: str | torch.device | None = None) -> None:
    """Recompute the running statistics of every batch-norm layer (torch's and :class:`BatchNorm`).

    ``torch.optim.swa_utils.update_bn`` finds batch-norm layers by ``isinstance(m, _BatchNorm)`` and so
    skips :class:`BatchNorm` silently; this function does the same work for both kinds: reset the running
    statistics, switch to the cumulative average (``momentum=None``), run ``model`` in training mode over
    ``loader``, then put the momenta and the training flag back. For torch's layers the result equals
    ``swa_utils.update_bn``'s.

    Args:
        loader: batches, each a tensor or a tuple/list whose first element is the input.
        model: the network (e.g. an SWA average of weights).
        device: where to move each input first (``None``: leave it where it is).

    Raises:
        ValueError: if ``model`` has no batch-norm layer that tracks running statistics (nothing to update:
            most likely the wrong model).
    """
    layers: list[Any] = [
        m for m in model.modules() if isinstance(m, BATCHNORM_TYPES) and m.running_mean is not None
    ]
    if not layers:
        fail("model", "a module with a batch-norm layer that tracks running statistics", type(model).__name__)
    momenta = {}
    for m in layers:
        m.reset_running_stats()
        momenta[m] = m.momentum
        m.momentum = None
    modes = save_modes(model)  # each submodule's own mode comes back, not one flag for all
    model.train()
    try:
        for batch in loader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(x if device is None else x.to(device))
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        restore_modes(modes)


class Residual(nn.Module):
    r"""A residual connection :math:`y = x + F(x)` around ``body`` :math:`F`.

    The identity path lets the gradient reach earlier layers unattenuated: :math:`\partial y / \partial x =
    I + \partial F / \partial x`. ``body`` must keep the shape of its input; a mismatch (a changed width or
    stride) fails with both shapes rather than broadcasting silently.

    Raises:
        TypeError: for a ``body`` of the wrong type.
        ValueError: from ``forward``, when ``body(x)`` does not have the shape of ``x``.

    References:
        He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (Eq. 1).
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = check_type("body", body, nn.Module, "a torch.nn.Module")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            fail("body(x).shape", f"the input's shape {tuple(x.shape)} for x + body(x)", got)
        return x + out
