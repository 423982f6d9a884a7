"""Seeding and random states: one seed, one run; saved states continue the same random streams."""

from __future__ import annotations

import os
import random
import sys
import types

import numpy as np
import pytest
import torch

from dltricks.batches import TensorBatches
from dltricks.checkpoint import load_checkpoint, save_checkpoint
from dltricks.models import mlp
from dltricks.repro import rng_state, seed_everything, set_rng_state
from dltricks.train import fit


@pytest.fixture(autouse=True)
def _restore_global_settings(monkeypatch):
    """seed_everything writes os.environ and torch's global flags: put them back after each test."""
    for name in ("PYTHONHASHSEED", "CUBLAS_WORKSPACE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(flags[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[1:]


def draws() -> tuple:
    return random.random(), np.random.rand(), torch.rand(3).tolist()  # noqa: NPY002 (the global generator)


def train(seed: int) -> list[dict]:
    seed_everything(seed)
    g = torch.Generator().manual_seed(0)  # the data is fixed; the seed drives initialization and dropout
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    net = mlp(4, (16,), 3, dropout=0.3)
    history = fit(
        net, TensorBatches(x, y, 16), torch.optim.SGD(net.parameters(), lr=0.1), epochs=3, progress=False
    )
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history.epochs]


def test_one_seed_gives_one_history_and_two_seeds_differ():
    assert train(0) == train(0)
    assert train(0) != train(1)


def test_seed_everything_seeds_python_numpy_and_torch():
    seed_everything(123)
    first = draws()
    seed_everything(123)
    assert draws() == first
    seed_everything(124)
    assert draws() != first
    assert os.environ["PYTHONHASHSEED"] == "124"


def test_tensorflow_is_seeded_only_when_already_imported(monkeypatch):
    if "tensorflow" not in sys.modules:
        seed_everything(0)
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules  # never imported here
    seen = []
    tf = types.SimpleNamespace(
        random=types.SimpleNamespace(set_seed=lambda s: seen.append(("tf", s))),
        config=types.SimpleNamespace(
            experimental=types.SimpleNamespace(enable_op_determinism=lambda: seen.append(("tf", "det")))
        ),
    )
    keras = types.SimpleNamespace(
        utils=types.SimpleNamespace(set_random_seed=lambda s: seen.append(("keras", s)))
    )
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    monkeypatch.setitem(sys.modules, "keras", keras)
    seed_everything(7, deterministic=True)
    assert seen == [("keras", 7), ("tf", 7), ("tf", "det")]


def test_deterministic_mode_sets_the_flags():
    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def test_a_saved_random_state_continues_the_same_streams(tmp_path):
    seed_everything(5)
    random.gauss(0, 1), np.random.randn()  # noqa: NPY002 (leave cached gaussians in both states)
    state = rng_state()
    expected = draws()
    draws()  # move on
    set_rng_state(state)
    assert draws() == expected
    # Through a checkpoint file (tensors and primitives only: loadable with weights_only=True).
    set_rng_state(load_checkpoint(save_checkpoint(tmp_path / "rng.pt", {"rng": state}))["rng"])
    assert draws() == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the warning on a machine without CUDA")
def test_a_cuda_state_that_cannot_be_restored_is_warned_about():
    state = rng_state()
    assert state["cuda"] == []
    state["cuda"] = [torch.get_rng_state()]
    with pytest.warns(RuntimeWarning, match=r"saved CUDA random state \(1 devices\) was not restored"):
        set_rng_state(state)


BAD = [
    (
        lambda: seed_everything(-1),
        ValueError,
        r"`seed` must be an integer in \[0, 4294967295\]. Received: seed=-1",
    ),
    (lambda: seed_everything(2**32), ValueError, r"`seed`.*Received: seed=4294967296"),
    (lambda: seed_everything(1.5), TypeError, r"`seed` must be an integer.*Received: seed=1.5"),
    (lambda: seed_everything("1"), TypeError, r"`seed`.*Received: seed='1'"),
    (lambda: seed_everything(True), TypeError, r"`seed`.*Received: seed=True"),
    (
        lambda: seed_everything(0, deterministic=1),
        TypeError,
        r"`deterministic` must be a bool. Received: deterministic=1",
    ),
    (
        lambda: set_rng_state("state"),
        TypeError,
        r"`state` must be a mapping from rng_state\(\).*Received: state='state'",
    ),
    (
        lambda: set_rng_state({"python": 1}),
        TypeError,
        r"`state` must be a mapping from rng_state\(\) with the keys",
    ),
    (
        lambda: set_rng_state({"python": {}, "numpy": {}, "torch": torch.get_rng_state(), "cuda": []}),
        ValueError,
        r"`state` must come from rng_state\(\); it is malformed",
    ),
    (
        lambda: set_rng_state(rng_state() | {"torch": [1, 2]}),
        TypeError,
        r"`state\['torch'\]` must be a torch.ByteTensor. Received: state\['torch'\]=\[1, 2\]",
    ),
]


@pytest.mark.parametrize(("call", "error", "pattern"), BAD, ids=[c[2][:40] for c in BAD])
def test_bad_arguments_are_rejected_with_a_clear_message(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
