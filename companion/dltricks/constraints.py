"""Max-norm regularization: after each step, project every unit's incoming weight vector into a ball.

Convention, stated because the frameworks store the same matrix transposed:

* A torch ``nn.Linear.weight`` has shape ``(out, in)``: row ``j`` holds the weights *into* output unit
  ``j``, so ``max_norm_(weights, c, dim=1)`` (the norm taken across the inputs) constrains the rows.
* A Keras ``Dense`` kernel has shape ``(in, out)``: the same vectors are its columns, and
  ``keras.constraints.MaxNorm(max_value=c, axis=0)`` constrains them. Keras divides by ``norm + 1e-7``
  (its ``backend.epsilon()``), so it also shrinks vectors already inside the ball by a relative
  ``1e-7 / norm``; here those are left bit for bit untouched.
* A conv kernel ``(out, in, kh, kw)`` constrains each filter with ``dim=(1, 2, 3)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dltricks._checks import check_float, check_int, check_tensors, fail
from dltricks.callbacks import Callback, TrainState


@torch.no_grad()
def max_norm_(weights: Iterable[torch.Tensor], max_value: float, *, dim: int | tuple[int, ...] = 1) -> None:
    r"""In place, rescale each slice of each tensor whose L2 norm over ``dim`` exceeds ``max_value``.

    .. math::

        w_j \leftarrow w_j \cdot \min\!\Big(1, \frac{c}{\lVert w_j \rVert_2}\Big),

    the Euclidean projection of :math:`w_j` onto the ball :math:`\lVert w_j \rVert_2 \le c`. Slices already
    inside the ball are multiplied by exactly 1, so they are unchanged bit for bit.

    Args:
        weights: the tensors to constrain (e.g. ``weights_only(model)``); a single tensor is accepted.
        max_value: the radius :math:`c` (> 0).
        dim: the dimension(s) the norm is taken over; ``1`` constrains the rows of an ``(out, in)`` matrix,
            the incoming weights of each output unit (see the module docstring for Keras' ``axis=0``).

    Raises:
        TypeError: for a ``max_value`` or ``weights`` of the wrong type.
        ValueError: for a ``dim``, ``max_value`` or ``weights`` out of its allowed range.

    References:
        Srebro & Shraibman, "Rank, Trace-Norm and Max-Norm", COLT 2005 (the max-norm);
        Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from Overfitting", JMLR 15,
        2014, sec. 5.1 (the constraint :math:`\lVert w \rVert_2 \le c` on each hidden unit's incoming
        weights, enforced by projection after every update, combined with dropout).
    """
    c = check_float("max_value", max_value, minimum=0.0, min_inclusive=False)
    dims = _dims(dim)
    tensors = check_tensors("weights", weights)
    for w in tensors:
        for d in dims:
            if not -w.ndim <= d < w.ndim:
                fail("dim", f"a dimension of every weight; one has {w.ndim} dimensions", dim)
    for w in tensors:
        norms = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
        # where() rather than c / norms.clamp_min(c): the scale of a slice inside the ball must be exactly
        # 1.0, and an all-zero slice must not turn into 0 / 0.
        scale = torch.where(norms > c, c / norms, torch.ones_like(norms))
        w.mul_(scale)


class MaxNorm(Callback):
    """Apply :func:`max_norm_` after every optimizer step (``on_step_end``), as Keras applies constraints.

    Args:
        weights: the tensors to constrain (e.g. ``weights_only(model)``).
        max_value: the radius :math:`c` (> 0); Srivastava et al. (2014) found 3 to 4 typical.
        dim: the dimension(s) the norm is taken over (``1``: the rows of an ``nn.Linear.weight``).

    Raises:
        TypeError: for a ``max_value`` or ``weights`` of the wrong type.
        ValueError: for a ``max_value`` or ``weights`` out of its allowed range.
    """

    def __init__(
        self, weights: Iterable[torch.Tensor], max_value: float = 3.0, *, dim: int | tuple[int, ...] = 1
    ) -> None:
        self.weights = check_tensors("weights", weights)
        self.max_value = check_float("max_value", max_value, minimum=0.0, min_inclusive=False)
        self.dim = _dims(dim)

    def on_step_end(self, state: TrainState) -> None:
        max_norm_(self.weights, self.max_value, dim=self.dim)


def _dims(dim: int | tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(dim, tuple) and dim:
        return tuple(check_int("dim", d) for d in dim)
    if isinstance(dim, tuple):
        fail("dim", "an integer or a non-empty tuple of integers", dim, TypeError)
    return (check_int("dim", dim),)
