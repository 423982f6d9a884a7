"""The reference networks: shapes, the three deep_mlp variants, and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dltricks import init as vs
from dltricks.layers import BatchNorm, Residual
from dltricks.models import deep_mlp, mlp


def test_mlp_shapes():
    model = mlp(hidden=(32, 16))
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_deep_mlp_counts_one_weight_matrix_per_hidden_layer():
    for kw in ({}, {"batch_norm": True}, {"residual": True}):
        model = deep_mlp(width=8, depth=6, **kw)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert len(linears) == 6 + 1, kw  # hidden layers + output
        assert model(torch.randn(4, 784)).shape == (4, 10)
        assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    assert sum(isinstance(m, BatchNorm) for m in deep_mlp(depth=6, batch_norm=True).modules()) == 6
    assert sum(isinstance(m, Residual) for m in deep_mlp(depth=6, residual=True).modules()) == 5


def test_kernel_init_is_applied_and_residual_branches_are_scaled():
    torch.manual_seed(0)
    plain = deep_mlp(width=400, depth=4, kernel_init=vs.he_normal_)
    w = plain[3].weight  # second hidden layer: 400 -> 400
    assert w.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    torch.manual_seed(0)
    res = deep_mlp(width=400, depth=4, kernel_init=vs.he_normal_, residual=True)
    branch = res[3].body[1].weight
    assert branch.std().item() == pytest.approx(math.sqrt(2 / 400) / math.sqrt(4), rel=0.02)


def test_residual_forward_variance_stays_bounded_at_depth():
    torch.manual_seed(0)
    model = deep_mlp(width=256, depth=50, kernel_init=vs.he_normal_, residual=True)
    x = torch.randn(512, 784)
    with torch.no_grad():
        h = model[:-2](x)  # the residual stream before the final activation and output layer
        first = model[:3](x)
    # (1 + 2/L)^L < e^2: the second moment grows by less than e^2 over 49 blocks (about 5 measured), where
    # unscaled blocks would multiply it by at least 2^49.
    assert 1.0 < (h.pow(2).mean() / first.pow(2).mean()).item() < math.e**2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"depth": 0}, ValueError, "depth=0"),
        ({"width": 1.5}, TypeError, "width=1.5"),
        ({"kernel_init": "he"}, TypeError, "kernel_init='he'"),
        ({"batch_norm": True, "residual": True}, ValueError, "residual=True"),
    ],
)
def test_deep_mlp_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        deep_mlp(**kwargs)
