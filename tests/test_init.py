"""Variance-scaling initializers: the fans, the variances, the bounds, parity with torch.nn.init and Keras."""

from __future__ import annotations

import functools
import importlib.util
import math

import numpy as np
import pytest
import torch
from torch import nn

from dltricks.init import (
    TRUNCATED_NORMAL_STD,
    fans,
    glorot_normal_,
    glorot_uniform_,
    he_normal_,
    he_uniform_,
    init_model_,
    lecun_normal_,
    lecun_uniform_,
    variance_scaling_,
)

HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_SCIPY = importlib.util.find_spec("scipy") is not None
SHAPE = (500, 400)  # (out, in): fan_in 400, fan_out 500, fan_avg 450; 2e5 draws
# The sample standard deviation of n draws has relative standard error sqrt((kurtosis - 1) / (4 n)):
# 1.6e-3 for the normal (kurtosis 3), smaller for the truncated normal (2.37) and uniform (1.8). A 1%
# tolerance is more than 6 standard errors (a false alarm has probability < 1e-9), while a wrong fan (>= 5%
# off in std here) or a missing truncation correction (12% off) cannot pass it.
RTOL_STD = 0.01


def _draw(init, shape=SHAPE, seed=0, **kwargs):
    w = torch.empty(shape, dtype=torch.float64)
    return init(w, generator=torch.Generator().manual_seed(seed), **kwargs)


def test_fans_of_linear_and_conv_layouts():
    assert fans(torch.empty(3, 5)) == (5, 3)
    assert fans((8, 4, 3, 3)) == (4 * 9, 8 * 9)
    assert fans(torch.Size([6, 2, 5])) == (10, 30)
    assert fans(nn.Conv3d(2, 7, kernel_size=(1, 2, 3)).weight) == (2 * 6, 7 * 6)
    # The same layer read in Keras' layouts: Dense (in, out), Conv2D (kh, kw, in, out).
    for layer in (nn.Linear(5, 3), nn.Conv2d(4, 8, 3)):
        assert fans(layer.weight) == torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)


@pytest.mark.parametrize(
    ("init", "scale", "fan", "kind"),
    [
        (glorot_uniform_, 1.0, 450, "uniform"),
        (glorot_normal_, 1.0, 450, "truncated_normal"),
        (he_normal_, 2.0, 400, "truncated_normal"),
        (he_uniform_, 2.0, 400, "uniform"),
        (lecun_normal_, 1.0, 400, "truncated_normal"),
        (lecun_uniform_, 1.0, 400, "uniform"),
        (
            functools.partial(variance_scaling_, scale=3.0, mode="fan_out", distribution="normal"),
            3.0,
            500,
            "n",
        ),
    ],
)
def test_named_initializers_have_variance_scale_over_fan_and_their_bounds(init, scale, fan, kind):
    w = _draw(init)
    std = math.sqrt(scale / fan)
    assert abs(w.std().item() / std - 1) < RTOL_STD
    assert abs(w.mean().item()) < 5 * std / math.sqrt(w.numel())  # five standard errors of the mean
    bound = {"uniform": math.sqrt(3) * std, "truncated_normal": 2 * std / TRUNCATED_NORMAL_STD}.get(kind)
    if bound is not None:
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.999 * bound  # the bound is reached: the support is not narrower


def test_truncation_constant_is_the_std_of_a_standard_normal_cut_at_two():
    phi2 = math.exp(-2) / math.sqrt(2 * math.pi)
    mass = math.erf(2 / math.sqrt(2))
    assert math.sqrt(1 - 4 * phi2 / mass) == pytest.approx(TRUNCATED_NORMAL_STD, rel=1e-15)


def test_torch_trunc_normal_does_not_correct_the_std_but_ours_does():
    gen = torch.Generator().manual_seed(0)
    target = 0.05
    theirs = nn.init.trunc_normal_(torch.empty(SHAPE), std=target, a=-2 * target, b=2 * target, generator=gen)
    ours = _draw(functools.partial(variance_scaling_, scale=target**2 * 400))  # fan_in 400: std 0.05
    assert abs(theirs.std().item() / (target * TRUNCATED_NORMAL_STD) - 1) < RTOL_STD
    assert abs(ours.std().item() / target - 1) < RTOL_STD
    # And its default bounds are absolute: std=0.02 with a=-2, b=2 truncates nothing.
    loose = nn.init.trunc_normal_(torch.empty(SHAPE), std=0.02, generator=gen)
    assert loose.abs().max().item() > 4 * 0.02


