"""Overfit one batch (dltricks.diagnostics.overfit): sound models pass, broken ones fail, no trace is left.

All batches hold 32 examples with random labels over 10 classes: a network that can fit them has shown
that gradients reach it and that it can represent the targets.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dltricks.diagnostics.overfit import OverfitReport, overfit_one_batch
from dltricks.models import mlp


def _batch(seed=0, n=32, d=20, classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, classes, (n,), generator=g)


class ConstantLogits(nn.Module):
    """Ignores its input: the logits are a learnable vector broadcast over the batch."""

    def __init__(self, classes=10):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(classes))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)


class Bottleneck(nn.Module):
    """20 -> 64 -> 8 -> 10; with ``bug=True`` a ``detach`` cuts the gradient to everything but the head."""

    def __init__(self, bug):
        super().__init__()
        self.bug = bug
        self.body = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 8), nn.ReLU())
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        h = self.body(x)
        return self.head(h.detach() if self.bug else h)


def test_a_reasonable_mlp_fits_random_labels_with_the_defaults():
    x, y = _batch()
    torch.manual_seed(0)
    model = mlp(20, (64, 64), 10)
    report = overfit_one_batch(model, x, y)  # Adam, lr 1e-3, up to 500 steps
    assert report.passed and report.final_loss <= 1e-2 and report.final_accuracy == 1.0
    assert 0 < report.steps < 500 and len(report.losses) == report.steps + 1
    assert report.losses[-1] <= 1e-2 < report.losses[0]
    assert report.initial_loss == pytest.approx(math.log(10), rel=0.2)  # near chance at initialization
    text = str(report)
    assert text.startswith(f"passed: loss {report.initial_loss:.3g} → ") and "batch accuracy 100%" in text
    assert f"in {report.steps} steps" in text
    # restore=True put the initial weights back, so a shorter run retraces the same losses; stopped where
    # the loss has fallen 10x but not to the target, the verdict blames the budget rather than the model.
    k = next(i for i, v in enumerate(report.losses) if v < 0.1 * report.initial_loss)
    short = overfit_one_batch(model, x, y, max_steps=k)
    assert short.losses == report.losses[: k + 1] and not short.passed
    assert "fell 10x but not to the target — allow more steps" in str(short)


def test_a_model_that_ignores_its_input_fails():
    x, y = _batch()
    model = ConstantLogits()
    report = overfit_one_batch(
        model, x, y, optimizer=torch.optim.Adam(model.parameters(), lr=0.05), max_steps=200
    )
    assert not report.passed and report.steps == 200 and report.reason is None
    # The best constant prediction is the label frequencies, with loss their entropy: the optimizer found it,
    # and the failure is the model's, not the training's.
    freq = torch.bincount(y, minlength=10).double() / len(y)
    entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum().item()
    assert entropy - 1e-6 <= report.final_loss < entropy + 1e-2
    assert str(report).startswith("FAILED: ") and "cannot fit one batch" in str(report)


def test_a_detach_that_cuts_the_gradient_is_caught():
    x, y = _batch()
    reports = {}
    for bug in (True, False):
        torch.manual_seed(1)
        model = Bottleneck(bug)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        reports[bug] = overfit_one_batch(model, x, y, optimizer=opt, max_steps=300)
    # Only the 8 -> 10 head learns, on 8 fixed random features: it cannot separate 32 random labels ...
    assert not reports[True].passed and reports[True].final_loss > 0.5
    # ... while the same network with the gradient flowing fits them: the detach is what fails.
    assert reports[False].passed and reports[False].steps < 300


def test_a_loss_without_gradient_or_a_nan_loss_fails_with_the_cause():
    x, y = _batch()
    frozen = mlp(20, (16,), 10).requires_grad_(False)
    report = overfit_one_batch(
        frozen, x, y, optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    )
    assert not report.passed and report.steps == 0 and "no gradient" in str(report)
    report = overfit_one_batch(mlp(20, (16,), 10), x, y, loss_fn=lambda out, t: out.sum() * math.nan)
    assert not report.passed and report.losses == [] and math.isnan(report.final_loss)
    assert "the loss became nan at step 0" in str(report)


def test_regression_targets_have_no_accuracy():
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(32, 5, generator=g), torch.randn(5, 1, generator=g)
    model = nn.Linear(5, 1)
    report = overfit_one_batch(
        model,
        x,
        x @ w,
        loss_fn=F.mse_loss,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.05),
        target_loss=1e-4,
    )
    assert report.passed and report.final_accuracy is None and "accuracy" not in str(report)


def test_restore_leaves_model_optimizer_and_mode_bit_identical():
    x, y = _batch()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    F.cross_entropy(model(x), y).backward()  # give the optimizer some state to restore
    opt.step()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = {i: s["momentum_buffer"].clone() for i, s in enumerate(opt.state.values())}
    report = overfit_one_batch(model, x, y, optimizer=opt, max_steps=20)
    assert report.steps > 0 and report.losses[-1] < report.losses[0]  # it did train
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert all(torch.equal(s["momentum_buffer"], momentum[i]) for i, s in enumerate(opt.state.values()))
    assert not model.training
    # Without restore the training shows: weights, BatchNorm statistics and its step counter moved.
    overfit_one_batch(model, x, y, optimizer=opt, max_steps=5, restore=False)
    changed = {k for k in before if not torch.equal(model.state_dict()[k], before[k])}
    assert {"0.weight", "1.running_mean", "1.num_batches_tracked"} <= changed


def test_report_strings():
    ok = OverfitReport(True, 143, 0.0098, 1.0, [2.31, 0.0098], 2.31)
    assert str(ok) == "passed: loss 2.31 → 0.0098 in 143 steps (batch accuracy 100%)"
    bad = OverfitReport(False, 500, 1.85, None, [2.31, 1.85], 2.31)
    assert str(bad) == (
        "FAILED: loss 2.31 → 1.85 after 500 steps; the model cannot fit one batch — check the labels, the "
        "loss, the output layer and the learning rate"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"model": "mlp"}, TypeError, r"`model` must be a torch.nn.Module. Received: model='mlp'"),
        ({"x": [[1.0]]}, TypeError, r"Received: x=\[\[1.0\]\]"),
        ({"y": torch.zeros(5, dtype=torch.long)}, ValueError, r"Received: y.shape=\(5,\)"),
        ({"max_steps": 0}, ValueError, r"Received: max_steps=0"),
        ({"max_steps": 10.0}, TypeError, r"Received: max_steps=10.0"),
        ({"target_loss": 0.0}, ValueError, r"Received: target_loss=0.0"),
        ({"target_loss": -1}, ValueError, r"Received: target_loss=-1"),
        ({"optimizer": "adam"}, TypeError, r"Received: optimizer='adam'"),
        ({"loss_fn": "ce"}, TypeError, r"Received: loss_fn='ce'"),
        ({"restore": "yes"}, TypeError, r"Received: restore='yes'"),
        ({"device": "tpu"}, ValueError, r"Received: device='tpu'"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, pattern):
    x, y = _batch()
    args = {"model": nn.Linear(20, 10), "x": x, "y": y, **kwargs}
    with pytest.raises(error, match=pattern):
        overfit_one_batch(args.pop("model"), args.pop("x"), args.pop("y"), **args)
