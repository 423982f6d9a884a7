"""The callbacks that apply a schedule in ``fit``: :class:`Schedule` (a pure function of the step or the
epoch) and :class:`PlateauSchedule` (the plateau rule of :mod:`dltricks.schedules.plateau`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from dltricks._checks import check_choice, check_type, fail
from dltricks.callbacks import Callback, TrainState
from dltricks.schedules.plateau import ReduceOnPlateau

__all__ = ["PlateauSchedule", "Schedule"]


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _set_momentum(optimizer: torch.optim.Optimizer, momentum: float) -> None:
    for group in optimizer.param_groups:
        if "betas" in group:  # Adam and relatives: beta1 is their momentum, as OneCycleLR treats it
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum


class Schedule(Callback):
    """Set the learning rate of every parameter group from ``fn(step)`` (or ``fn(epoch)``) during ``fit``.

    ``fn`` maps the number of updates already taken (``per="step"``: ``state.step - state.skipped``, the
    training steps less those skipped for a non-finite loss or gradient) or of epochs completed
    (``per="epoch"``) to an absolute rate, e.g. ``functools.partial(one_cycle, max_lr=0.1,
    total_steps=epochs * len(train))``. The rate of the update at counter ``k`` is ``fn(k)``, exactly what
    a torch scheduler stepped after every update (or epoch) gives. All parameter groups get the same rate;
    per-group rates are overwritten.

    When the rate is set: ``fn(0)`` before training (``on_train_begin``), ``fn(step)``/``fn(epoch)`` after
    each update or epoch (so the optimizer holds the next rate between steps, as a checkpoint saves it),
    and once more just before each update from the counter itself (``on_before_step``). The last one
    makes the schedule a pure function of ``fit``'s counters: a run resumed from a checkpoint (which
    restores them) continues the schedule exactly. A batch skipped for a non-finite loss is not an update
    and does not advance the schedule, as a torch scheduler stepped only after an update taken (with
    ``fit(nonfinite="skip")``; ``MixedPrecision.last_skipped`` says the same in a loop of one's own). Under
    ``fit(sync_every=k)`` the device skips such a step and the host learns of it at the next read (every
    ``k`` steps): between reads the counter runs ahead by the steps skipped since the last one, and is
    exact again from the read on.

    Args:
        fn: ``fn(counter) -> lr``, a finite rate >= 0.
        per: ``"step"`` or ``"epoch"``.
        momentum: optional ``fn(counter) -> momentum`` (e.g. a partial of :func:`one_cycle_momentum`), set
            as SGD's ``momentum`` or Adam's ``betas[0]``.
        record: keep the rates (and momenta) used in :attr:`lrs` (:attr:`momenta`).

    Attributes:
        lrs: with ``record``, the rate of every update taken (``per="step"``) or every epoch (``per="epoch"``)
            run in the latest ``fit`` (after a resume: from the resumed counter on).
        momenta: the same for the momentum, when ``momentum`` is given.

    Raises:
        TypeError: for a ``fn``, ``momentum`` or ``record`` of the wrong type.
        ValueError: for a ``per`` out of its allowed range; during ``fit``, for a ``momentum`` schedule with
            an optimizer that has neither ``momentum`` nor ``betas``, or an ``fn`` that returns a rate that
            is negative or not finite.
    """

    def __init__(
        self,
        fn: Callable[[int], float],
        *,
        per: str = "step",
        momentum: Callable[[int], float] | None = None,
        record: bool = True,
    ) -> None:
        if not callable(fn):
            fail("fn", "a callable fn(step) -> learning rate", fn, TypeError)
        if momentum is not None and not callable(momentum):
            fail("momentum", "None or a callable fn(step) -> momentum", momentum, TypeError)
        self.fn, self.momentum = fn, momentum
        self.per = check_choice("per", per, ("step", "epoch"))
        self.record = bool(check_type("record", record, bool, "True or False"))
        self.lrs: list[float] = []
        self.momenta: list[float] = []
        self._recorded: int | None = None

    def _apply(self, state: TrainState, counter: int) -> tuple[float, float | None]:
        lr = float(self.fn(counter))
        if not (math.isfinite(lr) and lr >= 0):
            fail(f"fn({counter})", "a finite learning rate >= 0", lr)
        _set_lr(state.optimizer, lr)
        momentum = None if self.momentum is None else float(self.momentum(counter))
        if momentum is not None:
            _set_momentum(state.optimizer, momentum)
        return lr, momentum

    def on_train_begin(self, state: TrainState) -> None:
        if self.momentum is not None and not all(
            "betas" in g or "momentum" in g for g in state.optimizer.param_groups
        ):
            fail(
                "momentum", "None for an optimizer without momentum or betas", type(state.optimizer).__name__
            )
        self.lrs, self.momenta, self._recorded = [], [], None
        self._apply(state, state.step - state.skipped if self.per == "step" else state.epoch)

    def on_before_step(self, state: TrainState) -> None:
        # fit has already counted the step in progress, and the skipped ones are no updates: this one is
        # update number state.step - 1 - state.skipped from zero.
        counter = state.step - 1 - state.skipped if self.per == "step" else state.epoch
        lr, momentum = self._apply(state, counter)
        if self.record and counter != self._recorded:
            self._recorded = counter
            self.lrs.append(lr)
            if momentum is not None:
                self.momenta.append(momentum)

    def on_step_end(self, state: TrainState) -> None:
        if self.per == "step":
            self._apply(state, state.step - state.skipped)

    def on_epoch_end(self, state: TrainState) -> None:
        if self.per == "epoch":
            self._apply(state, state.epoch)


class PlateauSchedule(Callback):
    """Performance scheduling in ``fit``: feed ``monitor`` to a :class:`ReduceOnPlateau` after each epoch.

    The monitored value is read from the epoch's ``History`` record (epochs without it, such as those
    ``fit(eval_every=k)`` does not validate, are skipped, as torch's scheduler would not be stepped). At the
    start of ``fit`` the plateau rule is reset and every parameter group gets its ``lr0``; its state goes
    into checkpoints, so a resumed run reduces the rate exactly when the uninterrupted one would.

    Args:
        plateau: the rule, e.g. ``ReduceOnPlateau(0.1, factor=0.5, patience=3)``.
        monitor: the ``History`` key to watch (default ``"val_loss"``); pair ``"val_accuracy"`` with
            ``ReduceOnPlateau(mode="max")``.

    Attributes:
        lrs: the rate after each monitored epoch of the latest ``fit``.

    Raises:
        TypeError: for a ``monitor`` or ``plateau`` of the wrong type.
    """

    def __init__(self, plateau: ReduceOnPlateau, monitor: str = "val_loss") -> None:
        self.plateau = check_type("plateau", plateau, ReduceOnPlateau, "a ReduceOnPlateau")
        self.monitor = check_type("monitor", monitor, str, "a string naming a History key")
        self.lrs: list[float] = []

    def on_train_begin(self, state: TrainState) -> None:
        self.plateau.reset()
        self.lrs = []
        _set_lr(state.optimizer, self.plateau.lr)

    def on_before_step(self, state: TrainState) -> None:
        _set_lr(state.optimizer, self.plateau.lr)  # after a resume, the restored rule's rate

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history.epochs[-1] if state.history.epochs else {}
        if self.monitor not in record:
            return
        lr = self.plateau.update(record[self.monitor])
        _set_lr(state.optimizer, lr)
        self.lrs.append(lr)

    def state_dict(self) -> dict[str, Any]:
        """The plateau rule's state (see :meth:`ReduceOnPlateau.state_dict`)."""
        return self.plateau.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the plateau rule's state."""
        self.plateau.load_state_dict(state)
