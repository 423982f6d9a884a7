"""Cutting a trained network at a layer to get a feature extractor, and giving it a new head.

A network trained on one task computes, layer by layer, representations of its input; the output of an
upper hidden layer is an *embedding* that often serves other tasks as well (Yosinski et al. 2014; Donahue
et al. 2014 for ImageNet features). :class:`FeatureExtractor` returns that output for any module,
whatever its ``forward`` does; :func:`replace_head` keeps everything but the output layer and puts a freshly
initialized one for the new number of classes in its place.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dltricks._checks import check_int, check_type, fail


class _Stop(Exception):
    """Raised by the hook once the wanted layer has run: the rest of the network is not computed."""


class FeatureExtractor(nn.Module):
    """The output of layer ``layer`` of ``model``, as a module: ``(N, ...) -> (N, *layer output shape)``.

    For an ``nn.Sequential`` cut at one of its children, the extractor is literally the slice
    ``model[: i + 1]``. For any other module it runs ``model.forward`` with a forward hook on the named
    submodule that stores its output and stops the computation there, so nothing above the cut is computed.
    The weights are shared with ``model`` (no copy): freeze them or copy the model first if it must not
    change.

    Args:
        model: the trained network.
        layer: a name from ``model.named_modules()`` (``"3"``, ``"features.2"``).
        flatten: flatten the output to ``(N, features)`` (default ``True``).

    Raises:
        TypeError: if ``model`` is not a module or ``layer`` not a string.
        ValueError: if ``layer`` is not the name of a submodule of ``model``.
    """

    def __init__(self, model: nn.Module, layer: str, *, flatten: bool = True) -> None:
        super().__init__()
        check_type("model", model, nn.Module, "a torch.nn.Module")
        check_type("layer", layer, str, "a string (a submodule's name)")
        modules = dict(model.named_modules())
        names = [n for n, _ in model.named_children()]
        if layer == "" or layer not in modules:
            fail("layer", f"the name of a submodule of `model` (its children: {names})", layer)
        self.layer, self.flatten = layer, bool(flatten)
        if isinstance(model, nn.Sequential) and layer in names:
            self.body: nn.Module = model[: names.index(layer) + 1]
            self._target: nn.Module | None = None
        else:
            self.body, self._target = model, modules[layer]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._target is None:
            out = self.body(x)
        else:
            store: list[torch.Tensor] = []

            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                store.append(output)
                raise _Stop

            handle = self._target.register_forward_hook(hook)
            try:
                self.body(x)
            except _Stop:
                pass
            finally:
                handle.remove()
            if not store:
                raise RuntimeError(f"layer {self.layer!r} was not called by the model's forward")
            out = store[0]
        return out.flatten(1) if self.flatten else out


@torch.no_grad()
def embed(extractor: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Embeddings of ``x`` in evaluation mode, computed in batches: ``(N, ...) -> (N, D)`` on ``x``'s device.

    Raises:
        TypeError: if ``extractor`` is not a module or ``x`` not a tensor.
        ValueError: if ``batch_size < 1``.
    """
    check_type("extractor", extractor, nn.Module, "a torch.nn.Module")
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    was_training = extractor.training
    extractor.eval()
    try:
        return torch.cat([extractor(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    finally:
        extractor.train(was_training)


def replace_head(
    model: nn.Module, num_classes: int, *, head: str | None = None, copy_model: bool = True
) -> nn.Module:
    """``model`` with its output layer replaced by a new ``nn.Linear(in_features, num_classes)``.

    Like Keras' ``clone_model`` + ``set_weights`` followed by a new output layer: by default the original
    is deep-copied first, so training the new model leaves the old one untouched.

    Args:
        model: the trained network.
        num_classes: outputs of the new head, >= 1.
        head: the name (dotted path) of the ``nn.Linear`` to replace; default the last ``nn.Linear``.
        copy_model: work on a deep copy (default) instead of changing ``model`` in place.

    Returns:
        The network with the new head (initialized as ``nn.Linear`` does, from the global generator).

    Raises:
        TypeError: if ``model`` is not a module.
        ValueError: if ``num_classes < 1``, ``head`` does not name an ``nn.Linear``, or there is none.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    num_classes = check_int("num_classes", num_classes, minimum=1)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if head is None:
        if not linears:
            fail("model", "a network with an nn.Linear output layer", type(model).__name__)
        head = linears[-1]
    elif head not in linears:
        fail("head", f"the name of an nn.Linear in `model` (one of {linears})", head)
    new = copy.deepcopy(model) if copy_model else model
    parent_name, _, child = head.rpartition(".")
    parent = new.get_submodule(parent_name) if parent_name else new
    old = getattr(parent, child)
    replacement = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    setattr(parent, child, replacement.to(device=old.weight.device, dtype=old.weight.dtype))
    return new
