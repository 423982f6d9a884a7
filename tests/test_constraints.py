"""Max-norm: the projection onto the ball, Keras' MaxNorm on the transposed kernel, the callback in fit."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.constraints import MaxNorm, max_norm_
from dltricks.models import mlp
from dltricks.regularization import weights_only
from dltricks.train import fit


def _rows_with_norms(norms, cols=5, seed=0):
    """A (len(norms), cols) float64 matrix whose row i has L2 norm norms[i]."""
    w = torch.randn(len(norms), cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return w / w.norm(dim=1, keepdim=True) * torch.tensor(norms, dtype=torch.float64)[:, None]


def test_rows_below_are_untouched_and_rows_above_land_on_the_sphere():
    r = 2.0
    w = _rows_with_norms([0.5, 1.999, 2.5, 10.0, 0.0])
    w[4] = 0.0  # an all-zero row must stay zero, not become 0/0
    before = w.clone()
    max_norm_([w], r)
    assert torch.equal(w[[0, 1, 4]], before[[0, 1, 4]])  # bit for bit
    torch.testing.assert_close(
        w[[2, 3]].norm(dim=1), torch.full((2,), r, dtype=torch.float64), rtol=0, atol=1e-6
    )
    # Same direction: the projection only shrinks.
    cos = torch.nn.functional.cosine_similarity(w[[2, 3]], before[[2, 3]], dim=1)
    torch.testing.assert_close(cos, torch.ones(2, dtype=torch.float64))


def test_dim_zero_constrains_columns_and_tuples_constrain_filters():
    w = _rows_with_norms([1.0, 3.0, 5.0]).T.contiguous()  # columns with norms 1, 3, 5
    max_norm_(w, 2.0, dim=0)
    torch.testing.assert_close(w.norm(dim=0), torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64))
    conv = torch.randn(4, 3, 3, 3) * 5
    max_norm_([conv], 1.0, dim=(1, 2, 3))
    assert bool((conv.flatten(1).norm(dim=1) <= 1.0 + 1e-6).all())


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_max_norm_on_the_transposed_kernel_agrees():
    import keras

    r = 1.5
    w = _rows_with_norms([0.2, 1.0, 1.4999, 1.6, 3.0, 40.0], cols=8, seed=1)  # torch layout (out, in)
    kernel = w.T.numpy().copy()  # Keras layout (in, out)
    theirs = np.asarray(keras.constraints.MaxNorm(max_value=r, axis=0)(keras.ops.convert_to_tensor(kernel)))
    max_norm_([w], r, dim=1)
    # Keras computes w * clip(n, 0, r) / (n + 1e-7): versus ours (w for n <= r, w * r / n above), each entry
    # differs by at most |w_i| * 1e-7 / n <= 1e-7 (since |w_i| <= n), so 1e-6 absolute is a safe margin.
    np.testing.assert_allclose(theirs, w.T.numpy(), rtol=0, atol=1e-6)


@settings(max_examples=50, deadline=None, database=None)
@given(
    rows=st.integers(1, 8),
    cols=st.integers(1, 8),
    r=st.floats(0.1, 10.0),
    scale=st.floats(0.01, 30.0),
    seed=st.integers(0, 2**31),
)
def test_projection_properties(rows, cols, r, scale, seed):
    w = scale * torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    before = w.clone()
    norms = before.norm(dim=1)
    max_norm_([w], r)
    after = w.norm(dim=1)
    inside = norms <= r
    assert torch.equal(w[inside], before[inside])
    assert bool((after <= r * (1 + 1e-6)).all())
    torch.testing.assert_close(after[~inside], torch.full_like(after[~inside], r), rtol=1e-6, atol=0)
    # Every row is a non-negative multiple of the original: max_norm_ is the projection onto the ball.
    torch.testing.assert_close(w, before * (after / norms.clamp_min(1e-300))[:, None])


def test_callback_keeps_every_row_norm_within_the_ball_during_fit():
    torch.manual_seed(0)
    x, y = torch.randn(256, 20), torch.randint(0, 4, (256,))
    data = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    r = 0.5
    norms = {}
    for constrained in (False, True):
        torch.manual_seed(1)
        net = mlp(20, (32,), 4)
        opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
        callbacks = [MaxNorm(weights_only(net), r)] if constrained else []
        fit(net, data, opt, epochs=5, callbacks=callbacks, progress=False)
        norms[constrained] = max(w.norm(dim=1).max().item() for w in weights_only(net))
    assert norms[False] > r  # without the constraint the rows grow past r: the test is not vacuous
    assert norms[True] <= r + 1e-6


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: max_norm_([torch.ones(2, 2)], 0), ValueError, r"`max_value`.*Received: max_value=0"),
        (lambda: max_norm_([torch.ones(2, 2)], -1), ValueError, r"`max_value`.*Received: max_value=-1"),
        (lambda: MaxNorm([torch.ones(2, 2)], 0.0), ValueError, r"`max_value`.*Received: max_value=0.0"),
        (lambda: max_norm_([torch.ones(2, 2)], "3"), TypeError, r"`max_value`.*Received: max_value='3'"),
        (lambda: max_norm_([torch.ones(2, 2)], 1.0, dim=2), ValueError, r"`dim`.*Received: dim=2"),
        (lambda: max_norm_([torch.ones(2, 2)], 1.0, dim=1.0), TypeError, r"`dim`.*Received: dim=1.0"),
        (lambda: max_norm_([], 1.0), ValueError, r"`weights` must be a non-empty iterable of tensors"),
        (lambda: MaxNorm(torch.nn.Linear(2, 2)), TypeError, r"`weights`.*Received: weights=.Linear."),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
