"""What ``fit`` shows its callbacks: the ``Callback`` hooks, the ``TrainState`` they see, the ``History``.

These live apart from the loop (:mod:`dltricks.train`) so that modules building on them, the checkpoint
among them, need not import the loop, and the loop can import the checkpoint without a cycle.
:mod:`dltricks.train` re-exports every name here: ``from dltricks.train import Callback`` keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class History:
    """Per-epoch records of a ``fit`` run: ``history["val_loss"]`` is a list with one value per epoch."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def append(self, record: Mapping[str, float]) -> None:
        self.epochs.append(dict(record))

    def __getitem__(self, key: str) -> list[float]:
        """The values of ``key`` over the epochs that recorded it (see :meth:`epochs_of`)."""
        values = [e[key] for e in self.epochs if key in e]
        if not values:
            raise KeyError(f"no '{key}' in history; keys: {sorted(self.keys())}")
        return values

    def epochs_of(self, key: str) -> list[int]:
        """The (1-based) epoch numbers at which ``key`` was recorded, to plot ``history[key]`` against."""
        return [int(e["epoch"]) for e in self.epochs if key in e]

    def keys(self) -> list[str]:
        """Every key recorded in at least one epoch."""
        return list(dict.fromkeys(k for e in self.epochs for k in e))

    def __len__(self) -> int:
        return len(self.epochs)

    def __repr__(self) -> str:
        last = ", ".join(f"{k}={v:.4g}" for k, v in (self.epochs[-1] if self.epochs else {}).items())
        return f"History({len(self)} epochs; last: {last})"


class Callback:
    """Hooks that ``fit`` calls at named points. Subclass and override what you need.

    Every hook receives the ``TrainState``; a callback stops training by setting ``state.stop = True``.
    ``on_train_exit`` runs last, always, even when training raises: release what ``on_train_begin`` took
    there (the ``Checkpoint`` callback unlocks its directory).
    A callback that carries state across epochs (counters, saved weights) returns it from ``state_dict``
    (tensors and JSON-like primitives only) so that a checkpoint can store it and ``load_state_dict`` can
    put it back when a run resumes; stateless callbacks keep the defaults.
    """

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_before_step(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...
    def on_train_exit(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must store to resume this callback exactly (default: nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (default: accept only the empty state).

        Raises:
            ValueError: when ``state`` is not empty (this callback keeps no state).
        """
        if state:
            raise ValueError(
                f"`state` must be empty for a stateless {type(self).__name__}. Received: {state!r}"
            )


class TrainState:
    """What callbacks can see and change: the model, optimizer, counters, history and the stop flag.

    ``train`` and ``callbacks`` are the loader and callbacks of the ``fit`` call (a checkpoint stores their
    states). ``batch``, ``loss_total``, ``loss_count`` and ``epoch_skipped`` describe the epoch in progress,
    so that a run saved in the middle of an epoch can finish that epoch exactly as it would have.
    ``hyperparameters`` holds the optimizer's parameter-group settings as the caller made them (taken before
    any callback or schedule changes them); a checkpoint keeps the first run's, to compare on resume.
    """

    COUNTERS = ("epoch", "step", "batch", "skipped", "epoch_skipped", "loss_total", "loss_count", "stop")

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        history: History,
        *,
        train: Iterable[Batch] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.model, self.optimizer, self.history = model, optimizer, history
        self.train, self.callbacks = train, list(callbacks)
        self.epoch = 0  # epochs completed
        self.step = 0  # training steps taken (a skipped non-finite step counts: its batch was used up)
        self.stop = False
        self.skipped = 0  # non-finite steps skipped over the whole run
        self.hyperparameters = hyperparameters(optimizer)
        # Set by fit(sync_every=k > 1): moves the running sums kept on the device into the counters.
        self.read_device_sums: Callable[[], None] | None = None
        self._begin_epoch()

    def sync(self) -> None:
        """Bring ``loss_total``, ``loss_count`` and the skip counters up to date (one host sync).

        Needed only under ``fit(sync_every=k > 1)``, which keeps them on the device between reads; a
        callback that reads them between steps calls this first. Does nothing otherwise.
        """
        if self.read_device_sums is not None:
            self.read_device_sums()

    def _begin_epoch(self) -> None:
        self.batch = 0  # batches of the current epoch done
        self.loss_total, self.loss_count, self.epoch_skipped = 0.0, 0, 0

    def end_epoch(self) -> None:
        """Count the epoch as completed and reset the per-epoch running sums."""
        self.epoch += 1
        self._begin_epoch()

    def state_dict(self) -> dict[str, Any]:
        """The counters and running sums (not the model, optimizer or history), as primitives."""
        self.sync()
        return {name: getattr(self, name) for name in self.COUNTERS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: when ``state`` lacks one of the counters (they are named).
        """
        missing = [name for name in self.COUNTERS if name not in state]
        if missing:
            raise ValueError(f"`state` must hold the counters {list(self.COUNTERS)}. Missing: {missing}")
        for name in self.COUNTERS:
            setattr(self, name, state[name])


def hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Each parameter group's settings (``lr``, ``weight_decay``, ...) without its parameters, as primitives.

    Tensor values (a tensor ``lr``) become floats or lists; what a scheduler adds (``initial_lr``) and
    values that are not numbers, strings, booleans or ``None`` (a callable) are left out.
    """
    skip = ("params", "param_names", "initial_lr")
    groups = [{k: _primitive(v) for k, v in g.items() if k not in skip} for g in optimizer.param_groups]
    return [{k: v for k, v in g.items() if v is not _OTHER} for g in groups]


_OTHER = object()  # a value that cannot be stored in a checkpoint or compared across runs


def _primitive(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        items = [_primitive(v) for v in value]
        return _OTHER if any(v is _OTHER for v in items) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _OTHER
