"""The training loop, its batches and its evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from dltricks.batches import TensorBatches
from dltricks.device import resolve_device
from dltricks.models import mlp
from dltricks.train import Callback, History, accuracy, evaluate, fit


def _blobs(n=512, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    return centers[y] + 0.5 * torch.randn(n, 2, generator=g), y


def test_fit_learns_a_separable_problem_and_records_history():
    x, y = _blobs()
    torch.manual_seed(0)
    net = mlp(2, (16,), 3)
    hist = fit(
        net,
        TensorBatches(x, y, 32),
        torch.optim.SGD(net.parameters(), lr=0.1),
        epochs=8,
        val=TensorBatches(x, y, 128, shuffle=False),
        eval_train=True,
        progress=False,
    )
    assert len(hist) == 8
    assert {"epoch", "loss", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"} <= set(
        hist.keys()
    )
    assert hist["loss"][-1] < hist["loss"][0] / 3
    assert hist["val_accuracy"][-1] > 0.97
    # eval_train measures the final weights: same data as val here, so the same numbers.
    assert hist["train_accuracy"][-1] == pytest.approx(hist["val_accuracy"][-1])


def test_eval_every_evaluates_only_some_epochs():
    x, y = _blobs(64)
    net = mlp(2, (4,), 3)
    hist = fit(
        net,
        TensorBatches(x, y, 16),
        torch.optim.SGD(net.parameters(), lr=0.1),
        epochs=7,
        val=TensorBatches(x, y, 64),
        eval_every=3,
        progress=False,
    )
    assert hist.epochs_of("val_loss") == [3, 6, 7]
    assert len(hist["val_loss"]) == 3 and len(hist["loss"]) == 7


def test_evaluate_is_the_weighted_mean_over_uneven_batches():
    x, y = _blobs(100)
    net = mlp(2, (8,), 3)
    full = evaluate(net, [(x, y)])
    batched = evaluate(net, TensorBatches(x, y, 33, shuffle=False))
    assert batched["loss"] == pytest.approx(full["loss"], rel=1e-5)
    assert batched["accuracy"] == pytest.approx(full["accuracy"])
    with torch.no_grad():
        assert full["accuracy"] == pytest.approx(accuracy(net(x), y).item())


def test_evaluate_restores_training_mode():
    net = mlp(2, (4,), 3, dropout=0.5)
    net.train()
    evaluate(net, [(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))])
    assert net.training


def test_evaluate_restores_each_modules_mode_when_it_raises():
    """Issue 25 (modes changed behind the caller's back): a metric or a batch that raises mid-evaluation must
    not leave a training model in eval mode (dropout off, batch norm frozen) for the caller's next step."""
    net = mlp(2, (4,), 3, dropout=0.5)
    net.train()
    net[3].eval()  # a submodule the caller keeps in eval mode (its dropout) stays so

    def broken(out, y):
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        evaluate(net, [(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))], metrics={"bad": broken})
    assert net.training and not net[3].training
    assert [m.training for m in net.modules()] == [True, True, True, True, False, True]

    def batches():
        yield torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        evaluate(net, batches())
    assert net.training and not net[3].training


def test_callbacks_are_called_and_can_stop_training():
    calls = []

    class Stopper(Callback):
        def on_train_begin(self, state):
            calls.append("begin")

        def on_step_end(self, state):
            calls.append("step")

        def on_epoch_end(self, state):
            calls.append(f"epoch{state.epoch}")
            if state.epoch == 2:
                state.stop = True

        def on_train_end(self, state):
            calls.append("end")

    x, y = _blobs(8)
    net = mlp(2, (4,), 3)
    hist = fit(
        net,
        TensorBatches(x, y, 4),
        torch.optim.SGD(net.parameters(), lr=0.1),
        epochs=10,
        callbacks=[Stopper()],
        progress=False,
    )
    assert len(hist) == 2
    assert calls == ["begin", "step", "step", "epoch1", "step", "step", "epoch2", "end"]


