r"""Performance scheduling: the plateau rule, a small state machine over a monitored metric.

:class:`ReduceOnPlateau` is framework-free; :class:`dltricks.schedules.callbacks.PlateauSchedule` applies it
in ``fit``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from dltricks._checks import check_choice, check_float, check_int, fail
from dltricks.schedules.functions import _lr

__all__ = ["ReduceOnPlateau"]


class ReduceOnPlateau:
    r"""Performance scheduling: multiply the rate by ``factor`` when a metric has stopped improving.

    Follows ``torch.optim.lr_scheduler.ReduceLROnPlateau`` rule for rule, so that the same sequence of
    metrics gives the same rates. With ``mode="min"`` a value :math:`v` improves on the best :math:`b`
    when :math:`v < b(1 - \theta)` (``threshold_mode="rel"``) or :math:`v < b - \theta` (``"abs"``); with
    ``"max"``, when :math:`v > b(1 + \theta)` or :math:`v > b + \theta`. Each :meth:`update`:

    1. counts a bad update (``num_bad``) or records the new best and resets the count;
    2. during a cooldown, counts the cooldown down and forgets the bad update;
    3. once ``num_bad > patience`` (the ``patience + 1``-th bad update in a row), sets
       :math:`\eta \leftarrow \max(\eta\cdot\text{factor}, \eta_{\min})` (unless that changes it by no more
       than ``eps``), starts a cooldown of ``cooldown`` updates and resets the count.

    ``keras.callbacks.ReduceLROnPlateau(patience=p, min_delta=d, cooldown=c)`` gives the same rates (to
    float32, in which Keras stores the rate; checked on scripted sequences in the tests) as
    ``ReduceOnPlateau(patience=max(p - 1, 0), threshold=d, threshold_mode="abs", cooldown=max(c - 1, 0),
    eps=0)``. The differences behind that mapping: Keras' ``min_delta`` is absolute (torch's default
    threshold is relative); Keras reduces at the ``p``-th bad epoch in a row (``wait >= patience``, so 0 and 1
    act alike) where torch waits for the ``p+1``-th; Keras counts its cooldown down *before* judging the
    epoch, so its cooldown ``c`` ignores ``c - 1`` epochs where torch's ignores ``c``; and Keras has no
    ``eps``. Keras also infers ``mode="auto"`` from the metric, takes a NaN first value as its best (torch
    counts it as bad), and, once at ``min_lr``, keeps its count instead of restarting it (same rates).

    Args:
        lr0: the initial rate (> 0).
        factor: the multiplier of a reduction, in (0, 1).
        patience: the number of bad updates tolerated before a reduction (>= 0).
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        threshold: the improvement that counts, :math:`\theta \ge 0`, relative or absolute.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: updates after a reduction during which bad updates are not counted (>= 0).
        min_lr: the floor of the rate (>= 0).
        eps: a reduction smaller than this is skipped (torch's ``eps``; >= 0).

    Attributes:
        lr: the current rate.
        best: the best metric so far (``inf``/``-inf`` before the first update).
        num_bad: bad updates since the last improvement or reduction.
        cooldown_counter: updates of cooldown left.
        updates: :meth:`update` calls so far (torch's ``last_epoch``).

    Raises:
        TypeError: for a ``cooldown``, ``eps``, ``factor``, ``min_lr``, ``patience`` or ``threshold`` of the
            wrong type.
        ValueError: for a ``cooldown``, ``eps``, ``factor``, ``min_lr``, ``mode``, ``patience``, ``threshold``
            or ``threshold_mode`` out of its allowed range.
    """

    STATE_KEYS = ("lr", "best", "num_bad", "cooldown_counter", "updates")

    def __init__(
        self,
        lr0: float,
        *,
        factor: float = 0.1,
        patience: int = 10,
        mode: str = "min",
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        self.lr0 = _lr("lr0", lr0)
        self.factor = check_float(
            "factor", factor, minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False
        )
        self.patience = check_int("patience", patience, minimum=0)
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.threshold = check_float("threshold", threshold, minimum=0.0)
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        self.cooldown = check_int("cooldown", cooldown, minimum=0)
        self.min_lr = check_float("min_lr", min_lr, minimum=0.0)
        self.eps = check_float("eps", eps, minimum=0.0)
        self.reset()

    def reset(self) -> None:
        """Back to the state of a new instance: rate ``lr0``, no best value, no counts."""
        self.lr = self.lr0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad = 0
        self.cooldown_counter = 0
        self.updates = 0

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than the threshold (NaN never does)."""
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return value < (self.best * (1.0 - self.threshold) if rel else self.best - self.threshold)
        return value > (self.best * (self.threshold + 1.0) if rel else self.best + self.threshold)

    def update(self, metric: float | torch.Tensor) -> float:
        """Take one new value of the monitored metric (one epoch's) and return the rate to use next."""
        value = _metric(metric)
        self.updates += 1
        if self.improves(value):
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad = 0  # bad updates during the cooldown are forgotten
        if self.num_bad > self.patience:
            new = max(self.lr * self.factor, self.min_lr)
            if self.lr - new > self.eps:
                self.lr = new
            self.cooldown_counter, self.num_bad = self.cooldown, 0
        return self.lr

    def state_dict(self) -> dict[str, Any]:
        """The rate and counters (floats and ints), for a checkpoint."""
        return {key: getattr(self, key) for key in self.STATE_KEYS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            TypeError: if ``state`` is not a mapping with the keys of :meth:`state_dict`.
        """
        if not isinstance(state, Mapping) or any(key not in state for key in self.STATE_KEYS):
            fail("state", f"a mapping with the keys {list(self.STATE_KEYS)}", state, TypeError)
        self.lr, self.best = float(state["lr"]), float(state["best"])
        self.num_bad, self.cooldown_counter = int(state["num_bad"]), int(state["cooldown_counter"])
        self.updates = int(state["updates"])

    def __repr__(self) -> str:
        return f"ReduceOnPlateau(lr={self.lr:g}, best={self.best:g}, num_bad={self.num_bad})"


def _metric(metric: Any) -> float:
    if isinstance(metric, torch.Tensor) and metric.numel() == 1:
        return float(metric.item())
    if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
        fail("metric", "a real number or a one-element tensor", metric, TypeError)
    return float(metric)
