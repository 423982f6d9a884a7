"""Learning-rate schedules: parity with torch's schedulers and Keras' schedules, invariants, the callbacks.

Torch parity drives the real scheduler on a one-parameter optimizer and compares ``get_last_lr()`` after
``k`` steps with ``f(k)``: relative 1e-12, and 1e-15 absolute for rates that reach 0 (torch's recursive
updates such as CosineAnnealingLR's leave a rounding residue of ~1e-17 where the closed form gives 0).
Keras computes in float32, so its parity is relative 1e-6 (float32's epsilon is 1.2e-7, and a schedule
evaluates a few float32 operations), with an absolute 1e-7 x the peak rate near 0.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as S

from dltricks.batches import TensorBatches
from dltricks.checkpoint import Checkpoint
from dltricks.models import mlp
from dltricks.repro import seed_everything
from dltricks.schedules import (
    PlateauSchedule,
    ReduceOnPlateau,
    Schedule,
    cosine_with_warmup,
    exponential_decay,
    multi_step,
    one_cycle,
    one_cycle_momentum,
    piecewise_constant,
    power_decay,
    step_decay,
)
from dltricks.train import Callback, TrainState, fit

needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed"
)
# Keras' TensorFlow backend calls np.array(tensor) in a way NumPy 2 deprecates; not ours to fix.
quiet_keras = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)  # seed_everything sets it; undone after the test


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads and lose much to contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def torch_lrs(make, n, *, lr=0.1, optimizer=torch.optim.SGD, **opt_kwargs):
    """``get_last_lr()`` (and momentum or beta1) after 0 .. n-1 scheduler steps, one optimizer step each."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = optimizer([p], lr=lr, **opt_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR's and others' deprecation chatter
        sched = make(opt)
        lrs, momenta = [], []
        for k in range(n):
            if k:
                opt.step()
                sched.step()
            lrs.append(sched.get_last_lr()[0])
            group = opt.param_groups[0]
            momenta.append(group["betas"][0] if "betas" in group else group.get("momentum"))
    return lrs, momenta


def assert_torch_close(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------- torch


def test_step_decay_is_steplr():
    theirs, _ = torch_lrs(lambda o: S.StepLR(o, step_size=7, gamma=0.3), 40, lr=0.2)
    assert_torch_close([step_decay(k, lr0=0.2, drop=0.3, every=7) for k in range(40)], theirs)


@pytest.mark.parametrize(("decay_steps", "decay_rate"), [(10, 0.1), (3.5, 0.5), (1, 0.97)])
def test_exponential_decay_is_exponentiallr_and_its_staircase_is_steplr(decay_steps, decay_rate):
    gamma = decay_rate ** (1 / decay_steps)
    theirs, _ = torch_lrs(lambda o: S.ExponentialLR(o, gamma=gamma), 60, lr=0.05)
    ours = [exponential_decay(k, lr0=0.05, decay_steps=decay_steps, decay_rate=decay_rate) for k in range(60)]
    # ExponentialLR multiplies by gamma once per step, so its rounding grows with k: still far below 1e-12.
    assert_torch_close(ours, theirs)
    if float(decay_steps).is_integer():
        stairs, _ = torch_lrs(
            lambda o: S.StepLR(o, step_size=int(decay_steps), gamma=decay_rate), 60, lr=0.05
        )
        ours = [
            exponential_decay(k, lr0=0.05, decay_steps=decay_steps, decay_rate=decay_rate, staircase=True)
            for k in range(60)
        ]
        assert_torch_close(ours, stairs)


def test_piecewise_constant_is_multisteplr_with_boundaries_one_earlier():
    milestones, gamma, lr0 = [5, 12, 13, 30], 0.5, 0.4
    theirs, _ = torch_lrs(lambda o: S.MultiStepLR(o, milestones=milestones, gamma=gamma), 40, lr=lr0)
    values = [lr0 * gamma**i for i in range(len(milestones) + 1)]
    ours = [piecewise_constant(k, boundaries=[m - 1 for m in milestones], values=values) for k in range(40)]
    assert_torch_close(ours, theirs)


@pytest.mark.parametrize(
    "milestones",
    [[5, 12, 13, 30], [0, 4, 4, 9], [7, 3], [0], [6, 6, 6], []],
    ids=["distinct", "zero-and-repeat", "unsorted", "zero", "triple", "none"],
)
def test_multi_step_is_multisteplr_with_whatever_milestones_torch_takes(milestones):
    # Before: only piecewise_constant, whose boundaries (m - 1, strictly increasing) cannot express a
    # milestone at 0 (-1 is refused) or a repeated one (torch drops by gamma^k there).
    gamma, lr0 = 0.5, 0.4
    theirs, _ = torch_lrs(lambda o: S.MultiStepLR(o, milestones=milestones, gamma=gamma), 40, lr=lr0)
    assert_torch_close(
        [multi_step(k, lr0=lr0, milestones=milestones, gamma=gamma) for k in range(40)], theirs
    )
    assert multi_step(0, lr0=1.0, milestones=[]) == 1.0 and multi_step(5, lr0=1.0, milestones=[5]) == 0.1


def test_power_decay_formula():
    # Géron's power scheduling eta0 / (1 + t/s)^c: halved at t = s, divided by 4 at t = 3s (c = 1).
    assert power_decay(0, lr0=0.1, decay_steps=10) == 0.1
    assert power_decay(10, lr0=0.1, decay_steps=10) == pytest.approx(0.05, rel=1e-15)
    assert power_decay(30, lr0=0.1, decay_steps=10) == pytest.approx(0.025, rel=1e-15)
    assert power_decay(30, lr0=0.1, decay_steps=10, power=2) == pytest.approx(0.1 / 16, rel=1e-15)
    assert power_decay(19, lr0=0.1, decay_steps=10, staircase=True) == pytest.approx(0.05, rel=1e-15)
    assert power_decay(19, lr0=0.1, decay_steps=10, decay_rate=0.0) == 0.1


ONE_CYCLE_CASES = [
    {"total_steps": 100},
    {"total_steps": 100, "pct_start": 0.25, "anneal": "linear", "three_phase": True},
    {"total_steps": 37, "pct_start": 0.4, "div_factor": 10.0, "final_div_factor": 100.0, "three_phase": True},
    {"total_steps": 7, "pct_start": 0.5, "anneal": "linear"},
    {"total_steps": 2},  # the peak falls before step 0: torch starts in the second phase
    {"total_steps": 1},
]


@pytest.mark.parametrize("kwargs", ONE_CYCLE_CASES)
@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_one_cycle_and_its_momentum_are_onecyclelr(kwargs, optimizer):
    n = kwargs["total_steps"]
    torch_kwargs = {("anneal_strategy" if k == "anneal" else k): v for k, v in kwargs.items()}
    extra = {"momentum": 0.9} if optimizer is torch.optim.SGD else {}
    theirs, momenta = torch_lrs(
        lambda o: S.OneCycleLR(o, max_lr=0.5, **torch_kwargs), n, optimizer=optimizer, **extra
    )
    # The same float operations in the same order: equal, not merely close.
    assert [one_cycle(k, max_lr=0.5, **kwargs) for k in range(n)] == theirs
    mkw = {k: v for k, v in kwargs.items() if k not in ("div_factor", "final_div_factor")}
    assert [one_cycle_momentum(k, **mkw) for k in range(n)] == momenta


def test_one_cycle_holds_its_final_rate_after_the_cycle():
    end = one_cycle(99, max_lr=1.0, total_steps=100)
    assert end == pytest.approx(1.0 / 25 / 1e4, rel=1e-15)
    assert one_cycle(100, max_lr=1.0, total_steps=100) == one_cycle(10**6, max_lr=1.0, total_steps=100) == end
    assert one_cycle_momentum(500, total_steps=100) == 0.95


@pytest.mark.parametrize(("total", "warmup", "min_lr"), [(50, 0, 0.0), (50, 10, 0.001), (20, 19, 0.0)])
def test_cosine_after_warmup_is_cosineannealinglr(total, warmup, min_lr):
    span = total - warmup
    theirs, _ = torch_lrs(lambda o: S.CosineAnnealingLR(o, T_max=span, eta_min=min_lr), span + 1, lr=0.3)
    ours = [
        cosine_with_warmup(warmup + k, lr0=0.3, total_steps=total, warmup_steps=warmup, min_lr=min_lr)
        for k in range(span + 1)
    ]
    assert_torch_close(ours, theirs)


def test_cosine_with_warmup_is_linearlr_then_cosine_in_sequentiallr():
    lr0, start, total, warmup, floor = 0.3, 0.03, 50, 10, 0.001

    def make(o):
        return S.SequentialLR(
            o,
            [
                S.LinearLR(o, start_factor=start / lr0, end_factor=1.0, total_iters=warmup),
                S.CosineAnnealingLR(o, T_max=total - warmup, eta_min=floor),
            ],
            milestones=[warmup],
        )

    theirs, _ = torch_lrs(make, total + 1, lr=lr0)
    kw = {"lr0": lr0, "total_steps": total, "warmup_steps": warmup, "min_lr": floor, "warmup_start_lr": start}
    assert_torch_close([cosine_with_warmup(k, **kw) for k in range(total + 1)], theirs)


def test_reduce_on_plateau_scripted_sequence():
    # patience 2: the third bad epoch in a row reduces (epochs 5 and 9). cooldown 1: the epoch after a
    # reduction is not counted, so the bad epochs 10-12 count only twice and the rate stays at 0.25.
    values = [1.0, 0.8, 0.8, 0.81, 0.9, 0.7, 0.75, 0.76, 0.77, 0.78, 0.79, 0.8, 0.6]
    plateau = ReduceOnPlateau(1.0, factor=0.5, patience=2, cooldown=1)
    lrs = [plateau.update(v) for v in values]
    assert lrs == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25]
    assert (plateau.best, plateau.num_bad, plateau.updates) == (0.6, 0, 13)


