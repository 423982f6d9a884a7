"""Who am I in a ``torch.distributed`` job, and the few collectives ``fit`` needs to agree on its numbers.

A script launched with ``torchrun --standalone --nproc-per-node=N script.py`` (``torch.distributed.run``)
finds its rank and the number of ranks in ``$RANK``, ``$LOCAL_RANK`` and ``$WORLD_SIZE``, and the rendezvous
in ``$MASTER_ADDR``/``$MASTER_PORT``; :func:`init_from_env` joins the process group from them (``gloo`` on
the CPU, ``NCCL`` on GPUs, one GPU per process). From then on :func:`rank_and_world` reads the process
group, and outside one it is ``(0, 1)``: the same code runs in one process unchanged.

The reductions are what keeps every rank's log identical: :func:`mean_over_ranks` (the training loss of the
global batch, from each rank's shard loss), :func:`sum_over_ranks` (sums and counts of an evaluation) and
:func:`slowest` (an epoch lasts as long as its slowest rank). Each is a collective: every rank must call it,
in the same order.

References:
    PyTorch, "torchrun (Elastic Launch)" (the environment variables it sets) and "Distributed communication
    package - torch.distributed" (``init_process_group`` with ``init_method="env://"``, ``all_reduce``).
"""

from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from dltricks._checks import check_choice, check_float, fail

BACKENDS = ("gloo", "nccl")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks: the process group's, or ``(0, 1)`` outside one.

    Raises:
        RuntimeError: when the environment says this is one of several ranks (``$WORLD_SIZE`` > 1, as
            ``torchrun`` sets it) but no process group was joined: every rank would train alone and write
            the same files. Call :func:`init_from_env` (or ``torch.distributed.init_process_group``) first.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        raise RuntimeError(
            f"this process is rank {os.environ.get('RANK', '?')} of WORLD_SIZE={world} (torchrun sets these) "
            "but no process group is initialized: call dltricks.distributed.init_from_env() (or "
            "torch.distributed.init_process_group()) before fit, or every rank trains alone"
        )
    return 0, 1


def is_main() -> bool:
    """``True`` on rank 0 (and in a single process): the one rank that writes files and shows progress."""
    return rank_and_world()[0] == 0


def init_from_env(backend: str | None = None, timeout: float = 600.0) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes in the environment; return ``(rank, world_size)``.

    Without ``$WORLD_SIZE`` (a plain ``python script.py``) nothing is joined and ``(0, 1)`` is returned, so
    one script serves both. With ``nccl``, each process takes GPU ``$LOCAL_RANK`` as its current device
    before joining (one GPU per process, as NCCL expects). A group already joined is kept.

    Args:
        backend: ``"gloo"`` (CPU tensors), ``"nccl"`` (CUDA tensors), or ``None``: ``nccl`` when CUDA is
            available, ``gloo`` otherwise.
        timeout: seconds a collective may wait for the other ranks before failing (> 0).

    Raises:
        ValueError: for an unknown ``backend``, ``nccl`` without a GPU for ``$LOCAL_RANK``, or a bad
            ``timeout``.
    """
    timeout = check_float("timeout", timeout, minimum=0.0, min_inclusive=False)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    check_choice("backend", backend, BACKENDS)
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            fail("backend", f"'gloo' without a CUDA GPU for LOCAL_RANK={local}", backend)
        torch.cuda.set_device(local)
        kwargs["device_id"] = torch.device("cuda", local)
    dist.init_process_group(
        backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout), **kwargs
    )
    return dist.get_rank(), dist.get_world_size()


def _comm_device() -> torch.device:
    """Where a collective's tensor must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a (detached) tensor over the ranks; ``value`` itself in a single process.

    With equal shards, the mean of the ranks' shard losses is the loss of the global batch. No host sync:
    the all-reduce is queued on the device (NCCL) or done in place (gloo). Every rank gets the same bits.
    """
    world = rank_and_world()[1]
    if world == 1:
        return value
    t = value.detach().to(_comm_device(), copy=True)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / world).to(value.device)


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sums of ``values`` over the ranks, in float64 (the same list on every rank)."""
    if rank_and_world()[1] == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def slowest(seconds: float) -> float:
    """The largest of the ranks' ``seconds``: how long a step of the whole job took."""
    if rank_and_world()[1] == 1:
        return seconds
    t = torch.tensor([seconds], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())
