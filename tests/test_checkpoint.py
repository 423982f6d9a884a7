"""Checkpoint files, the Checkpoint callback and fit(resume_from=...), in-process and fast.

A "crash" here is an exception raised by a callback at a chosen step; the process-level kills (SIGKILL,
torn writes) are in tests/test_faults.py.
"""

from __future__ import annotations

import os
import warnings

import pytest
import torch

from dltricks.batches import TensorBatches
from dltricks.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore,
    resume,
    save_checkpoint,
)
from dltricks.early_stopping import EarlyStopping
from dltricks.models import mlp
from dltricks.repro import seed_everything
from dltricks.train import Callback, History, TrainState, fit


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)  # seed_everything sets it; undone after the test


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    return torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.2]])[y] + 0.8 * torch.randn(n, 2, generator=g), y


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, state: TrainState) -> None:
        if state.step == self.step:
            raise Crash(f"crash at step {state.step}")


class SchedulerStep(Callback):
    def __init__(self, scheduler) -> None:
        self.scheduler = scheduler

    def on_epoch_end(self, state: TrainState) -> None:
        self.scheduler.step()


def run(directory, *, epochs=3, crash_at=None, resume=True, patience=10, every_steps=2):
    """15 steps (3 epochs of 5 batches) of a dropout MLP with momentum, a schedule and early stopping."""
    seed_everything(0)
    x, y = blobs(40, 1)
    model = mlp(2, (8,), 3, dropout=0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, 0.8)
    callbacks = [
        SchedulerStep(scheduler),
        EarlyStopping("loss", patience=patience, start_from_epoch=0),
        CrashAt(crash_at),
        Checkpoint(directory, every_steps=every_steps, keep=2, scheduler=scheduler, metadata={"run": "a"}),
    ]
    history = fit(
        model,
        TensorBatches(x, y, 8, seed=3),
        opt,
        epochs=epochs,
        callbacks=callbacks,
        progress=False,
        resume_from=directory if resume else None,
    )
    return model, [{k: v for k, v in r.items() if k != "seconds"} for r in history.epochs]


def assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return run(tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("crash_at", [1, 2, 4, 5, 6, 9, 10, 14, 15])
def test_a_crashed_run_resumes_to_the_same_bits(crash_at, reference, tmp_path):
    with pytest.raises(Crash):
        run(tmp_path, crash_at=crash_at)
    model, history = run(tmp_path)
    assert_same(model, reference[0])
    assert history == reference[1]


def test_a_finished_run_resumed_does_nothing_more(reference, tmp_path):
    run(tmp_path)
    model, history = run(tmp_path)
    assert_same(model, reference[0])
    assert history == reference[1]


def test_a_run_stopped_early_stays_stopped_when_resumed(tmp_path):
    """The stopping epoch's checkpoint carries the stop flag and EarlyStopping's best weights."""
    first, history = run(tmp_path / "a", epochs=8, patience=0)
    assert len(history) < 8
    again, resumed = run(tmp_path / "a", epochs=8, patience=0)
    assert resumed == history
    assert_same(again, first)


def test_resume_from_an_empty_directory_starts_afresh(reference, tmp_path):
    model, history = run(tmp_path / "new")  # does not exist yet
    assert_same(model, reference[0])
    assert history == reference[1]


def test_the_checkpoint_holds_everything_and_sorts_by_step(tmp_path):
    run(tmp_path, epochs=1)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-000000004.pt", "ckpt-000000005.pt"]  # keep=2: steps 2 and 4 pruned, 5 = epoch end
    ckpt = load_checkpoint(tmp_path / names[-1])
    assert set(ckpt) >= {
        "model",
        "optimizer",
        "counters",
        "history",
        "loader",
        "callbacks",
        "rng",
        "metadata",
    }
    assert ckpt["counters"]["epoch"] == 1 and ckpt["counters"]["step"] == 5
    assert ckpt["loader"]["epoch"] == 1 and ckpt["loader"]["batch"] == 0
    assert ckpt["history"][0]["epoch"] == 1
    assert set(ckpt["callbacks"]) == {"SchedulerStep", "EarlyStopping", "CrashAt", "Checkpoint"}
    assert ckpt["callbacks"]["EarlyStopping"]["best_epoch"] == 1
    assert "scheduler" in ckpt["callbacks"]["Checkpoint"]
    assert ckpt["metadata"] == {"run": "a"}
    mid = load_checkpoint(tmp_path / names[0])
    assert (mid["counters"]["batch"], mid["loader"]["batch"], mid["loader"]["epoch"]) == (4, 4, 0)


def test_save_and_load_round_trip_tensors_and_primitives(tmp_path):
    payload = {
        "w": torch.randn(3, 4),
        "i": torch.arange(5),
        "nested": {"list": [1, 2.5, None, True, "s"], "tuple": (1, (2, 3)), 7: "int key"},
        "history": [{"epoch": 1, "loss": float("nan")}, {"epoch": 2, "loss": float("inf")}],
    }
    path = save_checkpoint(tmp_path / "a.pt", payload)
    back = load_checkpoint(path)
    assert torch.equal(back["w"], payload["w"]) and torch.equal(back["i"], payload["i"])
    assert back["nested"] == payload["nested"]
    assert back["history"][1] == {"epoch": 2, "loss": float("inf")}
    assert back["history"][0]["loss"] != back["history"][0]["loss"]  # nan
    assert path.read_bytes().startswith(b"dltricks checkpoint v1\nsha256 ")


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        ({"f": print}, r"`payload\['f'\]` must be a tensor, number.*Received: payload\['f'\]=<built-in"),
        ({"a": [1, object()]}, r"`payload\['a'\]\[1\]` must be"),
        ({"n": __import__("numpy").zeros(2)}, r"`payload\['n'\]` must be.*array"),
        ({(1, 2): 3}, r"`payload keys` must be strings or integers. Received: payload keys=\(1, 2\)"),
    ],
)
def test_save_refuses_what_would_need_pickle_before_writing(payload, pattern, tmp_path):
    with pytest.raises(TypeError, match=pattern):
        save_checkpoint(tmp_path / "a.pt", payload)
    assert not list(tmp_path.iterdir())


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "ckpt-000000001.pt", {"v": 1})

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_list_checkpoints_ignores_other_files_and_sorts_numerically(tmp_path):
    for name in ["ckpt-1000000000.pt", "ckpt-000000020.pt", "ckpt-000000003.pt", "notes.txt", "ckpt-3.pt"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".ckpt-000000030.pt.1.tmp").write_bytes(b"")
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["ckpt-000000003.pt", "ckpt-000000020.pt", "ckpt-1000000000.pt"]
    assert list_checkpoints(tmp_path / "missing") == [] and latest_checkpoint(tmp_path / "missing") is None
    assert checkpoint_name(1230) == "ckpt-000001230.pt"


def test_every_epochs_and_every_steps_schedules(tmp_path):
    x, y = blobs(16, 0)
    for kwargs, steps in [
        ({"every_epochs": 2}, [4, 8, 12]),
        ({"every_steps": 3, "every_epochs": None}, [3, 6, 9, 12]),
        ({"every_steps": 5, "every_epochs": 3}, [5, 6, 10, 12]),
    ]:
        directory = tmp_path / str(len(os.listdir(tmp_path)))
        net = torch.nn.Linear(2, 3)
        ckpt = Checkpoint(directory, keep=10, **kwargs)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        fit(net, TensorBatches(x, y, 8), opt, epochs=6, callbacks=[ckpt], progress=False)
        assert [int(p.name[5:14]) for p in list_checkpoints(directory)] == steps, kwargs
        assert ckpt.last_saved == list_checkpoints(directory)[-1]


def test_a_directory_with_a_later_run_is_not_overwritten(tmp_path):
    run(tmp_path / "a", epochs=1)
    with pytest.raises(CheckpointError, match=r"holds checkpoints after step 2 \(ckpt-000000005.pt\)"):
        run(tmp_path / "a", epochs=1, resume=False)


