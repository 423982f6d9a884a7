"""Non-finite gradients never reach the weights (issue 16, section 3).

A finite loss can have a non-finite gradient: d/ds sqrt(s) is inf at s = 0, and d/ds sqrt((x s)^2) is
0/0 = NaN at x = 0. The expected weights come from a plain torch loop over the batches whose gradients are
finite, or from first principles (no step at all: the initial weights).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dltricks.clip import GradientClipping
from dltricks.diagnostics.lr_range import lr_range_test
from dltricks.diagnostics.overfit import overfit_one_batch
from dltricks.nonfinite import DeviceSums, finite_flag, first_step_pending, gradients, loss_and_finite
from dltricks.train import fit

INF, NAN = float("inf"), float("nan")


class SqrtAtZero(nn.Module):
    """``lin(x) + sqrt((x[:, :1] * s)^2)``: finite output; ``ds`` is NaN where ``x[:, 0] = 0``."""

    def __init__(self, s: float = 0.5) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.s = nn.Parameter(torch.tensor([s]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + torch.sqrt((x[:, :1] * self.s) ** 2)


class SqrtOfParam(nn.Module):
    """``lin(x) + sqrt(s)`` with ``s = 0``: the loss is finite, ``ds`` is inf at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.s = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + torch.sqrt(self.s)


def _batches(bad: set[int], n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(6, 2, generator=g) + 3.0  # x[:, 0] far from 0 ...
        if i in bad:
            x[2, 0] = 0.0  # ... except in the bad batches
        out.append((x, torch.randint(0, 3, (6,), generator=g)))
    return out


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_the_premise_a_finite_loss_with_a_nonfinite_gradient():
    s = torch.zeros(1, requires_grad=True)
    loss = torch.sqrt(s).sum()
    loss.backward()
    assert math.isfinite(loss.item()) and s.grad.item() == INF


@pytest.mark.parametrize(
    ("grads", "loss", "finite"),
    [
        ([torch.ones(3), torch.zeros(2)], 1.0, True),
        ([torch.ones(3), torch.tensor([1.0, INF])], 1.0, False),
        ([torch.tensor([NAN, 1.0]), torch.ones(2)], 1.0, False),
        ([torch.tensor([-INF])], 1.0, False),
        (
            [torch.full((4,), 1e30)],
            1.0,
            True,
        ),  # the 2-norm overflows to inf in float32; the max-norm does not
        ([torch.tensor([1 + 2j, 3j])], 1.0, True),
        ([torch.tensor([complex(1, INF)])], 1.0, False),
        ([torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float16)], 1.0, True),
        ([], 1.0, True),
        ([torch.ones(2)], NAN, False),
        ([torch.ones(2)], INF, False),
    ],
)
def test_loss_and_finite_matches_torch_isfinite(grads, loss, finite):
    expected = math.isfinite(loss) and all(bool(torch.isfinite(g).all()) for g in grads)
    assert expected == finite
    value, ok = loss_and_finite(torch.tensor(loss), grads)
    assert ok is finite
    assert value == loss or (math.isnan(value) and math.isnan(loss))
    assert finite_flag(torch.tensor(loss), grads).item() is finite


@pytest.mark.parametrize("model_cls", [SqrtOfParam, SqrtAtZero])
def test_raise_stops_before_the_weights_change_and_names_the_parameter(model_cls):
    torch.manual_seed(0)
    model = model_cls()
    before = _params(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    with pytest.raises(FloatingPointError, match=r"gradient of s is not finite \(the loss is finite") as err:
        fit(model, _batches({0}), opt, epochs=1, progress=False)
    assert "at epoch 1, step 1; the weights are those before this step" in str(err.value)
    after = _params(model)
    assert all(torch.equal(after[k], before[k]) for k in before)  # the message is true: no step was taken
    assert opt.state == {} or all(len(s) == 0 for s in opt.state.values())
    assert all(p.grad is None for p in model.parameters())  # the bad gradients are dropped


@pytest.mark.parametrize("make_opt", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), torch.optim.Adam])
def test_skip_equals_a_torch_loop_over_the_good_batches_only(make_opt):
    torch.manual_seed(1)
    model = SqrtAtZero()
    reference = copy.deepcopy(model)
    batches = _batches({1, 3}, n=5)
    history = fit(model, batches, make_opt(model.parameters()), epochs=2, nonfinite="skip", progress=False)
    assert history["skipped"] == [2, 2]
    opt = make_opt(reference.parameters())
    for _ in range(2):
        for i, (x, y) in enumerate(batches):
            if i in (1, 3):
                continue
            opt.zero_grad()
            nn.functional.cross_entropy(reference(x), y).backward()
            opt.step()
    got, want = _params(model), _params(reference)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert all(bool(torch.isfinite(v).all()) for v in got.values())


