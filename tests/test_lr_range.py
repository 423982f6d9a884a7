"""The learning-rate range test on tiny problems: geometric rates, early stopping, restoring, the reading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dltricks.batches import TensorBatches
from dltricks.diagnostics.lr_range import LRRangeResult, lr_range_test
from dltricks.models import mlp
from dltricks.train import evaluate, fit


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads and lose much to contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def regression(n=256, features=8, seed=0):
    """Linear regression with a little noise: a loss surface whose divergence rate is known (~2/L)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    w = torch.randn(features, 1, generator=g)
    return x, x @ w + 0.1 * torch.randn(n, 1, generator=g)


def blobs(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])[y] + 0.6 * torch.randn(n, 2, generator=g), y


class Counting:
    """A re-iterable list of batches that counts how often it was iterated."""

    def __init__(self, batches):
        self.batches, self.passes = batches, 0

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        self.passes += 1
        return iter(self.batches)


def linear_setup(seed=0):
    torch.manual_seed(seed)
    x, y = regression()
    return nn.Linear(8, 1), TensorBatches(x, y, 16, seed=1)


def test_rates_are_geometric_from_start_to_end_over_one_pass():
    net, batches = linear_setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    result = lr_range_test(
        net, opt, batches, loss_fn=nn.functional.mse_loss, start_lr=1e-5, end_lr=1e-2, progress=False
    )
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) == len(batches) == 16
    assert not result.stopped_early
    assert result.lrs[0] == 1e-5
    assert result.lrs[-1] == pytest.approx(1e-2, rel=1e-12)
    ratio = (1e-2 / 1e-5) ** (1 / 15)
    for a, b in zip(result.lrs, result.lrs[1:]):
        assert b / a == pytest.approx(ratio, rel=1e-12)
    # The smoothed curve is the bias-corrected moving average: its first value is the first loss.
    assert result.smoothed[0] == pytest.approx(result.losses[0], rel=1e-12)


def test_more_steps_than_batches_iterate_the_batches_again():
    x, y = regression(64)
    data = Counting([(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)])
    net = nn.Linear(8, 1)
    result = lr_range_test(
        net,
        torch.optim.SGD(net.parameters()),
        data,
        loss_fn=nn.functional.mse_loss,
        start_lr=1e-6,
        end_lr=1e-3,
        num_steps=10,
        progress=False,
    )
    assert len(result.lrs) == 10 and data.passes == 3  # 4 + 4 + 2 batches


def test_divergence_stops_the_test_early_and_the_suggestion_is_a_stable_rate():
    net, batches = linear_setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    result = lr_range_test(
        net,
        opt,
        batches,
        loss_fn=nn.functional.mse_loss,
        start_lr=1e-3,
        end_lr=1e3,
        num_steps=60,
        smooth=0.8,
        progress=False,
    )
    assert result.stopped_early and len(result.lrs) < 60
    last = result.smoothed[-1]
    assert not math.isfinite(last) or last > 4.0 * min(result.smoothed)
    # Gradient descent on this quadratic (MSE of a linear model) diverges above 2 / L, L the largest
    # eigenvalue of its Hessian 2 X^T X / n: the test ran past that, and the suggestion stays well below.
    x, _ = regression()
    design = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    limit = 2 / torch.linalg.eigvalsh(2 * design.T @ design / len(x)).max().item()
    assert result.suggestion < limit / 2 and result.lrs[-1] > limit
    assert result.lrs[0] < result.steepest <= result.min_loss_lr