def test_checkpoint_must_come_last_and_needs_a_stateful_loader_for_steps(tmp_path):
    net = torch.nn.Linear(2, 3)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = blobs(8, 0)
    with pytest.raises(
        ValueError,
        match=r"`callbacks` must be a list with Checkpoint after.*Received: callbacks=\['Checkpoint', 'Early",
    ):
        fit(net, [(x, y)], opt, epochs=1, callbacks=[Checkpoint(tmp_path), EarlyStopping()], progress=False)
    with pytest.raises(ValueError, match=r"`every_steps` must be None for a loader without state_dict"):
        fit(net, [(x, y)], opt, epochs=1, callbacks=[Checkpoint(tmp_path, every_steps=1)], progress=False)
    # A list of batches has no position to save, but an epoch-end checkpoint resumes it fine.
    fit(net, [(x, y)], opt, epochs=2, callbacks=[Checkpoint(tmp_path)], progress=False)
    assert (
        len(
            fit(
                net,
                [(x, y)],
                opt,
                epochs=3,
                callbacks=[Checkpoint(tmp_path)],
                resume_from=tmp_path,
                progress=False,
            )
        )
        == 3
    )


def test_a_checkpoint_that_does_not_fit_the_run_is_refused(tmp_path):
    run(tmp_path, epochs=1)
    path = latest_checkpoint(tmp_path)
    x, y = blobs(40, 1)

    def state_for(net, callbacks, loader=None):
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
        loader = TensorBatches(x, y, 8, seed=3) if loader is None else loader
        return TrainState(net, opt, History(), train=loader, callbacks=callbacks)

    net = mlp(2, (8,), 3, dropout=0.25)
    sched = torch.optim.lr_scheduler.ExponentialLR(torch.optim.SGD(net.parameters(), lr=0.1), 0.8)
    cases = [
        (
            state_for(net, [EarlyStopping("loss"), Checkpoint(tmp_path)]),
            r"does not fit this run: `state` must be a mapping with a scheduler state",
        ),
        (
            state_for(net, [Checkpoint(tmp_path, scheduler=sched)]),
            r"stateful callbacks differ in \['EarlyStopping'\]",
        ),
        (
            state_for(
                mlp(2, (9,), 3, dropout=0.25), [EarlyStopping("loss"), Checkpoint(tmp_path, scheduler=sched)]
            ),
            r"(?s)does not fit this run:.*size mismatch for 1.weight",
        ),
        (
            state_for(
                net, [EarlyStopping("loss"), Checkpoint(tmp_path, scheduler=sched)], TensorBatches(x, y, 5)
            ),
            r"does not fit this run:.*batch_size",
        ),
        (
            state_for(net, [EarlyStopping("loss"), Checkpoint(tmp_path, scheduler=sched)], [(x, y)]),
            r"only one of it and `train` has a data position",
        ),
    ]
    for state, pattern in cases:
        with pytest.raises(CheckpointError, match=pattern):
            resume(state, path)
    with pytest.raises(CheckpointError, match="was not written by dltricks.checkpoint.Checkpoint"):
        restore(cases[0][0], {"model": {}}, path)


def test_resume_falls_back_past_a_corrupt_newest_file_and_sets_it_aside(reference, tmp_path):
    with pytest.raises(Crash):
        run(tmp_path, crash_at=9)
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(newest.read_bytes()[:-10])
    with pytest.warns(
        RuntimeWarning, match=rf"skipping bad checkpoint .*{newest.name}: .*truncated.*renamed"
    ):
        model, history = run(tmp_path)
    assert_same(model, reference[0])
    assert history == reference[1]
    assert (tmp_path / f"{newest.name}.corrupt").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing bad left in the sequence
        assert latest_checkpoint(tmp_path) is not None


def test_resume_refuses_a_directory_whose_every_checkpoint_is_bad(tmp_path):
    # Before: fit warned, renamed both files to .corrupt and trained from step 0, discarding the run.
    with pytest.raises(Crash):
        run(tmp_path, crash_at=9)
    files = list_checkpoints(tmp_path)
    assert len(files) == 2
    files[0].write_bytes(b"")
    files[1].write_bytes(files[1].read_bytes()[:-10])
    contents = {p: p.read_bytes() for p in files}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # refused, not warned about
        with pytest.raises(CheckpointError) as info:
            run(tmp_path)
    message = str(info.value)
    assert message.startswith(f"cannot resume from {tmp_path}: none of its 2 checkpoint(s) can be loaded")
    assert f"{files[0]} is truncated: the file is empty" in message
    assert f"{files[1]} is truncated: its archive has" in message
    assert "Nothing was renamed or deleted" in message
    assert {p: p.read_bytes() for p in list_checkpoints(tmp_path)} == contents  # left as they were
    assert not list(tmp_path.glob("*.corrupt"))