SEQ = [1.0, 0.9, 0.95, 0.91, 0.92, 0.85, 0.86, 0.87, 0.88, 0.849, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.79]
SEQ += [0.795, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.7, float("nan"), 0.71, -0.5, -0.49, -0.6, -0.6]
PLATEAU_CASES = [
    {},
    {"factor": 0.5, "patience": 1},
    {"factor": 0.5, "patience": 0, "cooldown": 2},
    {"factor": 0.3, "patience": 2, "threshold": 0.02, "threshold_mode": "abs", "cooldown": 1},
    {"factor": 0.3, "patience": 1, "threshold": 0.05, "threshold_mode": "rel", "min_lr": 0.01},
    {"factor": 0.5, "patience": 1, "mode": "max", "threshold": 0.01, "threshold_mode": "abs"},
    {"factor": 0.5, "patience": 0, "mode": "max", "threshold": 0.05},
    {"factor": 0.9, "patience": 0, "min_lr": 0.0999, "eps": 1e-3},  # a reduction below eps is skipped
]


@pytest.mark.parametrize("kwargs", PLATEAU_CASES)
def test_reduce_on_plateau_is_torch_reducelronplateau(kwargs):
    plateau = ReduceOnPlateau(0.1, **kwargs)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    theirs = S.ReduceLROnPlateau(opt, **kwargs)
    for value in SEQ:
        theirs.step(value)
        assert plateau.update(value) == opt.param_groups[0]["lr"]  # the same arithmetic: equal
    assert (plateau.num_bad, plateau.cooldown_counter) == (theirs.num_bad_epochs, theirs.cooldown_counter)


@settings(max_examples=40, deadline=None, database=None)
@given(
    values=st.lists(
        st.floats(-2, 2, allow_nan=False) | st.sampled_from([0.5, 0.5, 1.0]), min_size=1, max_size=40
    ),
    factor=st.floats(0.05, 0.95),
    patience=st.integers(0, 4),
    cooldown=st.integers(0, 3),
    mode=st.sampled_from(["min", "max"]),
    threshold=st.sampled_from([0.0, 1e-4, 0.05]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    min_lr=st.sampled_from([0.0, 1e-3]),
)
def test_reduce_on_plateau_matches_torch_on_any_sequence(values, **kwargs):
    plateau = ReduceOnPlateau(0.1, **kwargs)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = S.ReduceLROnPlateau(opt, **kwargs)
    previous = 0.1
    for value in values:
        theirs.step(value)
        lr = plateau.update(value)
        assert lr == opt.param_groups[0]["lr"]
        assert lr <= previous and lr >= min(kwargs["min_lr"], 0.1)
        previous = lr


def test_reduce_on_plateau_state_dict_resumes_the_sequence():
    a = ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=2)
    first = [a.update(v) for v in SEQ[:9]]
    b = ReduceOnPlateau(1.0, factor=0.5, patience=1, cooldown=2)
    b.load_state_dict(a.state_dict())
    assert [b.update(v) for v in SEQ[9:]] == [a.update(v) for v in SEQ[9:]]
    assert first[-1] < 1.0  # something happened before the split
    b.reset()
    assert (b.lr, b.best, b.num_bad, b.updates) == (1.0, math.inf, 0, 0)
    assert b.update(torch.tensor(0.5)) == 1.0 and b.best == 0.5


