r"""Data parallelism from scratch, for teaching, next to ``DistributedDataParallel`` (DDP).

With :math:`W` ranks and a mean loss, the gradient of the global batch :math:`B = B_0 \cup \dots \cup
B_{W-1}` (equal shards) is the average of the shards' gradients:

.. math::

    \nabla \frac{1}{|B|} \sum_{i \in B} \ell_i = \frac{1}{W} \sum_{r=0}^{W-1} \nabla \frac{1}{|B_r|}
    \sum_{i \in B_r} \ell_i .

So each rank (1) starts from the same weights (:func:`broadcast_parameters`), (2) computes the gradient of
its own shard, (3) sums the gradients of all ranks with an all-reduce and divides by :math:`W`
(:func:`average_gradients`), and (4) takes the same optimizer step; the replicas stay identical and, for a
model whose forward pass treats every example on its own, the run equals one process on the concatenated
batch (up to the order of floating-point additions).

Two things break that, and :func:`data_parallel_step` handles them as DDP does:

* **Buffers.** Batch norm normalizes each rank's shard by the shard's own statistics (not the global
  batch's: the run is then *not* one process on the concatenated batch, with DDP as with this code; for
  global statistics DDP offers ``nn.SyncBatchNorm``) and updates its running statistics from them, so the
  ranks' buffers would drift apart. ``broadcast_buffers=True`` (DDP's default) copies rank 0's buffers to
  every rank at each step, so the replicas stay identical, buffers included, and equal DDP's rank 0.
* **Parameters unused on some ranks** (a branch taken on one rank only) have a gradient on some ranks and
  ``None`` on others; averaging only the existing ones would pair different tensors in the all-reduces
  (wrong averages, or a hang). :func:`average_gradients` counts the ranks that have each gradient first
  and refuses such a step, naming the parameters, as DDP does; with ``find_unused_parameters=True`` a
  missing gradient counts as zeros, as ``DDP(find_unused_parameters=True)`` does.

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
def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (batch norm's running statistics) to every rank, as DDP does each step.

    Raises:
        TypeError: for a ``model`` or ``src`` of the wrong type.
        ValueError: for a ``src`` outside the ranks.
        RuntimeError: outside a process group.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    src = check_int("src", src, minimum=0, maximum=_world() - 1)
    for t in model.buffers():
        dist.broadcast(t, src)


@torch.no_grad()
def average_gradients(model: nn.Module, *, find_unused_parameters: bool = False) -> None:
    r"""Replace every ``.grad`` by its mean over the ranks: all-reduce (sum), then divide by :math:`W`.

    First one small all-reduce counts, for each parameter, the ranks that have its gradient (the count
    comes to the host: one synchronization). A parameter without a gradient on every rank (frozen, or a
    branch no rank used) is left alone; one with a gradient on some ranks only is refused, unless
    ``find_unused_parameters``, where the ranks without it contribute zeros and every rank gets the
    average (DDP's behavior with the same flag). Then one all-reduce per parameter tensor, in the order
    of ``model.parameters()`` (the same on every rank, which collectives require).

    Raises:
        TypeError: for a ``model`` or ``find_unused_parameters`` of the wrong type.
        RuntimeError: outside a process group; on every rank, when a parameter has a gradient on some
            ranks and not on others and ``find_unused_parameters`` is ``False`` (the parameters and the
            number of ranks are named).
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("find_unused_parameters", find_unused_parameters, bool, "True or False")
    world = _world()
    named = list(model.named_parameters())
    if not named:
        return
    device = named[0][1].device
    present = torch.tensor([p.grad is not None for _, p in named], dtype=torch.int32, device=device)
    dist.all_reduce(present, op=dist.ReduceOp.SUM)  # how many ranks have each gradient; same on all ranks
    counts = present.tolist()
    partial = [f"{name} ({c} of {world} ranks)" for (name, _), c in zip(named, counts) if 0 < c < world]
    if partial and not find_unused_parameters:
        raise RuntimeError(
            f"the gradients of {', '.join(partial[:5])}{' ...' if len(partial) > 5 else ''} exist on some "
            "ranks only (a branch or layer some ranks did not use): averaging the others would pair "
            "different tensors across ranks. Use every parameter on every rank, or pass "
            "find_unused_parameters=True to count a missing gradient as zeros (as DDP does with that flag)"
        )
    for (_, p), count in zip(named, counts):
        if count == 0:
            continue  # no rank has it: nothing to average, the optimizer skips it everywhere
        if p.grad is None:  # unused here, used elsewhere: this rank's contribution is zero
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)  # blocks until every rank contributed its gradient
        p.grad.div_(world)


_broadcast_buffers = broadcast_buffers  # the step's flag of the same name shadows it there


def data_parallel_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    *,
    broadcast_buffers: bool = True,
    find_unused_parameters: bool = False,
) -> torch.Tensor:
    """One data-parallel step on this rank's shard ``(x, y)``: gradient, average over ranks, optimizer step.

    Every rank must call it with a shard of the same size (then the averaged gradient is the global batch's;
    with a mean loss, unequal shards would weight examples unequally).

    Args:
        model, optimizer: this rank's replica and its optimizer (start from :func:`broadcast_parameters`).
        x, y: this rank's shard.
        loss_fn: the mean loss of the shard.
        broadcast_buffers: after the forward pass, copy rank 0's buffers (batch norm's running statistics,
            just updated from rank 0's shard) to every rank, as ``DistributedDataParallel`` does by default,
            so the replicas stay identical. ``False`` lets each rank keep its own statistics (they drift).
        find_unused_parameters: count a gradient missing on some ranks as zeros (see
            :func:`average_gradients`); ``False`` refuses such a step.

    Returns:
        This rank's shard loss, a detached 0-d tensor.

    Raises:
        TypeError: for a ``model``, ``optimizer`` or flag of the wrong type.
        RuntimeError: outside a process group; for a parameter with a gradient on some ranks only, unless
            ``find_unused_parameters``.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
    check_type("broadcast_buffers", broadcast_buffers, bool, "True or False")
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model(x), y)
    if broadcast_buffers:  # the forward pass has updated the running statistics from this rank's shard
        _broadcast_buffers(model)
    loss.backward()
    average_gradients(model, find_unused_parameters=find_unused_parameters)
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
    batch), for a model without batch statistics; with batch norm each rank normalizes by its own shard and
    every rank keeps rank 0's running statistics (both strategies broadcast the buffers from rank 0).
    Loss: cross-entropy for integer ``y``, mean squared error otherwise.

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
