"""MC dropout: only dropout is stochastic, batch norm stays frozen, flags and the global RNG are restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltricks.dropout import Dropout
from dltricks.mc_dropout import MCPrediction, mc_dropout_predict

X = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))


def _net(drop: nn.Module | None = None, *, batch_norm: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(6, 32)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(32))
    layers.append(nn.ReLU())
    if drop is not None:
        layers.append(drop)
    layers.append(nn.Linear(32, 3))
    return nn.Sequential(*layers)


def test_without_dropout_modules_the_prediction_is_refused():
    """No dropout module: every pass would agree and the spread would read as certainty (issue 16)."""
    with pytest.raises(ValueError, match=r"`model` must be a module containing dropout modules"):
        mc_dropout_predict(_net(batch_norm=True).eval(), X, passes=5)


def test_with_zero_rate_dropout_the_passes_agree_with_the_deterministic_prediction():
    net = _net(nn.Dropout(0.0), batch_norm=True).eval()
    pred = mc_dropout_predict(net, X, passes=5, batch_size=16)
    assert isinstance(pred, MCPrediction) and pred.passes == 5
    assert pred.mean.shape == pred.std.shape == (50, 3)
    assert bool((pred.std == 0).all())
    with torch.no_grad():
        expected = net(X).softmax(dim=1)
    # Chunking changes nothing in eval mode, up to float32 summation order.
    torch.testing.assert_close(pred.mean, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("drop", [nn.Dropout(0.5), Dropout(0.5), nn.AlphaDropout(0.3)], ids=type)
def test_with_dropout_the_passes_vary(drop):
    net = _net(drop).eval()
    pred = mc_dropout_predict(net, X, passes=20, generator_seed=0)
    with torch.no_grad():
        deterministic = net(X).softmax(dim=1)
    assert bool((pred.std > 0).all())
    assert (pred.mean - deterministic).abs().max() > 1e-3
    torch.testing.assert_close(pred.mean.sum(dim=1), torch.ones(50))
    assert not net.training and not drop.training  # restored


def test_batch_norm_stays_in_eval_mode_and_flags_are_restored():
    net = _net(nn.Dropout(0.5), batch_norm=True)
    # Mixed flags: the model in training mode except the last layer, to see each one restored as it was.
    net.train()
    net[-1].eval()
    before = {name: m.training for name, m in net.named_modules()}
    bn = net[1]
    stats = [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]
    pred = mc_dropout_predict(net, X, passes=10, batch_size=7, generator_seed=1)
    assert bool((pred.std > 0).any())
    for old, new in zip(stats, [bn.running_mean, bn.running_var, bn.num_batches_tracked]):
        assert torch.equal(old, new)
    assert {name: m.training for name, m in net.named_modules()} == before


def test_flags_are_restored_when_the_forward_pass_raises():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    net = nn.Sequential(nn.Linear(6, 4), nn.Dropout(0.5), Boom()).train()
    with pytest.raises(RuntimeError, match="boom"):
        mc_dropout_predict(net, X, passes=2)
    assert all(m.training for m in net.modules())
    net.eval()
    with pytest.raises(RuntimeError, match="boom"):
        mc_dropout_predict(net, X, passes=2)
    assert not any(m.training for m in net.modules())


def test_one_pass_has_zero_std():
    pred = mc_dropout_predict(_net(nn.Dropout(0.5)), X, passes=1)
    assert pred.passes == 1 and bool((pred.std == 0).all())


def test_generator_seed_is_reproducible_and_leaves_the_global_rng_alone():
    net = _net(nn.Dropout(0.5))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = mc_dropout_predict(net, X, passes=8, batch_size=13, generator_seed=7)
    b = mc_dropout_predict(net, X, passes=8, batch_size=13, generator_seed=7)
    c = mc_dropout_predict(net, X, passes=8, batch_size=13, generator_seed=8)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    assert not torch.equal(a.mean, c.mean)


def test_std_is_the_spread_of_the_passes():
    # Recompute by hand with the same seed: T passes in training mode for dropout only, softmax, then the
    # population standard deviation over the passes.
    net = _net(nn.Dropout(0.5))
    pred = mc_dropout_predict(net, X, passes=6, batch_size=100, generator_seed=3)
    torch.manual_seed(3)
    net.eval()
    net[2].train()
    with torch.no_grad():
        probs = torch.stack([net(X).softmax(dim=1) for _ in range(6)])
    torch.testing.assert_close(pred.mean, probs.mean(dim=0))
    torch.testing.assert_close(pred.std, probs.std(dim=0, correction=0))


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"passes": 0}, ValueError, r"`passes` must be an integer >= 1. Received: passes=0"),
        ({"batch_size": 0}, ValueError, r"`batch_size` must be an integer >= 1. Received: batch_size=0"),
        ({"passes": 2.5}, TypeError, r"`passes`.*Received: passes=2.5"),
        ({"generator_seed": "1"}, TypeError, r"`generator_seed`.*Received: generator_seed='1'"),
        ({"device": "tpu"}, ValueError, r"`device`.*Received: device='tpu'"),
        ({"x": torch.zeros(0, 6)}, ValueError, r"`x` must hold at least one example"),
        ({"model": "net"}, TypeError, r"`model` must be a torch.nn.Module. Received: model='net'"),
    ],
)
def test_bad_input_is_rejected(kwargs, error, pattern):
    args = {"model": _net(), "x": X} | kwargs
    with pytest.raises(error, match=pattern):
        mc_dropout_predict(args.pop("model"), args.pop("x"), **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_runs_on_the_gpu_and_returns_cpu_tensors():
    net = _net(nn.Dropout(0.5)).cuda()
    state = torch.cuda.get_rng_state()
    a = mc_dropout_predict(net, X, passes=4, device="cuda", generator_seed=0)
    b = mc_dropout_predict(net, X, passes=4, device="cuda", generator_seed=0)
    assert a.mean.device.type == "cpu" and torch.equal(a.mean, b.mean)
    assert torch.equal(torch.cuda.get_rng_state(), state)
