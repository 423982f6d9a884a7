r"""Gradient clipping: by value, by each tensor's norm, by the global norm; and a callback for ``fit``.

The three rules, for gradients :math:`g_1, \ldots, g_k` (one per parameter tensor) and a threshold
:math:`c`:

* by value (Keras ``clipvalue``, torch ``clip_grad_value_``): every element :math:`g \leftarrow
  \operatorname{clip}(g, -c, c)`. Cheap, but it changes the direction of the gradient: ``[0.9, 100.0]``
  becomes ``[0.9, 1.0]``.
* by norm (Keras ``clipnorm``): each tensor separately, :math:`g_j \leftarrow g_j \cdot c / \max(\lVert g_j
  \rVert, c)`. Each tensor keeps its direction: ``[0.9, 100.0]`` becomes ``[0.00899964, 0.99995950]``.
* by global norm (Keras ``global_clipnorm``, torch ``clip_grad_norm_``): all tensors by one factor,
  :math:`g_j \leftarrow g_j \cdot \min(1, c / (\lVert g \rVert + \epsilon))` with :math:`\lVert g \rVert
  = \sqrt{\sum_j \lVert g_j \rVert^2}`, so the whole update keeps its direction (Pascanu et al., 2013).

Conventions, stated because the frameworks differ:

* Global norm. torch (and :func:`clip_by_global_norm_`) scales by :math:`\min(1, c / (\lVert g \rVert +
  10^{-6}))`; Keras 3 by :math:`c / \max(\lVert g \rVert, c)` (no epsilon). Above the threshold the two
  factors differ by a relative :math:`\epsilon / \lVert g \rVert`; below it Keras' is exactly 1 and
  torch's too, except for norms within :math:`\epsilon` of :math:`c`. A non-finite norm makes Keras'
  factor NaN (every gradient becomes NaN); torch's is then 0 (finite entries become 0, infinite ones NaN).
* Per-tensor norm. :func:`clip_by_norm_` uses Keras' factor :math:`c / \max(\lVert g_j \rVert, c) =
  \min(1, c / \lVert g_j \rVert)`, no epsilon (a zero norm gives factor 1). torch has no built-in for it.
* No host sync. The norm-based functions never read a tensor's value on the host (no ``.item()``, no
  ``if`` on a tensor): the factor is a tensor, clamped at 1 and always multiplied in, as
  ``torch.nn.utils.clip_grad_norm_`` does, so a CUDA step does not wait for the GPU to finish.

References:
    Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks", ICML 2013
    (Algorithm 1: rescale the gradient when its norm exceeds a threshold); Mikolov, "Statistical language
    models based on neural networks", PhD thesis, 2012 (clipping element-wise, by value).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from dltricks._checks import check_choice, check_float, check_tensors, check_type
from dltricks.callbacks import Callback, TrainState

Tensors = torch.Tensor | Iterable[torch.Tensor]
MODES = ("global_norm", "norm", "value")


def clip_vector_by_value(g: torch.Tensor, clip_value: float) -> torch.Tensor:
    """A new tensor with every element of ``g`` clamped to ``[-clip_value, clip_value]``.

    Raises:
        TypeError: for a ``clip_value`` or ``g`` of the wrong type.
        ValueError: for a ``clip_value`` out of its allowed range.
    """
    check_type("g", g, torch.Tensor, "a torch.Tensor")
    c = check_float("clip_value", clip_value, minimum=0.0, min_inclusive=False)
    return g.clamp(-c, c)


def clip_vector_by_norm(g: torch.Tensor, max_norm: float) -> torch.Tensor:
    r"""A new tensor :math:`g \cdot \min(1, c / \lVert g \rVert_2)`: ``g`` itself if its norm is at most
    ``c``, else ``g`` rescaled to norm ``c``, same direction.

    Raises:
        TypeError: for a ``g`` or ``max_norm`` of the wrong type.
        ValueError: for a ``max_norm`` out of its allowed range.
    """
    check_type("g", g, torch.Tensor, "a torch.Tensor")
    c = check_float("max_norm", max_norm, minimum=0.0, min_inclusive=False)
    return g * _factor(torch.linalg.vector_norm(g), c)


def _factor(norm: torch.Tensor, c: float) -> torch.Tensor:
    """``min(1, c / norm)`` as a tensor: Keras' ``c / max(norm, c)``, but exactly 1.0 inside the ball.

    (torch evaluates ``c / t`` as ``c * (1 / t)``, so ``c / max(norm, c)`` can land an ulp off 1 when the
    norm is below ``c``; clamping the ratio at 1 cannot. A zero norm gives ``inf``, clamped to 1 too.)
    """
    return (c / norm).clamp(max=1.0)


def _max_norm(max_norm: Any) -> float:
    """``max_norm`` > 0, ``inf`` allowed (torch's way to measure the norm without clipping)."""
    if isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool) and max_norm == math.inf:
        return math.inf
    return check_float("max_norm", max_norm, minimum=0.0, min_inclusive=False)


