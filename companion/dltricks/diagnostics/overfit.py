"""Overfit one batch: the first test of a new model, loss and training pipeline.

A network with enough capacity must be able to memorise a single small batch, random labels included
(Zhang et al., "Understanding deep learning requires rethinking generalization", ICLR 2017, showed that
standard networks fit even a whole data set of random labels). Training on one batch and nothing else is
therefore a cheap end-to-end check: if the loss does not go to (near) zero within a few hundred steps,
something between the data and the optimizer is broken (labels misaligned with inputs, a loss applied to
the wrong outputs, e.g. softmax twice, an output layer of the wrong width, a ``detach`` or frozen layer
cutting the gradient, a learning rate far off) and there is no point in a full training run yet.
Karpathy ("A Recipe for Training Neural Networks", 2019) lists it as "overfit one batch", after
"verify loss @ init" (:mod:`dltricks.imbalance` sets the output bias for the latter).

:func:`overfit_one_batch` trains in train mode (as a real run does), but judges in eval mode: dropout
makes the training-mode loss noisy and batch normalization uses batch statistics there, while the model
that will be deployed is the eval-mode one. So the loop stops once the training loss is below the target
*and* the eval-mode loss is too, and the reported final loss and accuracy are the eval-mode ones.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from dltricks._checks import check_float, check_int, check_type, fail
from dltricks._modes import restore_modes, save_modes
from dltricks.device import resolve_device
from dltricks.nonfinite import gradients, loss_and_finite, optimizer_params

ADVICE = "check the labels, the loss, the output layer and the learning rate"


@dataclass
class OverfitReport:
    """The outcome of :func:`overfit_one_batch`.

    Attributes:
        passed: the eval-mode loss on the batch reached ``target_loss``.
        steps: optimizer steps taken.
        final_loss: eval-mode loss on the batch after training (``nan`` if training diverged).
        final_accuracy: eval-mode accuracy on the batch for integer class targets, else ``None``.
        losses: the training-mode loss before each step, and after the last one (``steps + 1`` values,
            fewer if it became non-finite).
        initial_loss: eval-mode loss before training.
        reason: for a failure with a likely cause (a non-finite loss, a loss without gradient, a loss that
            fell more than 10x but ran out of steps), that cause and what to do; ``None`` otherwise.
    """

    passed: bool
    steps: int
    final_loss: float
    final_accuracy: float | None
    losses: list[float] = field(repr=False)
    initial_loss: float
    reason: str | None = None

    def __str__(self) -> str:
        change = f"loss {self.initial_loss:.3g} → {self.final_loss:.3g}"
        acc = "" if self.final_accuracy is None else f" (batch accuracy {self.final_accuracy:.0%})"
        if self.passed:
            return f"passed: {change} in {self.steps} steps{acc}"
        why = self.reason or f"the model cannot fit one batch — {ADVICE}"
        return f"FAILED: {change} after {self.steps} steps{acc}; {why}"


def overfit_one_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    optimizer: torch.optim.Optimizer | None = None,
    max_steps: int = 500,
    target_loss: float = 1e-2,
    device: str | torch.device = "cpu",
    restore: bool = True,
) -> OverfitReport:
    """Train ``model`` on the single batch ``(x, y)`` until its loss is below ``target_loss``.

    Each step is a full-batch gradient step in train mode. Whenever the training-mode loss is at or below
    ``target_loss``, the eval-mode loss is measured too, and the run stops once both are. A model that
    passes has shown that gradients reach its parameters and that it can represent the targets; one that
    fails has a bug worth finding before any long run (see the module docstring).

    Args:
        model: the network; moved to ``device``.
        x: one batch of inputs (a few dozen examples are enough).
        y: its targets; random labels are fine, and make the test stricter.
        loss_fn: ``loss_fn(model(x), y) -> scalar``; default cross-entropy on logits.
        optimizer: default ``Adam(model.parameters(), lr=1e-3)``, created after the move to ``device``.
        max_steps: the most optimizer steps (>= 1).
        target_loss: the loss that counts as fitted (> 0).
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` or a ``torch.device``.
        restore: afterwards put back the model's parameters and buffers (a deep copy of its ``state_dict``
            taken before), and the optimizer's state when one was passed, so the check leaves no trace.
            The training/eval mode is restored either way.

    Returns:
        An :class:`OverfitReport`; ``print`` it for a one-line verdict.

    Raises:
        TypeError: for a ``loss_fn``, ``max_steps``, ``model``, ``optimizer``, ``restore``, ``target_loss``,
            ``x`` or ``y`` of the wrong type.
        ValueError: for a ``max_steps``, ``target_loss`` or ``y.shape`` out of its allowed range.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    check_type("y", y, torch.Tensor, "a torch.Tensor")
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        fail("y.shape", f"a non-empty batch with one target per example of x (x.shape={tuple(x.shape)})",
             tuple(y.shape))  # fmt: skip
    if not callable(loss_fn):
        fail("loss_fn", "a callable loss_fn(output, target)", loss_fn, TypeError)
    check_type("optimizer", optimizer, (torch.optim.Optimizer, type(None)), "a torch.optim.Optimizer or None")
    max_steps = check_int("max_steps", max_steps, minimum=1)
    target = check_float("target_loss", target_loss, minimum=0.0, min_inclusive=False)
    check_type("restore", restore, bool, "a bool")
    dev = resolve_device(device)

    modes = save_modes(model)  # each submodule's own mode comes back, not one flag for all
    model.to(dev)
    x, y = x.to(dev), y.to(dev)
    saved_model = copy.deepcopy(model.state_dict()) if restore else None
    saved_opt = copy.deepcopy(optimizer.state_dict()) if restore and optimizer is not None else None
    opt = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=1e-3)

    def eval_loss() -> tuple[float, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            out = model(x)
            return float(loss_fn(out, y)), out

    try:
        initial_loss, _ = eval_loss()
        losses: list[float] = []
        steps, reason = 0, None
        while True:
            model.train()
            loss = loss_fn(model(x), y)
            value = loss.item()
            if not math.isfinite(value):
                reason = (
                    f"the loss became {value} at step {steps} — lower the learning rate, check the inputs"
                )
                break
            losses.append(value)
            if value <= target and eval_loss()[0] <= target:
                break
            if steps == max_steps:
                break
            if not loss.requires_grad:
                reason = "the loss has no gradient — look for detach(), torch.no_grad() or frozen layers"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if not loss_and_finite(loss, gradients(optimizer_params(opt)))[1]:  # finite loss, bad gradient
                reason = (
                    f"a gradient became NaN or inf at step {steps} although the loss is finite — look for "
                    "sqrt, log or division at 0 in the model or loss"
                )
                break
            opt.step()
            steps += 1
        final_loss, out = eval_loss()
        accuracy = None
        if not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool) and out.ndim == y.ndim + 1:
            accuracy = float((out.argmax(dim=1) == y).double().mean())
        passed = reason is None and final_loss <= target
        if not passed and reason is None and final_loss <= 0.1 * initial_loss:
            # Down more than 10x yet short of the target: the budget, not the model, is the likely limit.
            reason = (
                "the loss fell 10x but not to the target — allow more steps or a larger learning rate first"
            )
        return OverfitReport(passed, steps, final_loss, accuracy, losses, initial_loss, reason)
    finally:
        if saved_model is not None:
            model.load_state_dict(saved_model)
        if saved_opt is not None:
            assert optimizer is not None
            optimizer.load_state_dict(saved_opt)
        restore_modes(modes)