# ---------------------------------------------------------------------------------------------- Keras


def keras_lrs(schedule, steps):
    return np.array([float(schedule(k).numpy()) for k in steps])


def assert_keras_close(ours, theirs, peak):
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7 * peak)


@pytest.fixture(scope="module")
def keras():
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import keras

    return keras


@pytest.mark.keras
@needs_tensorflow
@quiet_keras
@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_and_power_decay_are_keras_schedules(keras, staircase):
    schedules = keras.optimizers.schedules
    steps = range(0, 200, 3)
    theirs = keras_lrs(schedules.ExponentialDecay(0.1, 20, 0.3, staircase=staircase), steps)
    ours = [exponential_decay(k, lr0=0.1, decay_steps=20, decay_rate=0.3, staircase=staircase) for k in steps]
    assert_keras_close(ours, theirs, 0.1)
    if staircase:
        assert_keras_close([step_decay(k, lr0=0.1, drop=0.3, every=20) for k in steps], theirs, 0.1)
    theirs = keras_lrs(schedules.InverseTimeDecay(0.1, 20, 0.5, staircase=staircase), steps)
    ours = [power_decay(k, lr0=0.1, decay_steps=20, decay_rate=0.5, staircase=staircase) for k in steps]
    assert_keras_close(ours, theirs, 0.1)


@pytest.mark.keras
@needs_tensorflow
@quiet_keras
def test_piecewise_constant_is_keras_including_the_boundary_steps(keras):
    boundaries, values = [10, 20, 21], [1.0, 0.5, 0.1, 0.01]
    steps = [0, 9, 10, 11, 19, 20, 21, 22, 100]
    theirs = keras_lrs(keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values), steps)
    ours = [piecewise_constant(k, boundaries=boundaries, values=values) for k in steps]
    assert_keras_close(ours, theirs, 1.0)
    assert ours == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.1, 0.01, 0.01]  # a new value starts at boundary + 1


@pytest.mark.keras
@needs_tensorflow
@quiet_keras
@pytest.mark.parametrize(
    ("warmup", "start", "floor"), [(0, 0.0, 0.0), (0, 0.0, 0.02), (15, 0.0, 0.0), (15, 0.05, 0.01)]
)
def test_cosine_with_warmup_is_keras_cosinedecay(keras, warmup, start, floor):
    lr0, total = 0.2, 60
    if warmup:
        schedule = keras.optimizers.schedules.CosineDecay(
            start, total - warmup, alpha=floor / lr0, warmup_target=lr0, warmup_steps=warmup
        )
    else:
        schedule = keras.optimizers.schedules.CosineDecay(lr0, total, alpha=floor / lr0)
    steps = range(0, total + 20)  # past the end too: both hold the floor
    theirs = keras_lrs(schedule, steps)
    kw = {"lr0": lr0, "total_steps": total, "warmup_steps": warmup, "min_lr": floor, "warmup_start_lr": start}
    assert_keras_close([cosine_with_warmup(k, **kw) for k in steps], theirs, lr0)


def keras_plateau_lrs(keras, values, **kwargs):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    callback = keras.callbacks.ReduceLROnPlateau(mode="min", **kwargs)
    callback.set_model(model)
    callback.on_train_begin()
    lrs = []
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"val_loss": value})
        lrs.append(float(model.optimizer.learning_rate.numpy()))
    return lrs


KERAS_PLATEAU = [
    (1, 0, 0.0),
    (2, 0, 0.0),
    (3, 1, 0.0),
    (2, 2, 0.0),
    (2, 3, 0.005),
    (1, 2, 0.02),
    (3, 0, 0.015),
]


@pytest.mark.keras
@needs_tensorflow
@quiet_keras
@pytest.mark.parametrize(("patience", "cooldown", "min_delta"), KERAS_PLATEAU)
def test_reduce_on_plateau_is_keras_with_patience_and_cooldown_one_less(keras, patience, cooldown, min_delta):
    values = SEQ[:26]  # finite and positive: Keras' and torch's comparisons agree there
    theirs = keras_plateau_lrs(
        keras, values, factor=0.5, patience=patience, cooldown=cooldown, min_delta=min_delta
    )
    kw = {"factor": 0.5, "threshold": min_delta, "threshold_mode": "abs", "eps": 0.0}
    plateau = ReduceOnPlateau(0.1, patience=max(patience - 1, 0), cooldown=max(cooldown - 1, 0), **kw)
    ours = [plateau.update(v) for v in values]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)  # Keras keeps the rate in float32
    assert ours[-1] < 0.1 / 4  # several reductions: the comparison is not vacuous
    # With the same numbers, torch's rule reduces later: the off-by-one is real.
    same = ReduceOnPlateau(0.1, patience=patience, cooldown=cooldown, **kw)
    assert [same.update(v) for v in values] != ours


# ---------------------------------------------------------------------------------------------- invariants


@settings(max_examples=30, deadline=None, database=None)
@given(
    lr0=st.floats(1e-4, 10),
    drop=st.floats(0.01, 1.0),
    every=st.integers(1, 20),
    s=st.floats(0.5, 50),
    r=st.floats(0.01, 0.99),
)
def test_decays_never_increase(lr0, drop, every, s, r):
    for fn in (
        functools.partial(step_decay, lr0=lr0, drop=drop, every=every),
        functools.partial(exponential_decay, lr0=lr0, decay_steps=s, decay_rate=r),
        functools.partial(exponential_decay, lr0=lr0, decay_steps=s, decay_rate=r, staircase=True),
        functools.partial(power_decay, lr0=lr0, decay_steps=s, decay_rate=r, power=1.5),
    ):
        lrs = [fn(k) for k in range(80)]
        assert lrs[0] == lr0
        assert all(b <= a for a, b in zip(lrs, lrs[1:]))