def test_penalty_is_added_to_the_loss():
    x, y = _blobs(16)
    torch.manual_seed(0)
    a = mlp(2, (4,), 3)
    plain = fit(a, [(x, y)], torch.optim.SGD(a.parameters(), lr=0.0), epochs=1, progress=False)
    pen = fit(
        a,
        [(x, y)],
        torch.optim.SGD(a.parameters(), lr=0.0),
        epochs=1,
        penalty=lambda m: torch.tensor(1.5),
        progress=False,
    )
    assert pen["loss"][0] == pytest.approx(plain["loss"][0] + 1.5)


def test_nan_loss_stops_with_a_clear_error():
    x, y = _blobs(16)
    net = mlp(2, (4,), 3)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        fit(net, [(x * float("nan"), y)], torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, progress=False)


def test_tensor_batches_cover_each_example_once_per_epoch_and_reproduce():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    loader = TensorBatches(x, y, 4, seed=3)
    assert len(loader) == 3
    epoch1 = torch.cat([b for _, b in loader])
    epoch2 = torch.cat([b for _, b in loader])
    assert sorted(epoch1.tolist()) == list(range(10)) == sorted(epoch2.tolist())
    assert not torch.equal(epoch1, epoch2)  # reshuffled
    again = TensorBatches(x, y, 4, seed=3)
    assert torch.equal(torch.cat([b for _, b in again]), epoch1)
    assert [b.tolist() for _, b in loader.in_order()] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert len(TensorBatches(x, y, 4, drop_last=True)) == 2


def test_eval_train_does_not_change_the_batch_order():
    x, y = _blobs(40)
    orders = []
    for eval_train in (False, True):
        loader = TensorBatches(x, y, 8, seed=5)
        net = mlp(2, (4,), 3)
        fit(
            net,
            loader,
            torch.optim.SGD(net.parameters(), lr=0.0),
            epochs=3,
            eval_train=eval_train,
            progress=False,
        )
        # The 4th epoch's order depends only on how many epochs the loader has served.
        orders.append(torch.cat([b for _, b in loader]))
    assert torch.equal(orders[0], orders[1])


def test_history_errors_name_the_missing_key():
    h = History()
    h.append({"epoch": 1, "loss": 1.0})
    with pytest.raises(KeyError, match="no 'val_loss' in history"):
        h["val_loss"]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible"):
            resolve_device("cuda")


def test_mlp_layout():
    net = mlp(784, (32, 16), 10, dropout=0.2)
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Flatten", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert net(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


class NanAt:
    """A loss that is NaN (or another value) at the given 1-based calls, cross-entropy otherwise."""

    def __init__(self, steps, value=float("nan")):
        self.steps, self.value, self.calls = set(steps), value, 0

    def __call__(self, out, target):
        self.calls += 1
        loss = torch.nn.functional.cross_entropy(out, target)
        return loss * self.value if self.calls in self.steps else loss


class Snapshots(Callback):
    def __init__(self):
        self.weights = {}

    def on_step_end(self, state):
        self.weights[state.step] = {k: v.clone() for k, v in state.model.state_dict().items()}


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_nonfinite_loss_stops_before_it_reaches_the_weights(value):
    x, y = _blobs(64)
    net = mlp(2, (8,), 3)
    snaps = Snapshots()
    with pytest.raises(
        FloatingPointError, match=r"training loss is (nan|inf) at epoch 2, step 7; the weights"
    ) as err:
        fit(
            net,
            TensorBatches(x, y, 16),
            torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9),
            epochs=3,
            loss_fn=NanAt([7], value),
            callbacks=[snaps],
            progress=False,
        )
    assert "lower learning rate, gradient clipping, checking the inputs" in str(err.value)
    assert max(snaps.weights) == 6
    for k, v in net.state_dict().items():
        assert torch.equal(v, snaps.weights[6][k])  # unchanged since the step before the NaN


