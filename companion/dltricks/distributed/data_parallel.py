r"""Data parallelism from scratch, for teaching, next to ``DistributedDataParallel`` (DDP).

With :math:`W` ranks and a mean loss, the gradient of the global batch :math:`B = B_0 \cup \dots \cup
B_{W-1}` (equal shards) is the average of the shards' gradients:

.. math::

    \nabla \frac{1}{|B|} \sum_{i \in B} \ell_i = \frac{1}{W} \sum_{r=0}^{W-1} \nabla \frac{1}{|B_r|}
    \sum_{i \in B_r} \ell_i .

So each rank (1) starts from the same weights (:func:`broadcast_parameters`), (2) computes the gradient of
its own shard, (3) sums the gradients of all ranks with an all-reduce and divides by :math:`W`
(:func:`average_gradients`), and (4) takes the same optimizer step; the replicas stay identical and the run
equals one process on the concatenated batch (up to the order of floating-point additions).

DDP does the same, faster: it groups gradients into buckets of about 25 MB and starts each bucket's
all-reduce during ``backward`` as soon as its gradients are ready, overlapping communication with
computation. A ring all-reduce sends about :math:`2 (W-1)/W` times the gradient bytes per rank per step.

References:
    Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020
    (DDP: gradient buckets, overlap with backward); Goyal et al., "Accurate, Large Minibatch SGD: Training
    ImageNet in 1 Hour", 2017 (the equivalence with one large batch, sec. 2); Patarasuk & Yuan, "Bandwidth
    Optimal All-reduce Algorithms for Clusters of Workstations", JPDC 2009 (the ring all-reduce).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dltricks._checks import check_choice, check_float, check_int, check_type, fail
from dltricks.distributed.sharding import shard_indices

STRATEGIES = ("ours", "ddp")


def _world() -> int:
    if not dist.is_initialized():
        raise RuntimeError(
            "no process group: call this inside a worker started by dltricks.distributed.launch"
        )
    return dist.get_world_size()


@torch.no_grad()
def broadcast_parameters(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank (as DDP's constructor does).

    Raises:
        TypeError: for a ``model`` or ``src`` of the wrong type.
        ValueError: for a ``src`` outside the ranks.
        RuntimeError: outside a process group.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    src = check_int("src", src, minimum=0, maximum=_world() - 1)
    for t in [*model.parameters(), *model.buffers()]:
        dist.broadcast(t, src)


@torch.no_grad()
def average_gradients(model: nn.Module) -> None:
    r"""Replace every ``.grad`` by its mean over the ranks: all-reduce (sum), then divide by :math:`W`.

    One all-reduce per parameter tensor, in the order of ``model.parameters()`` (the same on every rank,
    which collectives require). Every rank must have a gradient for the same parameters.

    Raises:
        TypeError: for a ``model`` of the wrong type.
        RuntimeError: outside a process group.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    world = _world()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # blocks until every rank contributed its gradient
            p.grad.div_(world)


def data_parallel_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
) -> torch.Tensor:
    """One data-parallel step on this rank's shard ``(x, y)``: gradient, average over ranks, optimizer step.

    Every rank must call it with a shard of the same size (then the averaged gradient is the global batch's;
    with a mean loss, unequal shards would weight examples unequally).

    Returns:
        This rank's shard loss, a detached 0-d tensor.

    Raises:
        TypeError: for a ``model`` or ``optimizer`` of the wrong type.
        RuntimeError: outside a process group.
    """
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    loss.backward()
    average_gradients(model)
    optimizer.step()
    return loss.detach()


def train_data_parallel(
    rank: int,
    world_size: int,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    strategy: str = "ours",
    batch_size: int = 32,
    epochs: int = 1,
    lr: float = 0.1,
    seed: int = 0,
) -> dict[str, Any]:
    """A worker for :func:`~dltricks.distributed.launcher.launch`: SGD on this rank's shards, ours or DDP.

    Each epoch the rank takes its :func:`~dltricks.distributed.sharding.shard_indices` and cuts them into
    local batches of ``batch_size // world_size``, so the global batch is ``batch_size`` and the run
    replays one process training with batch ``batch_size`` on the same permutation (drop the last partial
    batch). Loss: cross-entropy for integer ``y``, mean squared error otherwise.

    Args:
        rank, world_size: given by ``launch``.
        model: the initial model (every rank gets a copy; rank 0's weights are broadcast anyway). With
            ``nccl``, model and data are moved to the rank's GPU.
        x, y: the whole data set (each rank indexes its shard).
        strategy: ``"ours"`` (:func:`data_parallel_step`) or ``"ddp"`` (``DistributedDataParallel``).
        batch_size: the global batch, divisible by ``world_size``.
        epochs: passes over the data (>= 1).
        lr: SGD's learning rate (> 0).
        seed: the seed of the shards' permutations.

    Returns:
        ``{"state": final state dict (CPU), "losses": per-step local losses, "seconds": training time}``.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for an unknown ``strategy``, a ``batch_size`` not divisible by ``world_size`` or too
            large for the shards, or a number out of range.
        RuntimeError: outside a process group.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    _world()  # inside a process group, or a clear error
    strategy = check_choice("strategy", strategy, STRATEGIES)
    batch_size = check_int("batch_size", batch_size, minimum=world_size)
    if batch_size % world_size:
        fail("batch_size", f"divisible by world_size={world_size}", batch_size)
    epochs = check_int("epochs", epochs, minimum=1)
    lr = check_float("lr", lr, minimum=0.0, min_inclusive=False)
    local = batch_size // world_size
    shard_size = x.shape[0] // world_size
    if local > shard_size:
        fail("batch_size", f"at most {shard_size * world_size} (the data divided over the ranks)", batch_size)
    if dist.get_backend() == "nccl":  # one GPU per rank: launch has set this rank's current device
        device = torch.device("cuda", torch.cuda.current_device())
        model, x, y = model.to(device), x.to(device), y.to(device)
    broadcast_parameters(model)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if strategy == "ddp" else model
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    loss_fn = nn.functional.cross_entropy if not y.is_floating_point() else nn.functional.mse_loss
    losses = []
    dist.barrier()  # start the clock together
    t0 = time.perf_counter()
    for epoch in range(epochs):
        idx = shard_indices(x.shape[0], rank, world_size, epoch=epoch, seed=seed, drop_last=True)
        for k in range(len(idx) // local):
            b = idx[k * local : (k + 1) * local]
            if strategy == "ours":
                losses.append(data_parallel_step(model, optimizer, x[b], y[b], loss_fn))
            else:  # DDP averages the gradients inside backward, bucket by bucket
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(net(x[b]), y[b])
                loss.backward()
                optimizer.step()
                losses.append(loss.detach())
    seconds = time.perf_counter() - t0
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"state": state, "losses": torch.stack(losses).cpu(), "seconds": seconds}