@settings(max_examples=50, deadline=None, database=None)
@given(
    total=st.integers(1, 200),
    pct=st.floats(0.01, 0.99),
    three=st.booleans(),
    anneal=st.sampled_from(["cos", "linear"]),
    max_lr=st.floats(1e-3, 10),
)
def test_one_cycle_peaks_where_torch_puts_the_peak(total, pct, three, anneal, max_lr):
    if three:
        pct = min(pct, 0.5)
    lrs = [
        one_cycle(k, max_lr=max_lr, total_steps=total, pct_start=pct, anneal=anneal, three_phase=three)
        for k in range(total)
    ]
    peak = float(pct * total) - 1  # OneCycleLR's end of the first phase, usually not an integer
    expected = {0} if peak < 0 else {math.floor(peak), math.ceil(peak)}
    assert int(np.argmax(lrs)) in expected
    assert max(lrs) <= max_lr * (1 + 2e-16)
    if peak >= 0 and peak.is_integer():  # exactly max_lr with "cos"; within an ulp with "linear"
        assert lrs[int(peak)] == pytest.approx(max_lr, rel=1e-15)
    assert lrs[-1] == pytest.approx(max_lr / 25 / 1e4, rel=1e-12)
    if peak >= 1:
        assert lrs[0] == pytest.approx(max_lr / 25, rel=1e-12)
        assert all(b >= a for a, b in zip(lrs[: int(peak) + 1], lrs[1 : int(peak) + 1]))


@settings(max_examples=40, deadline=None, database=None)
@given(
    total=st.integers(1, 100),
    data=st.data(),
    lr0=st.floats(1e-4, 10),
    floor_frac=st.floats(0, 1),
    start_frac=st.floats(0, 1),
)
def test_cosine_with_warmup_rises_then_falls_to_its_floor(total, data, lr0, floor_frac, start_frac):
    warmup = data.draw(st.integers(0, total - 1))
    floor, start = lr0 * floor_frac, lr0 * start_frac
    kw = {"lr0": lr0, "total_steps": total, "warmup_steps": warmup, "min_lr": floor, "warmup_start_lr": start}
    lrs = [cosine_with_warmup(k, **kw) for k in range(total + 5)]
    assert lrs[warmup] == lr0
    assert lrs[0] == (start if warmup else lr0)
    assert all(b >= a for a, b in zip(lrs[: warmup + 1], lrs[1 : warmup + 1]))
    assert all(b <= a for a, b in zip(lrs[warmup:], lrs[warmup + 1 :]))
    assert lrs[total:] == [floor] * 5


# ---------------------------------------------------------------------------------------------- callbacks


def blobs(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.2]])[y] + 0.8 * torch.randn(n, 2, generator=g), y


class Probe(Callback):
    """Record the rate and momentum each update actually uses (listed after the schedule)."""

    def __init__(self):
        self.lrs, self.momenta = [], []

    def on_before_step(self, state: TrainState) -> None:
        group = state.optimizer.param_groups[0]
        self.lrs.append(group["lr"])
        self.momenta.append(group["betas"][0] if "betas" in group else group["momentum"])


class TorchScheduler(Callback):
    def __init__(self, scheduler, per="step"):
        self.scheduler, self.per = scheduler, per

    def on_step_end(self, state: TrainState) -> None:
        if self.per == "step":
            self.scheduler.step()

    def on_epoch_end(self, state: TrainState) -> None:
        if self.per == "epoch":
            self.scheduler.step()


def train(callbacks_for, *, epochs=3, optimizer=torch.optim.SGD, **kwargs):
    """3 epochs of 8 batches on a small MLP; ``callbacks_for(opt)`` builds the callbacks."""
    seed_everything(0)
    x, y = blobs()
    model = mlp(2, (8,), 3)
    opt = optimizer(model.parameters(), lr=0.1, **({"momentum": 0.9} if optimizer is torch.optim.SGD else {}))
    callbacks = callbacks_for(opt)
    history = fit(
        model,
        TensorBatches(x, y, 8, seed=3),
        opt,
        epochs=epochs,
        callbacks=callbacks,
        progress=False,
        **kwargs,
    )
    return model, callbacks, history


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.AdamW])
def test_schedule_in_fit_trains_exactly_like_onecyclelr(optimizer):
    n = 24
    cycle = {"total_steps": n, "pct_start": 0.25, "three_phase": True}
    ours = functools.partial(one_cycle, max_lr=0.3, **cycle)
    momentum = functools.partial(one_cycle_momentum, **cycle)
    m1, (sched, probe), _ = train(lambda o: [Schedule(ours, momentum=momentum), Probe()], optimizer=optimizer)
    m2, (_, probe2), _ = train(
        lambda o: [TorchScheduler(S.OneCycleLR(o, max_lr=0.3, **cycle)), Probe()], optimizer=optimizer
    )
    assert sched.lrs == probe.lrs == probe2.lrs == [ours(k) for k in range(n)]
    assert sched.momenta == probe.momenta == probe2.momenta
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)  # the same rates, the same updates: bit for bit


def test_schedule_per_epoch_is_a_torch_scheduler_stepped_per_epoch():
    fn = functools.partial(step_decay, lr0=0.1, drop=0.5, every=1)
    _, (sched, probe), _ = train(lambda o: [Schedule(fn, per="epoch"), Probe()])
    _, (_, probe2), _ = train(lambda o: [TorchScheduler(S.StepLR(o, 1, 0.5), per="epoch"), Probe()])
    assert sched.lrs == [0.1, 0.05, 0.025]
    assert probe.lrs == probe2.lrs == [0.1] * 8 + [0.05] * 8 + [0.025] * 8


def nan_at(*calls):
    """Cross-entropy that is NaN at the given (1-based) calls: those steps are skipped by fit."""
    count = [0]

    def loss_fn(out, y):
        count[0] += 1
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss * math.nan if count[0] in calls else loss

    return loss_fn


def test_a_skipped_step_does_not_advance_the_schedule():
    # Before: the schedule counted fit's steps, skipped ones included, so after a skipped batch every update
    # ran at the next update's rate. Now it follows the updates taken, as a torch scheduler stepped only after
    # a real update (fit runs on_step_end only for those) does, bit for bit.
    fn = functools.partial(exponential_decay, lr0=0.1, decay_steps=4, decay_rate=0.5)
    kw = {"epochs": 2, "nonfinite": "skip"}
    m1, (sched, probe), h1 = train(lambda o: [Schedule(fn), Probe()], loss_fn=nan_at(3, 10), **kw)
    m2, (_, probe2), h2 = train(lambda o: [TorchScheduler(S.ExponentialLR(o, 0.5 ** (1 / 4))), Probe()],
                                loss_fn=nan_at(3, 10), **kw)  # fmt: skip
    assert h1["skipped"] == h2["skipped"] == [1, 1]
    assert sched.lrs == [fn(k) for k in range(14)]
    assert probe.lrs == sched.lrs
    torch.testing.assert_close(probe2.lrs, probe.lrs, rtol=1e-12, atol=0)
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)


