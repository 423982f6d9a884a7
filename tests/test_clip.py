"""Gradient clipping: the article's example, parity with torch and Keras, no host sync, the callback."""

from __future__ import annotations

import importlib.util
import re
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
def test_global_norm_factor_is_torchs_and_differs_from_keras_at_the_eps_level(total, c):
    eps = 1e-6
    ours, theirs = _param([total * 0.6, total * 0.8]), _param([total * 0.6, total * 0.8])
    norm = clip_by_global_norm_([ours], c)
    torch.nn.utils.clip_grad_norm_([theirs], c)
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-12, atol=0)  # torch's factor min(1, c/(t+eps))
    factor = (ours.grad.norm() / norm).item()
    keras_factor = c / max(norm.item(), c)
    # |c/t - c/(t+eps)| = c eps / (t (t+eps)) <= eps / t when t >= c; below c both are 1 unless t > c - eps.
    assert abs(factor - keras_factor) <= eps / max(total, c) * (1 + 1e-6)
    if total <= c - eps:
        assert torch.equal(ours.grad, torch.tensor([total * 0.6, total * 0.8], dtype=torch.float64))


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
    reference = [p.detach().clone().requires_grad_() for p in params]
    for r, g in zip(reference, grads):
        r.grad = g.clone()
    expected_total = torch.nn.utils.clip_grad_norm_(reference, 1.0)
    expected_norms = [r.grad.norm() for r in reference]
    expected = [r.grad * torch.clamp(1.0 / n, max=1.0) for r, n in zip(reference, expected_norms)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync inside the two calls raises
    try:
        total = clip_by_global_norm_(params, 1.0)
        norms = clip_by_norm_(params, 1.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    # and the results are torch's (float32 on the GPU: rtol 1e-5)
    assert total.device.type == "cuda" and all(n.device.type == "cuda" for n in norms)
    torch.testing.assert_close(total, expected_total, rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.stack(norms), torch.stack(expected_norms), rtol=1e-5, atol=0)
    for p, e in zip(params, expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)


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


def _message(name, expected, value):
    return "^" + re.escape(f"`{name}` must be {expected}. Received: {name}={value!r}") + "$"


POSITIVE = "a real number in (0, inf)"


@pytest.mark.parametrize(
    ("call", "error", "name", "expected", "value"),
    [
        (lambda: clip_vector_by_value([1.0], 1.0), TypeError, "g", "a torch.Tensor", [1.0]),
        (lambda: clip_vector_by_norm((1.0,), 1.0), TypeError, "g", "a torch.Tensor", (1.0,)),
        (lambda: clip_vector_by_value(torch.ones(2), -1.0), ValueError, "clip_value", POSITIVE, -1.0),
        (lambda: clip_vector_by_norm(torch.ones(2), -1.0), ValueError, "max_norm", POSITIVE, -1.0),
        (lambda: clip_by_global_norm_([_param([1.0])], -2.0), ValueError, "max_norm", POSITIVE, -2.0),
        (lambda: clip_by_global_norm_([_param([1.0])], True), TypeError, "max_norm", POSITIVE, True),
        (lambda: GradientClipping(threshold=-1.0), ValueError, "threshold", POSITIVE, -1.0),
        (lambda: GradientClipping(record=1), TypeError, "record", "True or False", 1),
    ],
)
def test_errors_have_the_right_type_and_name_the_argument_and_its_rule(call, error, name, expected, value):
    with pytest.raises(error, match=_message(name, expected, value)):
        call()


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: clip_vector_by_value(torch.ones(2), 0.0), "clip_value"),
        (lambda: clip_vector_by_norm(torch.ones(2), 0.0), "max_norm"),
        (lambda: clip_by_value_([_param([1.0])], 0.0), "clip_value"),
        (lambda: clip_by_norm_([_param([1.0])], 0.0), "max_norm"),
        (lambda: clip_by_global_norm_([_param([1.0])], 0.0), "max_norm"),
        (lambda: GradientClipping("value", 0.0), "threshold"),
    ],
)
def test_a_threshold_of_zero_is_refused_everywhere(call, name):
    # A zero bound would silently zero every gradient; torch's own clip_grad_norm_ accepts it, we do not.
    with pytest.raises(ValueError, match=_message(name, POSITIVE, 0.0)):
        call()


def test_infinite_max_norm_measures_the_global_norm_without_clipping_like_torch():
    ours, theirs = _param([3.0, -4.0]), _param([3.0, -4.0])
    total = clip_by_global_norm_([ours], float("inf"))
    expected = torch.nn.utils.clip_grad_norm_([theirs], float("inf"))
    torch.testing.assert_close(total, expected, rtol=0, atol=0)
    assert total.item() == 5.0 and torch.equal(ours.grad, torch.tensor([3.0, -4.0], dtype=torch.float64))
    with pytest.raises(
        ValueError, match=_message("max_norm", POSITIVE, float("-inf")).replace("real", "finite real")
    ):
        clip_by_global_norm_([ours], float("-inf"))


def test_clipping_by_value_bounds_both_signs_like_torch():
    g = torch.tensor([-5.0, -0.5, 0.25, 7.0], dtype=torch.float64)
    expected = torch.tensor([-1.0, -0.5, 0.25, 1.0], dtype=torch.float64)
    assert torch.equal(clip_vector_by_value(g, 1.0), expected)
    ours, theirs = _param(g.tolist()), _param(g.tolist())
    clip_by_value_([ours], 1.0)
    torch.nn.utils.clip_grad_value_([theirs], 1.0)
    assert torch.equal(ours.grad, theirs.grad) and torch.equal(ours.grad, expected)


def test_a_fresh_callback_has_the_documented_defaults():
    cb = GradientClipping()
    assert (cb.mode, cb.threshold, cb.record) == ("global_norm", 1.0, False)
    assert cb.last_norm is None and cb.norms == []


def _linear_with_grads():
    model = nn.Linear(2, 1, dtype=torch.float64)
    model.weight.grad = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    model.bias.grad = torch.tensor([0.5], dtype=torch.float64)
    return model


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("global_norm", lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0)),
        ("norm", lambda ps: [p.grad.mul_(min(1.0, 1.0 / p.grad.norm().item())) for p in ps]),
        ("value", lambda ps: torch.nn.utils.clip_grad_value_(ps, 1.0)),
    ],
)
def test_each_callback_mode_applies_its_own_rule(mode, reference):
    model, expected = _linear_with_grads(), _linear_with_grads()
    reference(list(expected.parameters()))
    cb = GradientClipping(mode, 1.0)
    cb.on_before_step(SimpleNamespace(model=model))
    for p, q in zip(model.parameters(), expected.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=0)
    torch.testing.assert_close(cb.last_norm.item(), 25.25**0.5, rtol=1e-12, atol=0)  # before clipping
    n = 25.25**0.5  # the rules really differ: one factor for all tensors, one per tensor, per element
    modes = {"global_norm": [3.0 / n, 4.0 / n], "norm": [0.6, 0.8], "value": [1.0, 1.0]}
    torch.testing.assert_close(model.weight.grad.flatten().tolist(), modes[mode], rtol=1e-5, atol=0)
