r"""Weight initialization by variance scaling: Glorot, He and LeCun as one rule with three settings.

Every scheme here draws the weights of a layer from a zero-mean distribution whose variance is

.. math::

    \operatorname{Var}(w) = \frac{\text{scale}}{n}, \qquad
    n = \text{fan\_in},\ \text{fan\_out} \text{ or } \tfrac{1}{2}(\text{fan\_in} + \text{fan\_out}),

which keeps the variance of the activations (fan-in) or of the back-propagated gradients (fan-out) roughly
constant from layer to layer. The named cases, with Keras' definitions:

=================  =======  ==========  ==================  ===========================================
name               scale    mode        distribution        source
=================  =======  ==========  ==================  ===========================================
``glorot_*``       1        fan_avg     uniform / trunc.    Glorot & Bengio, AISTATS 2010, Eq. 16
``he_*``           2        fan_in      uniform / trunc.    He et al., ICCV 2015, Eq. 10
``lecun_*``        1        fan_in      uniform / trunc.    LeCun et al., "Efficient BackProp", 1998;
                                                            Klambauer et al., NeurIPS 2017 (SELU)
=================  =======  ==========  ==================  ===========================================

Conventions, stated because the frameworks differ:

* Layouts. A torch ``nn.Linear.weight`` is ``(out, in)`` and a conv weight ``(out, in / groups, *kernel)``;
  :func:`fans` reads them that way, as ``torch.nn.init`` does. A Keras ``Dense`` kernel is ``(in, out)`` and
  a conv kernel ``(*kernel, in, out)``, so the same layer has the same fans with the shape read in the other
  order. Transposed convolutions are read by their tensor layout in both frameworks (torch's
  ``(in, out / groups, *kernel)`` gives ``fan_in = out / groups * prod(kernel)``), and so they are here.
* Truncated normal. ``distribution="truncated_normal"`` is Keras' ``VarianceScaling``: draw from a normal
  with standard deviation :math:`\sigma = \sqrt{\text{scale}/n} / 0.8796\ldots`, rejecting values beyond
  :math:`\pm 2\sigma`. Cutting the tails shrinks the standard deviation of a standard normal to
  0.87962566103423978, so the division makes the *truncated* variable's standard deviation exactly
  :math:`\sqrt{\text{scale}/n}`. ``torch.nn.init.trunc_normal_(w, std=s)`` does no such correction (its
  values have standard deviation :math:`0.88\,s`), and its bounds ``a=-2, b=2`` are absolute, not
  multiples of ``std``: with ``std=0.02`` nothing is truncated at all.
* Names. ``distribution="normal"`` here is the plain, untruncated normal (torch's ``kaiming_normal_`` and
  ``xavier_normal_``). In Keras ``"normal"`` is an alias of ``"truncated_normal"`` and the plain normal is
  ``"untruncated_normal"``, which this module also accepts. The ``*_normal_`` functions below follow Keras
  (truncated); torch's ``kaiming_normal_``/``xavier_normal_`` are untruncated.
* Gains. torch's ``kaiming_*_(nonlinearity="relu")`` is ``scale=2, mode="fan_in"`` and ``xavier_*_`` is
  ``scale=1, mode="fan_avg"`` (gain :math:`g` corresponds to ``scale`` :math:`= g^2`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dltricks._checks import check_choice, check_float, check_type, fail

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "truncated_normal", "uniform", "untruncated_normal")
#: Standard deviation of a standard normal truncated to [-2, 2]: sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))),
#: with phi and Phi the standard normal density and distribution function. Keras hard-codes the same value.
TRUNCATED_NORMAL_STD = 0.87962566103423978
#: The layers whose ``weight`` :func:`init_model_` initializes.
KERNEL_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def fans(tensor_or_shape: torch.Tensor | Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight in torch's layout ``(out, in, *kernel)``.

    ``fan_in = in * prod(kernel)`` is the number of inputs each output unit sums over; ``fan_out =
    out * prod(kernel)`` the number of outputs each input feeds. A 1-D tensor (a bias, a norm scale) has
    no fans and is rejected.

    Args:
        tensor_or_shape: a tensor, a ``torch.Size`` or a sequence of non-negative integers.

    Raises:
        TypeError: for a ``tensor_or_shape`` of the wrong type.
        ValueError: for a ``tensor_or_shape`` out of its allowed range.
    """
    name = "tensor_or_shape"
    if isinstance(tensor_or_shape, torch.Tensor):
        shape = tuple(tensor_or_shape.shape)
        name, tensor_or_shape = "tensor_or_shape.shape", shape  # name the shape, not the (long) values
    elif isinstance(tensor_or_shape, Sequence) and not isinstance(tensor_or_shape, (str, bytes)):
        shape = tuple(tensor_or_shape)
        if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
            fail("tensor_or_shape", "a tensor or a sequence of non-negative integers", tensor_or_shape)
    else:
        fail("tensor_or_shape", "a tensor or a sequence of non-negative integers", tensor_or_shape, TypeError)
    if len(shape) < 2:
        fail(name, "a weight with at least 2 dimensions (a bias has no fan)", tensor_or_shape)
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


