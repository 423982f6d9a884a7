"""Inverted dropout: the mask's statistics, the exact scaling, the gradient, and parity with torch and Keras.

The statistical tests use fixed seeds, so they are deterministic; their tolerances are 5 standard errors,
so a correct implementation would fail them for fewer than 1 seed in a million.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.dropout import Dropout, dropout

N = 1_000_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_mean_is_preserved(p):
    out = dropout(torch.ones(N), p, generator=_gen())
    # Each output is 1/(1-p) with probability 1-p, else 0: variance p/(1-p), standard error sqrt(var/N).
    se = math.sqrt(p / (1 - p) / N)
    assert abs(out.mean().item() - 1.0) < 5 * se


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_fraction_zeroed_is_p(p):
    out = dropout(torch.ones(N), p, generator=_gen(1))
    zeroed = (out == 0).double().mean().item()
    assert abs(zeroed - p) < 5 * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kept_elements_are_exactly_x_over_keep_probability(dtype):
    x = torch.randn(10_000, generator=_gen(2)).to(dtype)
    p = 0.3
    out = dropout(x, p, generator=_gen(3))
    kept = out != 0
    assert out.dtype == dtype and out.shape == x.shape
    assert bool((out[kept] == (x / (1 - p))[kept]).all())
    assert 0.6 < kept.float().mean().item() < 0.8


def test_eval_mode_and_p_zero_are_the_identity():
    x = torch.randn(100, 7)
    assert dropout(x, 0.5, training=False) is x
    assert torch.equal(dropout(x, 0.0), x)
    layer = Dropout(0.5).eval()
    assert torch.equal(layer(x), x)
    assert not torch.equal(layer.train()(x), x)
    assert repr(Dropout(0.25)) == "Dropout(p=0.25)"


def test_gradient_is_the_mask_over_keep_probability():
    p = 0.4
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    out = dropout(x, p, generator=_gen(4))
    out.sum().backward()
    mask = (out != 0).double()
    torch.testing.assert_close(x.grad, mask / (1 - p), rtol=0, atol=0)


def test_generator_makes_masks_reproducible():
    x = torch.ones(1000)
    assert torch.equal(dropout(x, 0.5, generator=_gen(7)), dropout(x, 0.5, generator=_gen(7)))
    assert not torch.equal(dropout(x, 0.5, generator=_gen(7)), dropout(x, 0.5, generator=_gen(8)))


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_same_statistics_as_torch_nn_dropout(p):
    torch.manual_seed(0)
    x = torch.ones(N)
    ours = Dropout(p).train()(x)
    theirs = torch.nn.Dropout(p).train()(x)
    se = math.sqrt(p * (1 - p) / N)
    # Two independent estimates of the kept fraction 1 - p: their difference has standard error sqrt(2)*se.
    kept_ours, kept_theirs = (ours != 0).double().mean().item(), (theirs != 0).double().mean().item()
    assert abs(kept_ours - kept_theirs) < 5 * math.sqrt(2) * se
    assert abs(kept_ours - (1 - p)) < 5 * se
    # torch multiplies by a precomputed 1/(1-p) in float32, so the scales agree to float32 rounding.
    for out in (ours, theirs):
        kept = out[out != 0]
        torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-6, atol=0)


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
@pytest.mark.parametrize("p", [0.2, 0.5])
def test_same_statistics_as_keras_dropout(p):
    import keras

    keras.utils.set_random_seed(0)
    n = 200_000
    theirs = np.asarray(keras.layers.Dropout(p)(np.ones((n,), dtype="float32"), training=True))
    ours = dropout(torch.ones(n), p, generator=_gen(5)).numpy()
    se = math.sqrt(p * (1 - p) / n)
    assert abs((theirs != 0).mean() - (ours != 0).mean()) < 5 * math.sqrt(2) * se
    np.testing.assert_allclose(theirs[theirs != 0], 1 / (1 - p), rtol=1e-6)
    np.testing.assert_allclose(ours[ours != 0], 1 / (1 - p), rtol=1e-6)


@settings(max_examples=40, deadline=None, database=None)
@given(
    p=st.floats(0.0, 0.95, allow_nan=False),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    seed=st.integers(0, 2**31),
)
def test_every_output_is_zero_or_the_scaled_input(p, shape, seed):
    x = torch.rand(shape, generator=_gen(seed), dtype=torch.float64) + 0.5  # nonzero, so zeros are drops
    out = dropout(x, p, generator=_gen(seed + 1))
    assert out.shape == x.shape and out.dtype == x.dtype
    kept = out != 0
    assert bool((out[kept] == (x / (1 - p))[kept]).all())
    if p == 0:
        assert bool(kept.all())
    assert torch.equal(dropout(x, p, training=False), x)


@pytest.mark.parametrize(
    ("p", "error", "pattern"),
    [
        (1.0, ValueError, r"`p` must be a real number in \[0, 1\). Received: p=1.0"),
        (-0.1, ValueError, r"`p`.*Received: p=-0.1"),
        (1.5, ValueError, r"`p`.*Received: p=1.5"),
        ("0.5", TypeError, r"`p` must be a real number.*Received: p='0.5'"),
        (float("nan"), ValueError, r"`p`.*Received: p=nan"),
    ],
)
def test_bad_p_is_rejected(p, error, pattern):
    with pytest.raises(error, match=pattern):
        dropout(torch.ones(3), p)
    with pytest.raises(error, match=pattern):
        Dropout(p)


def test_bad_x_is_rejected():
    with pytest.raises(TypeError, match=r"`x` must be a torch.Tensor"):
        dropout(np.ones(3), 0.5)
    with pytest.raises(TypeError, match=r"`x` must be a floating-point tensor. Received: x with dtype"):
        dropout(torch.ones(3, dtype=torch.long), 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_the_gpu_with_a_gpu_generator():
    x = torch.ones(100_000, device="cuda", dtype=torch.float16)
    out = dropout(x, 0.5, generator=torch.Generator(device="cuda").manual_seed(0))
    assert out.device == x.device and out.dtype == torch.float16
    assert 0.49 < (out == 0).float().mean().item() < 0.51
