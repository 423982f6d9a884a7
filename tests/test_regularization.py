"""Weight penalties: parity with the optimizers' weight_decay and with Keras, and exact L1 zeros."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.models import mlp
from dltricks.regularization import (
    L1Proximal,
    keras_l2_factor,
    l1_penalty,
    l2_penalty,
    soft_threshold_,
    weights_only,
    zero_fraction,
)
from dltricks.train import fit


def _twin_runs(make_opt, wd, penalty_in_loss, steps=25):
    torch.manual_seed(0)
    x, y = torch.randn(64, 20, dtype=torch.float64), torch.randint(0, 3, (64,))
    a = mlp(20, (16,), 3).double()
    b = mlp(20, (16,), 3).double()
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = make_opt(a.parameters(), 0.0), make_opt(b.parameters(), wd)
    for _ in range(steps):
        for net, opt, pen in ((a, opt_a, penalty_in_loss), (b, opt_b, False)):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            if pen:
                loss = loss + l2_penalty(net.parameters(), wd)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p, wd: torch.optim.SGD(p, lr=0.1, weight_decay=wd),
        lambda p, wd: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=wd),
        lambda p, wd: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=wd),
        lambda p, wd: torch.optim.Adam(p, lr=1e-3, weight_decay=wd),
    ],
    ids=["sgd", "momentum", "nesterov", "adam"],
)
def test_l2_penalty_equals_coupled_weight_decay(make_opt):
    assert _twin_runs(make_opt, 0.05, penalty_in_loss=True) < 1e-12


def test_adamw_is_not_the_l2_penalty():
    diff = _twin_runs(
        lambda p, wd: torch.optim.AdamW(p, lr=1e-3, weight_decay=wd), 0.05, penalty_in_loss=True
    )
    assert diff > 1e-4


def test_penalty_values_and_gradients():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([0.5], dtype=torch.float64, requires_grad=True)
    assert l2_penalty([w, b], 0.1).item() == pytest.approx(0.05 * (1 + 4 + 9 + 0.25))
    assert l1_penalty([w, b], 0.1).item() == pytest.approx(0.1 * (1 + 2 + 3 + 0.5))
    l2_penalty([w], 0.1).backward()
    torch.testing.assert_close(w.grad, 0.1 * w.detach())


@settings(max_examples=50, deadline=None, database=None)
@given(
    values=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=50),
    t=st.floats(0, 5, allow_nan=False),
)
def test_soft_threshold_is_the_l1_proximal_operator(values, t):
    w = torch.tensor(values, dtype=torch.float64)
    out = w.clone()
    soft_threshold_([out], t)
    # prox_{t|.|}(v) = argmin_u 0.5 (u - v)^2 + t |u|: check optimality against a fine grid search.
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64)
    for v, u in zip(w, out):
        objective = 0.5 * (grid - v) ** 2 + t * grid.abs()
        assert abs(u.item() - grid[objective.argmin()].item()) <= 1e-3 + 1e-9
    assert bool(((out == 0) == (w.abs() <= t)).all())


def test_l1_proximal_callback_produces_exact_zeros_and_the_loss_term_does_not():
    torch.manual_seed(0)
    x = torch.randn(256, 30)
    y = (x[:, 0] > 0).long()  # only the first input matters
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    counts = {}
    for mode in ("prox", "loss"):
        torch.manual_seed(1)
        net = torch.nn.Sequential(torch.nn.Linear(30, 2))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        kernels = weights_only(net)
        if mode == "prox":
            fit(net, data, opt, epochs=30, callbacks=[L1Proximal(kernels, 0.05)], progress=False)
        else:
            fit(
                net, data, opt, epochs=30, penalty=lambda m: l1_penalty(weights_only(m), 0.05), progress=False
            )
        counts[mode] = zero_fraction(kernels)
        if mode == "prox":
            # The informative input keeps its weights; most of the 29 noise inputs are cut off entirely.
            assert net[0].weight[:, 0].abs().min() > 0.1
            assert (net[0].weight[:, 1:] == 0).float().mean() > 0.8
    assert counts["loss"] == 0.0


def test_weights_only_skips_biases():
    net = mlp(10, (5,), 2)
    assert [tuple(p.shape) for p in weights_only(net)] == [(5, 10), (2, 5)]


def test_zero_fraction():
    assert zero_fraction([torch.tensor([0.0, 1.0, 0.0, 2.0])]) == 0.5


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_l2_regularizer_matches_our_penalty():
    import keras

    wd = 0.03
    rng = np.random.default_rng(0)
    w = rng.normal(size=(7, 5)).astype("float64")
    keras_value = float(keras.regularizers.L2(keras_l2_factor(wd))(keras.ops.convert_to_tensor(w)))
    ours = l2_penalty([torch.from_numpy(w)], wd).item()
    assert keras_value == pytest.approx(ours, rel=1e-6)