def test_the_rate_comes_from_the_counter_even_if_something_else_changes_it():
    class Meddle(Callback):
        def on_step_end(self, state):
            state.optimizer.param_groups[0]["lr"] = 123.0

    fn = functools.partial(exponential_decay, lr0=0.1, decay_steps=4, decay_rate=0.5)
    _, (sched, _, probe), _ = train(lambda o: [Schedule(fn), Meddle(), Probe()], epochs=1)
    assert probe.lrs == sched.lrs == [fn(k) for k in range(8)]


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, state):
        if state.step == self.step:
            raise RuntimeError(f"crash at step {state.step}")


@pytest.mark.parametrize(("per", "crash_at"), [("step", 11), ("epoch", 16)])
def test_schedule_resumes_from_a_checkpoint_with_the_same_rates(per, crash_at, tmp_path):
    fn = functools.partial(
        cosine_with_warmup, lr0=0.2, total_steps=24 if per == "step" else 3, warmup_steps=1
    )

    def callbacks(directory, crash):
        return lambda o: [
            Schedule(fn, per=per),
            Probe(),
            CrashAt(crash),
            Checkpoint(directory, every_steps=3),
        ]

    reference, (_, ref_probe, *_), ref_history = train(callbacks(tmp_path / "ref", None), resume_from=None)
    with pytest.raises(RuntimeError, match="crash"):
        train(callbacks(tmp_path / "run", crash_at), resume_from=tmp_path / "run")
    model, (sched, probe, *_), history = train(
        callbacks(tmp_path / "run", None), resume_from=tmp_path / "run"
    )
    assert probe.lrs == ref_probe.lrs[-len(probe.lrs) :] and len(probe.lrs) < 24  # resumed mid-run
    if per == "step":
        assert sched.lrs == probe.lrs
    else:
        assert sched.lrs == [fn(e) for e in range(3)][-len(sched.lrs) :]
    assert [r["loss"] for r in history.epochs] == [r["loss"] for r in ref_history.epochs]
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


class Script(Callback):
    """Overwrite the epoch's ``val_loss`` with the next scripted value (``None``: leave it out)."""

    def __init__(self, values):
        self.values = values

    def on_epoch_end(self, state):
        record = state.history.epochs[-1]
        record.pop("val_loss", None)
        if self.values[state.epoch - 1] is not None:
            record["val_loss"] = self.values[state.epoch - 1]


def test_plateau_schedule_follows_the_rule_and_skips_epochs_without_the_metric():
    values = [1.0, 0.9, None, 0.95, 0.92, 0.91, None, 0.93, 0.5]
    rule = ReduceOnPlateau(0.1, factor=0.5, patience=1)
    _, (_, plateau, probe), _ = train(lambda o: [Script(values), PlateauSchedule(rule), Probe()], epochs=9)
    direct = ReduceOnPlateau(0.1, factor=0.5, patience=1)
    expected = [direct.update(v) for v in values if v is not None]
    assert plateau.lrs == expected == [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
    # Each epoch trains at the rate chosen after the previous monitored epoch.
    per_epoch = [probe.lrs[8 * e] for e in range(9)]
    assert per_epoch == [0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]


def test_plateau_schedule_resumes_from_a_checkpoint(tmp_path):
    values = [1.0, 0.9, 0.95, 0.92, 0.91, 0.93]

    def callbacks(directory, crash):
        rule = ReduceOnPlateau(0.1, factor=0.5, patience=0, cooldown=1)
        return lambda o: [
            Script(values),
            PlateauSchedule(rule),
            Probe(),
            CrashAt(crash),
            Checkpoint(directory),
        ]

    reference, (_, ref_plateau, ref_probe, *_), _ = train(callbacks(tmp_path / "ref", None), epochs=6)
    with pytest.raises(RuntimeError, match="crash"):
        train(callbacks(tmp_path / "run", 35), epochs=6, resume_from=tmp_path / "run")
    model, (_, plateau, probe, *_), _ = train(
        callbacks(tmp_path / "run", None), epochs=6, resume_from=tmp_path / "run"
    )
    assert len(probe.lrs) == 16 and probe.lrs == ref_probe.lrs[-16:]  # resumed after epoch 4 of 6
    assert plateau.lrs == ref_plateau.lrs[-2:] and ref_plateau.lrs[-1] < 0.1
    assert plateau.state_dict() == ref_plateau.state_dict()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)


# ---------------------------------------------------------------------------------------------- bad input