def test_generator_makes_draws_reproducible():
    assert torch.equal(_draw(he_normal_, (30, 20), seed=3), _draw(he_normal_, (30, 20), seed=3))
    assert not torch.equal(_draw(he_normal_, (30, 20), seed=3), _draw(he_normal_, (30, 20), seed=4))


def _same_distribution(ours, theirs):
    """Two-sample Kolmogorov-Smirnov test when scipy is there (p > 1e-3); std within 2%; and for bounded
    distributions (uniform, truncated normal) the largest |w| within 2%, as both sit just under the bound.
    The largest draw of a plain normal is too variable to compare, so it is left out there."""
    ours, theirs = np.asarray(ours, dtype=np.float64).ravel(), np.asarray(theirs, dtype=np.float64).ravel()
    if HAS_SCIPY:
        from scipy.stats import ks_2samp

        assert ks_2samp(ours, theirs).pvalue > 1e-3
    assert abs(ours.std() / theirs.std() - 1) < 2 * RTOL_STD  # two independent estimates, each within 1%
    kurtosis = np.mean(theirs**4) / np.mean(theirs**2) ** 2  # 3 for the normal, 2.37 truncated, 1.8 uniform
    if kurtosis < 2.7:
        assert abs(np.abs(ours).max() / np.abs(theirs).max() - 1) < 2 * RTOL_STD


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (glorot_uniform_, nn.init.xavier_uniform_),
        (he_uniform_, functools.partial(nn.init.kaiming_uniform_, nonlinearity="relu")),
        (
            functools.partial(variance_scaling_, scale=2.0, distribution="normal"),
            functools.partial(nn.init.kaiming_normal_, nonlinearity="relu"),
        ),
        (
            functools.partial(variance_scaling_, scale=1.0, mode="fan_avg", distribution="normal"),
            nn.init.xavier_normal_,
        ),
    ],
)
def test_parity_with_torch_nn_init(ours, theirs):
    shape = (300, 200)
    w_ours = _draw(ours, shape, seed=1)
    w_theirs = theirs(torch.empty(shape, dtype=torch.float64), generator=torch.Generator().manual_seed(2))
    _same_distribution(w_ours, w_theirs)


@pytest.mark.keras
@pytest.mark.skipif(not HAS_TF, reason="TensorFlow is not installed")
@pytest.mark.parametrize(
    ("ours", "keras_name", "kwargs"),
    [
        (glorot_uniform_, "GlorotUniform", {}),
        (glorot_normal_, "GlorotNormal", {}),
        (he_normal_, "HeNormal", {}),
        (lecun_normal_, "LecunNormal", {}),
        (
            functools.partial(variance_scaling_, scale=0.5, mode="fan_out", distribution="uniform"),
            "VarianceScaling",
            {"scale": 0.5, "mode": "fan_out", "distribution": "uniform"},
        ),
        (
            functools.partial(variance_scaling_, scale=3.0, mode="fan_avg", distribution="truncated_normal"),
            "VarianceScaling",
            {"scale": 3.0, "mode": "fan_avg", "distribution": "truncated_normal"},
        ),
        (
            functools.partial(variance_scaling_, scale=2.0, distribution="normal"),
            "VarianceScaling",
            {"scale": 2.0, "distribution": "untruncated_normal"},
        ),
    ],
)
def test_parity_with_keras_on_the_transposed_shape(ours, keras_name, kwargs):
    import keras

    out, in_ = 300, 200
    theirs = getattr(keras.initializers, keras_name)(seed=0, **kwargs)(shape=(in_, out))  # Keras: (in, out)
    _same_distribution(_draw(ours, (out, in_)), keras.ops.convert_to_numpy(theirs))