def _grads(parameters: Tensors) -> list[torch.Tensor]:
    """The existing ``.grad`` of each parameter (a single tensor is accepted), skipping ``None``."""
    return [p.grad for p in check_tensors("parameters", parameters) if p.grad is not None]


def _norms(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The L2 norm of each gradient, as 0-d tensors on the gradients' devices (one fused kernel if it can)."""
    if hasattr(torch, "_foreach_norm"):
        return list(torch._foreach_norm(grads))
    return [torch.linalg.vector_norm(g) for g in grads]  # pragma: no cover - older torch


def _total_norm(norms: list[torch.Tensor]) -> torch.Tensor:
    r""":math:`\sqrt{\sum_j n_j^2}`, gathered on the first norm's device, as ``clip_grad_norm_`` does."""
    device = norms[0].device
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]))


def _scale_(grads: list[torch.Tensor], factor: torch.Tensor) -> None:
    """Multiply every gradient by the 0-d tensor ``factor``, in place, without reading it on the host."""
    by_device: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for g in grads:
        by_device.setdefault((g.device, g.dtype), []).append(g)
    for (device, _), group in by_device.items():
        f = factor.to(device)
        if hasattr(torch, "_foreach_mul_"):
            torch._foreach_mul_(group, f)
        else:  # pragma: no cover - older torch
            for g in group:
                g.mul_(f)


@torch.no_grad()
def clip_by_value_(parameters: Tensors, clip_value: float) -> None:
    """In place, clamp every element of every ``.grad`` to ``[-clip_value, clip_value]``.

    Same as ``torch.nn.utils.clip_grad_value_`` and Keras' ``clipvalue``. Parameters without a gradient
    are skipped.

    Args:
        parameters: ``model.parameters()``, any iterable of parameters, or a single tensor.
        clip_value: the bound ``c`` (> 0).

    Raises:
        TypeError: for a ``clip_value`` of the wrong type.
        ValueError: for a ``clip_value`` out of its allowed range.
    """
    c = check_float("clip_value", clip_value, minimum=0.0, min_inclusive=False)
    for g in _grads(parameters):
        g.clamp_(-c, c)


@torch.no_grad()
def clip_by_norm_(parameters: Tensors, max_norm: float) -> list[torch.Tensor]:
    r"""In place, rescale each ``.grad`` separately so that its own L2 norm is at most ``max_norm``.

    :math:`g_j \leftarrow g_j \cdot c / \max(\lVert g_j \rVert_2, c)`, Keras' ``clipnorm`` (computed as
    :math:`\min(1, c / \lVert g_j \rVert_2)`). A small gradient is multiplied by exactly 1; an all-zero one
    stays zero.

    Args:
        parameters: ``model.parameters()``, any iterable of parameters, or a single tensor.
        max_norm: the per-tensor bound ``c`` (> 0).

    Returns:
        The norm of each gradient before clipping (0-d tensors, in the order of the parameters that have a
        gradient).

    Raises:
        TypeError: for a ``max_norm`` of the wrong type.
        ValueError: for a ``max_norm`` out of its allowed range.
    """
    c = check_float("max_norm", max_norm, minimum=0.0, min_inclusive=False)
    grads = _grads(parameters)
    if not grads:
        return []
    norms = _norms(grads)
    for g, n in zip(grads, norms):
        g.mul_(_factor(n, c))
    return norms