@torch.no_grad()
def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "truncated_normal",
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Fill ``tensor`` in place with zero-mean values of variance ``scale / n`` and return it.

    ``n`` is the fan chosen by ``mode`` (see :func:`fans`). The distributions, each with that variance:

    * ``"normal"`` (alias ``"untruncated_normal"``): :math:`\mathcal N(0, \sigma^2)`,
      :math:`\sigma = \sqrt{\text{scale}/n}`;
    * ``"truncated_normal"``: a normal of standard deviation :math:`\sigma / 0.8796\ldots` cut at two of its
      standard deviations, as Keras does (see the module docstring for why the division);
    * ``"uniform"``: :math:`U[-\ell, \ell]` with :math:`\ell = \sqrt{3\,\text{scale}/n}`, since
      :math:`\operatorname{Var}\,U[-\ell, \ell] = \ell^2 / 3`.

    Same semantics as ``keras.initializers.VarianceScaling(scale, mode, distribution)`` applied to the
    transposed shape (Keras kernels are ``(in, out)``), except that Keras reads ``"normal"`` as truncated.

    Args:
        tensor: the weight, in torch's layout ``(out, in, *kernel)``, at least 2-D.
        scale: the variance multiplier (> 0): 1 for Glorot and LeCun, 2 for He (ReLU).
        mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
        distribution: ``"normal"``, ``"truncated_normal"`` or ``"uniform"``.
        generator: an optional ``torch.Generator`` for reproducible draws.

    Raises:
        TypeError: for a ``generator``, ``scale`` or ``tensor`` of the wrong type.
        ValueError: for a ``distribution``, ``mode``, ``scale`` or ``tensor.shape`` out of its allowed range.

    References:
        Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural networks",
        AISTATS 2010 (Eq. 12 and 16); He et al., "Delving Deep into Rectifiers", ICCV 2015 (Eq. 10 and 14).
    """
    check_type("tensor", tensor, torch.Tensor, "a torch.Tensor")
    s = check_float("scale", scale, minimum=0.0, min_inclusive=False)
    check_choice("mode", mode, MODES)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    check_type("generator", generator, (torch.Generator, type(None)), "a torch.Generator or None")
    if tensor.ndim < 2:
        fail("tensor.shape", "a weight with at least 2 dimensions (a bias has no fan)", tuple(tensor.shape))
    fan_in, fan_out = fans(tensor)
    if tensor.numel() == 0:  # nothing to fill, and a zero fan would divide by zero
        return tensor
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    std = math.sqrt(s / n)
    if distribution == "uniform":
        limit = math.sqrt(3.0) * std
        return tensor.uniform_(-limit, limit, generator=generator)
    if distribution == "truncated_normal":
        underlying = std / TRUNCATED_NORMAL_STD
        # torch's a and b are absolute bounds: pass +-2 of the underlying standard deviations explicitly.
        return nn.init.trunc_normal_(tensor, 0.0, underlying, -2 * underlying, 2 * underlying, generator)
    return tensor.normal_(0.0, std, generator=generator)


def glorot_uniform_(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Glorot (Xavier) uniform: ``U[-l, l]``, ``l = sqrt(6 / (fan_in + fan_out))``; as ``xavier_uniform_``."""
    return variance_scaling_(tensor, 1.0, "fan_avg", "uniform", generator=generator)


def glorot_normal_(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Glorot (Xavier) normal as in Keras: truncated normal with std ``sqrt(2 / (fan_in + fan_out))``."""
    return variance_scaling_(tensor, 1.0, "fan_avg", "truncated_normal", generator=generator)


def he_normal_(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """He (Kaiming) normal as in Keras: truncated normal with std ``sqrt(2 / fan_in)``, for ReLU layers."""
    return variance_scaling_(tensor, 2.0, "fan_in", "truncated_normal", generator=generator)


def he_uniform_(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """He (Kaiming) uniform: ``U[-l, l]``, ``l = sqrt(6 / fan_in)``; as ``kaiming_uniform_`` for ReLU."""
    return variance_scaling_(tensor, 2.0, "fan_in", "uniform", generator=generator)


def lecun_normal_(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """LeCun normal as in Keras: truncated normal with std ``sqrt(1 / fan_in)``, the SELU initialization."""
    return variance_scaling_(tensor, 1.0, "fan_in", "truncated_normal", generator=generator)


def lecun_uniform_(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """LeCun uniform: ``U[-l, l]``, ``l = sqrt(3 / fan_in)``."""
    return variance_scaling_(tensor, 1.0, "fan_in", "uniform", generator=generator)


@torch.no_grad()
def init_model_(
    model: nn.Module, kernel_init: Callable[[torch.Tensor], Any], bias: float | None = 0.0
) -> nn.Module:
    """Apply ``kernel_init`` to the weight of every linear and conv layer of ``model``; set their biases.

    Keras' defaults are ``glorot_uniform_`` kernels and zero biases; torch's ``nn.Linear`` and ``nn.Conv*``
    instead draw both from ``U[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (``kaiming_uniform_`` with
    ``a=sqrt(5)``). ``init_model_(model, glorot_uniform_)`` turns a torch model into Keras' starting point.

    Args:
        model: the network; other layers (norms, embeddings) are left as they are.
        kernel_init: called on each weight, e.g. :func:`he_normal_` or ``functools.partial(
            variance_scaling_, scale=2.0)``.
        bias: the constant every bias is set to; ``None`` leaves the biases untouched.

    Returns:
        ``model``, for chaining.

    Raises:
        TypeError: for a ``bias``, ``kernel_init`` or ``model`` of the wrong type.
        ValueError: for a ``bias`` out of its allowed range.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    if not callable(kernel_init):
        fail("kernel_init", "a callable taking a weight tensor", kernel_init, TypeError)
    value = None if bias is None else check_float("bias", bias)
    for module in model.modules():
        if isinstance(module, KERNEL_LAYERS):
            layer: Any = module  # a Linear or Conv: its weight and bias are tensors (or bias None)
            kernel_init(layer.weight)
            if value is not None and layer.bias is not None:
                layer.bias.fill_(value)
    return model