def test_a_non_finite_loss_stops_the_test_without_touching_the_weights():
    net, batches = linear_setup()
    seen = []

    def poisoned(out, target):
        seen.append([p.detach().clone() for p in net.parameters()])  # the weights this loss is computed at
        loss = nn.functional.mse_loss(out, target)
        return loss * math.nan if len(seen) == 6 else loss

    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    result = lr_range_test(
        net, opt, batches, loss_fn=poisoned, start_lr=1e-4, end_lr=1e-2, restore=False, progress=False
    )
    assert result.stopped_early and len(result.losses) == 6 and math.isnan(result.losses[-1])
    assert math.isnan(result.smoothed[-1]) and math.isfinite(result.suggestion)
    for p, q in zip(net.parameters(), seen[-1]):
        assert torch.equal(p.detach(), q)  # the NaN step was not applied


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_restore_puts_back_weights_optimizer_state_mode_loader_and_random_streams(optimizer):
    x, y = blobs(256)
    torch.manual_seed(0)
    net = mlp(2, (16,), 3, dropout=0.2)  # dropout: the test draws random numbers
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    else:
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
    batches = TensorBatches(x, y, 32, seed=2)
    fit(net, batches, opt, epochs=1, progress=False)  # a non-empty optimizer state (momentum, moments)
    net.eval()
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    state = opt.state_dict()
    moments = {i: {k: v.clone() for k, v in s.items()} for i, s in state["state"].items()}
    groups = [dict(g) for g in state["param_groups"]]
    position = batches.state_dict()
    rng = torch.get_rng_state()

    result = lr_range_test(net, opt, batches, start_lr=1e-3, end_lr=10.0, num_steps=12, progress=False)
    assert len(result.lrs) >= 2
    for k, v in net.state_dict().items():
        assert torch.equal(v, weights[k]), k  # bit for bit
    after = opt.state_dict()
    assert after["param_groups"] == groups  # the learning rate too
    assert set(after["state"]) == set(moments) and moments
    for i, s in after["state"].items():
        for k, v in s.items():
            assert torch.equal(v, moments[i][k]), (i, k)
    assert not net.training
    assert batches.state_dict() == position
    assert torch.equal(torch.get_rng_state(), rng)

    lr_range_test(net, opt, batches, start_lr=1e-3, end_lr=10.0, num_steps=12, restore=False, progress=False)
    assert not torch.equal(net.state_dict()["1.weight"], weights["1.weight"])


def test_restore_of_a_fresh_adam_leaves_it_fresh():
    net, batches = linear_setup()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    lr_range_test(net, opt, batches, loss_fn=nn.functional.mse_loss, progress=False)
    assert opt.state_dict()["state"] == {} and opt.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.Adam])
def test_training_at_the_suggestion_decreases_the_loss(optimizer):
    x, y = blobs(256)
    torch.manual_seed(0)
    net = mlp(2, (16,), 3)
    batches = TensorBatches(x, y, 8, seed=1)
    opt = optimizer(net.parameters(), lr=1.0)
    result = lr_range_test(net, opt, batches, start_lr=1e-4, end_lr=100.0, smooth=0.9, progress=False)
    assert isinstance(result, LRRangeResult)
    assert result.stopped_early  # 32 steps up to rate 100 blow up a network on this problem
    k = min(range(len(result.smoothed)), key=lambda i: result.smoothed[i])
    assert result.min_loss_lr == result.lrs[k]
    assert result.suggestion == result.min_loss_lr / 10 < result.min_loss_lr
    assert result.lrs[0] <= result.steepest <= result.min_loss_lr
    for group in opt.param_groups:
        group["lr"] = result.suggestion
    before = evaluate(net, batches.in_order())["loss"]  # the weights are those before the test
    history = fit(net, batches, opt, epochs=2, eval_train=True, progress=False)
    assert all(math.isfinite(v) for v in history["loss"])
    assert history["train_loss"][-1] < 0.3 * before
    assert history["train_loss"][-1] < history["train_loss"][0]


def test_a_loss_that_never_decreases_warns_that_start_lr_is_too_high():
    net, batches = linear_setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="lowest at the first step"):
        result = lr_range_test(
            net,
            opt,
            batches,
            loss_fn=nn.functional.mse_loss,
            start_lr=10.0,
            end_lr=1e4,
            smooth=0.0,
            progress=False,
        )
    assert result.min_loss_lr == 10.0 and result.stopped_early


