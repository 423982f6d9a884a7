"""Freezing and unfreezing layers by name or depth, and a summary of what will train.

Freezing a layer means two things, and PyTorch only does the first by itself:

1. its parameters get ``requires_grad = False``: no gradient is computed for them, so an optimizer never
   updates them and never allocates state (momentum, Adam's moments) for them;
2. its batch-normalization layers stop updating their running mean and variance. ``requires_grad`` does
   not touch those buffers: a "frozen" ``nn.BatchNorm`` in training mode still normalizes with the batch's
   statistics and still overwrites its running statistics with the new data's, the classic pitfall of
   fine-tuning. Keras avoids it by design: a ``BatchNormalization`` layer with ``trainable = False`` runs in
   inference mode. :func:`freeze` does the same here: it attaches a forward pre-hook that puts each frozen
   batch-norm layer in evaluation mode at every call, so a later ``model.train()`` cannot undo it.

Layers are addressed by the names of ``model.named_children()`` (``"0"``, ``"1"`` … in an ``nn.Sequential``;
dotted paths such as ``"features.3"`` reach inside), or by ``depth``: the first ``depth`` children that hold
parameters, counted from the input, which is how "freeze the lower k layers" is meant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from torch import nn

from dltricks._checks import check_int, check_type, fail

_BN = (nn.modules.batchnorm._BatchNorm,)  # BatchNorm1d/2d/3d and SyncBatchNorm
_HOOK = "_dltricks_frozen_bn_hook"


def parametrized_children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The direct children of ``model`` that hold parameters, in order: the "layers" that ``depth`` counts.

    Activations, pooling, flattening and dropout hold none and are skipped.

    Raises:
        TypeError: if ``model`` is not a module.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    return [(n, m) for n, m in model.named_children() if any(True for _ in m.parameters())]


def select(
    model: nn.Module, *, names: Iterable[str] | str | None = None, depth: int | None = None
) -> list[tuple[str, nn.Module]]:
    """The submodules named by ``names`` (dotted paths) or the first ``depth`` parametrized children.

    Exactly one of ``names`` and ``depth`` must be given.

    Raises:
        TypeError: if ``model`` is not a module, or ``names`` is not a string or an iterable of strings.
        ValueError: if both or neither selector is given, a name does not exist in ``model``, or ``depth``
            is negative or larger than the number of parametrized children.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    if (names is None) == (depth is None):
        fail("names", "given, or else `depth`, but not both", names)
    if depth is not None:
        layers = parametrized_children(model)
        depth = check_int("depth", depth, minimum=0, maximum=len(layers))
        return layers[:depth]
    wanted = [names] if isinstance(names, str) else list(names or ())  # not None here (checked above)
    if not all(isinstance(n, str) for n in wanted):
        fail("names", "a string or an iterable of strings (module names)", names, TypeError)
    modules = dict(model.named_modules())
    unknown = [n for n in wanted if n not in modules or n == ""]
    if unknown:
        known = [n for n, _ in model.named_children()]
        fail(
            "names",
            f"names of submodules of `model` (its children: {known})",
            unknown[0] if len(unknown) == 1 else unknown,
        )
    return [(n, modules[n]) for n in wanted]


def _keep_eval(module: nn.Module, args: tuple) -> None:
    module.training = False  # running statistics are used, and not updated, in evaluation mode


def set_trainable(
    model: nn.Module,
    trainable: bool,
    *,
    names: Iterable[str] | str | None = None,
    depth: int | None = None,
    freeze_batchnorm_stats: bool = True,
) -> list[str]:
    """Make the selected layers trainable or frozen; return their names.

    Args:
        model: the network.
        trainable: ``False`` to freeze, ``True`` to unfreeze.
        names, depth: which layers (see :func:`select`).
        freeze_batchnorm_stats: when freezing, also keep the selected batch-norm layers in evaluation mode
            (Keras' behavior); unfreezing always releases them.

    Raises:
        TypeError, ValueError: as :func:`select`, or if ``trainable`` is not a bool.
    """
    check_type("trainable", trainable, bool, "a bool")
    check_type("freeze_batchnorm_stats", freeze_batchnorm_stats, bool, "a bool")
    chosen = select(model, names=names, depth=depth)
    for _, layer in chosen:
        for p in layer.parameters():
            p.requires_grad_(trainable)
        for m in layer.modules():
            if not isinstance(m, _BN):
                continue
            handle = getattr(m, _HOOK, None)
            if trainable and handle is not None:
                handle.remove()
                delattr(m, _HOOK)
            elif not trainable and freeze_batchnorm_stats and handle is None:
                setattr(m, _HOOK, m.register_forward_pre_hook(_keep_eval))
    return [n for n, _ in chosen]


def freeze(
    model: nn.Module,
    *,
    names: Iterable[str] | str | None = None,
    depth: int | None = None,
    freeze_batchnorm_stats: bool = True,
) -> list[str]:
    """Freeze the selected layers: no gradients, no optimizer state, batch norm in inference mode.

    ``freeze(model, depth=2)`` freezes the two lowest layers with parameters; ``freeze(model,
    names=["0", "2"])`` freezes two children of a ``Sequential`` by name. Build the optimizer *after*
    freezing (or pass it only trainable parameters, see :func:`trainable_parameters`), as Keras asks for a
    ``compile()`` after changing ``trainable``.

    Returns:
        The names of the frozen layers.

    Raises:
        TypeError, ValueError: as :func:`select`.
    """
    return set_trainable(
        model, False, names=names, depth=depth, freeze_batchnorm_stats=freeze_batchnorm_stats
    )


def unfreeze(
    model: nn.Module, *, names: Iterable[str] | str | None = None, depth: int | None = None
) -> list[str]:
    """Undo :func:`freeze` for the selected layers (their batch norm trains again); return their names."""
    return set_trainable(model, True, names=names, depth=depth)


def is_frozen_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a batch-norm layer that :func:`freeze` keeps in evaluation mode."""
    return isinstance(module, _BN) and getattr(module, _HOOK, None) is not None


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters that require gradients, to hand to an optimizer.

    Raises:
        TypeError: if ``model`` is not a module.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    return [p for p in model.parameters() if p.requires_grad]


class LayerRow(NamedTuple):
    """One line of :func:`trainable_summary`."""

    name: str
    kind: str
    params: int
    trainable: int


class TrainableSummary(NamedTuple):
    """Per-layer parameter counts, and the totals, as Keras' ``model.summary()`` reports them."""

    rows: Sequence[LayerRow]
    trainable: int
    frozen: int

    def __str__(self) -> str:
        lines = [f"{'layer':<10} {'type':<14} {'params':>9} {'trainable':>10}"]
        lines += [f"{r.name:<10} {r.kind:<14} {r.params:>9,} {r.trainable:>10,}" for r in self.rows]
        lines.append(f"trainable: {self.trainable:,}; frozen: {self.frozen:,}")
        return "\n".join(lines)


def trainable_summary(model: nn.Module) -> TrainableSummary:
    """Count parameters per direct child of ``model``, and how many of them will train.

    Raises:
        TypeError: if ``model`` is not a module.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    rows = []
    for name, layer in model.named_children():
        ps = list(layer.parameters())
        kind = type(layer).__name__ + (
            " (eval)" if any(is_frozen_batchnorm(m) for m in layer.modules()) else ""
        )
        rows.append(
            LayerRow(name, kind, sum(p.numel() for p in ps), sum(p.numel() for p in ps if p.requires_grad))
        )
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return TrainableSummary(rows, trainable, total - trainable)
