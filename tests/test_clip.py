"""Gradient clipping: the article's example, parity with torch and Keras, no host sync, the callback."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dltricks.clip import (
    GradientClipping,
    clip_by_global_norm_,
    clip_by_norm_,
    clip_by_value_,
    clip_vector_by_norm,
    clip_vector_by_value,
)
from dltricks.train import Callback, fit

HAS_TF = importlib.util.find_spec("tensorflow") is not None
ARTICLE = [0.9, 100.0]  # a gradient with one huge component
BY_VALUE = [0.9, 1.0]  # clipvalue=1.0: the direction changes
BY_NORM = [0.00899964, 0.99995950]  # clipnorm=1.0: [0.9, 100] / ||[0.9, 100]||, same direction


def _param(grad, dtype=torch.float64):
    p = nn.Parameter(torch.zeros(len(grad), dtype=dtype))
    p.grad = torch.tensor(grad, dtype=dtype)
    return p


def test_the_articles_example():
    g = torch.tensor(ARTICLE, dtype=torch.float64)
    # The printed values carry 8 decimals: they agree with the exact ones to within 5e-9.
    torch.testing.assert_close(clip_vector_by_value(g, 1.0), torch.tensor(BY_VALUE, dtype=torch.float64))
    torch.testing.assert_close(
        clip_vector_by_norm(g, 1.0), torch.tensor(BY_NORM, dtype=torch.float64), rtol=0, atol=1e-7
    )
    assert torch.equal(g, torch.tensor(ARTICLE, dtype=torch.float64))  # the pure variants copy
    for clip, expected in (
        (clip_by_value_, BY_VALUE),
        (clip_by_norm_, BY_NORM),
        (clip_by_global_norm_, BY_NORM),
    ):
        p = _param(ARTICLE)
        clip([p], 1.0)
        # Global norm of one tensor is its norm; its eps=1e-6 shifts the result by ~1e-8 only.
        torch.testing.assert_close(p.grad, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-7)


def test_vector_by_norm_leaves_short_vectors_and_zero_alone():
    g = torch.tensor([0.3, -0.4], dtype=torch.float64)  # norm 0.5
    assert torch.equal(clip_vector_by_norm(g, 0.5), g)
    assert torch.equal(clip_vector_by_norm(g, 2.0), g)
    assert torch.equal(clip_vector_by_norm(torch.zeros(3), 1.0), torch.zeros(3))


def _grads_with_shapes(shapes, scale, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    params = []
    for shape in shapes:
        p = nn.Parameter(torch.zeros(shape, dtype=dtype))
        p.grad = scale * torch.randn(shape, generator=gen, dtype=dtype)
        params.append(p)
    return params


def _copy(params):
    out = []
    for p in params:
        q = nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        out.append(q)
    return out


SHAPES = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=5)


@settings(max_examples=30, deadline=None, database=None)
@given(shapes=SHAPES, scale=st.floats(1e-3, 1e3), c=st.floats(1e-2, 10.0), seed=st.integers(0, 2**31))
def test_parity_with_torch_clip_grad_value_and_norm(shapes, scale, c, seed):
    ours = _grads_with_shapes(shapes, scale, seed)
    theirs = _copy(ours)
    clip_by_value_(ours, c)
    nn.utils.clip_grad_value_(theirs, c)
    for p, q in zip(ours, theirs):
        assert torch.equal(p.grad, q.grad)  # the same clamp, bit for bit
    ours = _grads_with_shapes(shapes, scale, seed)
    theirs = _copy(ours)
    total = clip_by_global_norm_(ours, c)
    expected = nn.utils.clip_grad_norm_(theirs, c)
    # Same formula, same eps; float64 sums in possibly different order: 1e-12 relative.
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=0)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-300)


@settings(max_examples=30, deadline=None, database=None)
@given(shapes=SHAPES, scale=st.floats(1e-3, 1e3), c=st.floats(1e-2, 10.0), seed=st.integers(0, 2**31))
def test_per_tensor_norm_clipping_bounds_each_tensor_and_keeps_directions(shapes, scale, c, seed):
    params = _grads_with_shapes(shapes, scale, seed)
    before = [p.grad.clone() for p in params]
    norms = clip_by_norm_(params, c)
    for p, g, n in zip(params, before, norms):
        torch.testing.assert_close(n, g.norm(), rtol=1e-12, atol=0)
        if n <= c:
            assert torch.equal(p.grad, g)  # multiplied by exactly c / c = 1
        else:
            torch.testing.assert_close(
                p.grad.norm(), torch.tensor(c, dtype=torch.float64), rtol=1e-12, atol=0
            )
            torch.testing.assert_close(p.grad, g * (c / n), rtol=1e-12, atol=0)


@settings(max_examples=30, deadline=None, database=None)
@given(total=st.floats(1e-3, 1e4), c=st.floats(1e-2, 10.0))
def test_torch_and_keras_global_norm_factors_differ_at_the_eps_level(total, c):
    eps = 1e-6
    torch_factor = min(1.0, c / (total + eps))
    keras_factor = c / max(total, c)
    # |c/t - c/(t+eps)| = c eps / (t (t+eps)) <= eps / t when t >= c; below c both are 1 unless t > c - eps.
    assert abs(torch_factor - keras_factor) <= eps / max(total, c) * (1 + 1e-9)
    if total <= c - eps:
        assert torch_factor == keras_factor == 1.0


@pytest.mark.keras
@pytest.mark.skipif(not HAS_TF, reason="TensorFlow is not installed")
@pytest.mark.parametrize(
    ("keras_arg", "ours"),
    [("clipvalue", clip_by_value_), ("clipnorm", clip_by_norm_), ("global_clipnorm", clip_by_global_norm_)],
)
@pytest.mark.parametrize("threshold", [0.5, 3.0, 1e3])
def test_parity_with_keras_sgd_clipping(keras_arg, ours, threshold):
    import keras

    params = _grads_with_shapes([(3, 4), (4,), (2, 2, 2)], scale=1.5, seed=0, dtype=torch.float32)
    variables = [keras.Variable(np.zeros(tuple(p.shape), dtype="float32")) for p in params]
    opt = keras.optimizers.SGD(learning_rate=1.0, **{keras_arg: threshold})
    opt.apply_gradients([(p.grad.numpy(), v) for p, v in zip(params, variables)])  # v = 0 - 1 * clipped(g)
    ours(params, threshold)
    for p, v in zip(params, variables):
        # float32, gradients of order 1: 1e-6 absolute is a few ulps, and covers the global eps (~1e-7 here).
        np.testing.assert_allclose(-v.numpy(), p.grad.numpy(), rtol=0, atol=1e-6)


@pytest.fixture
def no_host_reads(monkeypatch):
    """Make every way of reading a tensor's value on the host raise, so a hidden sync fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    for name in ("item", "__bool__", "__float__", "__int__", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def test_norm_clipping_never_reads_a_tensor_value_on_the_host(no_host_reads):
    params = _grads_with_shapes([(5, 3), (3,)], scale=10.0, seed=1)
    total = clip_by_global_norm_(params, 1.0)
    norms = clip_by_norm_(params, 0.5)
    # The callback reads only state.model; a namespace stands in for fit's TrainState.
    GradientClipping("global_norm", 0.1, record=True).on_before_step(SimpleNamespace(model=nn.Sequential()))
    model = nn.Linear(3, 5).double()
    model.weight.grad, model.bias.grad = params[0].grad.clone(), 10 * torch.ones(5, dtype=torch.float64)
    for mode in ("global_norm", "norm", "value"):
        GradientClipping(mode, 0.1, record=True).on_before_step(SimpleNamespace(model=model))
    assert isinstance(total, torch.Tensor) and len(norms) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_global_norm_clipping_does_not_synchronize_cuda():
    params = [
        p.cuda() for p in _grads_with_shapes([(64, 32), (32,)], scale=10.0, seed=2, dtype=torch.float32)
    ]
    grads = [torch.randn_like(p) * 10 for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        clip_by_global_norm_(params, 1.0)
        clip_by_norm_(params, 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_parameters_without_gradients_are_skipped_and_a_single_tensor_is_accepted():
    with_grad, without = _param([3.0, 4.0]), nn.Parameter(torch.ones(2, dtype=torch.float64))
    total = clip_by_global_norm_([with_grad, without], 1.0)
    torch.testing.assert_close(total, torch.tensor(5.0, dtype=torch.float64))
    assert without.grad is None
    p = _param([3.0, 4.0])
    assert [n.item() for n in clip_by_norm_(p, 1.0)] == [5.0]
    clip_by_value_(p, 0.1)
    torch.testing.assert_close(p.grad, torch.tensor([0.1, 0.1], dtype=torch.float64))
    assert clip_by_global_norm_([without], 1.0).item() == 0.0 and clip_by_norm_([without], 1.0) == []


def _tiny_run(callbacks, lr=1.0):
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    steps = []

    class Track(Callback):  # the parameters before each step, to measure the update
        def on_before_step(self, state):
            steps.append(torch.cat([p.detach().flatten().clone() for p in state.model.parameters()]))

    fit(model, data, torch.optim.SGD(model.parameters(), lr=lr), epochs=2, callbacks=[*callbacks, Track()],
        progress=False)  # fmt: skip
    steps.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    return model, [(b - a).norm().item() for a, b in zip(steps, steps[1:])]


def test_callback_bounds_every_sgd_update_in_fit():
    threshold, lr = 0.05, 1.0
    clipping = GradientClipping("global_norm", threshold, record=True)
    _, updates = _tiny_run([clipping], lr)
    assert len(clipping.norms) == 8 and clipping.last_norm is clipping.norms[-1]
    assert all(n.item() > threshold for n in clipping.norms)  # clipping was active: the test is not vacuous
    assert max(updates) <= lr * threshold * (1 + 1e-6)  # plain SGD: the update is lr times the clipped grad
    for mode in ("norm", "value"):
        cb = GradientClipping(mode, threshold)
        _tiny_run([cb])
        assert cb.norms == [] and cb.last_norm is not None and cb.last_norm.item() > 0


def test_callback_with_a_large_threshold_changes_nothing():
    reference, _ = _tiny_run([])
    clipped, _ = _tiny_run([GradientClipping("global_norm", 1e6)])
    for p, q in zip(reference.parameters(), clipped.parameters()):
        assert torch.equal(p, q)  # factor exactly 1: bit for bit the same run


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: clip_by_value_([_param([1.0])], 0), ValueError, r"`clip_value`.*Received: clip_value=0"),
        (lambda: clip_by_norm_([_param([1.0])], -1.0), ValueError, r"`max_norm`.*Received: max_norm=-1.0"),
        (
            lambda: clip_by_global_norm_([_param([1.0])], "1"),
            TypeError,
            r"`max_norm`.*Received: max_norm='1'",
        ),
        (lambda: clip_by_global_norm_([_param([1.0])], 1.0, eps=-1), ValueError, r"`eps`.*Received: eps=-1"),
        (lambda: clip_by_global_norm_(nn.Linear(2, 2), 1.0), TypeError, r"`parameters`.*Received: .*Linear"),
        (lambda: clip_by_norm_([], 1.0), ValueError, r"`parameters` must be a non-empty iterable of tensors"),
        (lambda: clip_vector_by_norm([1.0], 1.0), TypeError, r"`g`.*Received: g=\[1.0\]"),
        (
            lambda: clip_vector_by_value(torch.ones(2), 0.0),
            ValueError,
            r"`clip_value`.*Received: clip_value=0.0",
        ),
        (lambda: GradientClipping("max"), ValueError, r"`mode`.*Received: mode='max'"),
        (lambda: GradientClipping(threshold=0), ValueError, r"`threshold`.*Received: threshold=0"),
        (lambda: GradientClipping(record="yes"), TypeError, r"`record`.*Received: record='yes'"),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