def test_a_loss_that_is_never_finite_gives_no_reading():
    net, batches = linear_setup()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="not finite from the first step"):
        result = lr_range_test(net, opt, batches, loss_fn=lambda out, y: out.sum() * math.inf, progress=False)
    assert len(result.lrs) == 1 and result.stopped_early
    assert math.isnan(result.suggestion) and math.isnan(result.min_loss_lr) and math.isnan(result.steepest)


def test_plot_draws_a_log_x_curve():
    plt = pytest.importorskip("matplotlib.pyplot")
    result = LRRangeResult(
        lrs=[1e-3, 1e-2, 1e-1, 1.0],
        losses=[1.0, 0.8, 0.5, float("nan")],
        smoothed=[1.0, 0.9, 0.7, float("nan")],
        stopped_early=True,
        suggestion=0.01,
        min_loss_lr=0.1,
        steepest=0.1,
    )
    fig, ax = plt.subplots()
    try:
        assert result.plot(ax) is ax
        assert ax.get_xscale() == "log"
        assert len(ax.lines) == 4  # raw, smoothed, and the two markers
    finally:
        plt.close(fig)


def _bad_setup():
    net = nn.Linear(8, 1)
    x, y = regression(32)
    return net, torch.optim.SGD(net.parameters()), TensorBatches(x, y, 16)


BAD = [
    (
        {"start_lr": 1.0, "end_lr": 1.0},
        ValueError,
        r"`end_lr` must be greater than start_lr=1.0. Received: end_lr=1.0",
    ),
    ({"start_lr": 1.0, "end_lr": 0.1}, ValueError, r"`end_lr` must be greater.*Received: end_lr=0.1"),
    ({"start_lr": 0.0}, ValueError, r"`start_lr`.*Received: start_lr=0.0"),
    ({"smooth": 1.0}, ValueError, r"`smooth` must be a real number in \[0, 1\). Received: smooth=1.0"),
    ({"smooth": -0.1}, ValueError, r"`smooth`.*Received: smooth=-0.1"),
    ({"num_steps": 1}, ValueError, r"`num_steps` must be an integer >= 2. Received: num_steps=1"),
    ({"num_steps": 2.5}, TypeError, r"`num_steps`.*Received: num_steps=2.5"),
    ({"diverge_factor": 1.0}, ValueError, r"`diverge_factor`.*Received: diverge_factor=1.0"),
    ({"device": "tpu"}, ValueError, r"`device` must be one of"),
    ({"batches": []}, ValueError, r"`batches` must be a non-empty iterable.*Received: batches=\[\]"),
    ({"batches": [], "num_steps": 5}, ValueError, r"`batches` must be a non-empty iterable"),
    (
        {"batches": iter([]), "num_steps": None},
        TypeError,
        r"`num_steps` must be given when `batches` has no len",
    ),
    ({"batches": [(torch.ones(2, 8), torch.ones(2, 1))]}, ValueError, r"`num_steps` must be given \(>= 2\)"),
    ({"model": "net"}, TypeError, r"`model` must be a torch.nn.Module. Received: model='net'"),
    ({"optimizer": None}, TypeError, r"`optimizer` must be a torch.optim.Optimizer"),
]


@pytest.mark.parametrize(("kwargs", "error", "pattern"), BAD, ids=[c[2][:40] for c in BAD])
def test_bad_arguments_are_rejected(kwargs, error, pattern):
    net, opt, batches = _bad_setup()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    args = {"model": net, "optimizer": opt, "batches": batches, "loss_fn": nn.functional.mse_loss} | kwargs
    model, optimizer, data = args.pop("model"), args.pop("optimizer"), args.pop("batches")
    with pytest.raises(error, match=pattern):
        lr_range_test(model, optimizer, data, progress=False, **args)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
