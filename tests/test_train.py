"""The training loop, its batches and its evaluation."""

from __future__ import annotations

import pytest
import torch

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
