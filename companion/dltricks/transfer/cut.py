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
from dltricks._modes import eval_mode


class _Stop(Exception):
    """Raised by the hook once the wanted layer has run: the rest of the network is not computed."""


class _OwnState(nn.Module):
    """A view of one module's own (non-recursive) parameters and buffers, for registering them elsewhere.

    It shares the module's ``_parameters`` and ``_buffers`` dicts (and which buffers are non-persistent)
    instead of copying their entries: ``.to``/``to_empty`` on the model replace a buffer (and, across device
    types, a parameter) by a new tensor in those dicts, and a copy would keep the old one.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._of = type(module).__name__
        for name in ("_parameters", "_buffers", "_non_persistent_buffers_set"):
            object.__setattr__(self, name, getattr(module, name))

    def extra_repr(self) -> str:
        return f"of {self._of}: {', '.join([*self._parameters, *self._buffers])}"


class FeatureExtractor(nn.Module):
    """The output of layer ``layer`` of ``model``, as a module: ``(N, ...) -> (N, *layer output shape)``.

    For an ``nn.Sequential`` cut at one of its children, the extractor is literally the slice
    ``model[: i + 1]`` (a plain ``nn.Sequential`` only: a subclass's slice is built by its own
    ``__init__``, with fresh buffers of its own, and runs its own ``forward``, so subclasses are hooked).
    For any other module it runs ``model.forward`` with a forward hook on the named submodule that stores
    its output and stops the computation there, so nothing above the cut is computed.
    The weights are shared with ``model`` (no copy): freeze them or copy the model first if it must not
    change.

    Only the layers below the cut are the extractor's parameters (so trainable counts, gradient memory and
    DDP's unused-parameter check see the real network). For a hooked cut, ``parameters()``, ``buffers()``
    and ``state_dict()`` hold, each tensor once: every leaf module that ran below the cut and holds
    parameters or buffers (under ``used``), and the own, non-recursive parameters and buffers of every other
    module that ran (under ``shared``: a root's class token or ``register_buffer`` position ids), as live
    views of the model's tensors, so they stay the model's after any move; non-persistent buffers stay out
    of ``state_dict()`` as in the model. For a non-``Sequential`` model which layers run
    below the cut is known only by running it: pass ``example`` (a small input batch, run once in
    evaluation mode without gradients) or call the extractor once before building an optimizer; until
    then ``parameters()`` is empty (an optimizer refuses an empty list, so this cannot pass unnoticed).
    Moving the extractor (``.to(device)``) moves the whole model.

    Args:
        model: the trained network.
        layer: a name from ``model.named_modules()`` (``"3"``, ``"features.2"``).
        flatten: flatten the output to ``(N, features)`` (default ``True``).
        example: optional input batch that finds the layers below the cut at once (non-``Sequential`` cuts).

    Raises:
        TypeError: if ``model`` is not a module, ``layer`` not a string or ``example`` not a tensor.
        ValueError: if ``layer`` is not the name of a submodule of ``model``.
    """

    def __init__(
        self, model: nn.Module, layer: str, *, flatten: bool = True, example: torch.Tensor | None = None
    ) -> None:
        super().__init__()
        check_type("model", model, nn.Module, "a torch.nn.Module")
        check_type("layer", layer, str, "a string (a submodule's name)")
        if example is not None:
            check_type("example", example, torch.Tensor, "a torch.Tensor (an input batch) or None")
        modules = dict(model.named_modules())
        names = [n for n, _ in model.named_children()]
        if layer == "" or layer not in modules:
            fail("layer", f"the name of a submodule of `model` (its children: {names})", layer)
        self.layer, self.flatten = layer, bool(flatten)
        self.training = model.training  # the caller's mode, not nn.Module's default
        if type(model) is nn.Sequential and layer in names:  # a subclass's slice is not the model's
            self.body: nn.Module = model[: names.index(layer) + 1]
            self._target: nn.Module | None = None
            return
        # Held outside the parameter tree: only what runs below the cut is registered (see `_adopt`).
        object.__setattr__(self, "body", model)
        object.__setattr__(self, "_target", modules[layer])
        self.used = nn.ModuleList()  # the stateful leaf modules that ran below the cut
        self.shared = nn.ModuleList()  # views of non-leaf modules' own parameters and buffers (_OwnState)
        self._traced = False
        if example is not None:
            with torch.no_grad(), eval_mode(model):  # no running statistics move for the trace
                self(example)

    def _adopt(self, ran: list[nn.Module]) -> None:
        """Register what the first call ran: leaves that hold state, and other modules' own parameters and
        buffers (a view of each such module, see `_OwnState`)."""
        seen: set[int] = set()
        for m in ran:
            if id(m) in seen:
                continue
            seen.add(id(m))
            if not any(True for _ in m.children()):
                if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
                    self.used.append(m)
            elif [*m.parameters(recurse=False), *m.buffers(recurse=False)]:  # state of its own
                self.shared.append(_OwnState(m))
        self._traced = True

    def _apply(self, fn, recurse=True):  # what .to(), .double(), .cuda() call
        if self._target is not None:  # the whole model moves; what is registered lies inside it
            self.body._apply(fn, recurse)
            return self
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._target is None:
            out = self.body(x)
        else:
            store: list[torch.Tensor] = []
            ran: list[nn.Module] = []

            def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
                store.append(output)
                raise _Stop

            handles = [self._target.register_forward_hook(hook)]
            if not self._traced:
                handles += [
                    m.register_forward_pre_hook(lambda m, a: ran.append(m)) for m in self.body.modules()
                ]
            try:
                self.body(x)
            except _Stop:
                pass
            finally:
                for handle in handles:
                    handle.remove()
            if not store:
                raise RuntimeError(f"layer {self.layer!r} was not called by the model's forward")
            if not self._traced:
                self._adopt(ran)
            out = store[0]
        return out.flatten(1) if self.flatten else out


@torch.no_grad()
def embed(extractor: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Embeddings of ``x`` in evaluation mode, computed in batches: ``(N, ...) -> (N, D)`` on ``x``'s device.

    Every submodule's own train/eval mode is restored afterwards (an eval-mode model stays in eval mode).

    Raises:
        TypeError: if ``extractor`` is not a module or ``x`` not a tensor.
        ValueError: if ``batch_size < 1``.
    """
    check_type("extractor", extractor, nn.Module, "a torch.nn.Module")
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    with eval_mode(extractor):  # each submodule gets its own mode back, not the extractor's flag
        return torch.cat([extractor(x[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)])


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
