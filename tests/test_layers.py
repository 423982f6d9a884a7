"""BatchNorm from the formulas against nn.BatchNorm1d/2d and Keras; the residual connection."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from dltricks.layers import BatchNorm, Residual

# float64 throughout the torch parity tests: both sides compute the same sums in a different order, so
# they agree to a few ulps of the values (~1e-15); 1e-10 leaves room for the inverse square root without
# hiding a formula error (a biased/unbiased slip is a relative 1/(m-1) ~ 1e-2 here).
TOL = {"rtol": 0, "atol": 1e-10}


def _pair(reference_cls, channels, **kwargs):
    """Our BatchNorm and a torch one with the same random affine parameters, both float64."""
    ours, ref = BatchNorm(channels, **kwargs).double(), reference_cls(channels, **kwargs).double()
    if ref.affine:
        gen = torch.Generator().manual_seed(7)
        with torch.no_grad():
            ref.weight.copy_(1 + 0.5 * torch.randn(channels, generator=gen, dtype=torch.float64))
            ref.bias.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _input(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    scale = 1 + 3 * torch.rand(shape[1], generator=gen, dtype=torch.float64)  # channels on unequal scales
    view = [1, shape[1]] + [1] * (len(shape) - 2)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale.view(view) + 2.0


@pytest.mark.parametrize(
    ("reference_cls", "shape"),
    [(nn.BatchNorm1d, (16, 5)), (nn.BatchNorm1d, (6, 4, 7)), (nn.BatchNorm2d, (4, 3, 5, 6))],
)
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_matches_torch_batchnorm_forward_backward_and_running_stats(reference_cls, shape, momentum):
    ours, ref = _pair(reference_cls, shape[1], momentum=momentum)
    upstream = torch.randn(shape, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    for step in range(4):  # several training steps: the running averages compound
        x1 = _input(shape, seed=step).requires_grad_()
        x2 = x1.detach().clone().requires_grad_()
        y1, y2 = ours(x1), ref(x2)
        torch.testing.assert_close(y1, y2, **TOL)
        (y1 * upstream).sum().backward()
        (y2 * upstream).sum().backward()
        torch.testing.assert_close(x1.grad, x2.grad, **TOL)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **TOL)  # accumulated over the 4 steps
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad, **TOL)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 4
    ours.eval(), ref.eval()
    x1 = _input(shape, seed=10).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2, **TOL)
    (y1 * upstream).sum().backward()
    (y2 * upstream).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, **TOL)


@pytest.mark.parametrize("kwargs", [{"affine": False}, {"track_running_stats": False}, {"eps": 0.1}])
def test_matches_torch_without_affine_or_running_stats(kwargs):
    ours, ref = _pair(nn.BatchNorm2d, 3, **kwargs)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    for mode in (True, False):
        ours.train(mode), ref.train(mode)
        x = _input((4, 3, 2, 5), seed=int(mode))
        torch.testing.assert_close(ours(x), ref(x), **TOL)


def test_formulas_by_hand_and_running_var_is_unbiased():
    bn = BatchNorm(1, eps=0.0, momentum=0.5, affine=False).double()
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], dtype=torch.float64)  # mean 3, biased var 3.5
    expected = (x - 3.0) / 3.5**0.5
    torch.testing.assert_close(bn(x), expected, **TOL)
    torch.testing.assert_close(
        bn.running_mean, torch.tensor([1.5], dtype=torch.float64), **TOL
    )  # 0.5*0+0.5*3
    # unbiased var 14/3: 0.5 * 1 + 0.5 * 14/3
    torch.testing.assert_close(bn.running_var, torch.tensor([0.5 + 7 / 3], dtype=torch.float64), **TOL)


@settings(max_examples=25, deadline=None, database=None)
@given(n=st.integers(2, 9), c=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_training_output_has_zero_mean_unit_variance_per_channel(n, c, seed):
    bn = BatchNorm(c, eps=1e-12).double()
    x = torch.randn(n, c, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 5 + 1
    y = bn(x)
    torch.testing.assert_close(y.mean(dim=(0, 2)), torch.zeros(c, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(
        y.var(dim=(0, 2), correction=0), torch.ones(c, dtype=torch.float64), rtol=1e-6, atol=0
    )


@pytest.mark.parametrize("reference_cls", [nn.BatchNorm1d, nn.BatchNorm2d])
def test_state_dict_interchanges_both_ways(reference_cls):
    shape = (8, 4) if reference_cls is nn.BatchNorm1d else (8, 4, 3, 3)
    ours, ref = _pair(reference_cls, 4)
    for step in range(3):
        ref(_input(shape, step))
    ours.load_state_dict(ref.state_dict())  # torch -> ours, running stats and counter included
    ours.eval(), ref.eval()
    x = _input(shape, 5)
    torch.testing.assert_close(ours(x), ref(x), **TOL)
    ours.train()
    ours(_input(shape, 6))
    back = reference_cls(4).double().eval()
    back.load_state_dict(ours.state_dict())  # ours -> torch
    ours.eval()
    torch.testing.assert_close(back(x), ours(x), **TOL)
    assert int(back.num_batches_tracked) == 4


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_keras_batch_normalization_forward_and_moving_stats_with_converted_momentum():
    import keras

    torch_momentum, eps, c = 0.1, 1e-3, 5
    ours = BatchNorm(c, eps=eps, momentum=torch_momentum)
    theirs = keras.layers.BatchNormalization(momentum=1 - torch_momentum, epsilon=eps)  # axis=-1 on (N, C)
    theirs.build((None, c))
    gen = torch.Generator().manual_seed(0)
    gamma, beta = 1 + 0.5 * torch.randn(c, generator=gen), torch.randn(c, generator=gen)
    with torch.no_grad():
        ours.weight.copy_(gamma), ours.bias.copy_(beta)
    theirs.gamma.assign(gamma.numpy()), theirs.beta.assign(beta.numpy())
    biased_avg, m = torch.ones(c, dtype=torch.float64), 12
    for _ in range(5):
        x = 3 * torch.randn(m, c, generator=gen) + 1
        y_ours = ours(x)
        y_theirs = keras.ops.convert_to_numpy(theirs(x.numpy(), training=True))
        # float32 on both sides, |y| of order 5: a few ulps is ~1e-6.
        np.testing.assert_allclose(y_theirs, y_ours.detach().numpy(), rtol=0, atol=1e-5)
        biased_avg = (1 - torch_momentum) * biased_avg + torch_momentum * x.double().var(dim=0, correction=0)
    np.testing.assert_allclose(theirs.moving_mean.numpy(), ours.running_mean, atol=1e-6)
    # Keras averages the biased batch variance; torch and we the unbiased one. They differ by the factor
    # m / (m - 1) on what each batch contributes, which is what this pins down.
    moving_var = theirs.moving_variance.numpy()
    np.testing.assert_allclose(moving_var, biased_avg.numpy(), rtol=1e-5)
    assert np.all(np.abs(moving_var - ours.running_var.numpy()) > 1e-3)
    # Evaluation with the same statistics agrees: load Keras' moving averages into ours.
    ours.running_mean.copy_(torch.from_numpy(theirs.moving_mean.numpy()))
    ours.running_var.copy_(torch.from_numpy(moving_var))
    ours.eval()
    x = torch.randn(7, c, generator=gen)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(theirs(x.numpy(), training=False)), ours(x).detach().numpy(), atol=1e-5
    )


def test_residual_adds_the_input_and_passes_the_gradient_through_the_identity():
    body = nn.Linear(3, 3)
    with torch.no_grad():
        body.weight.zero_(), body.bias.fill_(1.0)
    block = Residual(body)
    x = torch.randn(2, 3, requires_grad=True)
    y = block(x)
    torch.testing.assert_close(y, x + 1)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(2, 3))  # I + dF/dx with dF/dx = 0


def test_residual_shape_mismatch_fails_with_both_shapes():
    block = Residual(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"`body\(x\).shape` must be the input's shape \(2, 3\).*=\(2, 4\)"):
        block(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"\(2, 1\)"):  # broadcasting would have hidden this one
        Residual(nn.Linear(3, 1))(torch.randn(2, 3))


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: BatchNorm(0), ValueError, r"`num_features`.*Received: num_features=0"),
        (lambda: BatchNorm(2.0), TypeError, r"`num_features`.*Received: num_features=2.0"),
        (lambda: BatchNorm(2, eps=-1e-5), ValueError, r"`eps`.*Received: eps=-1e-05"),
        (lambda: BatchNorm(2, momentum=1.5), ValueError, r"`momentum`.*Received: momentum=1.5"),
        (lambda: BatchNorm(2, affine=1), TypeError, r"`affine`.*Received: affine=1"),
        (lambda: BatchNorm(2, track_running_stats="no"), TypeError, r"`track_running_stats`.*='no'"),
        (
            lambda: BatchNorm(3)(torch.randn(4, 2)),
            ValueError,
            r"`x.shape`.*\(N, 3\).*Received: x.shape=\(4, 2\)",
        ),
        (lambda: BatchNorm(3)(torch.randn(3)), ValueError, r"`x.shape`.*Received: x.shape=\(3,\)"),
        (lambda: BatchNorm(3)(torch.randn(1, 3)), ValueError, r"more than one value per channel.*\(1, 3\)"),
        (lambda: Residual(lambda x: x), TypeError, r"`body`.*Received: body=<function"),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