def test_skip_drops_nonfinite_steps_counts_them_and_keeps_the_weights():
    x, y = _blobs(64)  # 4 batches an epoch
    net = mlp(2, (8,), 3)
    snaps, nan, seen = Snapshots(), NanAt([3, 4, 10]), {}

    def loss_fn(out, target):  # records the weights each step starts from
        seen[nan.calls + 1] = [p.detach().clone() for p in net.parameters()]
        return nan(out, target)

    hist = fit(
        net,
        TensorBatches(x, y, 16),
        torch.optim.SGD(net.parameters(), lr=0.1),
        epochs=3,
        loss_fn=loss_fn,
        callbacks=[snaps],
        nonfinite="skip",
        progress=False,
    )
    assert hist["skipped"] == [2, 0, 1]
    assert sorted(snaps.weights) == [1, 2, 5, 6, 7, 8, 9, 11, 12]  # no on_step_end for a skipped step
    assert all(torch.equal(a, b) for a, b in zip(seen[3], seen[5]))  # steps 3 and 4 changed nothing
    assert not all(torch.equal(a, b) for a, b in zip(seen[2], seen[3]))  # while a normal step does
    assert all(v == v and abs(v) != float("inf") for v in hist["loss"])  # the NaN batches are left out


def test_an_epoch_with_every_step_skipped_records_nan_not_zero():
    x, y = _blobs(32)
    net = mlp(2, (8,), 3)
    hist = fit(
        net,
        TensorBatches(x, y, 16),  # two batches per epoch; both of epoch 2 fail
        torch.optim.SGD(net.parameters(), lr=0.1),
        epochs=3,
        loss_fn=NanAt([3, 4]),
        nonfinite="skip",
        progress=False,
    )
    assert hist["skipped"] == [0, 2, 0]
    assert math.isnan(hist["loss"][1])
    assert math.isfinite(hist["loss"][0]) and math.isfinite(hist["loss"][2])


def test_skip_raises_once_more_than_max_skipped():
    x, y = _blobs(32)
    net = mlp(2, (8,), 3)
    with pytest.raises(
        FloatingPointError, match=r"at epoch 2, step 3: 3 non-finite steps skipped, more than max_skipped=2"
    ):
        fit(
            net,
            TensorBatches(x, y, 16),
            torch.optim.SGD(net.parameters(), lr=0.1),
            epochs=3,
            loss_fn=NanAt([1, 2, 3]),
            nonfinite="skip",
            max_skipped=2,
            progress=False,
        )


def test_tensor_batches_resume_mid_epoch_with_exactly_the_remaining_batches():
    x = torch.arange(10).float().unsqueeze(1)
    y = torch.arange(10)
    full = TensorBatches(x, y, 3, seed=4)
    epochs = [[b.tolist() for _, b in full] for _ in range(3)]
    loader = TensorBatches(x, y, 3, seed=4)
    assert loader.state_dict()["epoch"] == 0 and loader.state_dict()["batch"] == 0
    [b for _, b in loader]  # epoch 0 done
    it = iter(loader)
    next(it), next(it)  # two batches of epoch 1
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 2)
    resumed = TensorBatches(x, y, 3, seed=4)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert [b.tolist() for _, b in resumed] == epochs[1][2:]
    assert [b.tolist() for _, b in resumed] == epochs[2]
    # At the last batch of an epoch the state is still that epoch, with every batch served.
    end = TensorBatches(x, y, 3, seed=4)
    for _ in end:
        pass
    it = iter(end)
    for _ in range(4):
        next(it)
    assert (end.state_dict()["epoch"], end.state_dict()["batch"]) == (1, 4)
    again = TensorBatches(x, y, 3, seed=4)
    again.load_state_dict(end.state_dict())
    assert [b for _, b in again] == [] and [b.tolist() for _, b in again] == epochs[2]
    # An abandoned iteration counts as an epoch started, as before: the next one is a new epoch.
    del it
    assert (end.state_dict()["epoch"], end.state_dict()["batch"]) == (2, 0)


