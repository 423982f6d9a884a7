"""Worker functions for tests/test_distributed.py: importable by the processes ``launch`` spawns.

(A spawned worker unpickles its function by module and name, so these cannot live in the test module
without each worker importing pytest and the whole test file.)
"""

from __future__ import annotations

import copy
import os
import time

import torch
import torch.distributed as dist

from dltricks.distributed import train_data_parallel


def ours_and_ddp(rank, world_size, model, x, y, kwargs):
    """Train a copy of ``model`` with our data parallelism, another with DDP; both final states."""
    ours = train_data_parallel(rank, world_size, copy.deepcopy(model), x, y, strategy="ours", **kwargs)
    ddp = train_data_parallel(rank, world_size, copy.deepcopy(model), x, y, strategy="ddp", **kwargs)
    return {"ours": ours["state"], "ddp": ddp["state"], "steps": len(ours["losses"])}


def fail_on_rank(rank, world_size, bad_rank):
    """Rank ``bad_rank`` raises; the others wait for it in an all-reduce that never completes."""
    if rank == bad_rank:
        raise ValueError(f"deliberate failure on rank {rank}")
    dist.all_reduce(torch.ones(1))
    return rank


def exit_on_rank(rank, world_size, bad_rank):
    """Rank ``bad_rank`` dies without a word (exit code 3); the others wait for it."""
    if rank == bad_rank:
        os._exit(3)
    dist.all_reduce(torch.ones(1))
    return rank


def sleep(rank, world_size, seconds):
    """Hang for ``seconds``."""
    time.sleep(seconds)
    return rank
