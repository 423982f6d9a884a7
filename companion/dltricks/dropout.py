"""Inverted dropout, written out: a random mask in training, the identity at test time.

"Inverted" means the rescaling happens during training: kept units are divided by the keep probability
:math:`1 - p`, so the expected activation is unchanged and the network needs no correction at test time.
This is what ``torch.nn.Dropout`` and ``keras.layers.Dropout`` both do; the original paper instead scaled
the weights by :math:`1 - p` at test time, which gives the same expected activations.
"""

from __future__ import annotations

import torch
from torch import nn

from dltricks._checks import check_float, check_type


def dropout(
    x: torch.Tensor,
    p: float = 0.5,
    *,
    training: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Zero each element of ``x`` with probability ``p`` and scale the survivors by :math:`1/(1-p)`.

    .. math::

        m_i \sim \mathrm{Bernoulli}(1 - p), \qquad y_i = \frac{m_i\, x_i}{1 - p},
        \qquad \mathbb{E}[y_i] = x_i .

    The gradient is :math:`\partial y_i / \partial x_i = m_i / (1 - p)`: a dropped unit passes no gradient.

    Args:
        x: a floating-point tensor of any shape, on any device.
        p: probability of dropping an element, in ``[0, 1)``. ``p = 1`` is rejected: nothing would survive
            and the scale would be infinite.
        training: apply the mask; with ``False`` the input is returned unchanged (test time).
        generator: optional ``torch.Generator`` on ``x``'s device, for reproducible masks; default the
            global random state.

    Returns:
        A tensor of ``x``'s shape, dtype and device.

    Raises:
        TypeError: for a ``generator``, ``p`` or ``x`` of the wrong type.
        ValueError: for a ``p`` out of its allowed range.

    References:
        Srivastava, Hinton, Krizhevsky, Sutskever & Salakhutdinov, "Dropout: A Simple Way to Prevent
        Neural Networks from Overfitting", JMLR 15, 2014: sec. 4 for the Bernoulli mask (their :math:`p`
        is the probability of *keeping* a unit, :math:`1 - p` here) and Fig. 2 for the test-time scaling.
    """
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    if not x.is_floating_point():
        raise TypeError(f"`x` must be a floating-point tensor. Received: x with dtype {x.dtype}")
    p = check_float("p", p, minimum=0.0, maximum=1.0, max_inclusive=False)
    check_type("generator", generator, (torch.Generator, type(None)), "a torch.Generator or None")
    if not training or p == 0.0:
        return x
    # Draw the uniforms in float32 even for half-precision inputs: a bfloat16 uniform has only 8 bits, so
    # P(u >= p) would be off by up to 1/256 from 1 - p.
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    mask = (u >= p).to(x.dtype)
    # Divide (rather than multiply by a precomputed 1/(1-p)) so a kept element is exactly x / (1 - p).
    return x * mask / (1.0 - p)


class Dropout(nn.Module):
    """Module form of :func:`dropout`: active in ``train()`` mode, the identity in ``eval()`` mode.

    Args:
        p: probability of dropping an element, in ``[0, 1)``.

    Raises:
        TypeError: for a ``p`` of the wrong type.
        ValueError: for a ``p`` out of its allowed range.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = check_float("p", p, minimum=0.0, maximum=1.0, max_inclusive=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, training=self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
