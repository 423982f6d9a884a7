"""Small reference networks the chapters train."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dltricks._checks import check_float, check_int, fail


def mlp(
    in_features: int = 784,
    hidden: Sequence[int] = (256, 256),
    out_features: int = 10,
    *,
    activation: type[nn.Module] = nn.ReLU,
    dropout: float = 0.0,
) -> nn.Sequential:
    """A multilayer perceptron that flattens its input: ``Flatten, [Linear, activation, Dropout?]*, Linear``.

    The last layer returns logits (no activation): the loss applies softmax itself, more stably.

    Args:
        in_features: inputs per example after flattening (784 for 28x28 images).
        hidden: widths of the hidden layers.
        out_features: number of outputs (classes).
        activation: the hidden layers' activation class (default ``nn.ReLU``).
        dropout: dropout probability after each hidden activation (0 disables it).

    Raises:
        TypeError: for a ``dropout``, ``hidden``, ``hidden[i]``, ``in_features`` or ``out_features`` of the
            wrong type.
        ValueError: for a ``dropout``, ``hidden[i]``, ``in_features`` or ``out_features`` out of its allowed
            range.
    """
    in_features = check_int("in_features", in_features, minimum=1)
    out_features = check_int("out_features", out_features, minimum=1)
    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        fail("hidden", "a sequence of positive integers", hidden, TypeError)
    widths = [check_int("hidden[i]", h, minimum=1) for h in hidden]
    p = check_float("dropout", dropout, minimum=0.0, maximum=1.0, max_inclusive=False)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = in_features
    for width in widths:
        layers += [nn.Linear(prev, width), activation()]
        if p > 0:
            layers.append(nn.Dropout(p))
        prev = width
    layers.append(nn.Linear(prev, out_features))
    return nn.Sequential(*layers)


def deep_mlp(
    in_features: int = 784,
    width: int = 100,
    depth: int = 20,
    out_features: int = 10,
    *,
    activation: type[nn.Module] = nn.ReLU,
    kernel_init: Callable[[torch.Tensor], Any] | None = None,
    batch_norm: bool = False,
    residual: bool = False,
) -> nn.Sequential:
    """A deep, narrow MLP for studying gradient flow: ``depth`` hidden layers of ``width`` units.

    Three variants, all with zero biases and ``kernel_init`` applied to every weight matrix (PyTorch's
    default when ``None``):

    * plain: ``Flatten, (Linear, activation) * depth, Linear``;
    * ``batch_norm=True``: ``Linear, BatchNorm, activation`` in every hidden layer, as in Ioffe and Szegedy
      (2015), with :class:`dltricks.layers.BatchNorm`;
    * ``residual=True``: the first hidden layer maps the input to ``width``; each of the other ``depth - 1``
      is a pre-activation block ``x + Linear(activation(x))`` (He et al., 2016, "Identity mappings"), whose
      weight is scaled by ``1/sqrt(depth)`` after initialization. Why: with He weights a branch adds up to
      twice the stream's second moment (exactly its second moment for a symmetric stream), so ``L``
      unscaled blocks multiply it by between ``2**L`` and ``3**L``; with the branch scaled by
      ``a = 1/sqrt(L)`` the growth is at most ``(1 + 2/L)**L < e**2`` at any depth (the idea behind
      Fixup, Zhang et al., 2019).

    Args:
        in_features: inputs per example after flattening.
        width: units per hidden layer.
        depth: number of hidden layers (each counts one weight matrix).
        out_features: number of outputs (logits; no output activation).
        activation: the hidden activation class.
        kernel_init: in-place initializer for weight matrices, e.g. ``dltricks.init.he_normal_``.
        batch_norm: insert batch normalization before every hidden activation.
        residual: use residual blocks for hidden layers 2..depth (not with ``batch_norm``).

    Raises:
        TypeError: for a ``depth``, ``in_features``, ``kernel_init``, ``out_features`` or ``width`` of the
            wrong type.
        ValueError: for a ``depth``, ``in_features``, ``out_features``, ``residual`` or ``width`` out of its
            allowed range.
    """
    in_features = check_int("in_features", in_features, minimum=1)
    width = check_int("width", width, minimum=1)
    depth = check_int("depth", depth, minimum=1)
    out_features = check_int("out_features", out_features, minimum=1)
    if kernel_init is not None and not callable(kernel_init):
        fail("kernel_init", "a callable initializer or None", kernel_init, TypeError)
    if batch_norm and residual:
        fail("residual", "False when batch_norm=True (choose one remedy per network)", residual)
    from dltricks.layers import BatchNorm, Residual  # imported here: layers is only needed by this builder

    def linear(fan_in: int, fan_out: int, scale: float = 1.0) -> nn.Linear:
        layer = nn.Linear(fan_in, fan_out)
        with torch.no_grad():
            if kernel_init is not None:
                kernel_init(layer.weight)
            layer.weight.mul_(scale)
            layer.bias.zero_()
        return layer

    def hidden(fan_in: int) -> list[nn.Module]:
        return [linear(fan_in, width)] + ([BatchNorm(width)] if batch_norm else []) + [activation()]

    layers: list[nn.Module] = [nn.Flatten(), *hidden(in_features)]
    for _ in range(depth - 1):
        if residual:
            layers.append(Residual(nn.Sequential(activation(), linear(width, width, depth**-0.5))))
        else:
            layers += hidden(width)
    if residual:
        layers.append(activation())
    layers.append(linear(width, out_features))
    return nn.Sequential(*layers)
