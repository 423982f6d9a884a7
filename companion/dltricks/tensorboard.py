"""Logging a ``fit`` run to TensorBoard, as a callback; ``tensorboard`` is an optional dependency."""

from __future__ import annotations

import os
from typing import Any

from dltricks._checks import check_int, check_type
from dltricks.callbacks import Callback, TrainState


class TensorBoard(Callback):
    """Write each epoch's history record and the learning rate to a TensorBoard log, against the step.

    Every number of the epoch's record (``loss``, ``val_loss``, ``val_accuracy``, ..., ``seconds``) goes
    under ``epoch/<key>``, with ``epoch/lr`` the first parameter group's learning rate; with
    ``every_steps`` the running mean training loss of the epoch so far goes under ``step/loss``. The x-axis
    is the training step throughout, so that a resumed run continues its curves: the log is opened at the
    first value written with ``purge_step`` set to that step, which drops what a killed run had logged
    after the checkpoint the new run resumed from.

    Args:
        log_dir: the run's log directory (point ``tensorboard --logdir`` at its parent to compare runs).
        every_steps: also log the running training loss every this many steps (>= 1), or ``None``.

    Raises:
        TypeError: if ``log_dir`` is not a path.
        ImportError: if the ``tensorboard`` package is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike[str], *, every_steps: int | None = None) -> None:
        self.log_dir = os.fspath(check_type("log_dir", log_dir, (str, os.PathLike), "a directory path"))
        self.every_steps = None if every_steps is None else check_int("every_steps", every_steps, minimum=1)
        try:  # imported here: tensorboard is optional, and slow to import
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise ImportError(
                "dltricks.tensorboard.TensorBoard needs the `tensorboard` package: pip install tensorboard"
            ) from err
        self._writer_class = SummaryWriter
        self.writer: Any = None

    def _log(self, state: TrainState, tag: str, value: float) -> None:
        if self.writer is None:
            self.writer = self._writer_class(self.log_dir, purge_step=state.step)
        self.writer.add_scalar(tag, value, global_step=state.step)

    def on_train_begin(self, state: TrainState) -> None:
        self.writer = None  # opened at the first value, once a resumed run knows its step

    def on_step_end(self, state: TrainState) -> None:
        if self.every_steps is not None and state.step % self.every_steps == 0:
            state.sync()  # fit(sync_every=k) keeps the running loss on the device between reads
            self._log(state, "step/loss", state.loss_total / max(state.loss_count, 1))
            self.writer.flush()  # what is logged is on disk, should the run be killed before the next

    def on_epoch_end(self, state: TrainState) -> None:
        for key, value in state.history.epochs[-1].items():
            if key != "epoch":
                self._log(state, f"epoch/{key}", float(value))
        self._log(state, "epoch/lr", float(state.optimizer.param_groups[0]["lr"]))
        self.writer.flush()

    def on_train_end(self, state: TrainState) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