@pytest.mark.parametrize(
    ("state", "error", "pattern"),
    [
        ("x", TypeError, r"`state` must be a mapping from TensorBatches.state_dict\(\). Received: state='x'"),
        ({"epoch": 0}, TypeError, r"`state` must be a mapping"),
        ({"epoch": -1, "batch": 0}, ValueError, r"`state\['epoch'\]` must be an integer >= 0"),
        ({"epoch": 0, "batch": 5}, ValueError, r"`state\['batch'\]` must be an integer in \[0, 4\]"),
        ({"epoch": 0, "batch": 0, "seed": 1}, ValueError, r"`state\['seed'\]` must be 0, as in this loader"),
        ({"epoch": 0, "batch": 0, "examples": 9}, ValueError, r"`state\['examples'\]` must be 10"),
    ],
)
def test_tensor_batches_refuse_a_bad_state(state, error, pattern):
    loader = TensorBatches(torch.zeros(10, 1), torch.zeros(10), 3)
    with pytest.raises(error, match=pattern):
        loader.load_state_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        (
            {"nonfinite": "ignore"},
            ValueError,
            r"`nonfinite` must be one of 'raise', 'skip'. Received: nonfinite='ignore'",
        ),
        ({"max_skipped": -1}, ValueError, r"`max_skipped` must be an integer >= 0. Received: max_skipped=-1"),
        ({"max_skipped": 1.0}, TypeError, r"`max_skipped`.*Received: max_skipped=1.0"),
        (
            {"resume_from": 3},
            TypeError,
            r"`resume_from` must be a directory path or None. Received: resume_from=3",
        ),
    ],
)
def test_fit_rejects_bad_new_arguments(kwargs, error, pattern):
    net = mlp(2, (4,), 3)
    with pytest.raises(error, match=pattern):
        fit(net, [], torch.optim.SGD(net.parameters(), lr=0.1), epochs=1, progress=False, **kwargs)


def test_a_stateless_callback_refuses_a_state():
    assert Callback().state_dict() == {}
    Callback().load_state_dict({})
    with pytest.raises(ValueError, match=r"`state` must be empty for a stateless Callback"):
        Callback().load_state_dict({"x": 1})


def test_tensorboard_without_the_package_raises_a_clear_import_error(monkeypatch):
    import sys

    from dltricks.tensorboard import TensorBoard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were missing
    with pytest.raises(ImportError, match=r"needs the `tensorboard` package: pip install tensorboard"):
        TensorBoard("runs/x")


def test_tensorboard_logs_every_epoch(tmp_path):
    pytest.importorskip("tensorboard")
    from dltricks.tensorboard import TensorBoard

    x, y = _blobs(32)
    net = mlp(2, (4,), 3)
    board = TensorBoard(tmp_path / "run", every_steps=1)
    fit(
        net,
        TensorBatches(x, y, 16),
        torch.optim.SGD(net.parameters(), lr=0.1),
        epochs=2,
        callbacks=[board],
        progress=False,
    )
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    assert board.writer is None  # closed at the end


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"log_dir": 3}, TypeError, r"`log_dir` must be a directory path. Received: log_dir=3"),
        (
            {"log_dir": "x", "every_steps": 0},
            ValueError,
            r"`every_steps` must be an integer >= 1. Received: every_steps=0",
        ),
    ],
)
def test_tensorboard_rejects_bad_arguments(kwargs, error, pattern):
    from dltricks.tensorboard import TensorBoard

    with pytest.raises(error, match=pattern):
        TensorBoard(**kwargs)


def test_correct_predictions_are_per_example_in_batch_order_and_restore_modes():
    from dltricks.train import correct_predictions

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model[1].train()
    model[0].eval()  # a mixed-mode model: each module's own flag comes back
    x, y = torch.randn(37, 4), torch.randint(0, 3, (37,))
    batches = TensorBatches(x, y, 10, shuffle=False)
    right = correct_predictions(model, batches)
    assert right.dtype == bool and right.shape == (37,)
    with torch.no_grad():
        model.eval()
        expected = (model(x).argmax(1) == y).numpy()
    model[1].train()
    model[0].eval()
    np.testing.assert_array_equal(right, expected)  # eval mode (no dropout), in the batches' order
    assert [m.training for m in model] == [False, True, False]
    assert right.mean() == pytest.approx(evaluate(model, batches)["accuracy"], abs=1e-6)  # float32 means
    with pytest.raises(ValueError, match="`batches` must yield at least one batch"):
        correct_predictions(model, [])
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        correct_predictions(lambda v: v, batches)
