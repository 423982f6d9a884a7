"""Gradient norms per layer and activation statistics: numbers by hand, vanishing gradients, dead ReLUs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dltricks.diagnostics.hooks import ActivationStats, GradientNormRecorder, layer_gradient_norms
from dltricks.train import fit


def _hand_net():
    """Linear(2, 2) -> ReLU -> Linear(2, 1) with small integer weights: every number can be done by hand."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 2.0]]))
        net[2].weight.copy_(torch.tensor([[1.0, 3.0]]))
        net[0].bias.zero_(), net[2].bias.zero_()
    return net


X = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
Y = torch.tensor([[0.0]], dtype=torch.float64)


def test_gradient_norms_by_hand():
    # h = W1 x = [-1, 4.5], relu -> [0, 4.5], out = 1 * 0 + 3 * 4.5 = 13.5, loss = 13.5^2, dL/dout = 27.
    # dL/dW2 = 27 * [0, 4.5] -> norm 121.5; dL/dh = 27 * [1, 3] masked by relu' = [0, 1] -> [0, 81];
    # dL/dW1 = [0, 81]^T [1, 2] = [[0, 0], [81, 162]] -> norm 81 sqrt(5).
    norms = layer_gradient_norms(_hand_net(), X, Y, loss_fn=nn.functional.mse_loss)
    assert [name for name, _ in norms] == ["0", "2"]
    assert norms[0][1] == pytest.approx(81 * math.sqrt(5), rel=1e-12)
    assert norms[1][1] == pytest.approx(121.5, rel=1e-12)


def test_activation_stats_by_hand():
    net = _hand_net()
    with ActivationStats(net) as stats:
        net(X)
    # The ReLU outputs [0, 4.5]: mean 2.25, population std 2.25, half zeros, unit 0 never positive.
    assert stats.summary() == [
        {"layer": "1", "kind": "ReLU", "mean": 2.25, "std": 2.25, "saturated": 0.0, "zeros": 0.5, "dead": 0.5}
    ]


def test_grads_are_left_as_they_were():
    net = _hand_net()
    layer_gradient_norms(net, X, Y, loss_fn=nn.functional.mse_loss)
    assert all(p.grad is None for p in net.parameters())  # a fresh model stays without gradients
    marker = torch.full((2, 2), 7.0, dtype=torch.float64)
    net[0].weight.grad = marker
    layer_gradient_norms(net, X, Y, loss_fn=nn.functional.mse_loss)
    assert net[0].weight.grad is marker and net[2].weight.grad is None


def _deep(activation, depth=10, width=64, std=1.0, seed=0):
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(depth):
        linear = nn.Linear(20 if i == 0 else width, 5 if i == depth - 1 else width)
        nn.init.normal_(linear.weight, 0.0, std)
        nn.init.zeros_(linear.bias)
        layers += [linear] + ([activation()] if i < depth - 1 else [])
    return nn.Sequential(*layers)


def test_deep_sigmoid_net_with_unit_normal_weights_has_vanishing_gradients_and_saturates():
    net = _deep(nn.Sigmoid)
    x, y = torch.randn(128, 20, generator=torch.Generator().manual_seed(1)), torch.arange(128) % 5
    norms = [n for _, n in layer_gradient_norms(net, x, y)]
    assert len(norms) == 10
    # Each sigmoid multiplies the back-propagated signal by sigma' <= 1/4, most of it near 0 when saturated.
    # Measured: about 0.12 at the first layer and 4 at the last (a factor ~35); 10x is a safe margin.
    assert norms[0] < norms[-1] / 10
    with ActivationStats(net) as stats:
        net(x)
    assert all(row["saturated"] > 0.2 for row in stats.summary())  # N(0, 1) weights, fan-in 64: |z| ~ 4


def test_relu_with_a_negative_bias_has_dead_units():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 3))
    with torch.no_grad():
        net[0].bias[:20] = -100.0  # |w x| < 100 for these inputs: these 20 units never fire
    with ActivationStats(net) as stats:
        for seed in range(3):  # accumulated over several batches: dead means never positive in any of them
            net(torch.randn(64, 10, generator=torch.Generator().manual_seed(seed)))
    row = stats.summary()[0]
    assert row["dead"] == pytest.approx(20 / 50)
    assert row["zeros"] >= 20 / 50 and row["saturated"] == 0.0
    # The other 30 units (bias about 0) each see 192 examples: never positive has probability 2^-192.


