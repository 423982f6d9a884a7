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
parameters *or buffers*, counted from the input, which is how "freeze the lower k layers" is meant (a
``BatchNorm1d(affine=False)`` has no parameters but running statistics that must not move under frozen
features, so it counts as a layer).

Unfreezing keeps the batch-norm layers in inference mode unless asked otherwise, as Keras' fine-tuning
guide advises ("When you unfreeze a model that contains BatchNormalization layers in order to do
fine-tuning, you should keep the BatchNormalization layers in inference mode", Chollet, *Transfer learning
& fine-tuning*, https://keras.io/guides/transfer_learning/).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from dltricks._checks import check_float, check_int, check_type, fail

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


def stateful_children(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The direct children of ``model`` that hold parameters or buffers, in order: what ``depth`` counts.

    Activations, pooling, flattening and dropout hold neither and are skipped; a batch norm without affine
    parameters holds running statistics and counts.

    Raises:
        TypeError: if ``model`` is not a module.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    return [
        (n, m)
        for n, m in model.named_children()
        if any(True for _ in m.parameters()) or any(True for _ in m.buffers())
    ]


def select(
    model: nn.Module, *, names: Iterable[str] | str | None = None, depth: int | None = None
) -> list[tuple[str, nn.Module]]:
    """The submodules named by ``names`` (dotted paths) or the first ``depth`` stateful children.

    ``depth`` counts the children with parameters or buffers (:func:`stateful_children`).

    Exactly one of ``names`` and ``depth`` must be given.

    Raises:
        TypeError: if ``model`` is not a module, or ``names`` is not a string or an iterable of strings.
        ValueError: if both or neither selector is given, a name does not exist in ``model``, or ``depth``
            is negative or larger than the number of stateful children.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    if (names is None) == (depth is None):
        fail("names", "given, or else `depth`, but not both", names)
    if depth is not None:
        layers = stateful_children(model)
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
        freeze_batchnorm_stats: keep the selected batch-norm layers in evaluation mode (Keras' behavior
            for a non-trainable ``BatchNormalization``). With ``trainable=True`` and ``False`` here, they
            are released: they take ``model``'s current mode at once and train their statistics again.

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
            if freeze_batchnorm_stats:
                if handle is None:
                    setattr(m, _HOOK, m.register_forward_pre_hook(_keep_eval))
                m.training = False  # the flag agrees with the module now, not at the next forward
            elif handle is not None and trainable:
                handle.remove()
                delattr(m, _HOOK)
                m.training = model.training  # released: the caller's mode now, not at the next train()
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
    model: nn.Module,
    *,
    names: Iterable[str] | str | None = None,
    depth: int | None = None,
    train_batchnorm_stats: bool = False,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float | None = None,
) -> list[str]:
    """Make the selected layers trainable again; return their names.

    Batch norm: its weight and bias train again, but by default its running statistics stay frozen and it
    keeps normalizing with them (inference mode), as Keras' fine-tuning guide advises
    (https://keras.io/guides/transfer_learning/); ``train_batchnorm_stats=True`` releases it to batch
    statistics, in ``model``'s current mode at once.

    The optimizer: one built before this call does not hold the newly trainable parameters, and torch
    would leave them where they are without a word. Pass it as ``optimizer`` and they are added to it as
    one parameter group (``"name": "unfrozen"``, learning rate ``lr`` or the optimizer's default, and
    ``"param_names"`` listing them when the optimizer's groups are named: torch refuses a mix), parameters it
    already holds left out. Without ``optimizer`` the first
    optimizer that steps while holding some of ``model``'s parameters but none of these warns, naming them.

    Raises:
        TypeError, ValueError: as :func:`select`, or if ``optimizer`` is not a ``torch.optim.Optimizer``
            or ``lr`` is not a positive number.
    """
    check_type("train_batchnorm_stats", train_batchnorm_stats, bool, "a bool")
    if optimizer is not None:
        check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer or None")
    if lr is not None:
        lr = check_float("lr", lr, minimum=0.0, min_inclusive=False)
    before = {id(p) for p in model.parameters() if p.requires_grad}
    chosen = set_trainable(
        model, True, names=names, depth=depth, freeze_batchnorm_stats=not train_batchnorm_stats
    )
    new = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in before]
    if optimizer is not None:
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        new = [(n, p) for n, p in new if id(p) not in held]
        if new:
            group: dict[str, Any] = {"params": [p for _, p in new], "name": "unfrozen"}
            if all("param_names" in g for g in optimizer.param_groups):  # torch wants all named or none
                group["param_names"] = [n for n, _ in new]
            group["lr"] = lr if lr is not None else optimizer.defaults["lr"]
            optimizer.add_param_group(group)
    elif new:
        _watch_optimizers(model, new)
    return chosen


def _watch_optimizers(model: nn.Module, new: list[tuple[str, nn.Parameter]]) -> None:
    """Warn once if an optimizer that holds ``model``'s parameters steps without the unfrozen ``new``."""
    model_ids = {id(p) for p in model.parameters()}
    names = {id(p): n for n, p in new}
    refs = [weakref.ref(p) for _, p in new]
    handle = None

    def check(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        if not held & model_ids:
            return  # another model's optimizer
        alive = [p for p in (r() for r in refs) if p is not None]
        missing = [names[id(p)] for p in alive if p.requires_grad and id(p) not in held]
        if missing:
            warnings.warn(
                f"unfreeze() made {missing} trainable, but this {type(optimizer).__name__} does not hold"
                " them: they will not move. Pass `optimizer=` to unfreeze(), call"
                " optimizer.add_param_group(...), or build the optimizer after unfreezing.",
                UserWarning,
                stacklevel=3,
            )
        assert handle is not None
        handle.remove()  # one check per unfreeze: the first optimizer of this model that steps

    handle = register_optimizer_step_pre_hook(check)
    # The hook is global (torch has no per-model one). If no optimizer of this model ever steps, it must still
    # go when the model does: else it stays registered for the whole process, and once the model's parameters
    # are freed their ids can be reused by another model's, which would then be warned about wrongly.
    weakref.finalize(model, handle.remove)


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
