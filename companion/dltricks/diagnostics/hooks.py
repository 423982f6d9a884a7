r"""Look inside a network while it runs: gradient norms per layer, and activation statistics.

Two symptoms of a badly initialized or badly chosen network show up here before the loss curve shows
anything:

* Vanishing or exploding gradients: the norm of :math:`\partial L / \partial W_l` shrinks (or grows)
  geometrically from the output layer back to the input layer. :func:`layer_gradient_norms` measures it on
  one batch; :class:`GradientNormRecorder` records it during ``fit``.
* Saturated or dead units: sigmoid/tanh outputs stuck near their asymptotes pass almost no gradient
  (:math:`\sigma'(z) = \sigma(z)(1 - \sigma(z)) < 0.01` when :math:`\sigma(z) > 0.99`); ReLU units whose
  input is negative for every example output 0 and get no gradient at all. :class:`ActivationStats`
  measures both with forward hooks.

Only ``nn.Linear`` and ``nn.Conv*`` weights count as "layers" for the gradient norms, and only activation
*modules* (not ``torch.nn.functional`` calls inside ``forward``) are seen by :class:`ActivationStats`.

References:
    Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural networks",
    AISTATS 2010 (sections 3-4: saturation of sigmoid layers and per-layer gradient statistics);
    Lu et al., "Dying ReLU and Initialization: Theory and Numerical Examples", 2019 (dead ReLU units).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

import torch
from torch import nn

from dltricks._checks import check_int, check_type, fail
from dltricks.callbacks import Callback, TrainState

#: The layers whose weight gradients are reported.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
#: The modules :class:`ActivationStats` watches by default.
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Sigmoid,
    nn.Tanh,
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
)
SATURATION = 0.99  # sigmoid outside [0.01, 0.99], tanh outside [-0.99, 0.99]: derivative below ~0.01-0.02


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)]


def layer_gradient_norms(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
) -> list[tuple[str, float]]:
    r"""``(layer name, ||dL/dW||_2)`` for every linear and conv layer, in the order the forward pass ran them.

    Runs one forward and backward pass of ``loss_fn(model(x), y)`` in the model's current mode (call
    ``model.train()`` or ``model.eval()`` first as needed), reads each weight's gradient norm, and puts
    back the ``.grad`` of every parameter as it was before (``None`` on a fresh model), so the call leaves
    no trace on a later training step. Layers that did not run, or whose weight is frozen, are left out.

    Args:
        model: the network.
        x: a batch of inputs.
        y: the matching targets.
        loss_fn: ``loss_fn(output, y) -> scalar``; default cross-entropy on logits.

    Returns:
        ``[(name, norm), ...]`` with names from ``model.named_modules()``, input layer first.

    Raises:
        TypeError: for a ``loss_fn``, ``model``, ``x`` or ``y`` of the wrong type.
        ValueError: for a ``model`` out of its allowed range.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    check_type("y", y, torch.Tensor, "a torch.Tensor")
    if not callable(loss_fn):
        fail("loss_fn", "a callable loss_fn(output, target)", loss_fn, TypeError)
    layers = _weight_layers(model)
    if not layers:
        fail("model", "a network with at least one nn.Linear or nn.Conv layer", type(model).__name__)
    order: list[str] = []
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, _o, name=name: order.append(name) if name not in order else None
        )
        for name, m in layers
    ]
    params = list(model.parameters())
    saved = [p.grad for p in params]
    try:
        for p in params:
            p.grad = None
        with torch.enable_grad():
            loss = loss_fn(model(x), y)
            loss.backward()
        weights = dict(layers)
        norms = [
            (name, torch.linalg.vector_norm(weights[name].weight.grad).item())
            for name in order
            if weights[name].weight.grad is not None
        ]
    finally:
        for h in hooks:
            h.remove()
        for p, g in zip(params, saved):
            p.grad = g
    return norms


