"""Small reference networks the chapters train."""

from __future__ import annotations

from collections.abc import Sequence

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
