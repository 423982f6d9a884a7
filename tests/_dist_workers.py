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
from torch import nn

from dltricks.distributed import data_parallel_step, train_data_parallel


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


class Branchy(nn.Module):
    """``a(x) + b(x) + c(x)``, or ``a(x) + c(x)`` when ``skip``: ``b`` is unused on the ranks that skip it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
        self.frozen = nn.Linear(4, 3)  # no rank uses it: no gradient anywhere
        self.skip = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.a(x) + self.c(x)
        return out if self.skip else out + self.b(x)


def unused_branch(rank, world_size, find_unused):
    """Rank 1 skips ``b``: three of our steps and three DDP(find_unused_parameters=True) steps."""
    torch.manual_seed(0)
    model = Branchy().double()
    model.skip = rank == 1
    gen = torch.Generator().manual_seed(rank)
    x, y = torch.randn(8, 4, generator=gen, dtype=torch.float64), torch.randint(0, 3, (8,), generator=gen)
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    try:
        for _ in range(3):
            data_parallel_step(model, opt, x, y, find_unused_parameters=find_unused)
    except RuntimeError as err:
        return {"error": str(err)}
    ddp = nn.parallel.DistributedDataParallel(reference, find_unused_parameters=True)
    ddp_opt = torch.optim.SGD(ddp.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        ddp_opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(ddp(x), y).backward()
        ddp_opt.step()
    return {"ours": model.state_dict(), "ddp": reference.state_dict()}
