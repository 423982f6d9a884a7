"""One readable training loop, shared by every chapter.

``fit`` is deliberately short: a chapter should be able to show it whole. Extra behavior (penalties,
projections after a step, early stopping, checkpoints, schedules) enters through a ``loss`` penalty term or
through callbacks called at named points, never through flags inside the loop. Resuming from a checkpoint
(:mod:`dltricks.checkpoint`) is one more named point, right after ``on_train_begin``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.std import tqdm

from dltricks._checks import check_choice, check_int, check_type
from dltricks._modes import saved_modes
from dltricks.callbacks import Batch, Callback, History, Metric, TrainState
from dltricks.checkpoint import CheckpointError
from dltricks.device import resolve_device
from dltricks.distributed import fitting, ranks
from dltricks.nonfinite import (
    DeviceSums,
    finite_flag,
    first_step_pending,
    gradients,
    loss_and_finite,
    optimizer_params,
    skips_on_device,
)

__all__ = [
    "Batch",
    "Callback",
    "History",
    "Metric",
    "TrainState",
    "accuracy",
    "correct_predictions",
    "evaluate",
    "fit",
]

REMEDIES = "usual remedies: a lower learning rate, gradient clipping, checking the inputs for NaN or inf"


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of rows whose arg-max logit equals the integer target."""
    return (logits.argmax(dim=1) == target).float().mean()