def test_statistics_accumulated_over_calls_equal_those_of_the_concatenated_batch():
    # float64, so that the split and whole forward passes give the same activations up to rounding.
    net = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.Sigmoid()).double()
    gen = torch.Generator().manual_seed(3)
    batches = [3 * torch.randn(n, 4, generator=gen, dtype=torch.float64) for n in (5, 17, 2)]
    with ActivationStats(net) as split:
        for b in batches:
            net(b)
    with ActivationStats(net) as whole:
        net(torch.cat(batches))
    for a, b in zip(split.summary(), whole.summary()):
        assert a.keys() == b.keys() and a["layer"] == b["layer"] and a["kind"] == b["kind"]
        for key in ("mean", "std", "saturated", "zeros", "dead"):
            assert a[key] == pytest.approx(
                b[key], rel=1e-12, abs=1e-15
            )  # Chan's merge is exact up to rounding
    # and match a direct computation on the tanh outputs
    out = torch.tanh(net[0](torch.cat(batches)))
    tanh = whole.summary()[0]
    assert tanh["mean"] == pytest.approx(out.mean().item(), rel=1e-12)
    assert tanh["std"] == pytest.approx(out.std(correction=0).item(), rel=1e-12)
    assert tanh["saturated"] == pytest.approx((out.abs() > 0.99).double().mean().item(), abs=1e-15)


def test_hooks_are_removed_on_exit_even_after_an_error():
    net = _hand_net()
    with ActivationStats(net, modules=(nn.ReLU, nn.Linear)) as stats:
        assert all(len(m._forward_hooks) == 1 for m in net)
    assert all(len(m._forward_hooks) == 0 for m in net)
    with pytest.raises(RuntimeError), ActivationStats(net):
        net(torch.ones(1, 3, dtype=torch.float64))  # wrong width
    assert all(len(m._forward_hooks) == 0 for m in net)
    assert stats.summary() == []  # nothing ran inside the first block
    layer_gradient_norms(net, X, Y, loss_fn=nn.functional.mse_loss)
    assert all(len(m._forward_hooks) == 0 for m in net)


class _SmallCNN(nn.Module):
    """Layers defined in an order different from the one forward uses them in."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8 * 4 * 4, 3)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = nn.functional.max_pool2d(self.act1(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(self.act2(self.conv2(x)), 2)
        return self.head(x.flatten(1))


def test_cnn_layers_come_in_forward_order_and_channels_are_units():
    torch.manual_seed(0)
    net = _SmallCNN()
    with torch.no_grad():
        net.conv1.bias[:2] = -50.0  # channels 0 and 1 of conv1 never fire
    x, y = torch.randn(6, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2])
    norms = layer_gradient_norms(net, x, y)
    assert [name for name, _ in norms] == ["conv1", "conv2", "head"]
    assert all(n > 0 for _, n in norms)
    with ActivationStats(net) as stats:
        net(x)
    rows = stats.summary()
    assert [r["layer"] for r in rows] == ["act1", "act2"]
    assert rows[0]["dead"] == pytest.approx(2 / 4)


def test_recorder_in_fit_matches_layer_gradient_norms_on_the_first_step():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    data = [(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
    net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    expected = dict(layer_gradient_norms(copy.deepcopy(net), *data[0]))
    recorder = GradientNormRecorder(every=3)
    fit(net, data, torch.optim.SGD(net.parameters(), lr=0.1), epochs=2, callbacks=[recorder], progress=False)
    assert recorder.steps == [1, 4, 7]
    assert len(recorder.history) == 3 and list(recorder.history[0]) == ["0", "2", "4"]
    for name, value in expected.items():
        assert recorder.history[0][name] == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: layer_gradient_norms("net", X, Y), TypeError, r"`model`.*Received: model='net'"),
        (lambda: layer_gradient_norms(_hand_net(), [[1.0]], Y), TypeError, r"`x`.*Received: x=\[\[1.0\]\]"),
        (lambda: layer_gradient_norms(_hand_net(), X, 0), TypeError, r"`y`.*Received: y=0"),
        (lambda: layer_gradient_norms(_hand_net(), X, Y, loss_fn="mse"), TypeError, r"`loss_fn`.*='mse'"),
        (
            lambda: layer_gradient_norms(nn.ReLU(), X, Y),
            ValueError,
            r"`model`.*nn.Linear.*Received: model='ReLU'",
        ),
        (lambda: ActivationStats(nn.Linear(2, 2)), ValueError, r"`model`.*containing a module of type"),
        (lambda: ActivationStats(_hand_net(), modules=("ReLU",)), TypeError, r"`modules`.*=\('ReLU',\)"),
        (lambda: ActivationStats(_hand_net(), modules=()), TypeError, r"`modules`.*Received: modules=\(\)"),
        (lambda: ActivationStats(None), TypeError, r"`model`.*Received: model=None"),
        (lambda: GradientNormRecorder(every=0), ValueError, r"`every`.*Received: every=0"),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