def test_resume_from_a_missing_checkpoint_file_is_refused(tmp_path):
    # Before: a .pt path that does not exist (a typo, a deleted file) was taken for an empty directory and
    # the run silently started from step 0.
    missing = tmp_path / "ckpt-000000010.pt"
    model = mlp(2, (8,), 3)
    x, y = blobs(40, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match=rf"cannot resume from {missing}: no such checkpoint file"):
        fit(model, TensorBatches(x, y, 8), opt, epochs=1, progress=False, resume_from=missing)
    assert not missing.exists()


def test_resume_from_an_empty_or_missing_directory_starts_afresh(reference, tmp_path):
    model, history = run(tmp_path / "new")  # the one command line that both starts and restarts a run
    assert_same(model, reference[0])
    assert history == reference[1]


BAD = [
    (lambda p: save_checkpoint(3, {}), TypeError, r"`path` must be a file path. Received: path=3"),
    (
        lambda p: save_checkpoint(p / "a.pt", [1]),
        TypeError,
        r"`payload` must be a dict.*Received: payload=\[1\]",
    ),
    (lambda p: load_checkpoint(None), TypeError, r"`path` must be a file path. Received: path=None"),
    (lambda p: load_checkpoint(p / "missing.pt"), FileNotFoundError, r"missing.pt"),
    (
        lambda p: latest_checkpoint(1.5),
        TypeError,
        r"`directory` must be a directory path. Received: directory=1.5",
    ),
    (lambda p: list_checkpoints(b"x"), TypeError, r"`directory`.*Received: directory=b'x'"),
    (lambda p: checkpoint_name(-1), ValueError, r"`step` must be an integer >= 0. Received: step=-1"),
    (
        lambda p: resume(None, 5),
        TypeError,
        r"`source` must be a checkpoint directory or file. Received: source=5",
    ),
    (lambda p: Checkpoint(7), TypeError, r"`directory` must be a directory path. Received: directory=7"),
    (
        lambda p: Checkpoint(p, every_steps=0),
        ValueError,
        r"`every_steps` must be an integer >= 1. Received: every_steps=0",
    ),
    (
        lambda p: Checkpoint(p, every_epochs=1.0),
        TypeError,
        r"`every_epochs` must be an integer.*every_epochs=1.0",
    ),
    (
        lambda p: Checkpoint(p, every_epochs=None),
        ValueError,
        r"`every_epochs` must be an integer >= 1 when every_steps is None. Received: every_epochs=None",
    ),
    (lambda p: Checkpoint(p, keep=0), ValueError, r"`keep` must be an integer >= 1. Received: keep=0"),
    (
        lambda p: Checkpoint(p, scheduler="step"),
        TypeError,
        r"`scheduler` must be None or an object with.*'step'",
    ),
    (lambda p: Checkpoint(p, scaler=1), TypeError, r"`scaler` must be None or an object.*Received: scaler=1"),
    (
        lambda p: Checkpoint(p, metadata=[1]),
        TypeError,
        r"`metadata` must be a dict or None. Received: metadata=\[1\]",
    ),
    (lambda p: Checkpoint(p, metadata={"f": len}), TypeError, r"`metadata\['f'\]` must be a tensor"),
    (
        lambda p: Checkpoint(p).load_state_dict({"scheduler": {}}),
        ValueError,
        r"`state` must be a mapping with a scheduler state just when.*Received: state=\[.scheduler.\]",
    ),
]


@pytest.mark.parametrize(("call", "error", "pattern"), BAD, ids=[c[2][:40] for c in BAD])
def test_bad_arguments_are_rejected_with_a_clear_message(call, error, pattern, tmp_path):
    with pytest.raises(error, match=pattern):
        call(tmp_path)
