r"""The learning-rate range test: raise the rate geometrically over one pass and watch the loss.

Smith (2017) proposed training for a few hundred steps while the learning rate grows from a tiny to a huge
value, then reading good rates off the curve of loss against rate (on a log axis): the loss first barely
moves, then falls, then becomes erratic and explodes. Géron (*Hands-On Machine Learning*, ch. 11)
describes the same test as "increase the learning rate exponentially over one epoch, plot the loss, and
pick a rate about 10 times below the point where the loss starts climbing back up"; fastai's
``lr_find`` is the widely used implementation (Howard & Gugger 2020).

Step :math:`i` of :math:`n` uses :math:`\eta_i = \eta_{\text{start}}\,(\eta_{\text{end}} /
\eta_{\text{start}})^{i/(n-1)}`. Single-batch losses are noisy, so the curve that is read is an exponential
moving average with bias correction (as in Adam): :math:`m_i = \beta m_{i-1} + (1-\beta)\ell_i`, smoothed
:math:`\hat\ell_i = m_i / (1 - \beta^{i+1})`.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.std import tqdm

from dltricks._checks import check_float, check_int, check_type, fail
from dltricks._modes import restore_modes, save_modes
from dltricks.callbacks import Batch
from dltricks.device import resolve_device
from dltricks.nonfinite import gradients, loss_and_finite, optimizer_params
from dltricks.repro import rng_state, set_rng_state

__all__ = ["LRRangeResult", "lr_range_test"]


@dataclass
class LRRangeResult:
    """The curve of a :func:`lr_range_test` and the rates read off it.

    Attributes:
        lrs: the rate of each step taken.
        losses: the raw loss of each step's batch, measured before that step's update (NaN or inf where
            the loss blew up).
        smoothed: the bias-corrected moving average of ``losses``.
        stopped_early: whether the test ended before ``num_steps`` because the loss diverged.
        suggestion: ``min_loss_lr / 10``, the rate to train with (see :func:`lr_range_test`).
        min_loss_lr: the rate at the minimum of ``smoothed``.
        steepest: the rate at which ``smoothed`` falls fastest per unit of log-rate, on the descending
            part of the curve (up to its minimum).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stopped_early: bool
    suggestion: float
    min_loss_lr: float
    steepest: float

    def plot(self, ax: Any = None) -> Any:
        """Plot the raw and smoothed loss against the rate (log x), marking the suggestion; return ``ax``."""
        import matplotlib.pyplot as plt  # imported here: plotting is optional for the test itself

        if ax is None:
            _, ax = plt.subplots()
        ax.plot(self.lrs, self.losses, alpha=0.3, label="loss")
        ax.plot(self.lrs, self.smoothed, label="smoothed loss")
        ax.axvline(self.min_loss_lr, color="0.5", linestyle=":", label=f"minimum at {self.min_loss_lr:.2g}")
        ax.axvline(self.suggestion, color="k", linestyle="--", label=f"suggestion {self.suggestion:.2g}")
        ax.set_xscale("log")
        finite = [v for v in self.smoothed if math.isfinite(v)]
        if finite:  # the exploding tail would squash the informative part of the curve
            low, first = min(finite), finite[0]
            ax.set_ylim(
                low - 0.1 * abs(first - low) - 1e-12, max(first, low) + 0.5 * abs(first - low) + 1e-12
            )
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.legend()
        return ax


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    *,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    num_steps: int | None = None,
    smooth: float = 0.98,
    diverge_factor: float = 4.0,
    device: str | torch.device = "cpu",
    restore: bool = True,
    progress: bool | None = None,
) -> LRRangeResult:
    r"""Train with a geometrically growing rate and record the loss of every step (Smith 2017).

    Every step sets the rate of *every* parameter group to :math:`\eta_i` (see the module docstring),
    computes the loss of the next batch, and takes one optimizer step. The test stops early when the
    smoothed loss exceeds ``diverge_factor`` times its minimum so far, or when the loss is NaN or infinite
    (that step is recorded but not applied).

    How the result is read:

    * ``suggestion`` is the rate at the minimum of the smoothed loss divided by 10, the rule of Géron and
      of fastai (``lr_min``): at the minimum the loss has stopped falling because the rate is at the edge
      of stability (and the moving average puts the minimum a few steps late), so an order of magnitude
      below is safely on the descending part of the curve. Smoothing and the exclusion of non-finite
      values make it robust to single noisy batches; if the minimum is the very first step (the loss
      never went down), the suggestion is below ``start_lr`` and a ``RuntimeWarning`` says to lower it.
    * ``steepest`` is where the smoothed loss falls fastest against :math:`\log\eta`, another common
      reading (fastai's ``steep``), taken between the end of the moving average's warm-up (about
      :math:`1/(1-\beta)` steps) and the minimum; it is more variable than the suggestion.

    With the default ``smooth=0.98`` the average spans about 50 steps: give the test at least a few hundred
    steps (``num_steps``), or lower ``smooth`` for a short one.

    Args:
        model: the network; moved to ``device`` and put in training mode during the test.
        optimizer: any ``torch.optim.Optimizer`` over ``model``'s parameters (SGD, Adam, ...).
        batches: re-iterable ``(x, y)`` batches, e.g. ``TensorBatches``; iterated again as often as needed.
        loss_fn: the loss, default cross-entropy on logits.
        start_lr: the first rate (> 0).
        end_lr: the last rate (> ``start_lr``).
        num_steps: the number of steps (>= 2); default ``len(batches)``, one pass.
        smooth: :math:`\beta \in [0, 1)`, the moving average's weight of the past (0: no smoothing).
        diverge_factor: stop once the smoothed loss exceeds this multiple of its minimum (> 1).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a ``torch.device``.
        restore: put back, afterwards, the model's and optimizer's states (deep copies taken before), the
            model's training mode, the loader's position (when it has ``state_dict``) and the random
            generators, so that the same model can then be trained as if the test had never run.
        progress: show a progress bar; ``None`` follows ``$DLTRICKS_PROGRESS`` as ``fit`` does.

    Returns:
        An :class:`LRRangeResult`; ``result.plot()`` draws the curve.

    Raises:
        ValueError: for a bad argument, or batches that yield nothing.

    References:
        Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017 (arXiv:1506.01186),
        sec. 3.3 (the "LR range test"); Smith, "A disciplined approach to neural network hyper-parameters:
        Part 1", 2018 (arXiv:1803.09820); Howard & Gugger, "Fastai: A Layered API for Deep Learning",
        Information 11(2), 2020.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    start = check_float("start_lr", start_lr, minimum=0.0, min_inclusive=False)
    end = check_float("end_lr", end_lr, minimum=0.0, min_inclusive=False)
    if end <= start:
        fail("end_lr", f"greater than start_lr={start!r}", end_lr)
    beta = check_float("smooth", smooth, minimum=0.0, maximum=1.0, max_inclusive=False)
    factor = check_float("diverge_factor", diverge_factor, minimum=1.0, min_inclusive=False)
    if num_steps is None:
        if not hasattr(batches, "__len__"):
            fail("num_steps", "given when `batches` has no len()", num_steps, TypeError)
        n = len(batches)  # type: ignore[arg-type]
        if n == 0:
            fail("batches", "a non-empty iterable of (x, y) batches", batches)
        if n < 2:
            fail("num_steps", "given (>= 2) when `batches` holds fewer than 2 batches", num_steps)
    else:
        n = check_int("num_steps", num_steps, minimum=2)
    dev = resolve_device(device)
    if progress is None:
        progress = os.environ.get("DLTRICKS_PROGRESS", "1") not in ("0", "false", "False", "")

    model.to(dev)
    modes = save_modes(model)  # restored in any case: the caller's mode, module by module
    saved: dict[str, Any] | None = None
    if restore:
        # Deep copies: the optimizer's state_dict() shares its tensors with the live state.
        stateful = _stateful(batches)
        loader = copy.deepcopy(batches.state_dict()) if stateful else None  # type: ignore[attr-defined]
        saved = {
            "model": copy.deepcopy(model.state_dict()),
            "optimizer": copy.deepcopy(optimizer.state_dict()),
            "loader": loader,
            "rng": rng_state(),
        }
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    stopped_early = False
    bar = tqdm(total=n, desc="lr range test", unit="step", disable=not progress, leave=False)
    try:
        model.train()
        average, best = 0.0, math.inf
        for i, (x, y) in enumerate(_cycle(batches, n)):
            lr = start * (end / start) ** (i / (n - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = loss_fn(model(x), y)
            value = loss.item()
            lrs.append(lr)
            losses.append(value)
            if not math.isfinite(value):  # before backward: the weights never see it
                smoothed.append(value)
                stopped_early = i < n - 1
                break
            average = beta * average + (1 - beta) * value
            current = average / (1 - beta ** (i + 1))
            smoothed.append(current)
            best = min(best, current)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            # A finite loss can have a non-finite gradient (sqrt at 0): stop before it reaches the weights.
            # The check stays on the device (dltricks.nonfinite); reading it is this step's second sync.
            if not loss_and_finite(loss, gradients(optimizer_params(optimizer)))[1]:
                stopped_early = i < n - 1
                break
            optimizer.step()
            bar.update(1)
            if current > factor * best or not math.isfinite(current):
                stopped_early = i < n - 1
                break
    finally:
        bar.close()
        restore_modes(modes)
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if saved["loader"] is not None:
                batches.load_state_dict(saved["loader"])  # type: ignore[attr-defined]
            set_rng_state(saved["rng"])
    return _result(lrs, losses, smoothed, stopped_early, beta)


def _cycle(batches: Iterable[Batch], n: int) -> Iterable[Batch]:
    """``n`` batches, iterating ``batches`` again as often as needed."""
    served = 0
    while served < n:
        before = served
        for batch in batches:
            yield batch
            served += 1
            if served == n:
                return
        if served == before:
            fail("batches", "a non-empty iterable of (x, y) batches", batches)


def _result(
    lrs: list[float], losses: list[float], smoothed: list[float], stopped_early: bool, smooth: float
) -> LRRangeResult:
    finite = [i for i, v in enumerate(smoothed) if math.isfinite(v)]
    if not finite:  # the very first loss was NaN or inf: nothing to read
        warnings.warn(
            "the loss was not finite from the first step: check the model and data, or lower start_lr",
            RuntimeWarning,
            stacklevel=3,
        )
        return LRRangeResult(lrs, losses, smoothed, stopped_early, math.nan, math.nan, math.nan)
    k = min(finite, key=lambda i: smoothed[i])
    if k == 0:
        warnings.warn(
            f"the smoothed loss was lowest at the first step (lr={lrs[0]:.3g}): it never decreased, so the "
            "suggestion lies below the tested range; lower start_lr",
            RuntimeWarning,
            stacklevel=3,
        )
    steepest = lrs[k]
    if k >= 1:
        # On the descending part only, against log(lr) as the plot shows it, and after the moving average's
        # warm-up (about 1/(1-smooth) steps, at most half the descent): the bias-corrected average of the
        # first few losses is as noisy as they are, and its first drops are noise, not progress.
        skip = min(math.ceil(1 / (1 - smooth)), k // 2)
        slopes = np.gradient(np.asarray(smoothed[skip : k + 1]), np.log(np.asarray(lrs[skip : k + 1])))
        steepest = lrs[skip + int(np.argmin(slopes))]
    return LRRangeResult(lrs, losses, smoothed, stopped_early, lrs[k] / 10, lrs[k], steepest)


def _stateful(loader: Any) -> bool:
    return all(callable(getattr(loader, method, None)) for method in ("state_dict", "load_state_dict"))
