"""Early stopping on scripted metric sequences: patience, min_delta, mode, restore, warm-up, and Keras parity.

A real ``fit`` runs on a tiny model; a ``Script`` callback placed before ``EarlyStopping`` overwrites the
monitored value in the epoch's history record with the next value of a list (``None``: leave it out, as
``fit(eval_every=k)`` does on the epochs it skips), so every case is a short, readable sequence.
"""

from __future__ import annotations

import importlib.util
import re
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


@pytest.mark.parametrize("mode", ["min", "max"])
def test_a_tie_is_not_an_improvement_in_either_mode(mode):
    sign = 1.0 if mode == "min" else -1.0
    epochs, es, _, _ = run([sign * 0.5, sign * 0.5, sign * 0.25], key="val_accuracy", mode=mode, patience=0)
    assert (epochs, es.best, es.best_epoch, es.stopped_epoch) == (2, sign * 0.5, 1, 2)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_min_delta_in_either_mode_needs_a_gain_strictly_beyond_it(mode):
    # Dyadic values, so the sums are exact: 0.75 is exactly best + min_delta (not enough), 0.625 is a
    # gain below min_delta, 1.0 a gain beyond it. In max mode a loss smaller than min_delta is no gain.
    values = [0.5, 0.75, 0.625, 0.375, 1.0]
    sign = 1.0 if mode == "max" else -1.0
    _, es, _, _ = run([sign * v for v in values], key="val_score", mode=mode, min_delta=0.25, patience=9)
    assert (es.best, es.best_epoch, es.wait, es.stopped_epoch) == (sign * 1.0, 5, 0, None)
    _, es, _, _ = run([sign * v for v in values[:4]], key="val_score", mode=mode, min_delta=0.25, patience=9)
    assert (es.best, es.best_epoch, es.wait) == (sign * 0.5, 1, 3)


def test_a_fresh_callback_has_the_documented_defaults_and_an_empty_state():
    es = EarlyStopping()
    assert (es.monitor, es.mode, es.patience, es.min_delta) == ("val_loss", "min", 5, 0.0)
    assert (es.restore_best_weights, es.start_from_epoch) == (True, 0)
    assert es.state_dict() == {
        "best": None,
        "best_epoch": None,
        "wait": 0,
        "stopped_epoch": None,
        "best_state": None,
    }
    # and the default patience of 5 is what stops a run: best at epoch 1, stop at epoch 6
    epochs, stopper, _, _ = run([0.5] + [0.75] * 9)
    assert (epochs, stopper.stopped_epoch, stopper.wait) == (6, 6, 5)


def test_a_loaded_state_restores_the_saved_best_weights():
    _, first, script, _ = run([1.0, 0.5, 0.75], patience=5)
    saved = first.state_dict()
    torch.manual_seed(1)
    net = torch.nn.Linear(3, 2)
    second = EarlyStopping("val_loss", patience=5)
    second.load_state_dict(saved)
    assert (second.best, second.best_epoch, second.wait, second.stopped_epoch) == (0.5, 2, 1, None)
    second.on_train_end(TrainState(net, torch.optim.SGD(net.parameters(), lr=0.1), History()))
    for key, value in net.state_dict().items():
        assert torch.equal(value, script.snapshots[2][key])  # the weights of the best epoch, epoch 2


def test_a_wrong_monitor_type_is_named_with_the_rule():
    message = "`monitor` must be a string naming a History key. Received: monitor=3"
    with pytest.raises(TypeError, match="^" + re.escape(message) + "$"):
        EarlyStopping(3)


def test_a_fresh_state_loads_and_loaded_weights_are_copies():
    fresh = EarlyStopping()
    fresh.load_state_dict(EarlyStopping().state_dict())
    assert fresh.state_dict() == EarlyStopping().state_dict()
    _, first, _, _ = run([1.0, 0.5], patience=5)
    saved = first.state_dict()
    second = EarlyStopping()
    second.load_state_dict(saved)
    for key, value in saved["best_state"].items():
        assert torch.equal(second.best_state[key], value)
        assert second.best_state[key].data_ptr() != value.data_ptr()  # not aliased with the caller's tensors


def test_load_state_dict_error_shows_what_it_received():
    with pytest.raises(TypeError, match=r"\. Received: state='x'$"):
        EarlyStopping().load_state_dict("x")


def test_nothing_happens_without_history_or_without_a_monitored_epoch():
    net = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state = TrainState(net, torch.optim.SGD(net.parameters(), lr=0.1), History())
    es = EarlyStopping(restore_best_weights=True)
    state.epoch = 1
    es.on_epoch_end(state)  # no record at all
    es.on_train_end(state)  # nothing to restore
    assert es.state_dict() == EarlyStopping().state_dict() and not state.stop
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_without_restore_a_loaded_best_state_is_not_applied():
    _, first, script, net = run([1.0, 0.5, 0.75], patience=5)
    last = {k: v.clone() for k, v in net.state_dict().items()}
    es = EarlyStopping(restore_best_weights=False)
    es.load_state_dict(first.state_dict())
    es.on_train_end(TrainState(net, torch.optim.SGD(net.parameters(), lr=0.1), History()))
    assert all(torch.equal(v, last[k]) for k, v in net.state_dict().items())


def test_start_from_epoch_ignores_exactly_that_many_epochs():
    # epochs 1 and 2 are warm-up: the 0.1 of epoch 2 must not become the best
    _, es, _, _ = run([0.2, 0.1, 0.5, 0.75], start_from_epoch=2, patience=5)
    assert (es.best, es.best_epoch, es.wait) == (0.5, 3, 1)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: on one device .to('cpu') is a no-op"
)
def test_the_best_weights_are_kept_on_the_cpu_whatever_the_model_is_on():
    # The copy lives on the CPU (GPU memory stays free), both when it is taken and when a state is loaded;
    # restoring puts it back on the model's device. (tools/mutate.py lists the CPU-only equivalents.)
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2).cuda()
    stopper = EarlyStopping("val_loss", patience=5, restore_best_weights=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    fit(net, [(X.cuda(), Y.cuda())], opt, epochs=2, callbacks=[Script([1.0, 0.5]), stopper], progress=False)
    assert {v.device.type for v in stopper.best_state.values()} == {"cpu"}
    loaded = EarlyStopping("val_loss")
    loaded.load_state_dict({**stopper.state_dict(),
                            "best_state": {k: v.cuda() for k, v in stopper.best_state.items()}})  # fmt: skip
    assert {v.device.type for v in loaded.best_state.values()} == {"cpu"}
    assert {p.device.type for p in net.parameters()} == {"cuda"}
