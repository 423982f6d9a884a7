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

import torch
from torch import nn

from dltricks._checks import check_float, check_int, check_type, fail


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

    References:
        Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal
        Covariate Shift", ICML 2015 (Algorithm 1 for training, Algorithm 2 for inference).
    """

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


class Residual(nn.Module):
    r"""A residual connection :math:`y = x + F(x)` around ``body`` :math:`F`.

    The identity path lets the gradient reach earlier layers unattenuated: :math:`\partial y / \partial x =
    I + \partial F / \partial x`. ``body`` must keep the shape of its input; a mismatch (a changed width or
    stride) fails with both shapes rather than broadcasting silently.

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
