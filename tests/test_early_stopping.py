"""Early stopping on scripted metric sequences: patience, min_delta, mode, restore, warm-up, and Keras parity.

A real ``fit`` runs on a tiny model; a ``Script`` callback placed before ``EarlyStopping`` overwrites the
monitored value in the epoch's history record with the next value of a list (``None``: leave it out, as
``fit(eval_every=k)`` does on the epochs it skips), so every case is a short, readable sequence.
"""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch

from dltricks.early_stopping import EarlyStopping
from dltricks.train import Callback, History, TrainState, fit

X, Y = torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2
DATA = [(X, Y)]


class Script(Callback):
    """Write ``values[epoch - 1]`` as ``key`` into the epoch's record, and snapshot the weights."""

    def __init__(self, values, key="val_loss"):
        self.values, self.key, self.snapshots = list(values), key, {}

    def on_epoch_end(self, state: TrainState) -> None:
        record = state.history.epochs[-1]
        record.pop(self.key, None)
        value = self.values[state.epoch - 1]
        if value is not None:
            record[self.key] = value
        self.snapshots[state.epoch] = {k: v.clone() for k, v in state.model.state_dict().items()}


def run(values, key="val_loss", **kwargs):
    """Fit for at most len(values) epochs; return (epochs run, the callback, the script, the model)."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    script, stopper = Script(values, key), EarlyStopping(key, **kwargs)
    history = fit(
        net,
        DATA,
        torch.optim.SGD(net.parameters(), lr=0.1),
        epochs=len(values),
        callbacks=[script, stopper],
        progress=False,
    )
    return len(history), stopper, script, net


def test_stops_exactly_patience_epochs_after_the_best():
    # best at epoch 3 (0.5); epochs 4, 5, 6 do not improve; patience 3 -> stop at epoch 6.
    epochs, es, _, _ = run([1.0, 0.8, 0.5, 0.6, 0.5, 0.7, 0.1, 0.1], patience=3)
    assert (epochs, es.best, es.best_epoch, es.stopped_epoch, es.wait) == (6, 0.5, 3, 6, 3)


def test_patience_zero_stops_at_the_first_epoch_without_improvement():
    epochs, es, _, _ = run([1.0, 0.9, 0.9, 0.1], patience=0)
    assert (epochs, es.best_epoch, es.stopped_epoch) == (3, 2, 3)


def test_runs_to_the_end_when_it_keeps_improving():
    epochs, es, _, _ = run([5.0, 4.0, 3.0, 2.0, 1.0], patience=1)
    assert (epochs, es.best, es.best_epoch, es.stopped_epoch, es.wait) == (5, 1.0, 5, None, 0)


def test_min_delta_makes_small_improvements_not_count():
    values = [1.0, 0.95, 0.91, 0.5, 0.4]
    # Improvements of 0.05 and 0.04 are below min_delta = 0.1: epochs 2 and 3 count against patience.
    epochs, es, _, _ = run(values, patience=2, min_delta=0.1)
    assert (epochs, es.best, es.best_epoch, es.stopped_epoch) == (3, 1.0, 1, 3)
    epochs, es, _, _ = run(values, patience=2, min_delta=0.0)
    assert (epochs, es.best_epoch, es.stopped_epoch) == (5, 5, None)


def test_mode_max_for_accuracy():
    values = [0.5, 0.7, 0.6, 0.65, 0.9]
    epochs, es, _, _ = run(values, key="val_accuracy", patience=2)  # "auto" -> "max"
    assert es.mode == "max"
    assert (epochs, es.best, es.best_epoch, es.stopped_epoch) == (4, 0.7, 2, 4)
    epochs, es, _, _ = run(values, key="val_accuracy", mode="min", patience=2)
    assert (epochs, es.best, es.best_epoch) == (3, 0.5, 1)


def test_restores_the_weights_of_the_best_epoch():
    epochs, es, script, net = run([1.0, 0.4, 0.6, 0.7, 0.8], patience=2)
    assert (epochs, es.best_epoch) == (4, 2)
    best, last = script.snapshots[2], script.snapshots[4]
    assert not torch.equal(best["weight"], last["weight"])  # training moved the weights after epoch 2
    for k, v in net.state_dict().items():
        assert torch.equal(v, best[k])


def test_without_restore_the_last_weights_stay():
    _, _, script, net = run([1.0, 0.4, 0.6, 0.7, 0.8], patience=2, restore_best_weights=False)
    for k, v in net.state_dict().items():
        assert torch.equal(v, script.snapshots[4][k])


def test_restores_at_the_end_even_without_stopping():
    epochs, es, script, net = run([1.0, 0.4, 0.6], patience=5)
    assert (epochs, es.stopped_epoch) == (3, None)
    assert torch.equal(net.weight, script.snapshots[2]["weight"])


def test_epochs_without_the_monitored_key_are_ignored():
    # None: validation skipped. Counting only the monitored epochs, 0.5 (epoch 2) is followed by 0.6, 0.7.
    epochs, es, _, _ = run([1.0, 0.5, None, None, 0.6, None, 0.7, 0.1], patience=2)
    assert (epochs, es.best_epoch, es.stopped_epoch) == (7, 2, 7)


def test_start_from_epoch_skips_the_warm_up():
    # Epochs 1-3 are not monitored, so the low 0.1 at epoch 2 never becomes the best.
    epochs, es, _, _ = run([1.0, 0.1, 0.9, 0.8, 0.7, 0.75, 0.76, 0.77], patience=2, start_from_epoch=3)
    assert (epochs, es.best, es.best_epoch, es.stopped_epoch) == (7, 0.7, 5, 7)


def test_reuse_across_fits_starts_afresh():
    net = torch.nn.Linear(3, 2)
    es = EarlyStopping(patience=1)
    for _ in range(2):
        script = Script([1.0, 2.0, 3.0])
        hist = fit(
            net,
            DATA,
            torch.optim.SGD(net.parameters(), lr=0.1),
            epochs=3,
            callbacks=[script, es],
            progress=False,
        )
        assert (len(hist), es.best, es.stopped_epoch) == (2, 1.0, 2)


SEQUENCES = [
    ([1.0, 0.8, 0.5, 0.6, 0.5, 0.7, 0.1, 0.1], {"patience": 3}),
    ([1.0, 0.9, 0.9, 0.1], {"patience": 0}),
    ([1.0, 0.95, 0.91, 0.5, 0.4], {"patience": 2, "min_delta": 0.1}),
    ([1.0, 0.1, 0.9, 0.8, 0.7, 0.75, 0.76, 0.77], {"patience": 2, "start_from_epoch": 3}),
    ([1.0, 0.5, None, None, 0.6, None, 0.7, 0.1], {"patience": 2}),
    ([3.0, 2.0, 2.0, 1.0, 1.5, 1.2, 0.9, 1.1, 1.3, 1.4], {"patience": 2, "min_delta": 0.05}),
    ([5.0, 4.0, 3.0, 2.0, 1.0], {"patience": 1}),
]


@pytest.mark.keras
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
@pytest.mark.parametrize(("values", "kwargs"), SEQUENCES)
def test_same_stopping_and_best_epoch_as_keras(values, kwargs):
    import keras

    # Drive Keras' callback directly with the same logs; a tiny model gives it weights to save.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.stop_training = False
    theirs = keras.callbacks.EarlyStopping(monitor="val_loss", mode="min", **kwargs)
    theirs.set_model(model)
    theirs.on_train_begin()
    keras_epochs = len(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns on the epochs without val_loss
        for epoch, value in enumerate(values):  # Keras counts epochs from 0
            theirs.on_epoch_end(epoch, logs={"loss": 1.0} | ({} if value is None else {"val_loss": value}))
            if model.stop_training:
                keras_epochs = epoch + 1
                break
    epochs, ours, _, _ = run(values, **kwargs)
    assert epochs == keras_epochs
    assert ours.best_epoch == theirs.best_epoch + 1
    assert ours.best == pytest.approx(float(theirs.best))
    assert (ours.stopped_epoch or 0) == (theirs.stopped_epoch + 1 if theirs.stopped_epoch else 0)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"patience": -1}, ValueError, r"`patience` must be an integer >= 0. Received: patience=-1"),
        (
            {"mode": "sideways"},
            ValueError,
            r"`mode` must be one of 'auto', 'min', 'max'. Received: mode='side",
        ),
        ({"monitor": 3}, TypeError, r"`monitor` must be a string.*Received: monitor=3"),
        ({"min_delta": -0.1}, ValueError, r"`min_delta`.*Received: min_delta=-0.1"),
        ({"start_from_epoch": -2}, ValueError, r"`start_from_epoch`.*Received: start_from_epoch=-2"),
        ({"patience": 2.0}, TypeError, r"`patience`.*Received: patience=2.0"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        EarlyStopping(**kwargs)


def test_state_round_trip_resumes_the_same_decisions():
    values = [1.0, 0.8, 0.5, 0.6, 0.5, 0.7, 0.1, 0.1]
    _, whole, _, _ = run(values, patience=3)
    # Stop after 4 epochs, carry the state over to a fresh instance, feed the rest by hand.
    _, first, _, net = run(values[:4], patience=3)
    state = first.state_dict()
    assert set(state) == {"best", "best_epoch", "wait", "stopped_epoch", "best_state"}
    assert all(isinstance(v, torch.Tensor) for v in state["best_state"].values())
    second = EarlyStopping("val_loss", patience=3)
    second.load_state_dict(state)
    assert second.best_state is not state["best_state"]  # a copy, not shared with the saved state
    history = History()
    train_state = TrainState(net, torch.optim.SGD(net.parameters(), lr=0.1), history)
    for epoch, value in enumerate(values[4:], start=5):
        history.append({"epoch": epoch, "val_loss": value})
        train_state.epoch = epoch
        second.on_epoch_end(train_state)
        if train_state.stop:
            break
    assert (second.best, second.best_epoch, second.stopped_epoch, second.wait) == (
        whole.best,
        whole.best_epoch,
        whole.stopped_epoch,
        whole.wait,
    )


@pytest.mark.parametrize("state", ["x", {"best": 1.0}, None])
def test_load_state_dict_names_what_is_wrong(state):
    with pytest.raises(TypeError, match=r"`state` must be a mapping with the keys \['best', 'best_epoch'"):
        EarlyStopping().load_state_dict(state)
