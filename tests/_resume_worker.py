"""Test helper for tests/test_torchrun.py: a ``launch`` worker whose rank 1 cannot read the checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

import dltricks.checkpoint
from dltricks.batches import TensorBatches
from dltricks.checkpoint import Checkpoint
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
