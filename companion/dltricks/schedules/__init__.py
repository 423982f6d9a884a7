r"""Learning-rate schedules: pure functions of the step, a plateau rule, and the callbacks that apply them.

The package has one module per concept: :mod:`~dltricks.schedules.functions` (the pure schedules),
:mod:`~dltricks.schedules.plateau` (the plateau rule, :class:`ReduceOnPlateau`) and
:mod:`~dltricks.schedules.callbacks` (:class:`Schedule` and :class:`PlateauSchedule`, which apply them in
``fit``). Every name is re-exported here: ``from dltricks.schedules import one_cycle`` works.

Every schedule here is a function ``f(step, **hyperparameters) -> lr`` that returns the *absolute*
learning rate (not a multiplier of the optimizer's initial one) for the update that follows ``step``
earlier updates. That is the convention of both frameworks this module is tested against:

* a Keras optimizer evaluates ``schedule(optimizer.iterations)`` before each update, ``iterations`` being
  the number of updates already applied;
* a torch scheduler is stepped after each ``optimizer.step()``, so after ``k`` calls of ``scheduler.step()``
  ``scheduler.get_last_lr()`` is the rate of the ``(k+1)``-th update.

So ``f(k)`` equals ``schedule(k)`` in Keras and ``get_last_lr()`` after ``k`` torch steps. Pass a schedule to
:class:`Schedule` with its hyperparameters bound (``functools.partial(one_cycle, max_lr=0.1,
total_steps=n)``) to use it inside :func:`dltricks.train.fit`.

The names follow Géron, *Hands-On Machine Learning* (3rd ed., ch. 11, "Learning Rate Scheduling"): power,
exponential and piecewise constant scheduling, performance scheduling (:class:`ReduceOnPlateau`) and 1cycle
(Smith 2018); cosine annealing with a linear warm-up follows Loshchilov & Hutter (2017) and Goyal et al.
(2017). Each docstring states its formula and the framework class it reproduces, and
``tests/test_schedules.py`` checks the claim numerically.
"""

from dltricks.schedules.callbacks import PlateauSchedule, Schedule
from dltricks.schedules.functions import (
    cosine_with_warmup,
    exponential_decay,
    multi_step,
    one_cycle,
    one_cycle_momentum,
    piecewise_constant,
    power_decay,
    step_decay,
)
from dltricks.schedules.plateau import ReduceOnPlateau

__all__ = [
    "PlateauSchedule",
    "ReduceOnPlateau",
    "Schedule",
    "cosine_with_warmup",
    "exponential_decay",
    "multi_step",
    "one_cycle",
    "one_cycle_momentum",
    "piecewise_constant",
    "power_decay",
    "step_decay",
]
