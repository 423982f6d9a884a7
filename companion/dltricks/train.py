"""One readable training loop, shared by every chapter.

``fit`` is deliberately short: a chapter should be able to show it whole. Extra behaviour (penalties,
projections after a step, early stopping, checkpoints, schedules) enters through a ``loss`` penalty term or
through callbacks called at named points, never through flags inside the loop. Resuming from a checkpoint
(:mod:`dltricks.checkpoint`) is one more named point, right after ``on_train_begin``.
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

from dltricks._checks import check_choice, check_int, check_type
from dltricks.device import resolve_device

Batch = tuple[torch.Tensor, torch.Tensor]
Metric = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
REMEDIES = "usual remedies: a lower learning rate, gradient clipping, checking the inputs for NaN or inf"


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
    A callback that carries state across epochs (counters, saved weights) returns it from ``state_dict``
    (tensors and JSON-like primitives only) so that a checkpoint can store it and ``load_state_dict`` can
    put it back when a run resumes; stateless callbacks keep the defaults.
    """

    def on_train_begin(self, state: TrainState) -> None: ...
    def on_before_step(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_epoch_end(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must store to resume this callback exactly (default: nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (default: accept only the empty state)."""
        if state:
            raise ValueError(
                f"`state` must be empty for a stateless {type(self).__name__}. Received: {state!r}"
            )


class TrainState:
    """What callbacks can see and change: the model, optimizer, counters, history and the stop flag.

    ``train`` and ``callbacks`` are the loader and callbacks of the ``fit`` call (a checkpoint stores their
    states). ``batch``, ``loss_total``, ``loss_count`` and ``epoch_skipped`` describe the epoch in progress,
    so that a run saved in the middle of an epoch can finish that epoch exactly as it would have.
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
        self._begin_epoch()

    def _begin_epoch(self) -> None:
        self.batch = 0  # batches of the current epoch done
        self.loss_total, self.loss_count, self.epoch_skipped = 0.0, 0, 0

    def end_epoch(self) -> None:
        """Count the epoch as completed and reset the per-epoch running sums."""
        self.epoch += 1
        self._begin_epoch()

    def state_dict(self) -> dict[str, Any]:
        """The counters and running sums (not the model, optimizer or history), as primitives."""
        return {name: getattr(self, name) for name in self.COUNTERS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        missing = [name for name in self.COUNTERS if name not in state]
        if missing:
            raise ValueError(f"`state` must hold the counters {list(self.COUNTERS)}. Missing: {missing}")
        for name in self.COUNTERS:
            setattr(self, name, state[name])


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
    resume_from: str | os.PathLike[str] | None = None,
    nonfinite: str = "raise",
    max_skipped: int = 10,
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
        callbacks: objects with ``on_train_begin``/``on_before_step``/``on_step_end``/``on_epoch_end``/
            ``on_train_end``; ``on_before_step`` runs between ``backward`` and ``optimizer.step``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        progress: show a progress bar over epochs; ``None`` follows ``$DLTRICKS_PROGRESS`` (default on).
        resume_from: a checkpoint directory (or file) written by :class:`dltricks.checkpoint.Checkpoint`.
            When it holds a checkpoint that verifies, the model, optimizer, loader position, callbacks,
            random generators, counters and history are restored from the newest one and training goes on
            from there, mid-epoch included; an empty or missing directory starts afresh, so one command
            line both starts and restarts a run. ``epochs`` stays the total, not the number still to run.
        nonfinite: what a NaN or infinite loss does. ``"raise"``: stop with ``FloatingPointError``;
            ``"skip"``: drop that batch without an optimizer step, count it in the history's ``skipped``.
            Either way the loss is checked before ``backward``, so it never reaches the weights.
        max_skipped: with ``nonfinite="skip"``, raise anyway once more steps than this were skipped.

    Returns:
        The ``History`` of the run (of the whole run when resumed).

    Raises:
        FloatingPointError: when the training loss becomes NaN or infinite (the epoch and step are named).
        dltricks.checkpoint.CheckpointError: when ``resume_from`` names a bad file, or a checkpoint that does
            not match this model, optimizer, loader or these callbacks.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    epochs = check_int("epochs", epochs, minimum=0)
    eval_every = check_int("eval_every", eval_every, minimum=1)
    check_type("resume_from", resume_from, (str, os.PathLike, type(None)), "a directory path or None")
    nonfinite = check_choice("nonfinite", nonfinite, ("raise", "skip"))
    max_skipped = check_int("max_skipped", max_skipped, minimum=0)
    metrics = {"accuracy": accuracy} if metrics is None else metrics
    dev = resolve_device(device)
    if progress is None:
        progress = os.environ.get("DLTRICKS_PROGRESS", "1") not in ("0", "false", "False", "")
    model.to(dev)
    history = History()
    state = TrainState(model, optimizer, history, train=train, callbacks=callbacks)
    for cb in callbacks:
        cb.on_train_begin(state)
    if resume_from is not None:
        # After on_train_begin, which resets callbacks (EarlyStopping) that the checkpoint then restores.
        from dltricks.checkpoint import resume  # imported here: checkpoint.py builds on this module

        resume(state, resume_from)
    # Optional hook: callbacks written before it existed (or not subclassing Callback) may lack it.
    before_step = [cb.on_before_step for cb in callbacks if hasattr(cb, "on_before_step")]
    bar = tqdm(total=epochs, initial=state.epoch, desc="epochs", unit="ep", disable=not progress, leave=False)
    for epoch in range(state.epoch, epochs):
        if state.stop:  # checked first: a run resumed from its stopping epoch's checkpoint stays stopped
            break
        start = time.perf_counter()
        model.train()
        # A loader resumed mid-epoch yields only the batches the checkpointed run had not used yet.
        for x, y in train:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = loss_fn(model(x), y)
            if penalty is not None:
                loss = loss + penalty(model)
            state.step, state.batch = state.step + 1, state.batch + 1
            # .item() is a host sync; once per step is acceptable for a readable loop on small models.
            value = loss.item()
            if not math.isfinite(value):  # before backward(): a NaN or inf never reaches the weights
                _nonfinite_loss(state, value, nonfinite, max_skipped)
                continue
            optimizer.zero_grad(set_to_none=True)  # None, not zeros: cheaper, and unused params stay None
            loss.backward()
            for hook in before_step:  # gradients exist and the weights are unchanged: clipping goes here
                hook(state)
            optimizer.step()
            state.loss_total += value * y.shape[0]
            state.loss_count += y.shape[0]
            for cb in callbacks:
                cb.on_step_end(state)
        # An epoch whose every step was skipped has no mean loss: NaN, not a reassuring 0.
        mean_loss = state.loss_total / state.loss_count if state.loss_count else float("nan")
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": mean_loss}
        if nonfinite == "skip":
            record["skipped"] = state.epoch_skipped
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
        state.end_epoch()
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.endswith(("loss", "accuracy"))})
        for cb in callbacks:
            cb.on_epoch_end(state)
    bar.close()
    for cb in callbacks:
        cb.on_train_end(state)
    return history


def _nonfinite_loss(state: TrainState, value: float, policy: str, max_skipped: int) -> None:
    """Count a skipped step under ``policy="skip"``; raise otherwise, or once too many were skipped."""
    where = f"at epoch {state.epoch + 1}, step {state.step}"
    if policy == "skip":
        state.skipped, state.epoch_skipped = state.skipped + 1, state.epoch_skipped + 1
        if state.skipped <= max_skipped:
            return
        raise FloatingPointError(
            f"training loss is {value} {where}: {state.skipped} non-finite steps skipped, more than "
            f"max_skipped={max_skipped}; {REMEDIES}"
        )
    raise FloatingPointError(
        f"training loss is {value} {where}; the weights are those before this step. {REMEDIES.capitalize()}, "
        "or fit(nonfinite='skip') to skip such batches"
    )