class _Running:
    """Per-layer sums, kept as tensors on the activations' device so the hooks never sync with it."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.count = 0  # values seen (a Python int: the shapes are known on the host)
        self.mean: torch.Tensor | float = 0.0
        self.m2: torch.Tensor | float = 0.0  # sum of squared deviations from the mean (Chan et al.)
        self.saturated: torch.Tensor | float = 0.0
        self.zeros: torch.Tensor | float = 0.0
        self.ever_positive: torch.Tensor | None = None  # per unit (dim 1): positive for some example
        self.mixed_units = False

    def add(self, out: torch.Tensor) -> None:
        a = out.detach().double()
        n = a.numel()
        if n == 0:
            return
        mean_b = a.mean()
        m2_b = ((a - mean_b) ** 2).sum()
        # Chan, Golub & LeVeque's pairwise update: merging two groups' means and M2 without cancellation.
        total = self.count + n
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2_b + delta**2 * (self.count * n / total)
        self.count = total
        if self.kind == "Sigmoid":
            self.saturated = self.saturated + ((a < 1 - SATURATION) | (a > SATURATION)).sum()
        elif self.kind == "Tanh":
            self.saturated = self.saturated + (a.abs() > SATURATION).sum()
        self.zeros = self.zeros + (a == 0).sum()
        if a.ndim >= 2:  # unit j is channel j: positive anywhere in the batch (any example, any position)
            positive = (a > 0).transpose(0, 1).reshape(a.shape[1], -1).any(dim=1)
        else:  # no unit dimension: the whole output counts as one unit
            positive = (a > 0).any().reshape(1)
        if self.ever_positive is None and not self.mixed_units:
            self.ever_positive = positive
        elif self.ever_positive is not None and self.ever_positive.shape == positive.shape:
            self.ever_positive = self.ever_positive | positive
        else:  # a module shared by layers of different widths: its units are not one set
            self.ever_positive, self.mixed_units = None, True

    def summary(self, layer: str) -> dict[str, Any]:
        count = max(self.count, 1)
        dead = float("nan") if self.ever_positive is None else 1.0 - self.ever_positive.double().mean().item()
        return {
            "layer": layer,
            "kind": self.kind,
            "mean": float(self.mean),
            "std": float((self.m2 / count) ** 0.5),
            "saturated": float(self.saturated) / count,
            "zeros": float(self.zeros) / count,
            "dead": dead,
        }


class ActivationStats:
    """Record statistics of the outputs of activation modules, over one or more forward passes.

    Use as a context manager; the forward hooks exist only inside the ``with`` block::

        with ActivationStats(model) as stats:
            model(x)
        stats.summary()  # one dict per activation module, in the order they ran

    Each summary row has:

    * ``layer``: the module's name in ``model.named_modules()``; ``kind``: its class name;
    * ``mean`` and ``std``: of all output values seen (population standard deviation);
    * ``saturated``: the fraction of values where a sigmoid is outside ``[0.01, 0.99]`` or a tanh outside
      ``[-0.99, 0.99]`` (0 for the other kinds, which do not saturate on both sides);
    * ``zeros``: the fraction of values exactly 0 (for ReLU: inactive on that example);
    * ``dead``: the fraction of units (channels along dim 1) whose output was ``<= 0`` for *every* example
      and position seen, i.e. units that get no gradient from this data. Meaningful for ReLU-like units; a
      sigmoid is never dead by this test. NaN for a module shared by layers with different numbers of units.

    Statistics accumulate over every forward pass inside the block, weighted by the number of values. The
    hooks keep their sums on the activations' device (no host sync during the passes); ``summary``
    reads them.

    Args:
        model: the network.
        modules: the module types to watch (default: :data:`ACTIVATIONS`, the usual activation modules).
            ``modules=(nn.Linear,)`` gives the statistics of the pre-activations instead.

    Raises:
        TypeError: for a ``model`` or ``modules`` of the wrong type.
        ValueError: for a ``model`` out of its allowed range.
    """

    def __init__(self, model: nn.Module, modules: tuple[type[nn.Module], ...] = ACTIVATIONS) -> None:
        self.model = check_type("model", model, nn.Module, "a torch.nn.Module")
        if isinstance(modules, type):
            modules = (modules,)
        if (
            not isinstance(modules, tuple)
            or not modules
            or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in modules)
        ):
            fail("modules", "a non-empty tuple of nn.Module subclasses", modules, TypeError)
        self.modules = modules
        self._targets = [(name, m) for name, m in model.named_modules() if isinstance(m, modules)]
        if not self._targets:
            names = [t.__name__ for t in modules]
            fail("model", f"a network containing a module of type {names}", type(model).__name__)
        self._stats: dict[str, _Running] = {}  # insertion order = order of the first forward call
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> ActivationStats:
        for name, module in self._targets:
            self._handles.append(module.register_forward_hook(self._hook(name, type(module).__name__)))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove the hooks (done on leaving the ``with`` block); the statistics stay readable."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, kind: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):
                self._stats.setdefault(name, _Running(kind)).add(output)

        return hook

    def summary(self) -> list[dict[str, Any]]:
        """One row per watched module that ran, in the order of their first forward call."""
        return [running.summary(name) for name, running in self._stats.items()]


class GradientNormRecorder(Callback):
    """Record the gradient norm of every linear and conv weight during ``fit``, every ``every`` steps.

    Runs in ``on_before_step``, after ``backward`` and before the optimizer (and before any clipping
    callback listed after it), so it sees the raw gradients. Each record is ``{layer name: norm}`` in
    ``model.named_modules()`` order (the definition order, which is the forward order for an
    ``nn.Sequential``); :attr:`steps` holds the matching step numbers.

    This is a diagnostic: it calls ``.item()`` on each norm, a host sync per layer on a GPU, on the steps
    it records. Use ``every`` to keep that cost small on long runs.

    Args:
        every: record on steps 1, 1 + every, 1 + 2 every, ... (>= 1).

    Attributes:
        history: ``list[dict[str, float]]``, one dict per recorded step.
        steps: the training step (``state.step``, 1-based) of each record.

    Raises:
        TypeError: for an ``every`` of the wrong type.
        ValueError: for an ``every`` out of its allowed range.
    """

    def __init__(self, every: int = 1) -> None:
        self.every = check_int("every", every, minimum=1)
        self.history: list[dict[str, float]] = []
        self.steps: list[int] = []

    def on_before_step(self, state: TrainState) -> None:
        if (state.step - 1) % self.every:
            return
        record = {
            name: torch.linalg.vector_norm(m.weight.grad).item()
            for name, m in _weight_layers(state.model)
            if m.weight.grad is not None
        }
        self.history.append(record)
        self.steps.append(state.step)
