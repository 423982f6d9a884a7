"""One readable training loop, shared by every chapter.

``fit`` is deliberately short: a chapter should be able to show it whole. Extra behaviour (penalties,
projections after a step, early stopping, checkpoints, schedules) enters through a ``loss`` penalty term or
through callbacks called at named points, never through flags inside the loop.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.std import tqdm

from dltricks._checks import check_int, check_type
from dltricks.device import resolve_device

Batch = tuple[torch.Tensor, torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max logit equals the integer target."""
    return (logits.argmax(dim=1) == target).float().mean()


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
    """

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


class TrainState:
    """What callbacks can see and change: the model, optimizer, counters, history and the stop flag."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, history: History) -> None:
        self.model, self.optimizer, self.history = model, optimizer, history
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer steps taken
        self.stop = False


def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    metrics: Mapping[str, Metric] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Mean loss and metrics of ``model`` over ``batches`` in evaluation mode, weighted by batch size."""
    metrics = {"accuracy": accuracy} if metrics is None else metrics
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    totals: dict[str, float] = defaultdict(float)
    count = 0
    with torch.no_grad():
        for x, y in batches:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            out = model(x)
            n = y.shape[0]
            totals["loss"] += loss_fn(out, y).item() * n
            for name, fn in metrics.items():
                totals[name] += fn(out, y).item() * n
            count += n
    model.train(was_training)
    if count == 0:
        raise ValueError("`batches` must yield at least one batch. Received: an empty iterable")
    return {k: v / count for k, v in totals.items()}


def fit(
    model: nn.Module,
    train: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
    val: Iterable[Batch] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    eval_train: bool = False,
    eval_every: int = 1,
    callbacks: Sequence[Callback] = (),
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``train`` and return the per-epoch ``History``.

    Each step computes ``loss_fn(model(x), y) + penalty(model)``, back-propagates and takes one optimizer
    step. After every epoch the history gets ``loss`` (the mean training objective over the epoch's batches,
    penalty included, measured while the weights were changing, as Keras reports it), the metrics of
    ``val`` as ``val_loss``/``val_<metric>`` when given, and with ``eval_train=True`` the loss and metrics
    of the final weights on the training batches as ``train_loss``/``train_<metric>`` (the honest numbers
    for a train/test gap: no penalty, no dropout, no drift within the epoch).

    Args:
        model: the network; moved to ``device``.
        train: re-iterable batches ``(x, y)``, e.g. ``TensorBatches`` or a ``DataLoader``.
        optimizer: any ``torch.optim.Optimizer`` over ``model``'s parameters.
        epochs: number of passes over ``train`` (>= 0).
        loss_fn: data loss, default cross-entropy on logits.
        penalty: optional regulariser ``penalty(model) -> scalar`` added to the loss (e.g. an L2 term).
        val: optional validation batches.
        metrics: name -> ``metric(output, target)``; default ``{"accuracy": accuracy}``.
        eval_train: also evaluate the training set after each evaluated epoch.
        eval_every: evaluate ``val`` (and the training set) every this many epochs and after the last one
            (Keras' ``validation_freq``); the other epochs' records hold only ``loss``.
        callbacks: objects with ``on_train_begin``/``on_step_end``/``on_epoch_end``/``on_train_end``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        progress: show a progress bar over epochs; ``None`` follows ``$DLTRICKS_PROGRESS`` (default on).

    Returns:
        The ``History`` of the run.

    Raises:
        FloatingPointError: when the training loss becomes NaN or infinite (the epoch and step are named).
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    epochs = check_int("epochs", epochs, minimum=0)
    eval_every = check_int("eval_every", eval_every, minimum=1)
    metrics = {"accuracy": accuracy} if metrics is None else metrics
    dev = resolve_device(device)
    if progress is None:
        progress = os.environ.get("DLTRICKS_PROGRESS", "1") not in ("0", "false", "False", "")
    model.to(dev)
    history = History()
    state = TrainState(model, optimizer, history)
    for cb in callbacks:
        cb.on_train_begin(state)
    bar = tqdm(total=epochs, desc="epochs", unit="ep", disable=not progress, leave=False)
    for epoch in range(epochs):
        start, total, count = time.perf_counter(), 0.0, 0
        model.train()
        for x, y in train:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = loss_fn(model(x), y)
            if penalty is not None:
                loss = loss + penalty(model)
            optimizer.zero_grad(set_to_none=True)  # None, not zeros: cheaper, and unused params stay None
            loss.backward()
            optimizer.step()
            state.step += 1
            # .item() is a host sync; once per step is acceptable for a readable loop on small models.
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss is {value} at epoch {epoch + 1}, step {state.step}")
            total, count = total + value * y.shape[0], count + y.shape[0]
            for cb in callbacks:
                cb.on_step_end(state)
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": total / max(count, 1)}
        evaluate_now = (epoch + 1) % eval_every == 0 or epoch + 1 == epochs
        if eval_train and evaluate_now:
            # Loaders that offer in_order() (TensorBatches, Augmented) give the clean, unshuffled data: no
            # augmentation in the measurement, and a shuffling loader's per-epoch permutations stay untouched.
            ordered = train.in_order() if hasattr(train, "in_order") else train
            record |= {f"train_{k}": v for k, v in evaluate(model, ordered, loss_fn, metrics, dev).items()}
        if val is not None and evaluate_now:
            record |= {f"val_{k}": v for k, v in evaluate(model, val, loss_fn, metrics, dev).items()}
        record["seconds"] = time.perf_counter() - start
        history.append(record)
        state.epoch = epoch + 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.endswith(("loss", "accuracy"))})
        for cb in callbacks:
            cb.on_epoch_end(state)
        if state.stop:
            break
    bar.close()
    for cb in callbacks:
        cb.on_train_end(state)
    return history
