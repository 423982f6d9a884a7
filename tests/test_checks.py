"""Bad input is rejected before any work, with a message naming the argument and the value received.

One table drives the test: (call, error type, pattern). Adding a public function means adding rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dltricks import book, polynomial
from dltricks.batches import TensorBatches
from dltricks.device import resolve_device
from dltricks.models import mlp
from dltricks.regularization import (
    L1Proximal,
    keras_l2_factor,
    l1_penalty,
    l2_penalty,
    soft_threshold_,
    weights_only,
)
from dltricks.selection import cross_validate, kfold_indices
from dltricks.train import evaluate, fit

W = [torch.zeros(2, 2)]
X, Y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)
NET = torch.nn.Linear(3, 2)
OPT = torch.optim.SGD(NET.parameters(), lr=0.1)

CASES = [
    (lambda: list(kfold_indices(10, 1)), ValueError, r"`k` must be an integer >= 2. Received: k=1"),
    (lambda: list(kfold_indices(10, 2.0)), TypeError, r"`k` must be an integer.*Received: k=2.0"),
    (
        lambda: list(kfold_indices(3, 5)),
        ValueError,
        r"`n` must be at least the number of folds k=5. Received: n=3",
    ),
    (lambda: list(kfold_indices(10, 2, shuffle=True)), ValueError, r"`seed`.*Received: seed=None"),
    (lambda: list(kfold_indices(True, 2)), TypeError, r"`n`.*Received: n=True"),
    (lambda: cross_validate("f", 10), TypeError, r"`score` must be a callable.*Received: score='f'"),
    (lambda: l2_penalty(W, -1.0), ValueError, r"`weight_decay`.*Received: weight_decay=-1.0"),
    (lambda: l2_penalty(W, float("nan")), ValueError, r"`weight_decay`.*Received: weight_decay=nan"),
    (lambda: l2_penalty([], 0.1), ValueError, r"`params` must be a non-empty iterable of tensors"),
    (
        lambda: l2_penalty(NET, 0.1),
        TypeError,
        r"`params` must be an iterable of tensors.*Received: params='Linear'",
    ),
    (lambda: l1_penalty(W, "0.1"), TypeError, r"`strength` must be a real number.*Received: strength='0.1'"),
    (lambda: soft_threshold_(W, -0.5), ValueError, r"`threshold`.*Received: threshold=-0.5"),
    (lambda: L1Proximal(W, -1), ValueError, r"`strength`.*Received: strength=-1"),
    (lambda: weights_only("net"), TypeError, r"`model` must be a torch.nn.Module. Received: model='net'"),
    (lambda: keras_l2_factor(-2), ValueError, r"`weight_decay`.*Received: weight_decay=-2"),
    (lambda: polynomial.polynomial_features(np.zeros(3), -1), ValueError, r"`degree`.*Received: degree=-1"),
    (lambda: polynomial.polynomial_features(np.zeros((3, 2)), 2), ValueError, r"`x` must be a 1-D array"),
    (lambda: polynomial.make_data(0), ValueError, r"`n` must be an integer >= 1. Received: n=0"),
    (lambda: polynomial.make_data(5, noise=-0.1), ValueError, r"`noise`.*Received: noise=-0.1"),
    (
        lambda: polynomial.fit(np.zeros(3), np.zeros(4), 1),
        ValueError,
        r"`y` must be an array of shape \(3,\)",
    ),
    (
        lambda: polynomial.fit(np.zeros(3), np.zeros(3), 1, ridge=-1),
        ValueError,
        r"`ridge`.*Received: ridge=-1",
    ),
    (lambda: mlp(0), ValueError, r"`in_features` must be an integer >= 1. Received: in_features=0"),
    (lambda: mlp(hidden=64), TypeError, r"`hidden` must be a sequence.*Received: hidden=64"),
    (lambda: mlp(hidden=[64, 0]), ValueError, r"`hidden\[i\]`.*Received: hidden\[i\]=0"),
    (
        lambda: mlp(dropout=1.0),
        ValueError,
        r"`dropout` must be a real number in \[0, 1\). Received: dropout=1.0",
    ),
    (lambda: resolve_device("tpu"), ValueError, r"`device` must be one of.*Received: device='tpu'"),
    (lambda: resolve_device(3), TypeError, r"`device`.*Received: device=3"),
    (
        lambda: TensorBatches(X, Y, 0),
        ValueError,
        r"`batch_size` must be an integer >= 1. Received: batch_size=0",
    ),
    (lambda: TensorBatches(X, Y[:3]), ValueError, r"`y` must have as many rows as `x` \(4\)"),
    (lambda: TensorBatches(X.numpy(), Y), TypeError, r"`x` must be a torch.Tensor"),
    (
        lambda: fit(NET, [(X, Y)], OPT, epochs=-1),
        ValueError,
        r"`epochs` must be an integer >= 0. Received: epochs=-1",
    ),
    (lambda: fit(NET, [(X, Y)], "sgd", epochs=1), TypeError, r"`optimizer` must be a torch.optim.Optimizer"),
    (lambda: fit("net", [(X, Y)], OPT, epochs=1), TypeError, r"`model` must be a torch.nn.Module"),
    (
        lambda: fit(NET, [(X, Y)], OPT, epochs=1, eval_every=0),
        ValueError,
        r"`eval_every`.*Received: eval_every=0",
    ),
    (lambda: evaluate(NET, []), ValueError, r"`batches` must yield at least one batch"),
    (lambda: book.pick("fast", quick=1), ValueError, r"`profile` must be one of.*Received: profile='fast'"),
    (lambda: book.pick("full", quick=1), ValueError, r"`by_profile` has no value for profile 'full'"),
    (lambda: book.mean_std([]), ValueError, r"`values` must be a non-empty sequence"),
    (lambda: book.format_value({"a": 1}), TypeError, r"`value` must be a number.*Received: value=\{'a': 1\}"),
    (
        lambda: book.Chapter("", profile="quick", device="cpu", seeds=[0]),
        ValueError,
        r"`name`.*Received: name=''",
    ),
    (lambda: book.Chapter("c", profile="slow", device="cpu", seeds=[0]), ValueError, r"`profile`.*'slow'"),
    (
        lambda: book.Chapter("c", profile="quick", device="cpu", seeds=[]),
        TypeError,
        r"`seeds`.*Received: seeds=\[\]",
    ),
    (lambda: book.Chapter("c", profile="quick", device="cpu", seeds=[0.5]), TypeError, r"`seeds\[i\]`.*0.5"),
]


@pytest.mark.parametrize(("call", "error", "pattern"), CASES, ids=[c[2][:40] for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(call, error, pattern, tmp_path, monkeypatch):
    monkeypatch.setenv("DLTRICKS_RESULTS_DIR", str(tmp_path))
    with pytest.raises(error, match=pattern):
        call()