BAD = [
    (lambda: step_decay(-1, lr0=0.1, drop=0.5, every=2), ValueError, r"`step`.*Received: step=-1"),
    (lambda: step_decay(1.0, lr0=0.1, drop=0.5, every=2), TypeError, r"`step`.*Received: step=1.0"),
    (lambda: step_decay(0, lr0=-0.1, drop=0.5, every=2), ValueError, r"`lr0`.*Received: lr0=-0.1"),
    (lambda: step_decay(0, lr0=0.1, drop=0.0, every=2), ValueError, r"`drop`.*\(0, 1\].*drop=0.0"),
    (lambda: step_decay(0, lr0=0.1, drop=1.5, every=2), ValueError, r"`drop`.*Received: drop=1.5"),
    (lambda: step_decay(0, lr0=0.1, drop=0.5, every=0), ValueError, r"`every` must be an integer >= 1"),
    (lambda: power_decay(0, lr0=0.1, decay_steps=0), ValueError, r"`decay_steps`.*decay_steps=0"),
    (lambda: power_decay(0, lr0=0.1, decay_steps=1, power=-1), ValueError, r"`power`.*power=-1"),
    (lambda: exponential_decay(0, lr0=0.1, decay_steps=1, decay_rate=0), ValueError, r"`decay_rate`"),
    (lambda: exponential_decay(0, lr0=math.inf, decay_steps=1, decay_rate=0.5), ValueError, r"`lr0`.*inf"),
    (
        lambda: piecewise_constant(0, boundaries=[5, 5], values=[1, 2, 3]),
        ValueError,
        r"`boundaries` must be strictly increasing \(for MultiStepLR's milestones, repeats included: "
        r"multi_step\). Received: boundaries=\[5, 5\]",
    ),
    (
        lambda: piecewise_constant(0, boundaries=[5, 3], values=[1, 2, 3]),
        ValueError,
        r"`boundaries` must be strictly increasing",
    ),
    (
        lambda: piecewise_constant(0, boundaries=[5], values=[1, 2, 3]),
        ValueError,
        r"`values` must be a sequence of len\(boundaries\) \+ 1 = 2.*Received: values=\[1, 2, 3\]",
    ),
    (
        lambda: piecewise_constant(0, boundaries=5, values=[1]),
        TypeError,
        r"`boundaries`.*Received: boundaries=5",
    ),
    (lambda: piecewise_constant(0, boundaries=[2.5], values=[1, 2]), TypeError, r"`boundaries\[0\]`"),
    (
        lambda: multi_step(0, lr0=0.1, milestones=[3, -1]),
        ValueError,
        r"`milestones\[1\]` must be an integer >= 0",
    ),
    (lambda: multi_step(0, lr0=0.1, milestones=3), TypeError, r"`milestones` must be a sequence.*=3"),
    (lambda: multi_step(0, lr0=0.1, milestones=[2.0]), TypeError, r"`milestones\[0\]` must be an integer"),
    (lambda: multi_step(0, lr0=0.1, milestones=[2], gamma=0), ValueError, r"`gamma`.*Received: gamma=0"),
    (lambda: multi_step(0, lr0=0, milestones=[2]), ValueError, r"`lr0`.*Received: lr0=0"),
    (lambda: piecewise_constant(0, boundaries=[2], values=[1, -2]), ValueError, r"`values\[1\]`.*=-2"),
    (lambda: one_cycle(0, max_lr=0.1, total_steps=0), ValueError, r"`total_steps`.*total_steps=0"),
    (lambda: one_cycle(0, max_lr=0, total_steps=10), ValueError, r"`max_lr`.*max_lr=0"),
    (lambda: one_cycle(0, max_lr=0.1, total_steps=10, pct_start=0.0), ValueError, r"`pct_start`.*=0.0"),
    (lambda: one_cycle(0, max_lr=0.1, total_steps=10, pct_start=1.0), ValueError, r"`pct_start`.*=1.0"),
    (
        lambda: one_cycle(0, max_lr=0.1, total_steps=10, pct_start=0.6, three_phase=True),
        ValueError,
        r"`pct_start` must be a real number in \(0, 0.5\]",
    ),
    (lambda: one_cycle(0, max_lr=0.1, total_steps=9, anneal="exp"), ValueError, r"`anneal`.*'exp'"),
    (lambda: one_cycle(0, max_lr=0.1, total_steps=9, div_factor=0), ValueError, r"`div_factor`"),
    (lambda: one_cycle(-3, max_lr=0.1, total_steps=9), ValueError, r"`step`.*step=-3"),
    (
        lambda: one_cycle_momentum(0, total_steps=9, base_momentum=0.9, max_momentum=0.8),
        ValueError,
        r"`max_momentum`.*max_momentum=0.8",
    ),
    (lambda: cosine_with_warmup(0, lr0=0.1, total_steps=0), ValueError, r"`total_steps`.*=0"),
    (
        lambda: cosine_with_warmup(0, lr0=0.1, total_steps=5, warmup_steps=5),
        ValueError,
        r"`warmup_steps`.*=5",
    ),
    (lambda: cosine_with_warmup(0, lr0=0.1, total_steps=5, min_lr=0.2), ValueError, r"`min_lr`.*=0.2"),
    (
        lambda: cosine_with_warmup(0, lr0=0.1, total_steps=5, warmup_start_lr=-1),
        ValueError,
        r"`warmup_start_lr`",
    ),
    (lambda: ReduceOnPlateau(0.1, factor=1.0), ValueError, r"`factor`.*Received: factor=1.0"),
    (lambda: ReduceOnPlateau(0.1, patience=-1), ValueError, r"`patience`.*patience=-1"),
    (lambda: ReduceOnPlateau(0.1, mode="auto"), ValueError, r"`mode` must be one of 'min', 'max'"),
    (lambda: ReduceOnPlateau(0.1, threshold_mode="pct"), ValueError, r"`threshold_mode`.*'pct'"),
    (lambda: ReduceOnPlateau(-0.1), ValueError, r"`lr0`.*lr0=-0.1"),
    (lambda: ReduceOnPlateau(0.1).update("0.5"), TypeError, r"`metric`.*Received: metric='0.5'"),
    (lambda: ReduceOnPlateau(0.1).load_state_dict({"lr": 1}), TypeError, r"`state` must be a mapping with"),
    (lambda: Schedule(0.1), TypeError, r"`fn` must be a callable.*Received: fn=0.1"),
    (lambda: Schedule(len, per="batch"), ValueError, r"`per` must be one of 'step', 'epoch'"),
    (lambda: Schedule(len, momentum=0.9), TypeError, r"`momentum` must be None or a callable"),
    (lambda: PlateauSchedule(0.1), TypeError, r"`plateau` must be a ReduceOnPlateau. Received: plateau=0.1"),
    (lambda: Schedule(len).load_state_dict({"x": 1}), ValueError, r"`state` must be empty"),
]


@pytest.mark.parametrize(("call", "error", "pattern"), BAD, ids=[c[2][:40] for c in BAD])
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_bad_rates_from_the_function_and_optimizers_without_momentum_are_rejected():
    x, y = blobs(16)
    net = torch.nn.Linear(2, 3)
    with pytest.raises(
        ValueError, match=r"`fn\(0\)` must be a finite learning rate >= 0. Received: fn\(0\)=nan"
    ):
        fit(
            net,
            [(x, y)],
            torch.optim.SGD(net.parameters()),
            epochs=1,
            callbacks=[Schedule(lambda k: math.nan)],
            progress=False,
        )
    with pytest.raises(ValueError, match=r"`momentum` must be None for an optimizer without.*'Adagrad'"):
        fit(
            net,
            [(x, y)],
            torch.optim.Adagrad(net.parameters()),
            epochs=1,
            callbacks=[Schedule(lambda k: 0.1, momentum=lambda k: 0.9)],
            progress=False,
        )


