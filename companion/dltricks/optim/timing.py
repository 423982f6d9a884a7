"""Time ``step()`` of two optimizers on the same many-tensor model, so that the book's ratios are measured.

:func:`step_time_ratio` builds ``n_tensors`` parameters shaped like the weights and biases of a stack of
``nn.Linear(width, width)`` layers, gives them fixed random gradients, and times ``optimizer.step()`` for
both classes with ``torch.utils.benchmark.Timer`` (one thread, so that the number does not depend on what
else the machine runs). The two are timed in alternation and the minimum over ``repeats`` is kept: the
minimum is the least noisy estimate of what the code costs, as other load can only add time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.benchmark import Timer

from dltricks._checks import check_float, check_int, fail


def _check_optimizer_class(name: str, cls: Any) -> type[torch.optim.Optimizer]:
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        fail(name, "a torch.optim.Optimizer subclass (e.g. dltricks.optim.Adam)", cls, TypeError)
    return cls


def _make(cls: type[torch.optim.Optimizer], n_tensors: int, width: int, seed: int, hyper: dict[str, Any]):
    g = torch.Generator().manual_seed(seed)
    # Alternate (width, width) weights and (width,) biases: n_tensors / 2 Linear layers.
    shapes = [(width, width) if i % 2 == 0 else (width,) for i in range(n_tensors)]
    params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    for p in params:
        p.grad = 1e-2 * torch.randn(p.shape, generator=g)
    opt = cls(params, foreach=True, **hyper)  # type: ignore[call-arg]  # every optimizer timed takes it
    opt.step()  # creates the state: the first step's allocations are not what is being compared
    opt.step()
    return opt


def step_time_ratio(
    ours_cls: type[torch.optim.Optimizer],
    theirs_cls: type[torch.optim.Optimizer],
    *,
    n_tensors: int = 100,
    width: int = 128,
    repeats: int = 5,
    min_time: float = 0.05,
    seed: int = 0,
    **hyper: Any,
) -> dict[str, float]:
    """Seconds per ``step()`` of ``ours_cls`` and ``theirs_cls`` (both ``foreach=True``), and their ratio.

    Args:
        ours_cls, theirs_cls: the optimizer classes, e.g. ``dltricks.optim.Adam`` and ``torch.optim.Adam``.
        n_tensors: the number of parameter tensors (half ``width x width`` weights, half ``width`` biases).
        width: the layer width.
        repeats: how many times each optimizer is timed, alternating; the minimum is reported.
        min_time: the approximate duration in seconds of one timing (the number of steps per timing is
            chosen from a first step to reach it). The total run time is about ``2 * repeats * min_time``.
        seed: the seed of the parameters and gradients.
        **hyper: hyperparameters passed to both constructors (e.g. ``lr=0.01, momentum=0.9``).

    Returns:
        ``{"ours_s": ..., "torch_s": ..., "ratio": ours_s / torch_s}``.

    Raises:
        TypeError: for a ``min_time``, ``n_tensors``, ``repeats``, ``seed`` or ``width`` of the wrong type.
        ValueError: for a ``min_time``, ``n_tensors``, ``repeats`` or ``width`` out of its allowed range.
    """
    _check_optimizer_class("ours_cls", ours_cls)
    _check_optimizer_class("theirs_cls", theirs_cls)
    n_tensors = check_int("n_tensors", n_tensors, minimum=1)
    width = check_int("width", width, minimum=1)
    repeats = check_int("repeats", repeats, minimum=1)
    min_time = check_float("min_time", min_time, minimum=0.0, min_inclusive=False)
    seed = check_int("seed", seed)
    classes = {"ours": ours_cls, "torch": theirs_cls}
    opts = {name: _make(cls, n_tensors, width, seed, hyper) for name, cls in classes.items()}
    timers = {name: Timer("opt.step()", globals={"opt": opt}) for name, opt in opts.items()}
    # Calibrate on one step timed like the others (one thread), then size each timing to about min_time.
    number = max(1, int(min_time / max(timers["torch"].timeit(1).mean, 1e-9)))
    best = {name: float("inf") for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(number).mean)
    return {"ours_s": best["ours"], "torch_s": best["torch"], "ratio": best["ours"] / best["torch"]}
