r"""Learning-rate schedules as pure functions ``f(step, **hyperparameters) -> lr``, easy to plot and test.

Each returns the *absolute* rate of the update that follows ``step`` earlier updates: ``f(k)`` equals
Keras' ``schedule(k)`` and torch's ``get_last_lr()`` after ``k`` scheduler steps (see
:mod:`dltricks.schedules` for the convention and the references).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dltricks._checks import check_choice, check_float, check_int, fail

__all__ = [
    "cosine_with_warmup",
    "exponential_decay",
    "multi_step",
    "one_cycle",
    "one_cycle_momentum",
    "piecewise_constant",
    "power_decay",
    "step_decay",
]


def _lr(name: str, value: Any) -> float:
    """A learning rate: a finite real > 0."""
    return check_float(name, value, minimum=0.0, min_inclusive=False)


def _step(step: Any) -> int:
    return check_int("step", step, minimum=0)


def step_decay(step: int, *, lr0: float, drop: float, every: int) -> float:
    r"""Step decay: the rate times ``drop`` every ``every`` steps, :math:`\eta_0\, d^{\lfloor t/k \rfloor}`.

    The classic "step" schedule (e.g. drop 0.1 every 30 epochs in He et al. 2016). It equals
    ``torch.optim.lr_scheduler.StepLR(opt, step_size=every, gamma=drop)`` on an optimizer with ``lr=lr0``,
    and ``keras.optimizers.schedules.ExponentialDecay(lr0, every, drop, staircase=True)``.

    Args:
        step: updates already taken (or epochs completed, when applied per epoch), >= 0.
        lr0: the initial rate :math:`\eta_0` (> 0).
        drop: the factor :math:`d \in (0, 1]` applied at each drop.
        every: the number of steps :math:`k \ge 1` between drops.

    Raises:
        TypeError: for a ``drop`` or ``every`` of the wrong type.
        ValueError: for a ``drop`` or ``every`` out of its allowed range.
    """
    t = _step(step)
    lr0 = _lr("lr0", lr0)
    drop = check_float("drop", drop, minimum=0.0, maximum=1.0, min_inclusive=False)
    every = check_int("every", every, minimum=1)
    return lr0 * drop ** (t // every)


def power_decay(
    step: int,
    *,
    lr0: float,
    decay_steps: float,
    decay_rate: float = 1.0,
    power: float = 1.0,
    staircase: bool = False,
) -> float:
    r"""Power scheduling: :math:`\eta(t) = \eta_0 / (1 + r\,p)^{c}` with :math:`p = t/s`.

    Géron's power scheduling :math:`\eta_0 / (1 + t/s)^c` is ``decay_rate=1``; with ``power=1`` this is
    ``keras.optimizers.schedules.InverseTimeDecay(lr0, decay_steps, decay_rate, staircase)``, the "1/t"
    decay of stochastic approximation (Robbins & Monro 1951). The rate falls fast at first, then ever more
    slowly. ``staircase=True`` uses :math:`p = \lfloor t/s \rfloor`. Torch has no built-in equivalent
    (``LambdaLR`` with this function divided by ``lr0`` gives it).

    Args:
        step: updates already taken, >= 0.
        lr0: the initial rate :math:`\eta_0` (> 0).
        decay_steps: the time scale :math:`s` (> 0).
        decay_rate: :math:`r \ge 0` (0: constant rate).
        power: the exponent :math:`c \ge 0` (Géron uses 1).
        staircase: decay in discrete jumps every ``decay_steps`` steps.

    Raises:
        TypeError: for a ``decay_rate``, ``decay_steps`` or ``power`` of the wrong type.
        ValueError: for a ``decay_rate``, ``decay_steps`` or ``power`` out of its allowed range.
    """
    t = _step(step)
    lr0 = _lr("lr0", lr0)
    s = check_float("decay_steps", decay_steps, minimum=0.0, min_inclusive=False)
    r = check_float("decay_rate", decay_rate, minimum=0.0)
    c = check_float("power", power, minimum=0.0)
    p = math.floor(t / s) if staircase else t / s
    return lr0 / (1.0 + r * p) ** c


def exponential_decay(
    step: int, *, lr0: float, decay_steps: float, decay_rate: float, staircase: bool = False
) -> float:
    r"""Exponential scheduling: :math:`\eta(t) = \eta_0\, r^{t/s}`, a factor ``r`` every ``s`` steps.

    Equals ``keras.optimizers.schedules.ExponentialDecay(lr0, decay_steps, decay_rate, staircase)`` and
    ``torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay_rate ** (1 / decay_steps))`` (which multiplies
    by :math:`\gamma` at every step); ``staircase=True`` uses :math:`\lfloor t/s \rfloor`, i.e.
    :func:`step_decay`. Géron writes it :math:`\eta_0\, 0.1^{t/s}`.

    Args:
        step: updates already taken, >= 0.
        lr0: the initial rate :math:`\eta_0` (> 0).
        decay_steps: :math:`s` (> 0).
        decay_rate: :math:`r > 0` (below 1 to decay).
        staircase: decay in discrete jumps every ``decay_steps`` steps.

    Raises:
        TypeError: for a ``decay_rate`` or ``decay_steps`` of the wrong type.
        ValueError: for a ``decay_rate`` or ``decay_steps`` out of its allowed range.
    """
    t = _step(step)
    lr0 = _lr("lr0", lr0)
    s = check_float("decay_steps", decay_steps, minimum=0.0, min_inclusive=False)
    r = check_float("decay_rate", decay_rate, minimum=0.0, min_inclusive=False)
    p = math.floor(t / s) if staircase else t / s
    return lr0 * r**p


def piecewise_constant(step: int, *, boundaries: Sequence[int], values: Sequence[float]) -> float:
    r"""Piecewise constant scheduling: ``values[i]`` for ``boundaries[i-1] < step <= boundaries[i]``.

    That is, ``values[0]`` up to and including step ``boundaries[0]``, ``values[-1]`` after
    ``boundaries[-1]``, exactly as ``keras.optimizers.schedules.PiecewiseConstantDecay(boundaries,
    values)``: a new value takes effect at step ``boundary + 1``. ``torch.optim.lr_scheduler.MultiStepLR(opt,
    milestones, gamma)`` switches *at* its milestone instead, so for distinct milestones ``>= 1`` it equals
    this function with ``boundaries = [m - 1 for m in sorted(milestones)]`` and ``values = [lr0 * gamma**i
    for i in range(len(milestones) + 1)]``. A milestone 0 (a boundary -1) and repeated milestones (one drop
    of :math:`\gamma^k`) have no such boundaries: :func:`multi_step` takes MultiStepLR's milestones as they
    are.

    Args:
        step: updates already taken, >= 0.
        boundaries: strictly increasing integer steps (may be empty: a constant rate).
        values: one more rate than ``boundaries`` (each > 0).

    Raises:
        TypeError: for a ``boundaries`` or ``values`` of the wrong type.
        ValueError: for a ``boundaries`` or ``values`` out of its allowed range.
    """
    t = _step(step)
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence):
        fail("boundaries", "a sequence of increasing integers", boundaries, TypeError)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        fail("values", "a sequence of learning rates", values, TypeError)
    bounds = [check_int(f"boundaries[{i}]", b, minimum=0) for i, b in enumerate(boundaries)]
    if any(b >= c for b, c in zip(bounds, bounds[1:])):
        fail("boundaries", "strictly increasing (for MultiStepLR's milestones, repeats included: multi_step)",
             list(boundaries))  # fmt: skip
    if len(values) != len(bounds) + 1:
        fail("values", f"a sequence of len(boundaries) + 1 = {len(bounds) + 1} learning rates", list(values))
    rates = [_lr(f"values[{i}]", v) for i, v in enumerate(values)]
    # The first boundary not below the step: values[i] for boundaries[i-1] < t <= boundaries[i].
    i = next((i for i, b in enumerate(bounds) if t <= b), len(bounds))
    return rates[i]


def multi_step(step: int, *, lr0: float, milestones: Sequence[int], gamma: float = 0.1) -> float:
    r"""Multi-step decay: :math:`\eta_0\,\gamma^{n(t)}`, :math:`n(t)` the milestones :math:`m \le t`.

    Exactly ``torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma)`` on an optimizer with
    ``lr=lr0``, including what it accepts beyond a list of distinct increasing steps: milestones in any
    order, a milestone repeated :math:`k` times (one drop by :math:`\gamma^k`, as torch counts them) and a
    milestone at 0 (the first update already runs at :math:`\eta_0\gamma`). Without repeats and zeros it
    is :func:`piecewise_constant` with ``boundaries = [m - 1 for m in sorted(milestones)]``.

    Args:
        step: updates already taken (or epochs completed, when applied per epoch), >= 0.
        lr0: the initial rate :math:`\eta_0` (> 0).
        milestones: integer steps >= 0 (may be empty: a constant rate). Torch also takes a negative one and
            never reaches it; here it is refused.
        gamma: the factor :math:`\gamma` of each drop (> 0; torch's default 0.1).

    Raises:
        TypeError: for ``milestones`` or ``gamma`` of the wrong type.
        ValueError: for a milestone < 0, or a ``gamma`` or ``lr0`` out of its allowed range.
    """
    t = _step(step)
    lr0 = _lr("lr0", lr0)
    if isinstance(milestones, (str, bytes)) or not isinstance(milestones, Sequence):
        fail("milestones", "a sequence of integer steps", milestones, TypeError)
    marks = [check_int(f"milestones[{i}]", m, minimum=0) for i, m in enumerate(milestones)]
    gamma = check_float("gamma", gamma, minimum=0.0, min_inclusive=False)
    return lr0 * gamma ** sum(1 for m in marks if m <= t)


def _one_cycle_phases(total_steps: int, pct_start: float, three_phase: bool) -> list[tuple[float, str, str]]:
    """OneCycleLR's phases as (end_step, start, end) with the same float arithmetic as torch."""
    up = float(pct_start * total_steps) - 1
    if three_phase:
        return [
            (up, "initial", "max"),
            (float(2 * pct_start * total_steps) - 2, "max", "initial"),
            (total_steps - 1, "initial", "min"),
        ]
    return [(up, "initial", "max"), (total_steps - 1, "max", "min")]


def _one_cycle_position(
    step: Any, total_steps: Any, pct_start: Any, anneal: Any, three_phase: bool
) -> tuple[int, int, str, list[tuple[float, str, str]]]:
    t = _step(step)
    n = check_int("total_steps", total_steps, minimum=1)
    # three_phase: the second phase must end before the last step, else the third runs backwards.
    top = 0.5 if three_phase else 1.0
    check_float(
        "pct_start", pct_start, minimum=0.0, maximum=top, min_inclusive=False, max_inclusive=three_phase
    )
    check_choice("anneal", anneal, ("cos", "linear"))
    return t, n, anneal, _one_cycle_phases(n, float(pct_start), bool(three_phase))


def _one_cycle_interp(
    t: int, n: int, anneal: str, phases: list[tuple[float, str, str]], points: Mapping[str, float]
) -> float:
    if t >= n:  # torch extrapolates at step n (a rate no update uses) and raises after: hold the end
        return points[phases[-1][2]]
    start_step = 0.0
    for i, (end_step, start, end) in enumerate(phases):
        if t <= end_step or i == len(phases) - 1:
            a, b = points[start], points[end]
            if (
                end_step == start_step
            ):  # a phase of zero length (pct_start * total_steps == 1): torch divides by 0
                return b
            pct = (t - start_step) / (end_step - start_step)
            if anneal == "cos":
                return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
            return (b - a) * pct + a
        start_step = end_step
    raise AssertionError("unreachable: the last phase always matches")


def one_cycle(
    step: int,
    *,
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    anneal: str = "cos",
    three_phase: bool = False,
) -> float:
    r"""The 1cycle policy (Smith 2018): up from ``max_lr/div_factor`` to ``max_lr``, then far below the start.

    Reproduces ``torch.optim.lr_scheduler.OneCycleLR(opt, max_lr, total_steps, pct_start, anneal_strategy,
    div_factor=, final_div_factor=, three_phase=)`` for steps ``0 .. total_steps - 1``, float for float.
    With :math:`\eta_{\text{init}} = \eta_{\max}/\text{div\_factor}`, :math:`\eta_{\min} =
    \eta_{\text{init}}/\text{final\_div\_factor}` and :math:`u = \text{pct\_start}\cdot N - 1`:

    * two phases (default, fastai's variant): :math:`\eta_{\text{init}} \to \eta_{\max}` over steps
      :math:`0..u`, then :math:`\eta_{\max} \to \eta_{\min}` over :math:`u..N-1`;
    * ``three_phase=True`` (Smith's paper): up over :math:`0..u`, back down to :math:`\eta_{\text{init}}` over
      :math:`u..2u`, then :math:`\eta_{\text{init}} \to \eta_{\min}` over the rest.

    Within a phase from :math:`a` to :math:`b` at fraction :math:`p` the rate is :math:`b + (a-b)(1+\cos \pi
    p)/2` (``anneal="cos"``) or :math:`a + (b-a)p` (``"linear"``). The peak :math:`\eta_{\max}` is reached at
    step :math:`u` when :math:`u` is an integer, otherwise the nearest steps straddle it.

    Differences from torch, only where torch has no answer: at steps ``>= total_steps - 1`` this returns
    :math:`\eta_{\min}` (torch extrapolates the cosine at step ``total_steps``, a rate no update uses, and
    raises beyond); a zero-length first phase (``pct_start * total_steps == 1``) gives :math:`\eta_{\max}` at
    step 0 where torch divides by zero; ``three_phase`` needs ``pct_start <= 0.5``.

    Args:
        step: updates already taken, >= 0.
        max_lr: the peak rate (> 0).
        total_steps: the length :math:`N` of the cycle in updates (>= 1).
        pct_start: the fraction of the cycle spent increasing the rate, in (0, 1).
        div_factor: the initial rate is ``max_lr / div_factor`` (> 0).
        final_div_factor: the final rate is the initial rate divided by this (> 0).
        anneal: ``"cos"`` or ``"linear"`` interpolation within each phase.
        three_phase: Smith's symmetric three-phase version instead of fastai's two phases.

    Raises:
        TypeError: for a ``div_factor`` or ``final_div_factor`` of the wrong type.
        ValueError: for a ``div_factor`` or ``final_div_factor`` out of its allowed range.

    References:
        Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using Large Learning
        Rates", 2017 (arXiv:1708.07120); Smith, "A disciplined approach to neural network hyper-parameters:
        Part 1", 2018 (arXiv:1803.09820).
    """
    t, n, anneal, phases = _one_cycle_position(step, total_steps, pct_start, anneal, three_phase)
    max_lr = _lr("max_lr", max_lr)
    div = check_float("div_factor", div_factor, minimum=0.0, min_inclusive=False)
    final_div = check_float("final_div_factor", final_div_factor, minimum=0.0, min_inclusive=False)
    initial = max_lr / div
    points = {"initial": initial, "max": max_lr, "min": initial / final_div}
    return _one_cycle_interp(t, n, anneal, phases, points)


def one_cycle_momentum(
    step: int,
    *,
    total_steps: int,
    pct_start: float = 0.3,
    anneal: str = "cos",
    three_phase: bool = False,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
) -> float:
    r"""The momentum that 1cycle pairs with :func:`one_cycle`: high when the rate is low, and vice versa.

    Reproduces the ``momentum`` (SGD) or ``betas[0]`` (Adam) that ``OneCycleLR(cycle_momentum=True)`` sets:
    ``max_momentum`` to ``base_momentum`` while the rate rises, back to ``max_momentum`` while it falls, and
    (three phases) ``max_momentum`` during the final annihilation. Smith (2018) found cycling the momentum
    inversely to the rate lets the large rates be used stably. Pass it as :class:`Schedule`'s
    ``momentum`` with the same ``total_steps``, ``pct_start``, ``anneal`` and ``three_phase``.

    Args:
        step: updates already taken, >= 0.
        total_steps, pct_start, anneal, three_phase: as for :func:`one_cycle`.
        base_momentum: the momentum at the peak rate, in [0, 1).
        max_momentum: the momentum at the start and the end, in [base_momentum, 1).

    Raises:
        TypeError: for a ``base_momentum`` or ``max_momentum`` of the wrong type.
        ValueError: for a ``base_momentum`` or ``max_momentum`` out of its allowed range.
    """
    t, n, anneal, phases = _one_cycle_position(step, total_steps, pct_start, anneal, three_phase)
    base = check_float("base_momentum", base_momentum, minimum=0.0, maximum=1.0, max_inclusive=False)
    top = check_float("max_momentum", max_momentum, minimum=base, maximum=1.0, max_inclusive=False)
    # The rate's phase endpoints map to momenta: the start and end of the cycle to max, the peak to base.
    points = {"initial": top, "max": base, "min": top}
    return _one_cycle_interp(t, n, anneal, phases, points)


def cosine_with_warmup(
    step: int,
    *,
    lr0: float,
    total_steps: int,
    warmup_steps: int = 0,
    min_lr: float = 0.0,
    warmup_start_lr: float = 0.0,
) -> float:
    r"""A linear warm-up to ``lr0``, then a cosine (half-period) decay to ``min_lr``, constant afterwards.

    With :math:`w` = ``warmup_steps`` and :math:`N` = ``total_steps``:

    .. math::

        \eta(t) = \begin{cases}
            \eta_s + (\eta_0 - \eta_s)\, t / w & t < w \\
            \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})\big(1 + \cos\frac{\pi(t - w)}{N - w}\big)
                & w \le t \le N \\
            \eta_{\min} & t > N
        \end{cases}

    The decay is SGDR's cosine annealing within one period (Loshchilov & Hutter 2017); after the warm-up
    it equals ``torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=N - w, eta_min=min_lr)`` stepped
    :math:`t - w` times (which, unlike this function, climbs again after :math:`T_{\max}`). The linear
    warm-up is Goyal et al.'s (2017) gradual warm-up for large batches; torch's ``LinearLR(start_factor=
    warmup_start_lr / lr0, total_iters=w)`` followed by the cosine in ``SequentialLR`` gives the whole
    schedule. Keras 3's ``keras.optimizers.schedules.CosineDecay(initial_learning_rate=warmup_start_lr,
    decay_steps=N - w, alpha=min_lr / lr0, warmup_target=lr0, warmup_steps=w)`` is the same function
    (Keras' ``initial_learning_rate`` is where the warm-up *starts*, its ``decay_steps`` exclude the warm-up,
    and its floor is a fraction ``alpha`` of the peak); without warm-up, ``CosineDecay(lr0, N, alpha=min_lr /
    lr0)``.

    Args:
        step: updates already taken, >= 0.
        lr0: the peak rate :math:`\eta_0` reached at the end of the warm-up (> 0).
        total_steps: :math:`N`, the step at which the rate reaches ``min_lr`` (> ``warmup_steps``).
        warmup_steps: :math:`w \ge 0` (0: no warm-up, start at ``lr0``).
        min_lr: the floor :math:`\eta_{\min}` in [0, lr0].
        warmup_start_lr: :math:`\eta_s` in [0, lr0], the rate at step 0 of the warm-up.

    Raises:
        TypeError: for a ``min_lr``, ``total_steps``, ``warmup_start_lr`` or ``warmup_steps`` of the wrong
            type.
        ValueError: for a ``min_lr``, ``total_steps``, ``warmup_start_lr`` or ``warmup_steps`` out of its
            allowed range.

    References:
        Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017;
        Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017 (arXiv:1706.02677).
    """
    t = _step(step)
    lr0 = _lr("lr0", lr0)
    n = check_int("total_steps", total_steps, minimum=1)
    w = check_int("warmup_steps", warmup_steps, minimum=0, maximum=n - 1)
    lo = check_float("min_lr", min_lr, minimum=0.0, maximum=lr0)
    start = check_float("warmup_start_lr", warmup_start_lr, minimum=0.0, maximum=lr0)
    if t < w:
        return start + (lr0 - start) * t / w
    if t == w:  # exactly the peak, as torch's CosineAnnealingLR starts from its base rate
        return lr0
    if t >= n:
        return lo
    # torch's closed form, term for term, so that the parity test can be tight.
    return lo + (lr0 - lo) * (1 + math.cos(math.pi * (t - w) / (n - w))) / 2
