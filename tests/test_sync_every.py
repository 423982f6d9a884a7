"""``fit(sync_every=k)``: the host reads the loss every k steps, and no non-finite step reaches the weights.

With ``k > 1`` the running loss and the finite flag stay on the device and a fused optimizer skips a
non-finite step there (GradScaler's ``found_inf`` protocol). The reference for every test is the same run
with ``k = 1``, whose per-step host read is tested against plain torch loops in ``test_nonfinite.py``.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

from dltricks import nonfinite
from dltricks.batches import TensorBatches
from dltricks.callbacks import Callback
from dltricks.checkpoint import Checkpoint
from dltricks.repro import seed_everything
from dltricks.train import fit

FUSED = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3, fused=True),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, fused=True),
}


class SqrtAtZero(nn.Module):
    """``lin(x) + sqrt((x[:, :1] * s)^2)``: finite loss; its gradient ``ds`` is NaN where ``x[:, 0] = 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 3)
        self.s = nn.Parameter(torch.tensor([0.5]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) + torch.sqrt((x[:, :1] * self.s) ** 2)


def batches(bad_grad=(), bad_loss=(), n=10):
    """``n`` batches of 6; those in ``bad_grad`` give a NaN gradient, those in ``bad_loss`` a NaN loss."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(6, 2, generator=g) + 3.0
        if i in bad_grad:
            x[2, 0] = 0.0
        if i in bad_loss:
            x[1, 1] = math.nan
        out.append((x, torch.randint(0, 3, (6,), generator=g)))
    return out


def run(sync_every, make_opt=FUSED["sgd"], data=None, epochs=3, **kwargs):
    torch.manual_seed(0)
    model = SqrtAtZero()
    opt = make_opt(model.parameters())
    history = fit(model, batches() if data is None else data, opt, epochs=epochs, progress=False,
                  sync_every=sync_every, **kwargs)  # fmt: skip
    return model, opt, history


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", sorted(FUSED))
@pytest.mark.parametrize("k", [2, 3, 7, 100])
def test_finite_runs_equal_the_per_step_read(name, k):
    ref_model, ref_opt, ref = run(1, FUSED[name])
    model, opt, history = run(k, FUSED[name])
    assert same_weights(model, ref_model)  # the steps are the same kernels on the same values
    assert history["loss"] == pytest.approx(ref["loss"], rel=1e-12)  # summed on the device: last bits only
    state, ref_state = opt.state_dict()["state"], ref_opt.state_dict()["state"]
    assert all(torch.equal(torch.as_tensor(state[i][key]), torch.as_tensor(ref_state[i][key]))
               for i in ref_state for key in ref_state[i])  # fmt: skip


@pytest.mark.parametrize("name", sorted(FUSED))
def test_skip_gives_the_weights_and_counts_of_the_per_step_read(name):
    data = batches(bad_grad={1, 6}, bad_loss={4})
    ref_model, ref_opt, ref = run(1, FUSED[name], data, nonfinite="skip")
    model, opt, history = run(3, FUSED[name], data, nonfinite="skip")
    assert history["skipped"] == ref["skipped"] == [3, 3, 3]
    assert same_weights(model, ref_model)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert history["loss"] == pytest.approx(ref["loss"], rel=1e-12)
    if name != "sgd":  # Adam's step count: the skipped steps are not counted, as with the per-step read
        assert [float(s["step"]) for s in opt.state.values()] == [
            float(s["step"]) for s in ref_opt.state.values()
        ]


@pytest.mark.parametrize("dampening", [0.0, 0.5])
def test_a_skipped_first_step_leaves_fused_momentum_sgd_exact(dampening):
    # Before: fused SGD creates its momentum buffers with empty_like on its first step; skipped on the
    # device, they kept uninitialised memory and every later step was garbage (weights of 1e17 or NaN).
    # Now the host reads the flag for such a first step (torch.optim.SGD then makes the buffers itself).
    def make(p):
        return torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=dampening, fused=True)

    data = batches(bad_loss={0, 5})  # the very first step is non-finite
    ref_model, ref_opt, ref = run(1, make, data, nonfinite="skip")
    model, opt, history = run(4, make, data, nonfinite="skip")
    assert history["skipped"] == ref["skipped"] == [2, 2, 2]
    assert same_weights(model, ref_model)
    for p, q in zip(opt.state.values(), ref_opt.state.values()):
        assert torch.equal(p["momentum_buffer"], q["momentum_buffer"])


def test_a_skipped_first_step_is_exact_when_a_group_without_momentum_comes_first():
    # The momentum group is the second one: stopping the search at the plain first group let the device
    # skip the first step, and the uninitialised momentum buffers then drove the weights to about 2e9.
    def make(params):
        lin_weight, lin_bias, s = params
        return torch.optim.SGD([{"params": [s], "momentum": 0.0}, {"params": [lin_weight, lin_bias]}],
                               lr=0.1, momentum=0.9, fused=True)  # fmt: skip

    data = batches(bad_loss={0, 5})
    ref_model, ref_opt, ref = run(1, make, data, nonfinite="skip")
    model, opt, history = run(4, make, data, nonfinite="skip")
    assert history["skipped"] == ref["skipped"] == [2, 2, 2]
    assert same_weights(model, ref_model)


def test_the_first_step_of_fused_momentum_sgd_is_read_on_the_host_and_only_it():
    model = SqrtAtZero()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    assert not nonfinite.first_step_pending(sgd)  # no gradient yet: nothing to step
    model(torch.ones(2, 2)).sum().backward()
    assert nonfinite.first_step_pending(sgd)
    sgd.step()
    assert not nonfinite.first_step_pending(sgd)
    plain = torch.optim.SGD(model.parameters(), lr=0.1, fused=True)  # no momentum: no buffers
    adam = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)  # zeroed state, step undone on a skip
    assert not nonfinite.first_step_pending(plain) and not nonfinite.first_step_pending(adam)


def test_skip_raises_once_more_than_max_skipped():
    with pytest.raises(FloatingPointError, match=r"4 non-finite steps skipped, more than max_skipped=3"):
        run(4, data=batches(bad_grad={0, 2, 5, 8}), nonfinite="skip", max_skipped=3)


@pytest.mark.parametrize(("bad", "culprit"), [
    (dict(bad_grad={5}), r"a gradient is not finite \(the loss is finite"),
    (dict(bad_loss={5}), r"training loss is nan"),
])  # fmt: skip
def test_raise_names_the_step_and_no_nonfinite_value_reaches_the_weights(bad, culprit):
    data = batches(**bad)
    with pytest.raises(FloatingPointError, match=culprit) as err:
        model, _, _ = run(4, data=data)
    # Step 6 (batch 5) is bad; the host reads at step 8: steps 7 and 8 were taken, step 6 was skipped.
    assert "at epoch 1, step 6, found at the host read of step 8 (fit(sync_every=4))" in str(err.value)
    assert "the 2 steps after it were taken" in str(err.value)
    torch.manual_seed(0)
    model = SqrtAtZero()
    expected = copy.deepcopy(model)
    with pytest.raises(FloatingPointError):
        fit(model, data, FUSED["sgd"](model.parameters()), epochs=3, progress=False, sync_every=4)
    # What the message says: the same weights as a run that skips batch 5 and stops after batch 7.
    fit(expected, data[:8], FUSED["sgd"](expected.parameters()), epochs=1, progress=False, sync_every=4,
        nonfinite="skip")  # fmt: skip
    assert same_weights(model, expected)
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())


def test_the_host_reads_every_k_steps_and_at_each_epoch_end(monkeypatch):
    reads, per_step = [], []
    original = nonfinite.DeviceSums.read
    monkeypatch.setattr(nonfinite.DeviceSums, "read", lambda self: reads.append(1) or original(self))
    monkeypatch.setattr("dltricks.train.loss_and_finite", lambda *a: per_step.append(1))
    run(4, epochs=2)  # 10 batches an epoch: reads at steps 4, 8, end (10), 12, 16, 20 and the end again
    assert per_step == []
    assert len(reads) == 7


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state) -> None:
        if state.step == self.step:
            raise KeyboardInterrupt


def test_a_checkpoint_inside_a_window_resumes_to_the_uninterrupted_run(tmp_path):
    def train(directory, callbacks=()):
        seed_everything(0)
        model = SqrtAtZero()
        loader = TensorBatches(*map(torch.cat, zip(*batches(n=6), strict=True)), 6, seed=1)
        opt = FUSED["adam"](model.parameters())
        every_5_steps = Checkpoint(directory, every_steps=5, every_epochs=None)
        history = fit(model, loader, opt, epochs=3, progress=False, sync_every=4, resume_from=directory,
                      callbacks=[*callbacks, every_5_steps])  # fmt: skip
        return model, history

    whole, whole_history = train(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", [StopAt(7)])  # the newest checkpoint is step 5, in the middle of a window
    resumed, resumed_history = train(tmp_path / "cut")
    assert same_weights(resumed, whole)
    assert resumed_history["loss"] == pytest.approx(whole_history["loss"], rel=1e-12)


def test_an_optimizer_that_cannot_skip_on_the_device_is_refused():
    model = SqrtAtZero()
    with pytest.raises(
        ValueError, match=r"`sync_every` > 1 needs .* Received: sync_every=2 with SGD\(fused=None\)"
    ):
        fit(
            model,
            batches(),
            torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1,
            progress=False,
            sync_every=2,
        )
    fit(model, batches(), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, progress=False, sync_every=1)


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-3, ValueError), (2.0, TypeError), ("4", TypeError)]
)
def test_sync_every_rejects_bad_values(value, error):
    model = SqrtAtZero()
    with pytest.raises(
        error, match=rf"`sync_every` must be .*Received: sync_every={re.escape(repr(value))}$"
    ):
        fit(model, batches(), FUSED["sgd"](model.parameters()), epochs=1, progress=False, sync_every=value)


def test_skips_on_device_only_for_fused_optimizers():
    p = [nn.Parameter(torch.zeros(2))]
    assert nonfinite.skips_on_device(torch.optim.Adam(p, fused=True))
    assert not nonfinite.skips_on_device(torch.optim.Adam(p))
    assert not nonfinite.skips_on_device(torch.optim.RMSprop(p))
