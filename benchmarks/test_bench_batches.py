"""Benchmarks of the package's hot paths against the built-ins (``make bench``; not part of ``make test``).

One epoch of mini-batches over 60,000 Fashion-MNIST-sized examples held in memory:
``TensorBatches`` (one gather per batch) against ``DataLoader(TensorDataset)`` (one index per example,
then collate). Run with ``pytest benchmarks --benchmark-only``.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from dltricks.batches import TensorBatches

N, BATCH = 60_000, 128


@pytest.fixture(scope="module")
def tensors():
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 1, 28, 28, generator=g), torch.randint(0, 10, (N,), generator=g)


def _epoch(loader):
    count = 0
    for x, _ in loader:
        count += x.shape[0]
    assert count == N


def test_tensor_batches_epoch(benchmark, tensors):
    x, y = tensors
    loader = TensorBatches(x, y, BATCH, seed=0)
    benchmark.pedantic(_epoch, args=(loader,), rounds=5, iterations=1)


def test_dataloader_epoch(benchmark, tensors):
    x, y = tensors
    loader = DataLoader(
        TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    benchmark.pedantic(_epoch, args=(loader,), rounds=3, iterations=1)