@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_reduce_on_plateau_thresholds_and_ties_far_from_one_are_torchs(mode, threshold_mode):
    # Far from 1, a relative threshold of 0.5 (best * 1.5, or best * 0.5 in min mode) and an absolute one
    # (best +- 0.5) disagree, so swapping the two rules changes the rates; an exact tie (the second value)
    # is a bad update in every mode. Counted by hand from the docstring's rule, and checked against torch.
    values = {"max": [10.0, 10.0, 10.75, 16.0, 16.0, 16.25, 24.5, 24.5],
              "min": [16.0, 16.0, 15.25, 10.0, 10.0, 9.75, 4.0, 4.0]}[mode]  # fmt: skip
    kwargs = {"factor": 0.5, "patience": 0, "mode": mode, "threshold": 0.5, "threshold_mode": threshold_mode}
    plateau = ReduceOnPlateau(0.1, **kwargs)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = S.ReduceLROnPlateau(opt, **kwargs)
    rates = []
    for value in values:
        theirs.step(value)
        rates.append(plateau.update(value))
        assert rates[-1] == opt.param_groups[0]["lr"]
    assert rates[1] == 0.05 and plateau.best == values[-1]
    reductions = sum(a != b for a, b in zip([0.1, *rates], rates))
    assert (
        reductions
        == {("max", "rel"): 5, ("max", "abs"): 4, ("min", "rel"): 6, ("min", "abs"): 4}[mode, threshold_mode]
    )


@pytest.mark.parametrize("factor", [0.0, 1.0])
def test_reduce_on_plateau_refuses_a_factor_at_either_edge(factor):
    message = f"`factor` must be a real number in (0, 1). Received: factor={factor!r}"
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        ReduceOnPlateau(0.1, factor=factor)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_fresh_plateau_rule_and_callback_have_the_documented_state(mode):
    plateau = ReduceOnPlateau(0.1, mode=mode)
    expected = {"lr": 0.1, "best": math.inf if mode == "min" else -math.inf, "num_bad": 0}
    expected |= {"cooldown_counter": 0, "updates": 0}
    assert plateau.state_dict() == expected
    assert PlateauSchedule(plateau).state_dict() == expected
    defaults = (plateau.factor, plateau.patience, plateau.threshold, plateau.threshold_mode, plateau.cooldown)
    assert defaults == (0.1, 10, 1e-4, "rel", 0) and (plateau.min_lr, plateau.eps) == (0.0, 1e-8)
    restored = ReduceOnPlateau(0.5, mode=mode)
    restored.load_state_dict(plateau.state_dict())  # a fresh state loads, infinite best included
    assert restored.state_dict() == expected
    assert repr(plateau) == f"ReduceOnPlateau(lr=0.1, best={expected['best']:g}, num_bad=0)"


def test_a_plateau_metric_must_be_a_number_or_a_one_element_tensor():
    plateau = ReduceOnPlateau(0.1)
    assert plateau.update(torch.tensor([0.5])) == 0.1 and plateau.best == 0.5
    message = "`metric` must be a real number or a one-element tensor. Received: metric="
    for bad in (True, torch.ones(2)):
        with pytest.raises(TypeError, match="^" + re.escape(message + repr(bad)) + "$"):
            plateau.update(bad)


# -- edges of the formulas, every argument's error, the callbacks' hooks one by one ---------------------


def test_power_decay_is_smooth_by_default_and_takes_any_power():
    # Not a staircase unless asked: at t = 1.5 s the rate is eta0 / 2.5 (a staircase gives eta0 / 2). A
    # power below 1 (here 1/2, so eta0 / sqrt(1 + 3) at t = 3s) and 0 (a constant rate) are allowed.
    assert power_decay(15, lr0=0.1, decay_steps=10) == pytest.approx(0.1 / 2.5, rel=1e-15)
    assert power_decay(30, lr0=0.1, decay_steps=10, power=0.5) == pytest.approx(0.05, rel=1e-15)
    assert power_decay(30, lr0=0.1, decay_steps=10, power=0.0) == 0.1


def test_cosine_without_warmup_starts_at_its_peak():
    # warmup_steps defaults to 0: step 0 is already lr0 (as CosineAnnealingLR's base rate).
    assert cosine_with_warmup(0, lr0=0.1, total_steps=5) == 0.1


def test_three_phase_one_cycle_holds_its_final_rate_after_the_cycle():
    kw = {"max_lr": 1.0, "total_steps": 100, "pct_start": 0.25, "three_phase": True}
    end = one_cycle(99, **kw)
    assert end == pytest.approx(1.0 / 25 / 1e4, rel=1e-15)  # eta_min, not the initial rate of phase 2
    assert one_cycle(100, **kw) == one_cycle(10**6, **kw) == end


def _exact(message):
    return "^" + re.escape(message) + "$"


ERRORS = [
    (lambda: power_decay(0, lr0=0, decay_steps=1), ValueError,
     "`lr0` must be a real number in (0, inf). Received: lr0=0"),
    (lambda: power_decay(0, lr0=0.1, decay_steps=0), ValueError,
     "`decay_steps` must be a real number in (0, inf). Received: decay_steps=0"),
    (lambda: power_decay(0, lr0=0.1, decay_steps=1, decay_rate=-1), ValueError,
     "`decay_rate` must be a real number in [0, inf). Received: decay_rate=-1"),
    (lambda: power_decay(0, lr0=0.1, decay_steps=1, power=-0.5), ValueError,
     "`power` must be a real number in [0, inf). Received: power=-0.5"),
    (lambda: exponential_decay(0, lr0=0.1, decay_steps=0, decay_rate=0.5), ValueError,
     "`decay_steps` must be a real number in (0, inf). Received: decay_steps=0"),
    (lambda: exponential_decay(0, lr0=0.1, decay_steps=1, decay_rate=0), ValueError,
     "`decay_rate` must be a real number in (0, inf). Received: decay_rate=0"),
    (lambda: one_cycle_momentum(0, total_steps=9, base_momentum=-0.1), ValueError,
     "`base_momentum` must be a real number in [0, 1). Received: base_momentum=-0.1"),
    (lambda: one_cycle_momentum(0, total_steps=9, base_momentum=1.0, max_momentum=1.0), ValueError,
     "`base_momentum` must be a real number in [0, 1). Received: base_momentum=1.0"),
    (lambda: one_cycle_momentum(0, total_steps=9, max_momentum=1.0), ValueError,
     "`max_momentum` must be a real number in [0.85, 1). Received: max_momentum=1.0"),
    (lambda: cosine_with_warmup(0, lr0=0, total_steps=5), ValueError,
     "`lr0` must be a real number in (0, inf). Received: lr0=0"),
    (lambda: cosine_with_warmup(0, lr0=0.1, total_steps=5, warmup_steps=-1), ValueError,
     "`warmup_steps` must be an integer in [0, 4]. Received: warmup_steps=-1"),
    (lambda: cosine_with_warmup(0, lr0=0.1, total_steps=5, min_lr=-0.01), ValueError,
     "`min_lr` must be a real number in [0, 0.1]. Received: min_lr=-0.01"),
    (lambda: cosine_with_warmup(0, lr0=0.1, total_steps=5, warmup_start_lr=0.2), ValueError,
     "`warmup_start_lr` must be a real number in [0, 0.1]. Received: warmup_start_lr=0.2"),
    (lambda: ReduceOnPlateau(0.1, threshold=-1e-4), ValueError,
     "`threshold` must be a real number in [0, inf). Received: threshold=-0.0001"),
    (lambda: ReduceOnPlateau(0.1, cooldown=-1), ValueError,
     "`cooldown` must be an integer >= 0. Received: cooldown=-1"),
    (lambda: ReduceOnPlateau(0.1, min_lr=-0.1), ValueError,
     "`min_lr` must be a real number in [0, inf). Received: min_lr=-0.1"),
    (lambda: ReduceOnPlateau(0.1, eps=-1e-8), ValueError,
     "`eps` must be a real number in [0, inf). Received: eps=-1e-08"),
    (lambda: ReduceOnPlateau(0.1).load_state_dict({"lr": 1}), TypeError,
     "`state` must be a mapping with the keys ['lr', 'best', 'num_bad', 'cooldown_counter', 'updates']. "
     "Received: state={'lr': 1}"),
    (lambda: Schedule(len, momentum=0.9), TypeError,
     "`momentum` must be None or a callable fn(step) -> momentum. Received: momentum=0.9"),
    (lambda: Schedule(len, record="yes"), TypeError,
     "`record` must be True or False. Received: record='yes'"),
    (lambda: PlateauSchedule(ReduceOnPlateau(0.1), monitor=3), TypeError,
     "`monitor` must be a string naming a History key. Received: monitor=3"),
]  # fmt: skip


