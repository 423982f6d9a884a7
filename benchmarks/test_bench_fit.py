"""Benchmarks of one epoch of ``fit`` against a bare PyTorch loop over the same batches.

The model is a 784-256-256-10 MLP, 50 batches of 128 on one thread. ``fit`` adds, per step, the finite
check of every gradient and one host read of the loss (``sync_every=1``, the default), or neither read
(``sync_every=16``, which needs a fused optimizer, so its bare loop is fused too). Compare the rows of a
group: the goal is ``fit`` within about 5 % of its bare loop on a CPU. On a CPU a host read costs little
(there is no device queue to drain); measure on a GPU to see what ``sync_every`` saves. Run with
``pytest benchmarks --benchmark-only`` (``make bench``).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dltricks.train import fit

N_BATCHES, BATCH = 50, 128


@pytest.fixture(scope="module")
def batches():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N_BATCHES * BATCH, 784, generator=g)
    y = torch.randint(0, 10, (N_BATCHES * BATCH,), generator=g)
    return list(zip(x.split(BATCH), y.split(BATCH), strict=True))


def _setup(fused):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, fused=fused)


def _bare(model, opt, batches):
    for x, y in batches:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss.item()  # what a loop that logs its loss does


@pytest.mark.parametrize(("group", "fused", "sync_every"), [("per-step read", False, 1), ("fused", True, 16)])
@pytest.mark.parametrize("impl", ["bare", "fit"])
def test_epoch(benchmark, batches, impl, group, fused, sync_every):
    model, opt = _setup(fused)
    benchmark.group = f"fit epoch: {group}"
    timing = dict(rounds=7, iterations=1, warmup_rounds=1)
    if impl == "bare":
        benchmark.pedantic(_bare, args=(model, opt, batches), **timing)
    else:
        kwargs = dict(epochs=1, progress=False, sync_every=sync_every)
        benchmark.pedantic(fit, args=(model, batches, opt), kwargs=kwargs, **timing)
