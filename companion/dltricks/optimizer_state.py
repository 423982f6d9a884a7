"""Putting a saved optimizer state back into the right run: by parameter name, same class, same groups.

``torch.optim.Optimizer.load_state_dict`` matches saved state to parameters *by position*: resuming into a
model that declares the same layers in another order fails with a shape error deep inside a step, or, when
the shapes agree, silently swaps Adam's moments between layers; resuming with another optimizer class
fails at the first step with a bare ``KeyError('momentum')``. A checkpoint therefore stores, beside the
optimizer's state dict, its class and the name of every parameter in every group (:func:`describe`), and
:func:`match` reorders the saved state to this run's parameters by name, or refuses with a
:class:`~dltricks.checkpoint_file.CheckpointError` that names the mismatch on both sides.

Hyperparameters follow PyTorch's convention: ``load_state_dict`` puts back the checkpoint's ``lr``,
``weight_decay``, ``betas``... so a resumed run continues the run it resumes (a schedule's current rate
included). When the caller built the optimizer with other values than the checkpointed run did,
:func:`warn_hyperparameters` says so, naming each value on both sides; to change a hyperparameter on
resume, set it in ``optimizer.param_groups`` from a callback after the resume (``on_before_step``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from dltricks.checkpoint_file import CheckpointError


def class_name(optimizer: torch.optim.Optimizer) -> str:
    """``module.QualName`` of the optimizer's class, e.g. ``torch.optim.adam.Adam``."""
    cls = type(optimizer)
    return f"{cls.__module__}.{cls.__qualname__}"


def param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str | None]]:
    """For each parameter group, the model's name of each parameter (``None`` for one not in ``model``)."""
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    return [[names.get(id(p)) for p in group["params"]] for group in optimizer.param_groups]


def describe(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What a checkpoint stores to match its optimizer state on resume: the class and the parameter names."""
    return {"class": class_name(optimizer), "names": param_names(model, optimizer)}


def match(
    saved: Mapping[str, Any],
    identity: Mapping[str, Any] | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    where: str,
) -> dict[str, Any]:
    """The saved optimizer state dict, its parameters reordered to match ``optimizer`` by name.

    Args:
        saved: the checkpoint's ``optimizer.state_dict()``.
        identity: the checkpoint's :func:`describe` of it, or ``None`` for a checkpoint written before
            names were stored (then the layout is still checked, and the state is matched by position).
        model: this run's model (names its parameters).
        optimizer: this run's optimizer.
        where: the checkpoint's name, for messages.

    Returns:
        A state dict for ``optimizer.load_state_dict`` whose ``params`` ids are in this run's order.

    Raises:
        CheckpointError: another optimizer class, another number of parameter groups or other group keys,
            or parameter names that differ (missing, extra or moved between groups); both sides are named.
    """
    mine = class_name(optimizer)
    if identity is not None and identity.get("class") != mine:
        raise CheckpointError(
            f"{where} does not fit this run: its optimizer is {identity.get('class')}, this run's is {mine}"
        )
    saved_groups: Sequence[Mapping[str, Any]] = saved["param_groups"]
    groups = optimizer.param_groups
    sizes = ([len(g["params"]) for g in saved_groups], [len(g["params"]) for g in groups])
    if len(saved_groups) != len(groups):
        raise CheckpointError(
            f"{where} does not fit this run: its optimizer has {len(saved_groups)} parameter groups of sizes "
            f"{sizes[0]}, this run's has {len(groups)} of sizes {sizes[1]}"
        )
    ignored = {"params", "param_names", "initial_lr"}  # a scheduler adds initial_lr on either side
    for i, (old, new) in enumerate(zip(saved_groups, groups)):
        keys_old, keys_new = set(old) - ignored, set(new) - ignored
        if keys_old != keys_new:  # another optimizer class, in a checkpoint that does not name it
            raise CheckpointError(
                f"{where} does not fit this run: parameter group {i} has the settings "
                f"{sorted(keys_old - keys_new)} only in the checkpoint and "
                f"{sorted(keys_new - keys_old)} only in this run's {type(optimizer).__name__} "
                "(another optimizer class?)"
            )
    names_old = None if identity is None else identity.get("names")
    names_new = param_names(model, optimizer)
    if not _usable(names_old) or not _usable(names_new):
        if sizes[0] != sizes[1]:
            raise CheckpointError(
                f"{where} does not fit this run: its optimizer's parameter groups have sizes {sizes[0]}, "
                f"this run's {sizes[1]}"
            )
        return dict(saved)  # no names on one side: by position, as torch does
    assert names_old is not None
    reordered = []
    for i, (before, ids, now) in enumerate(zip(names_old, (g["params"] for g in saved_groups), names_new)):
        if set(before) != set(now):
            only_old = sorted(set(before) - set(now), key=str)
            only_new = sorted(set(now) - set(before), key=str)
            raise CheckpointError(
                f"{where} does not fit this run: parameter group {i} holds {only_old} only in the checkpoint "
                f"and {only_new} only in this run"
            )
        position = {name: k for k, name in enumerate(before)}
        reordered.append(dict(saved_groups[i], params=[ids[position[name]] for name in now]))
    return {"state": saved["state"], "param_groups": reordered}


def warn_hyperparameters(
    saved: Sequence[Mapping[str, Any]] | None, current: Sequence[Mapping[str, Any]], where: str
) -> None:
    """Warn when the caller built the optimizer with other settings than the checkpointed run did.

    Args:
        saved: the first run's :func:`dltricks.callbacks.hyperparameters`, as the checkpoint stores it
            (``None`` for an older checkpoint: nothing to compare).
        current: this run's, taken before any callback changed them.
        where: the checkpoint's name, for the message.
    """
    if saved is None:
        return
    differ = [
        f"{key}={old!r} (checkpoint) vs {group.get(key)!r} (this run) in group {i}"
        for i, (before, group) in enumerate(zip(saved, current))
        for key, old in before.items()
        if key in group and not _same(old, group[key])
    ]
    if differ:
        warnings.warn(
            f"resuming from {where} keeps the checkpoint's optimizer settings (PyTorch's convention), not "
            f"this call's: {'; '.join(differ)}. To change one, set it in optimizer.param_groups after the "
            "resume",
            UserWarning,
            stacklevel=4,
        )


def _usable(names: Any) -> bool:
    """Names that identify every parameter: present, all strings, unique within each group."""
    if not isinstance(names, (list, tuple)):
        return False
    return all(all(isinstance(n, str) for n in g) and len(set(g)) == len(g) for g in names)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b) or (a != a and b != b)  # NaN equals NaN here