@pytest.mark.parametrize(("call", "error", "message"), ERRORS, ids=[c[2][:40] for c in ERRORS])
def test_every_argument_error_has_its_type_and_whole_message(call, error, message):
    # The ranges are the docstrings'; the shape is the package's: "`name` must be ... Received: name=value".
    with pytest.raises(error, match=_exact(message)):
        call()


@pytest.mark.parametrize("eps", [0.5, 0.0])
def test_a_reduction_of_exactly_eps_is_skipped_like_torch(eps):
    # From 1.0 with factor 0.5 the first reduction is exactly 0.5: skipped when eps = 0.5 (torch reduces
    # only when old - new > eps), taken when eps = 0.
    kwargs = {"factor": 0.5, "patience": 0, "eps": eps}
    plateau = ReduceOnPlateau(1.0, **kwargs)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = S.ReduceLROnPlateau(opt, **kwargs)
    for value in [1.0, 1.0, 1.0]:
        theirs.step(value)
        assert plateau.update(value) == opt.param_groups[0]["lr"]
    assert plateau.lr == (1.0 if eps == 0.5 else 0.25)


def _state(lrs=(1.0,)):
    net = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(net.parameters(), lrs)], lr=1.0)
    from dltricks.callbacks import History

    return TrainState(net, opt, History())


@pytest.mark.parametrize("per", ["step", "epoch"])
def test_each_schedule_hook_sets_the_rate_of_its_own_counter(per):
    # Called directly on a state as a resumed fit starts it (7 steps, 2 epochs done): on_train_begin sets
    # fn(counter) of that counter; after an update (per="step") or an epoch (per="epoch") the next rate is
    # set, and the other hook leaves the rate alone.
    state = _state()
    sched = Schedule(lambda k: k / 100, per=per)
    assert sched.lrs == [] and sched.momenta == []  # a fresh callback has recorded nothing

    def lr():
        return state.optimizer.param_groups[0]["lr"]

    state.step, state.epoch = 7, 2
    sched.on_train_begin(state)
    assert lr() == (0.07 if per == "step" else 0.02)
    state.step = 8  # fit counts the update in progress before on_before_step
    sched.on_before_step(state)
    sched.on_step_end(state)
    assert lr() == (0.08 if per == "step" else 0.02)
    state.epoch = 3
    sched.on_epoch_end(state)
    assert lr() == (0.08 if per == "step" else 0.03)


@pytest.mark.parametrize("rate", [-0.1, math.inf])
def test_a_negative_or_infinite_rate_from_the_function_is_rejected(rate):
    message = f"`fn(0)` must be a finite learning rate >= 0. Received: fn(0)={rate!r}"
    with pytest.raises(ValueError, match=_exact(message)):
        Schedule(lambda k: rate).on_train_begin(_state())


def test_plateau_schedule_hooks_set_the_rules_rate_in_every_group():
    state = _state(lrs=(1.0, 2.0))
    callback = PlateauSchedule(ReduceOnPlateau(0.1, factor=0.5, patience=0))
    assert callback.lrs == []  # fresh

    def lrs():
        return [g["lr"] for g in state.optimizer.param_groups]

    callback.on_train_begin(state)
    assert lrs() == [0.1, 0.1]
    callback.on_epoch_end(state)  # no epoch recorded yet: nothing to read
    assert callback.lrs == [] and lrs() == [0.1, 0.1]
    state.history.append({"val_loss": 1.0})
    callback.on_epoch_end(state)
    state.history.append({"val_loss": 2.0})  # worse, patience 0: halved at once
    callback.on_epoch_end(state)
    assert callback.lrs == [0.1, 0.05] and lrs() == [0.05, 0.05]  # set at the epoch's end, as checkpointed


@pytest.mark.parametrize("threshold_mode", ["rel", "abs"])
@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_value_exactly_at_the_threshold_does_not_improve_like_torch(mode, threshold_mode):
    # Improving needs to beat the threshold strictly: from a best of 16 (min) or 10 (max) with theta = 0.5,
    # the boundary is 8 / 15.5 (min, rel / abs) or 15 / 10.5 (max), all exact in binary floating point.
    best = 16.0 if mode == "min" else 10.0
    boundary = {("min", "rel"): 8.0, ("min", "abs"): 15.5, ("max", "rel"): 15.0, ("max", "abs"): 10.5}
    kwargs = {"factor": 0.5, "patience": 0, "mode": mode, "threshold": 0.5, "threshold_mode": threshold_mode}
    plateau = ReduceOnPlateau(0.1, **kwargs)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    theirs = S.ReduceLROnPlateau(opt, **kwargs)
    for value in [best, boundary[mode, threshold_mode]]:
        theirs.step(value)
        assert plateau.update(value) == opt.param_groups[0]["lr"]
    assert plateau.lr == 0.05 and plateau.best == best  # a bad update: reduced at once (patience 0)
