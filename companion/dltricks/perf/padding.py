r"""Padding sizes to multiples, so that matrix units (Tensor Cores) can be used at full efficiency.

NVIDIA's performance guide: Tensor Cores are used most efficiently when the dimensions of a matrix
multiplication (:math:`M, N, K`; for a linear layer the batch size, the input and output features) are
multiples of 8 for FP16/BF16 (64 on an A100 is better still) and of 4 for TF32; a convolution's input and
output channels should be multiples of 8 (FP16) or 4 (TF32). An RGB image's 3 input channels are the usual
exception: padding them to 4 with zeros is enough for the first convolution when its stride is 2, and
channels-last (NHWC) layout is preferred (see :mod:`dltricks.perf.amp`).

Zero padding does not change the result: the extra input channels or features are zeros, and the extra
weights are zeros, so every original output is the same sum (plus terms that are exactly zero). The padded
layers here are built that way and tested equal to the originals.

References:
    NVIDIA, "Deep Learning Performance Documentation": "Matrix Multiplication Background User's Guide"
    (sec. "Tensor Core Requirements"), "Linear/Fully-Connected Layers User's Guide" (sec. "Input Features
    and Output Neuron Counts") and "Convolutional Layers User's Guide" (sec. "Channels In and Out", the
    3-to-4 channel padding, and "Tensor Layout", NHWC).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dltricks._checks import check_int, check_type, fail


def pad_to_multiple(n: int, k: int = 8) -> int:
    """The smallest multiple of ``k`` that is ``>= n``: 1000 for ``(1000, 8)``, 1008 for ``(1001, 8)``.

    Args:
        n: a size (features, channels, vocabulary size, batch size), >= 0.
        k: the multiple, >= 1 (8 for FP16/BF16, 4 for TF32, 64 on an A100).

    Raises:
        TypeError: if ``n`` or ``k`` is not an integer.
        ValueError: for ``n < 0`` or ``k < 1``.
    """
    n = check_int("n", n, minimum=0)
    k = check_int("k", k, minimum=1)
    return -(-n // k) * k


def pad_channels(x: torch.Tensor, multiple: int = 4) -> torch.Tensor:
    """``x`` ``(N, C, ...)`` with zero channels appended up to a multiple: ``(N, pad_to_multiple(C), ...)``.

    The usual case: RGB images ``(N, 3, H, W)`` become ``(N, 4, H, W)``, for a first convolution built by
    :func:`pad_conv_in_channels`. The memory format (e.g. channels-last) is kept.

    Raises:
        TypeError: if ``x`` is not a tensor or ``multiple`` is not an integer.
        ValueError: if ``x`` has fewer than 2 dimensions or ``multiple < 1``.
    """
    check_type("x", x, torch.Tensor, "a torch.Tensor (N, C, ...)")
    if x.ndim < 2:
        fail("x", "a tensor with a channel dimension (N, C, ...)", f"tensor of shape {tuple(x.shape)}")
    multiple = check_int("multiple", multiple, minimum=1)
    extra = pad_to_multiple(x.shape[1], multiple) - x.shape[1]
    if extra == 0:
        return x
    zeros = torch.zeros((x.shape[0], extra, *x.shape[2:]), dtype=x.dtype, device=x.device)
    out = torch.cat([x, zeros], dim=1)
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def pad_conv_in_channels(conv: nn.Conv2d, multiple: int = 4) -> nn.Conv2d:
    """A copy of ``conv`` taking ``pad_to_multiple(in_channels)`` channels, the new ones with zero weights.

    ``pad_conv_in_channels(conv)(pad_channels(x))`` equals ``conv(x)``: the zero channels meet zero weights.

    Raises:
        TypeError: if ``conv`` is not an ``nn.Conv2d`` or ``multiple`` is not an integer.
        ValueError: for ``multiple < 1`` or a grouped convolution (``groups > 1``).
    """
    check_type("conv", conv, nn.Conv2d, "a torch.nn.Conv2d")
    multiple = check_int("multiple", multiple, minimum=1)
    if conv.groups != 1:
        fail(
            "conv.groups", "1 (padding the channels of a grouped convolution changes its groups)", conv.groups
        )
    c_in = pad_to_multiple(conv.in_channels, multiple)
    w = conv.weight
    new = nn.Conv2d(
        c_in, conv.out_channels,
        conv.kernel_size, conv.stride, conv.padding, conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None, padding_mode=conv.padding_mode, device=w.device, dtype=w.dtype,
    )  # fmt: skip
    with torch.no_grad():
        new.weight.copy_(F.pad(w, (0, 0, 0, 0, 0, c_in - conv.in_channels)))  # zeros for the new channels
        if conv.bias is not None:
            new.bias.copy_(conv.bias)  # type: ignore[union-attr]
    return new


def pad_linear(linear: nn.Linear, multiple: int = 8) -> nn.Linear:
    """A copy of ``linear`` with ``in_features`` and ``out_features`` padded to multiples, zeros elsewhere.

    For an input padded with zero features to the new width, the first ``out_features`` outputs equal
    ``linear``'s and the extra outputs are exactly 0 (zero weights, zero bias): chain padded layers and
    slice the last output, or pad hidden widths directly when building a model (:func:`pad_to_multiple`).

    Raises:
        TypeError: if ``linear`` is not an ``nn.Linear`` or ``multiple`` is not an integer.
        ValueError: for ``multiple < 1``.
    """
    check_type("linear", linear, nn.Linear, "a torch.nn.Linear")
    multiple = check_int("multiple", multiple, minimum=1)
    n_in = pad_to_multiple(linear.in_features, multiple)
    n_out = pad_to_multiple(linear.out_features, multiple)
    w = linear.weight
    new = nn.Linear(n_in, n_out, bias=linear.bias is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(F.pad(w, (0, n_in - linear.in_features, 0, n_out - linear.out_features)))
        if linear.bias is not None:
            new.bias.copy_(F.pad(linear.bias, (0, n_out - linear.out_features)))
    return new