@torch.no_grad()
def clip_by_global_norm_(parameters: Tensors, max_norm: float, eps: float = 1e-6) -> torch.Tensor:
    r"""In place, rescale all ``.grad`` by one factor so that their global L2 norm is at most ``max_norm``.

    :math:`g_j \leftarrow g_j \cdot \min\big(1, c / (\lVert g \rVert + \epsilon)\big)` with the global norm
    :math:`\lVert g \rVert = \sqrt{\sum_j \lVert g_j \rVert_2^2}`, exactly ``torch.nn.utils.clip_grad_norm_``
    (which fixes :math:`\epsilon = 10^{-6}`). Keras' ``global_clipnorm`` uses :math:`c / \max(\lVert g
    \rVert, c)`; see the module docstring for the (epsilon-sized) difference.

    Never synchronizes with the device: the factor is a tensor, clamped at 1 and always multiplied in.
    As in torch, ``max_norm=inf`` measures the norm without clipping (the factor is exactly 1), and a
    non-finite norm gives factor 0 or NaN (finite entries become 0, infinite ones NaN): ``fit`` checks the
    gradients before its callbacks run, so :class:`GradientClipping` there never sees such a norm.

    Args:
        parameters: ``model.parameters()``, any iterable of parameters, or a single tensor.
        max_norm: the bound ``c`` on the global norm (> 0), or ``float("inf")`` to measure only.
        eps: added to the norm before dividing (>= 0), torch's guard against dividing by zero.

    Returns:
        The global norm before clipping, a 0-d tensor (zero when no parameter has a gradient). Log it: its
        trace is the usual way to choose ``max_norm``.

    Raises:
        TypeError: if ``parameters`` is a module rather than tensors, or a number is not a real number.
        ValueError: for ``max_norm <= 0`` or NaN, or ``eps < 0``.
    """
    c = _max_norm(max_norm)
    e = check_float("eps", eps, minimum=0.0)
    grads = _grads(parameters)
    if not grads:
        return torch.tensor(0.0)
    total = _total_norm(_norms(grads))
    _scale_(grads, torch.clamp(c / (total + e), max=1.0))
    return total


class GradientClipping(Callback):
    """Clip the gradients in ``fit``, between ``backward`` and ``optimizer.step`` (``on_before_step``).

    Args:
        mode: ``"global_norm"`` (:func:`clip_by_global_norm_`, the usual choice), ``"norm"``
            (:func:`clip_by_norm_`, per tensor) or ``"value"`` (:func:`clip_by_value_`).
        threshold: ``max_norm`` for the norm modes, ``clip_value`` for ``"value"`` (> 0).
        record: also append every step's pre-clipping global norm to :attr:`norms`.

    Attributes:
        last_norm: the global gradient norm of the latest step, before clipping, as a 0-d tensor (reading
            it with ``.item()`` is the caller's choice; the callback itself never syncs).
        norms: with ``record=True``, those tensors for every step (on the gradients' device).

    Raises:
        TypeError: for a ``record`` or ``threshold`` of the wrong type.
        ValueError: for a ``mode`` or ``threshold`` out of its allowed range.
    """

    def __init__(self, mode: str = "global_norm", threshold: float = 1.0, record: bool = False) -> None:
        self.mode = check_choice("mode", mode, MODES)
        self.threshold = check_float("threshold", threshold, minimum=0.0, min_inclusive=False)
        self.record = check_type("record", record, bool, "True or False")
        self.last_norm: torch.Tensor | None = None
        self.norms: list[torch.Tensor] = []

    def on_before_step(self, state: TrainState) -> None:
        params = [p for p in state.model.parameters() if p.grad is not None]
        if not params:
            return
        if self.mode == "global_norm":
            total = clip_by_global_norm_(params, self.threshold)
        elif self.mode == "norm":
            total = _total_norm(clip_by_norm_(params, self.threshold))
        else:
            with torch.no_grad():
                total = _total_norm(_norms(_grads(params)))
            clip_by_value_(params, self.threshold)
        self.last_norm = total
        if self.record:
            self.norms.append(total)
