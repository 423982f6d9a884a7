"""Test helpers for tests/test_torchrun.py: ``launch`` workers (a rank that cannot resume; batch norm)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

import dltricks.checkpoint
from dltricks.batches import TensorBatches
from dltricks.checkpoint import Checkpoint
from dltricks.distributed import fitting
from dltricks.models import mlp
from dltricks.train import fit


def _run(directory: str, epochs: int) -> None:
    torch.manual_seed(0)
    model = mlp(2, (4,), 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 2, generator=torch.Generator().manual_seed(0)), torch.arange(16) % 2
    fit(model, TensorBatches(x, y, 4), opt, epochs=epochs, callbacks=[Checkpoint(directory)],
        resume_from=directory, progress=False)  # fmt: skip


def write_checkpoint(directory: Path) -> None:
    """One epoch in this process: a checkpoint to resume from."""
    _run(str(directory), 1)


def resume_worker(rank: int, world_size: int, directory: str) -> None:
    if rank == 1:  # as on a machine that does not see rank 0's file system

        def missing(path, *args, **kwargs):
            raise OSError(f"no such file: {path}")

        dltricks.checkpoint.load_checkpoint = missing  # type: ignore[assignment]
    _run(directory, 2)


def batch_norm_worker(rank: int, world_size: int) -> list[str]:
    """The warnings ``fit``'s preparation gives a batch-norm model in several processes."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    x, y = torch.randn(16, 2), torch.arange(16) % 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitting.prepare(model, TensorBatches(x, y, 4), torch.device("cpu"))
    return [str(w.message) for w in caught]
