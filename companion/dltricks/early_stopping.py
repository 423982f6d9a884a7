"""Early stopping: end training when a validation metric has stopped improving, and keep the best weights."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from dltricks._checks import check_choice, check_float, check_int, check_type, fail
from dltricks.callbacks import Callback, TrainState


class EarlyStopping(Callback):
    r"""Stop ``fit`` after ``patience`` epochs without improvement of ``monitor``; restore the best weights.

    With ``mode="min"`` an epoch improves when :math:`v_t < v^\star - \delta`; with ``mode="max"`` when
    :math:`v_t > v^\star + \delta`, where :math:`v^\star` is the best value so far and :math:`\delta` is
    ``min_delta``. The first monitored epoch always improves. ``wait`` counts the monitored epochs since the
    best one; when it reaches ``patience`` the callback sets ``state.stop``, so training ends ``patience``
    epochs after the best epoch (with ``patience=0``: at the first epoch that does not improve).

    Epochs whose history record lacks ``monitor`` (``fit(eval_every=k)`` skips validation) are ignored,
    as are epochs ``1 .. start_from_epoch`` (a warm-up in which no improvement is expected). A deep copy of
    ``state_dict()`` (buffers such as batch-norm statistics included) is kept on the CPU at every
    improvement and loaded back in ``on_train_end`` when ``restore_best_weights`` is set, whether training
    stopped early or ran all its epochs (``fit`` calls ``on_train_end`` in both cases).

    Differences from ``keras.callbacks.EarlyStopping``, whose counting rules this follows (same stopping
    epoch and best epoch on the same sequence of values):

    * defaults: ``patience=5`` and ``restore_best_weights=True`` here; Keras uses 0 and ``False``;
    * ``mode="auto"`` means ``"max"`` when ``"acc"`` occurs in ``monitor`` and ``"min"`` otherwise; Keras
      asks the compiled metric for its direction;
    * ``best_epoch`` and ``stopped_epoch`` are 1-based epoch numbers (as in ``History``) and
      ``stopped_epoch`` is ``None`` when training was not stopped; Keras counts from 0 and uses 0;
    * ``min_delta`` must be >= 0 (Keras takes its absolute value); there is no ``baseline``;
    * a missing ``monitor`` is skipped silently (Keras warns).

    Args:
        monitor: the ``History`` key to watch, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        patience: number of monitored epochs without improvement before stopping (>= 0).
        min_delta: the smallest change that counts as an improvement (>= 0).
        restore_best_weights: load the weights of the best epoch at the end of training.
        start_from_epoch: number of initial epochs not monitored (>= 0).

    Raises:
        TypeError: for a ``min_delta``, ``monitor``, ``patience`` or ``start_from_epoch`` of the wrong type.
        ValueError: for a ``min_delta``, ``mode``, ``patience`` or ``start_from_epoch`` out of its allowed
            range.

    References:
        Prechelt, "Early Stopping -- But When?", in Neural Networks: Tricks of the Trade, LNCS 1524, 1998
        (stopping criteria on the validation error; patience is a relative of its criterion :math:`UP_s`,
        which stops once the validation error has risen in :math:`s` successive strips of epochs).
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        *,
        mode: str = "auto",
        patience: int = 5,
        min_delta: float = 0.0,
        restore_best_weights: bool = True,
        start_from_epoch: int = 0,
    ) -> None:
        self.monitor = check_type("monitor", monitor, str, "a string naming a History key")
        mode = check_choice("mode", mode, ("auto", "min", "max"))
        self.mode = ("max" if "acc" in monitor else "min") if mode == "auto" else mode
        self.patience = check_int("patience", patience, minimum=0)
        self.min_delta = check_float("min_delta", min_delta, minimum=0.0)
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = check_int("start_from_epoch", start_from_epoch, minimum=0)
        self._reset()

    def _reset(self) -> None:
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self.best_state: dict[str, torch.Tensor] | None = None

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta``."""
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, state: TrainState) -> None:
        self._reset()  # the same instance can be reused for another fit

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history.epochs[-1] if state.history.epochs else {}
        if self.monitor not in record or state.epoch <= self.start_from_epoch:
            return
        value = float(record[self.monitor])
        if self.improves(value):
            self.best, self.best_epoch, self.wait = value, state.epoch, 0
            if self.restore_best_weights:
                # A CPU copy: the weights live on after the optimizer keeps changing the originals in place.
                self.best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in state.model.state_dict().items()
                }
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = state.epoch
            state.stop = True

    def on_train_end(self, state: TrainState) -> None:
        if self.restore_best_weights and self.best_state is not None:
            state.model.load_state_dict(self.best_state)  # copies into the model's tensors

    STATE_KEYS = ("best", "best_epoch", "wait", "stopped_epoch", "best_state")

    def state_dict(self) -> dict[str, Any]:
        """The counters and the saved best weights, for a checkpoint (see :mod:`dltricks.checkpoint`)."""
        return {key: getattr(self, key) for key in self.STATE_KEYS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned, so that a resumed run stops where the original would.

        Raises:
            TypeError: if ``state`` is not a mapping with the keys of :meth:`state_dict`.
        """
        if not isinstance(state, Mapping) or any(key not in state for key in self.STATE_KEYS):
            fail("state", f"a mapping with the keys {list(self.STATE_KEYS)}", state, TypeError)
        best_state = state["best_state"]
        if best_state is not None:
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in best_state.items()}
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch, self.stopped_epoch = state["best_epoch"], state["stopped_epoch"]
        self.wait, self.best_state = int(state["wait"]), best_state
