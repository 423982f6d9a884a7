"""Resume never continues a different run (issue 16, section 1).

The expected values come from an uninterrupted run of the same model with plain ``fit`` (the reference),
or from the checkpoint itself: a resumed run must equal the reference bit for bit, or be refused with a
``CheckpointError`` that names both sides of the mismatch.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dltricks.batches import TensorBatches
from dltricks.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from dltricks.repro import seed_everything
from dltricks.schedules import Schedule
from dltricks.train import fit


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)  # seed_everything sets it


class AB(nn.Module):
    """Two 3x3 layers declared ``a`` then ``b``; ``forward`` uses ``b(relu(a(x)))`` either way."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


class BA(AB):
    """The same network with the layers declared in the other order: the same names, other positions."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.b = nn.Linear(3, 3)
        self.a = nn.Linear(3, 3)


def data() -> TensorBatches:
    g = torch.Generator().manual_seed(0)
    return TensorBatches(torch.randn(24, 3, generator=g), torch.randint(0, 3, (24,), generator=g), 6, seed=1)


def train(model_cls, directory, epochs, *, opt=None, resume=True, callbacks=(), **opt_kwargs):
    seed_everything(0)
    model = model_cls()
    optimizer = (opt or torch.optim.Adam)(model.parameters(), **(opt_kwargs or {"lr": 0.05}))
    callbacks = [*callbacks, Checkpoint(directory)]
    resume_from = directory if resume else None
    fit(model, data(), optimizer, epochs=epochs, progress=False, callbacks=callbacks, resume_from=resume_from)
    return model, optimizer


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_premise_positions_differ_while_names_agree():
    assert [n for n, _ in AB().named_parameters()] == ["a.weight", "a.bias", "b.weight", "b.bias"]
    assert [n for n, _ in BA().named_parameters()] == ["b.weight", "b.bias", "a.weight", "a.bias"]


def test_adam_moments_follow_the_parameter_names_into_a_reordered_model(tmp_path):
    reference, _ = train(AB, tmp_path / "ref", 3, resume=False)
    train(AB, tmp_path / "run", 1)
    resumed, optimizer = train(BA, tmp_path / "run", 3)
    assert same(resumed, reference)  # swapped moments (torch's positional matching) would differ
    # and the moments sit on the parameters of the right names (all shapes agree, so only values tell)
    names = dict(resumed.named_parameters())
    ref_state = load_checkpoint(latest_checkpoint(tmp_path / "ref"))
    ref_ids = [n for group in ref_state["optimizer_identity"]["names"] for n in group]
    for i, name in enumerate(ref_ids):
        assert torch.equal(
            optimizer.state[names[name]]["exp_avg"], ref_state["optimizer"]["state"][i]["exp_avg"]
        )


def test_another_optimizer_class_is_refused_naming_both(tmp_path):
    train(AB, tmp_path, 1, opt=torch.optim.SGD, lr=0.1, momentum=0.9)
    with pytest.raises(
        CheckpointError, match=r"optimizer is torch\.optim\.sgd\.SGD, this run's is torch\.optim\.adam\.Adam"
    ):
        train(AB, tmp_path, 2, opt=torch.optim.Adam, lr=0.1)


def test_another_optimizer_class_is_refused_even_by_an_older_checkpoint_without_its_name(tmp_path):
    train(AB, tmp_path, 1, opt=torch.optim.SGD, lr=0.1, momentum=0.9)
    path = latest_checkpoint(tmp_path)
    payload = load_checkpoint(path)
    del payload["optimizer_identity"], payload["hyperparameters"]  # as written before issue 16
    save_checkpoint(path, payload)
    with pytest.raises(
        CheckpointError, match=r"'momentum'.* only in the checkpoint and \['amsgrad', 'betas'"
    ):
        train(AB, tmp_path, 2, opt=torch.optim.Adam, lr=0.1)


def test_an_older_checkpoint_still_resumes_by_position_into_the_same_model(tmp_path):
    reference, _ = train(AB, tmp_path / "ref", 2, resume=False)
    train(AB, tmp_path / "run", 1)
    path = latest_checkpoint(tmp_path / "run")
    payload = load_checkpoint(path)
    del payload["optimizer_identity"], payload["hyperparameters"]
    save_checkpoint(path, payload)
    resumed, _ = train(AB, tmp_path / "run", 2)
    assert same(resumed, reference)


def _two_groups(model):
    return [{"params": model.a.parameters()}, {"params": model.b.parameters(), "lr": 0.01}]


def test_another_parameter_group_layout_is_refused_naming_both(tmp_path):
    seed_everything(0)
    model = AB()
    fit(model, data(), torch.optim.Adam(_two_groups(model), lr=0.05), epochs=1, progress=False,
        callbacks=[Checkpoint(tmp_path)])  # fmt: skip
    with pytest.raises(
        CheckpointError, match=r"2 parameter groups of sizes \[2, 2\], this run's has 1 of sizes \[4\]"
    ):
        train(AB, tmp_path, 2)


def test_parameters_moved_between_groups_are_named(tmp_path):
    seed_everything(0)
    model = AB()
    fit(model, data(), torch.optim.Adam(_two_groups(model), lr=0.05), epochs=1, progress=False,
        callbacks=[Checkpoint(tmp_path)])  # fmt: skip
    model = AB()
    groups = [
        {"params": [model.a.weight, model.b.weight]},
        {"params": [model.a.bias, model.b.bias], "lr": 0.01},
    ]
    with pytest.raises(
        CheckpointError,
        match=r"group 0 holds \['a.bias'\] only in the checkpoint and \['b.weight'\] only in this run",
    ):
        fit(model, data(), torch.optim.Adam(groups, lr=0.05), epochs=2, progress=False,
            callbacks=[Checkpoint(tmp_path)], resume_from=tmp_path)  # fmt: skip


def test_other_hyperparameters_warn_and_the_checkpoints_are_kept(tmp_path):
    reference, _ = train(AB, tmp_path / "ref", 2, resume=False, lr=0.05, weight_decay=0.01)
    train(AB, tmp_path / "run", 1, lr=0.05, weight_decay=0.01)
    expected = (
        r"lr=0\.05 \(checkpoint\) vs 0\.5 \(this run\) in group 0; weight_decay=0\.01 \(checkpoint\) vs 0 "
    )
    with pytest.warns(UserWarning, match=r"keeps the checkpoint's .*" + expected):
        resumed, optimizer = train(AB, tmp_path / "run", 2, lr=0.5, weight_decay=0)
    assert optimizer.param_groups[0]["lr"] == 0.05 and optimizer.param_groups[0]["weight_decay"] == 0.01
    assert same(resumed, reference)  # PyTorch's convention: the run goes on with the checkpoint's settings


def test_the_same_hyperparameters_do_not_warn_even_when_a_schedule_changes_the_rate(tmp_path):
    def schedule():
        return [Schedule(lambda step: 0.05 / (1 + step))]

    reference, _ = train(AB, tmp_path / "ref", 3, resume=False, callbacks=schedule())
    train(AB, tmp_path / "run", 1, callbacks=schedule())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(AB, tmp_path / "run", 2, callbacks=schedule())
        resumed, _ = train(AB, tmp_path / "run", 3, callbacks=schedule())  # resumed twice: carried over
    assert same(resumed, reference)


def test_fewer_epochs_than_the_checkpoint_holds_are_refused(tmp_path):
    train(AB, tmp_path, 3)
    with pytest.raises(CheckpointError, match=r"holds 3 completed epochs, more than epochs=2"):
        train(AB, tmp_path, 2)
    model, _ = train(AB, tmp_path, 3)  # the same total: a finished run, returned as it is
    reference, _ = train(AB, tmp_path / "ref", 3, resume=False)
    assert same(model, reference)


def test_a_torch_scheduler_not_handed_to_checkpoint_is_detected(tmp_path):
    seed_everything(0)
    model = AB()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    with pytest.raises(
        CheckpointError, match=r"a torch LR scheduler steps this SGD, but Checkpoint\(scheduler=None\)"
    ):
        fit(model, data(), optimizer, epochs=1, progress=False, callbacks=[Checkpoint(tmp_path)])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    fit(
        model,
        data(),
        optimizer,
        epochs=1,
        progress=False,
        callbacks=[Checkpoint(tmp_path, scheduler=scheduler)],
    )