def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    metrics: Mapping[str, Metric] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Mean loss and metrics of ``model`` over ``batches`` in evaluation mode, weighted by batch size.

    Each submodule's own ``training`` flag is restored afterwards, also when evaluation raises (a frozen
    layer stays in eval mode; a model the caller had in training mode is back in it).

    Raises:
        ValueError: when ``batches`` yields no batch.
    """
    metrics = {"accuracy": accuracy} if metrics is None else metrics
    dev = resolve_device(device)
    # Sums stay on the device and come over once at the end: no host sync per batch. float64 (float32 on MPS)
    # sums of value x n in batch order: the same arithmetic as summing .item() x n on the host.
    dtype = torch.float32 if dev.type == "mps" else torch.float64
    totals: torch.Tensor | None = None
    count = 0
    with saved_modes(model), torch.no_grad():
        model.eval()
        for x, y in batches:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            out = model(x)
            n = y.shape[0]
            values = [loss_fn(out, y), *(fn(out, y) for fn in metrics.values())]
            row = torch.stack([torch.as_tensor(v, device=dev).reshape(()).real.to(dtype) for v in values]) * n
            totals = row if totals is None else totals + row
            count += n
    if totals is None or count == 0:
        raise ValueError("`batches` must yield at least one batch. Received: an empty iterable")
    return {k: v / count for k, v in zip(["loss", *metrics], totals.tolist(), strict=True)}


def correct_predictions(
    model: nn.Module, batches: Iterable[Batch], device: str | torch.device = "cpu"
) -> np.ndarray:
    """Which examples ``model`` classifies right, in the order ``batches`` yields them, in evaluation mode.

    Two models scored on the same examples in the same order (``shuffle=False``) can then be compared image
    by image: :meth:`dltricks.compare.PairedOutcomes.from_correct` turns the per-seed rows of two arms into
    the paired sampling error of their difference in accuracy. The mean of the result is ``evaluate``'s
    ``"accuracy"`` (up to the float32 rounding of its per-batch means).

    Args:
        model: a classifier returning logits ``(n, classes)``.
        batches: ``(x, y)`` batches with integer targets ``(n,)``.
        device: where to compute.

    Returns:
        Booleans, shape ``(n_examples,)``: whether the arg-max logit equals the target. Each submodule's own
        ``training`` flag is restored afterwards, as in :func:`evaluate`.

    Raises:
        TypeError: if ``model`` is not a module.
        ValueError: when ``batches`` yields no batch.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    dev = resolve_device(device)
    rows = []
    with saved_modes(model), torch.no_grad():
        model.eval()
        for x, y in batches:
            out = model(x.to(dev, non_blocking=True))
            rows.append((out.argmax(dim=1) == y.to(dev, non_blocking=True)).cpu())
    if not rows:
        raise ValueError("`batches` must yield at least one batch. Received: an empty iterable")
    return torch.cat(rows).numpy()


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
    sync_every: int = 1,
) -> History:
    """Train ``model`` for ``epochs`` passes over ``train`` and return the per-epoch ``History``.

    Each step computes ``loss_fn(model(x), y) + penalty(model)``, back-propagates and takes one optimizer
    step. After every epoch the history gets ``loss`` (the mean training objective over the epoch's batches,
    penalty included, measured while the weights were changing, as Keras reports it), the metrics of
    ``val`` as ``val_loss``/``val_<metric>`` when given, and with ``eval_train=True`` the loss and metrics
    of the final weights on the training batches as ``train_loss``/``train_<metric>`` (the honest numbers
    for a train/test gap: no penalty, no dropout, no drift within the epoch).

    In a ``torch.distributed`` process group (a script started by ``torchrun``, see
    :mod:`dltricks.distributed.fitting`) the same call trains data-parallel: through
    ``DistributedDataParallel``, each rank on its share of every global batch of ``train`` (a
    ``TensorBatches`` is sharded; a ``DataLoader`` needs a ``DistributedSampler``), with the loss and metrics
    reduced over the ranks so every rank records the same history; only rank 0 writes checkpoints and shows
    progress, and every rank resumes from the checkpoint rank 0 picks.

    Args:
        model: the network; moved to ``device`` (a ``DistributedDataParallel`` is accepted: its module is
            what checkpoints store).
        train: re-iterable batches ``(x, y)``, e.g. ``TensorBatches`` or a ``DataLoader``.
        optimizer: any ``torch.optim.Optimizer`` over ``model``'s parameters.
        epochs: number of passes over ``train`` (>= 0).
        loss_fn: data loss, default cross-entropy on logits.
        penalty: optional regularizer ``penalty(model) -> scalar`` added to the loss (e.g. an L2 term).
        val: optional validation batches.
        metrics: name -> ``metric(output, target)``; default ``{"accuracy": accuracy}``.
        eval_train: also evaluate the training set after each evaluated epoch.
        eval_every: evaluate ``val`` (and the training set) every this many epochs and after the last one
            (Keras' ``validation_freq``); the other epochs' records hold only ``loss``.
        callbacks: objects with ``on_train_begin``/``on_before_step``/``on_step_end``/``on_epoch_end``/
            ``on_train_end``; ``on_before_step`` runs between ``backward`` and ``optimizer.step``, once the
            gradients are known to be finite; ``on_train_exit`` (optional) runs last, even when training
            raises (the ``Checkpoint`` callback releases its directory there).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        progress: show a progress bar over epochs; ``None`` follows ``$DLTRICKS_PROGRESS`` (default on).
        resume_from: a checkpoint directory (or file) written by :class:`dltricks.checkpoint.Checkpoint`.
            When it holds a checkpoint that verifies, the model, optimizer, loader position, callbacks,
            random generators, counters and history are restored from the newest one and training goes on
            from there, mid-epoch included; an empty or missing directory starts afresh, so one command
            line both starts and restarts a run; a directory whose checkpoints all fail to load is refused
            (each file named with its fault). ``epochs`` stays the total, not the number still to run;
            fewer than the checkpoint already completed is refused. The optimizer's state is matched to the
            parameters by name and its hyperparameters are the checkpoint's (PyTorch's convention, see
            :func:`dltricks.checkpoint.restore`), with a warning where the caller's differ.
        nonfinite: what a step with a NaN or infinite loss, or a finite loss with a non-finite gradient (a
            square root at zero), does. ``"raise"``: stop with ``FloatingPointError`` naming the loss or the
            parameters whose gradient is not finite; ``"skip"``: drop that batch without an optimizer step
            (its gradients are discarded) and count it in the history's ``skipped``. Either way the check
            runs after ``backward`` and before the ``on_before_step`` callbacks (clipping) and the optimizer
            step, so the weights never take a non-finite step. Cost (see :mod:`dltricks.nonfinite`): one
            fused check kernel over the gradients (GradScaler's) and no extra host synchronization: the
            flag comes over with the loss value that the loop reads once per step anyway. Measured about
            0.09 ms a step, 3 to 8 % of a step of a 784-256-256-10 MLP on one CPU thread.
        max_skipped: with ``nonfinite="skip"``, raise anyway once more steps than this were skipped.
        sync_every: read the loss and the finite flag on the host every this many steps (and at the end of
            every epoch) instead of every step. A host read makes the CPU wait for the device to finish
            every queued kernel, so a GPU idles while Python prepares the next step; with ``k > 1`` the
            running loss and the non-finite check stay on the device, and the optimizer skips a
            non-finite step there, as ``torch.amp.GradScaler`` makes it, so no non-finite value reaches
            the weights. That needs an optimizer that can skip on the device: a fused ``torch.optim``
            optimizer (``SGD``, ``Adam``, ``AdamW``, ``Adagrad`` with ``fused=True``; fused SGD with
            momentum reads the flag of its first step on the host, see
            :func:`dltricks.nonfinite.first_step_pending`). What changes with
            ``k > 1``: ``"raise"`` raises at the next read, so the up to ``k - 1`` finite steps after the
            non-finite one have been taken; ``on_before_step`` and ``on_step_end`` callbacks also run for
            a step the device skips; the error names the step but not the parameters (``k = 1`` does);
            the epoch's mean loss is summed on the device, so its last bits may differ. Callbacks that
            read ``loss_total`` between steps call ``state.sync()`` first (a checkpoint does).

    Returns:
        The ``History`` of the run (of the whole run when resumed).

    Raises:
        TypeError: when ``model``, ``optimizer`` or ``resume_from`` has the wrong type, or a count is not an
            integer.
        ValueError: for ``epochs < 0``, ``eval_every < 1``, ``max_skipped < 0``, ``sync_every < 1``, another
            ``nonfinite``, or ``sync_every > 1`` with an optimizer that cannot skip a step on the device.
        FloatingPointError: when the training loss or a gradient becomes NaN or infinite (the epoch and step
            are named; with ``"skip"``, once more than ``max_skipped`` steps were skipped).
        dltricks.checkpoint.CheckpointError: when ``resume_from`` names a bad file or a directory of bad
            files only, or a checkpoint that does
            not match this model, optimizer (class, parameter groups, parameter names), loader or these
            callbacks, or that holds more epochs than ``epochs``; when another process holds the
            ``Checkpoint`` directory.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    epochs = check_int("epochs", epochs, minimum=0)
    eval_every = check_int("eval_every", eval_every, minimum=1)
    check_type("resume_from", resume_from, (str, os.PathLike, type(None)), "a directory path or None")
    nonfinite = check_choice("nonfinite", nonfinite, ("raise", "skip"))
    max_skipped = check_int("max_skipped", max_skipped, minimum=0)
    sync_every = check_int("sync_every", sync_every, minimum=1)
    if sync_every > 1 and not skips_on_device(optimizer):
        raise ValueError(
            "`sync_every` > 1 needs an optimizer that skips a non-finite step on the device (a fused "
            "torch.optim optimizer: SGD, Adam, AdamW or Adagrad with fused=True), or a non-finite step "
            f"would reach the weights. Received: sync_every={sync_every} with {type(optimizer).__name__}"
            f"(fused={optimizer.defaults.get('fused')})"
        )
    metrics = {"accuracy": accuracy} if metrics is None else metrics
    dev = resolve_device(device)
    if progress is None:
        progress = os.environ.get("DLTRICKS_PROGRESS", "1") not in ("0", "false", "False", "")
    model.to(dev)
    # Under torchrun: DDP, this rank's shard of `train`, one progress bar (dltricks.distributed.fitting).
    model, net, train = fitting.prepare(model, train, dev)
    progress = progress and ranks.is_main()
    history = History()
    state = TrainState(model, optimizer, history, train=train, callbacks=callbacks)
    try:
        for cb in callbacks:
            cb.on_train_begin(state)
        if resume_from is not None:
            # After on_train_begin, which resets callbacks (EarlyStopping) that the checkpoint then restores.
            resumed = fitting.resume(state, resume_from)  # every rank from the one rank 0 picks
            if resumed is not None and state.epoch > epochs:
                raise CheckpointError(
                    f"{resumed} holds {state.epoch} completed epochs, more than epochs={epochs}: this call "
                    f"would return the longer run. Pass epochs >= {state.epoch}, or use an empty directory"
                )
        _train(state, epochs, loss_fn, penalty, val, metrics, eval_train, eval_every, dev, progress,
               nonfinite, max_skipped, sync_every, net)  # fmt: skip
        for cb in callbacks:
            cb.on_train_end(state)
    finally:
        for cb in callbacks:
            if hasattr(cb, "on_train_exit"):  # optional hook, as on_before_step
                cb.on_train_exit(state)
    return history


def _train(
    state: TrainState,
    epochs: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    penalty: Callable[[nn.Module], torch.Tensor] | None,
    val: Iterable[Batch] | None,
    metrics: Mapping[str, Metric],
    eval_train: bool,
    eval_every: int,
    dev: torch.device,
    progress: bool,
    nonfinite: str,
    max_skipped: int,
    sync_every: int,
    net: nn.Module | None = None,
) -> None:
    """The epochs of :func:`fit`, from ``state.epoch`` to ``epochs``."""
    model, optimizer, train, callbacks = state.model, state.optimizer, state.train, state.callbacks
    assert train is not None
    params = optimizer_params(optimizer)
    measure = fitting.evaluate  # evaluate, split over the ranks under torchrun
    forward = model if net is None else net  # through DDP when there are several ranks
    # Optional hook: callbacks written before it existed (or not subclassing Callback) may lack it.
    before_step = [cb.on_before_step for cb in callbacks if hasattr(cb, "on_before_step")]
    bar = tqdm(total=epochs, initial=state.epoch, desc="epochs", unit="ep", disable=not progress, leave=False)
    deferred = sync_every > 1
    if deferred:
        # first_bad: (step, loss) of a non-finite step not yet handled
        sums, first_bad = DeviceSums(dev), list[tuple[int, float]]()
        state.read_device_sums = lambda: _read_window(state, sums, first_bad)
    for epoch in range(state.epoch, epochs):
        if state.stop:  # checked first: a run resumed from its stopping epoch's checkpoint stays stopped
            break
        start = time.perf_counter()
        model.train()
        # A loader resumed mid-epoch yields only the batches the checkpointed run had not used yet.
        fitting.set_epoch(train, epoch)  # a DistributedSampler's order of this epoch
        for x, y in train:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = loss_fn(forward(x), y)
            if penalty is not None:
                loss = loss + penalty(model)
            state.step, state.batch = state.step + 1, state.batch + 1
            optimizer.zero_grad(set_to_none=True)  # None, not zeros: cheaper, and unused params stay None
            loss.backward()
            if deferred:  # no host sync: the device skips a non-finite step; the host reads every k steps
                _deferred_step(state, ranks.mean_over_ranks(loss), y.shape[0], params, before_step, sums)
                if state.step % sync_every == 0:
                    state.sync()
                if first_bad:
                    _deferred_nonfinite(state, first_bad, nonfinite, max_skipped, sync_every)
                continue
            # The one host sync of a step: the loss and a device-side "loss and every gradient finite" flag
            # come over together (dltricks.nonfinite), so a NaN or inf, in the loss or only in a gradient,
            # never reaches the weights, and checking the gradients adds no sync.
            # Several ranks: the global batch's loss (one scalar all-reduce), so all log and decide alike.
            value, finite = loss_and_finite(ranks.mean_over_ranks(loss), gradients(params))
            if not finite:
                _nonfinite_step(state, value, nonfinite, max_skipped)
                continue
            for hook in before_step:  # gradients exist and the weights are unchanged: clipping goes here
                hook(state)
            optimizer.step()
            state.loss_total += value * y.shape[0]
            state.loss_count += y.shape[0]
            for cb in callbacks:
                cb.on_step_end(state)
        state.sync()  # with sync_every > 1, the epoch's last window
        if deferred and first_bad:
            _deferred_nonfinite(state, first_bad, nonfinite, max_skipped, sync_every)
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
            record |= {f"train_{k}": v for k, v in measure(model, ordered, loss_fn, metrics, dev).items()}
        if val is not None and evaluate_now:
            record |= {f"val_{k}": v for k, v in measure(model, val, loss_fn, metrics, dev).items()}
        record["seconds"] = ranks.slowest(time.perf_counter() - start)  # the same on every rank
        state.history.append(record)
        state.end_epoch()
        bar.update(1)
        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.endswith(("loss", "accuracy"))})
        for cb in callbacks:
            cb.on_epoch_end(state)
    bar.close()


def _nonfinite_step(state: TrainState, value: float, policy: str, max_skipped: int) -> None:
    """Drop the gradients of a non-finite step; count it under ``policy="skip"``, raise otherwise."""
    culprit = f"training loss is {value}"
    if math.isfinite(value):  # the loss is fine: name the parameters whose gradient is not (off the hot path)
        names = {id(p): n for n, p in state.model.named_parameters()}
        bad = [
            names.get(id(p), f"parameter {i}")
            for i, p in enumerate(optimizer_params(state.optimizer))
            if p.grad is not None and not torch.isfinite(p.grad).all()
        ]
        culprit = f"the gradient of {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} is not finite"
        culprit += f" (the loss is finite, {value:.6g})"
    state.optimizer.zero_grad(set_to_none=True)  # the non-finite gradients never outlive the step
    where = f"at epoch {state.epoch + 1}, step {state.step}"
    if policy == "skip":
        state.skipped, state.epoch_skipped = state.skipped + 1, state.epoch_skipped + 1
        if state.skipped <= max_skipped:
            return
        raise FloatingPointError(
            f"{culprit} {where}: {state.skipped} non-finite steps skipped, more than "
            f"max_skipped={max_skipped}; {REMEDIES}"
        )
    raise FloatingPointError(
        f"{culprit} {where}; the weights are those before this step. {REMEDIES.capitalize()}, "
        "or fit(nonfinite='skip') to skip such batches"
    )


def _deferred_step(
    state: TrainState,
    loss: torch.Tensor,
    n: int,
    params: list[torch.Tensor],
    before_step: Sequence[Callable[[TrainState], None]],
    sums: DeviceSums,
) -> None:
    """One step of ``fit(sync_every=k > 1)``: the optimizer skips it on the device when not finite."""
    finite = finite_flag(loss, gradients(params))
    for hook in before_step:
        hook(state)
    optimizer = state.optimizer
    if first_step_pending(optimizer):  # fused SGD's first step: a device skip leaves empty_like buffers
        if bool(finite):  # one host read, until the momentum buffers exist
            optimizer.step()
    else:
        # GradScaler's protocol for fused optimizers: the step kernel does nothing where found_inf is nonzero.
        optimizer.found_inf, optimizer.grad_scale = finite.logical_not().float(), None  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale  # type: ignore[attr-defined]
    sums.add(loss, finite, n)
    for cb in state.callbacks:
        cb.on_step_end(state)


def _read_window(state: TrainState, sums: DeviceSums, first_bad: list[tuple[int, float]]) -> None:
    """Move the device-side sums into ``state``'s counters; note the first non-finite step."""
    window = sums.read()
    state.loss_total += window.loss_sum
    state.loss_count += window.examples
    state.skipped += window.nonfinite
    state.epoch_skipped += window.nonfinite
    if window.first_nonfinite is not None and not first_bad:
        first_bad.append((state.step - window.steps + 1 + window.first_nonfinite, window.first_loss))


def _deferred_nonfinite(state: TrainState, first_bad: list[tuple[int, float]], policy: str, max_skipped: int,
                        sync_every: int) -> None:  # fmt: skip
    """Apply the non-finite policy once a host read of ``fit(sync_every=k)`` found a skipped step."""
    step, loss = first_bad.pop()
    culprit = (
        f"a gradient is not finite (the loss is finite, {loss:.6g})" if math.isfinite(loss)
        else f"training loss is {loss}"
    )  # fmt: skip
    if policy == "skip":
        if state.skipped <= max_skipped:
            return
        raise FloatingPointError(
            f"{state.skipped} non-finite steps skipped, more than max_skipped={max_skipped} (the last found: "
            f"{culprit} at step {step}); {REMEDIES}"
        )
    raise FloatingPointError(
        f"{culprit} at epoch {state.epoch + 1}, step {step}, found at the host read of step {state.step} "
        f"(fit(sync_every={sync_every})). The device skipped that step, so no non-finite value reached the "
        f"weights, but the {state.step - step} steps after it were taken. {REMEDIES.capitalize()}; "
        "fit(sync_every=1) stops at the step itself and names the parameters; fit(nonfinite='skip') skips "
        "such batches"
    )