def test_skip_with_every_gradient_bad_ends_with_the_initial_weights_and_a_nan_loss():
    torch.manual_seed(2)
    model = SqrtOfParam()
    before = _params(model)
    history = fit(
        model,
        _batches(set()),
        torch.optim.SGD(model.parameters(), lr=0.1),
        epochs=1,
        nonfinite="skip",
        max_skipped=10,
        progress=False,
    )
    assert history["skipped"] == [4] and math.isnan(history["loss"][0])
    assert all(torch.equal(v, before[k]) for k, v in _params(model).items())


def test_skip_raises_once_more_than_max_skipped_and_the_weights_are_still_finite():
    torch.manual_seed(2)
    model = SqrtOfParam()
    with pytest.raises(FloatingPointError, match=r"3 non-finite steps skipped, more than max_skipped=2"):
        fit(model, _batches(set()), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
            nonfinite="skip", max_skipped=2, progress=False)  # fmt: skip
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_gradient_clipping_never_sees_a_nonfinite_gradient_in_fit():
    torch.manual_seed(3)
    model = SqrtAtZero()
    clip = GradientClipping("global_norm", 1.0, record=True)
    batches = _batches({0, 2})
    fit(model, batches, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, nonfinite="skip",
        callbacks=[clip], progress=False)  # fmt: skip
    assert len(clip.norms) == 2  # only the two good steps were clipped
    assert all(math.isfinite(n.item()) for n in clip.norms)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_a_nan_loss_is_still_caught_and_named_as_the_loss():
    model = nn.Linear(2, 3)
    x, y = torch.ones(4, 2), torch.zeros(4, dtype=torch.long)
    x[0, 0] = NAN
    before = _params(model)
    with pytest.raises(FloatingPointError, match=r"training loss is nan at epoch 1, step 1"):
        fit(model, [(x, y)], torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in _params(model).items())


def test_overfit_one_batch_stops_at_a_nonfinite_gradient_and_says_so():
    torch.manual_seed(4)
    model = SqrtOfParam()
    x, y = _batches(set())[0]
    report = overfit_one_batch(model, x, y, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert not report.passed and report.steps == 0
    assert "gradient became NaN or inf at step 0 although the loss is finite" in report.reason


def test_lr_range_test_stops_at_a_nonfinite_gradient_before_any_step():
    torch.manual_seed(5)
    model = SqrtOfParam()
    before = _params(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="never decreased"):  # one point: no suggestion to make
        result = lr_range_test(
            model, opt, _batches(set()), start_lr=1e-4, end_lr=1.0, num_steps=8, progress=False
        )
    assert result.stopped_early and len(result.lrs) == 1
    assert all(torch.equal(v, before[k]) for k, v in _params(model).items())


def test_gradients_skips_parameters_without_a_gradient():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    (a.sum() * 2).backward()
    assert [g.tolist() for g in gradients([a, b])] == [[2.0, 2.0]]


# --- pinned by mutation testing (issue 25, section 4) ------------------------------------------------------


def test_first_step_pending_looks_past_a_group_without_momentum():
    # A plain group first, a momentum group after it: the momentum group's first step still needs the
    # host read (stopping at the plain group would let a device-side skip leave its buffers uninitialised).
    plain, heavy = nn.Linear(2, 2), nn.Linear(2, 2)
    sgd = torch.optim.SGD(
        [{"params": plain.parameters(), "momentum": 0.0}, {"params": heavy.parameters()}],
        lr=0.1,
        momentum=0.9,
        fused=True,
    )
    x = torch.ones(3, 2)
    (plain(x).sum() + heavy(x).sum()).backward()
    assert first_step_pending(sgd)
    sgd.step()
    assert not first_step_pending(sgd)


def test_device_sums_live_on_the_loss_device_in_float64_or_float32_on_mps():
    sums = DeviceSums(torch.device("meta"))  # a device other than the default CPU: the state must follow
    assert sums.device == torch.device("meta")
    assert sums.sums.device.type == "meta" and sums.first.device.type == "meta"
    assert sums.sums.dtype == torch.float64

    class NoState(DeviceSums):  # no tensors allocated: this machine may have no MPS device
        def _reset(self) -> None:
            pass

    assert NoState(torch.device("mps")).dtype == torch.float32  # MPS has no float64
    assert NoState(torch.device("cpu")).dtype == torch.float64


def test_device_sums_report_the_first_bad_step_and_its_loss_exactly():
    sums = DeviceSums(torch.device("cpu"))
    good, bad = torch.tensor(True), torch.tensor(False)
    sums.add(torch.tensor(0.5), good, 4)
    sums.add(torch.tensor(0.1, dtype=torch.float64), bad, 4)  # finite loss, bad gradient; 0.1 not float32
    sums.add(torch.tensor(NAN), bad, 4)
    window = sums.read()
    assert window == (2.0, 4, 2, 3, 1, 0.1)  # float64 throughout: 0.1 exactly as loss.item() gives it
    assert sums.read().first_nonfinite is None and math.isnan(sums.read().first_loss)  # a new window
