"""Train/eval modes saved and restored per module, so a helper never changes the caller's modes.

``was = model.training; model.eval(); ...; model.train(was)`` is not a restore: ``train(was)`` sets *every*
submodule to ``was``, so an eval-mode backbone inside a train-mode wrapper (or a frozen batch norm) comes
back in training mode. :func:`saved_modes` records each module's own flag and puts every one back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


def save_modes(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    """Each submodule of ``model`` with its own ``training`` flag, for :func:`restore_modes`."""
    return [(m, m.training) for m in model.modules()]


def restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    """Put back the flags :func:`save_modes` recorded, module by module."""
    for m, training in modes:
        m.training = training


@contextmanager
def saved_modes(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block change modes freely; on exit each submodule of ``model`` has its own flag back."""
    modes = save_modes(model)
    try:
        yield model
    finally:
        restore_modes(modes)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model.eval()`` for the block, then every submodule's own mode back (see :func:`saved_modes`)."""
    with saved_modes(model):
        model.eval()
        yield model