@pytest.mark.keras
@pytest.mark.skipif(not HAS_TF, reason="TensorFlow is not installed")
def test_keras_reads_normal_as_truncated_but_we_do_not():
    import keras

    theirs = keras.ops.convert_to_numpy(
        keras.initializers.VarianceScaling(distribution="normal", seed=0)((400, 300))
    )
    std = math.sqrt(1 / 400)  # Keras fan_in is the first axis
    assert np.abs(theirs).max() <= 2 * std / TRUNCATED_NORMAL_STD * (1 + 1e-6)
    ours = _draw(functools.partial(variance_scaling_, distribution="normal"), (300, 400))
    assert ours.abs().max().item() > 3 * std


def test_conv_weight_uses_the_receptive_field():
    w = _draw(he_normal_, (64, 32, 5, 5))
    assert abs(w.std().item() / math.sqrt(2 / (32 * 25)) - 1) < RTOL_STD  # 51 200 draws: 3.5 std errors
    w = _draw(functools.partial(variance_scaling_, mode="fan_out", distribution="uniform"), (64, 32, 5, 5))
    assert w.abs().max().item() <= math.sqrt(3 / (64 * 25))


def test_init_model_sets_every_kernel_and_bias_and_leaves_other_layers():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 2)
    )
    bn_before = model[1].weight.clone()
    seen = []
    assert init_model_(model, lambda w: seen.append(tuple(w.shape)) or nn.init.ones_(w), bias=0.5) is model
    assert seen == [(8, 3, 3, 3), (4, 8), (2, 4)]
    for layer in (model[0], model[3], model[4]):
        assert bool((layer.weight == 1).all()) and bool((layer.bias == 0.5).all())
        assert layer.weight.requires_grad  # still a trainable leaf
    assert torch.equal(model[1].weight, bn_before)
    bias = model[3].bias.clone()
    init_model_(model, he_normal_, bias=None)
    assert torch.equal(model[3].bias, bias)


def test_empty_tensor_is_a_no_op():
    w = torch.empty(0, 5)
    assert he_normal_(w) is w


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda: fans(torch.empty(5)),
            ValueError,
            r"`tensor_or_shape.shape`.*bias has no fan.*Received: .*=\(5,\)",
        ),
        (lambda: fans(()), ValueError, r"`tensor_or_shape`.*Received: tensor_or_shape=\(\)"),
        (lambda: fans((3, -1)), ValueError, r"`tensor_or_shape`.*Received: tensor_or_shape=\(3, -1\)"),
        (lambda: fans("ab"), TypeError, r"`tensor_or_shape`.*Received: tensor_or_shape='ab'"),
        (
            lambda: he_normal_(torch.empty(5)),
            ValueError,
            r"`tensor.shape`.*bias has no fan.*Received: tensor.shape=\(5,\)",
        ),
        (lambda: variance_scaling_(torch.empty(2, 2), 0), ValueError, r"`scale`.*Received: scale=0"),
        (lambda: variance_scaling_(torch.empty(2, 2), -1.0), ValueError, r"`scale`.*Received: scale=-1.0"),
        (
            lambda: variance_scaling_(torch.empty(2, 2), mode="avg"),
            ValueError,
            r"`mode`.*Received: mode='avg'",
        ),
        (
            lambda: variance_scaling_(torch.empty(2, 2), distribution="gauss"),
            ValueError,
            r"`distribution`.*Received: distribution='gauss'",
        ),
        (lambda: variance_scaling_([[1.0]]), TypeError, r"`tensor`.*Received: tensor=\[\[1.0\]\]"),
        (
            lambda: he_normal_(torch.empty(2, 2), generator=0),
            TypeError,
            r"`generator`.*Received: generator=0",
        ),
        (lambda: init_model_(nn.Linear(2, 2), "he"), TypeError, r"`kernel_init`.*Received: kernel_init='he'"),
        (lambda: init_model_("m", he_normal_), TypeError, r"`model`.*Received: model='m'"),
        (
            lambda: init_model_(nn.Linear(2, 2), he_normal_, bias="0"),
            TypeError,
            r"`bias`.*Received: bias='0'",
        ),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
