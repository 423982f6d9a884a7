"""What :func:`dltricks.train.fit` does differently when it runs in several processes (``torchrun``).

Outside a process group every function here hands its argument back unchanged, so ``fit`` reads the same in
one process. Inside one (rank ``r`` of ``W``, see :mod:`dltricks.distributed.ranks`):

* :func:`prepare`: the model goes through ``DistributedDataParallel`` (DDP; a model already wrapped is
  accepted, and the plain module is what checkpoints store, so they load in one process too), and the
  training data is sharded: a ``TensorBatches`` becomes this rank's :class:`ShardedBatches` of the same
  *global* batch, so the run takes the steps one process takes on the global batch; a ``DataLoader`` must
  already use a ``DistributedSampler`` (:func:`set_epoch` re-seeds it every epoch).
* the training loss each rank reports is the mean of the ranks' shard losses (one all-reduce of a scalar
  per step, :func:`~dltricks.distributed.ranks.mean_over_ranks`), so every rank's history, non-finite
  decision and checkpoint counters are the same; :func:`evaluate` splits the evaluation over the ranks and
  sums its totals, and an epoch's ``seconds`` is the slowest rank's.
* only rank 0 writes checkpoints and shows progress (:class:`dltricks.checkpoint.Checkpoint` and ``fit``
  ask :func:`~dltricks.distributed.ranks.is_main`).
* :func:`resume`: rank 0 picks the checkpoint, every rank loads that same file, and if any rank cannot
  (another machine without the file, a corrupt copy) every rank raises, naming it.

Batch normalization: SyncBatchNorm needs CUDA. Without it, each rank normalizes with the statistics of its
own local batch (``batch_size / W`` examples, not the global batch: the run then differs from one process)
and the running statistics are rank 0's (DDP broadcasts rank 0's buffers before every forward pass);
:func:`prepare` warns once. On GPUs, ``nn.SyncBatchNorm.convert_sync_batchnorm(model)`` before ``fit``
normalizes with the global batch's statistics.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from dltricks._checks import fail
from dltricks.batches import TensorBatches
from dltricks.distributed.ranks import rank_and_world, sum_over_ranks
from dltricks.distributed.sharded_batches import ShardedBatches

Batch = tuple[torch.Tensor, torch.Tensor]


def prepare(
    model: nn.Module, train: Iterable[Batch], device: torch.device
) -> tuple[nn.Module, nn.Module, Iterable[Batch]]:
    """``(module, net, train)``: the plain module (what checkpoints store), what the forward pass goes
    through (DDP in several processes) and this rank's training batches.

    Raises:
        ValueError: in several processes, for a ``train`` that is not sharded over the ranks (it would
            train every rank on all the data), or a ``ShardedBatches`` made for another rank or world.
    """
    module = model.module if isinstance(model, DistributedDataParallel) else model
    rank, world = rank_and_world()
    if world == 1:
        return module, model, train
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
           for m in module.modules()):  # fmt: skip
        warnings.warn(
            f"batch norm in {world} processes: each rank normalizes with its own local batch's statistics "
            "and keeps rank 0's running statistics (DDP broadcasts them); use "
            "nn.SyncBatchNorm.convert_sync_batchnorm(model) on GPUs for the global batch's",
            stacklevel=3,
        )
    if isinstance(model, DistributedDataParallel):
        net: nn.Module = model
    else:  # the constructor broadcasts rank 0's parameters and buffers: every replica starts equal
        ids = None
        if device.type == "cuda":  # this process's GPU (init_from_env made $LOCAL_RANK's current)
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        net = DistributedDataParallel(model, device_ids=ids)
    return module, net, shard(train, rank, world)


def shard(train: Iterable[Batch], rank: int, world: int) -> Iterable[Batch]:
    """This rank's share of ``train`` (see :func:`prepare`).

    Raises:
        ValueError: for a loader that is not sharded, or sharded for another rank or world.
    """
    if isinstance(train, ShardedBatches):
        if (train.rank, train.world_size) != (rank, world):
            fail("train", f"a ShardedBatches for rank {rank} of {world}", (train.rank, train.world_size))
        return train
    if type(train) is TensorBatches:
        sharded = ShardedBatches(
            train.x, train.y, train.batch_size, rank=rank, world_size=world, shuffle=train.shuffle,
            seed=train.seed, drop_last=train.drop_last,
        )  # fmt: skip
        sharded.epoch, sharded._resume_at = train.epoch, train._resume_at  # a position loaded into it
        return sharded
    if isinstance(train, DataLoader) and isinstance(_sampler(train), DistributedSampler):
        return train
    fail(
        "train",
        f"sharded over the {world} ranks: a TensorBatches (fit shards it), a ShardedBatches or a DataLoader "
        "with a DistributedSampler",
        type(train).__name__,
    )
    raise AssertionError  # unreachable: fail raises


def _sampler(loader: DataLoader) -> Any:
    batches = loader.batch_sampler  # a DataLoader(batch_size=...) samples through a BatchSampler
    return getattr(batches, "sampler", None) if batches is not None else loader.sampler


def set_epoch(train: Iterable[Batch], epoch: int) -> None:
    """Re-seed a ``DistributedSampler`` for ``epoch`` (without it, every epoch repeats the first order)."""
    if isinstance(train, DataLoader) and isinstance(_sampler(train), DistributedSampler):
        _sampler(train).set_epoch(epoch)


def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    metrics: Mapping[str, Any],
    device: torch.device,
) -> dict[str, float]:
    """:func:`dltricks.train.evaluate`, split over the ranks; every rank returns the same numbers.

    In-memory batches are split (rank ``r`` takes examples ``r, r + W, ...``) and the ranks' sums and
    counts added; another loader is evaluated whole on rank 0 and its numbers broadcast. ``model`` is the
    plain module, not DDP: its forward pass runs no collective, so ranks may evaluate unequal shards.
    """
    from dltricks.train import evaluate as local  # here: dltricks.train imports this module

    rank, world = rank_and_world()
    if world == 1:
        return local(model, batches, loss_fn, metrics, device)
    keys = ["loss", *metrics]
    if isinstance(batches, TensorBatches) and batches.x.shape[0] >= world:
        part = TensorBatches(
            batches.x[rank::world], batches.y[rank::world], batches.batch_size, shuffle=False
        )
        n = int(part.x.shape[0])
        means = local(model, part, loss_fn, metrics, device)
        totals = sum_over_ranks([means[k] * n for k in keys] + [n])
        return {k: v / totals[-1] for k, v in zip(keys, totals[:-1], strict=True)}
    found = [local(model, batches, loss_fn, metrics, device) if rank == 0 else None]
    dist.broadcast_object_list(found, src=0)
    return dict(found[0] or {})


def resume(state: Any, source: str | os.PathLike[str]) -> Path | None:
    """:func:`dltricks.checkpoint.resume` for every rank from the one checkpoint rank 0 picks.

    Rank 0 finds the newest good checkpoint (quarantining bad ones, alone) and sends its path; every rank
    loads that file. The ranks then exchange their outcomes: if one could not load it, all raise, so the
    job fails as a whole instead of hanging or training replicas that differ. After a resume every rank's
    random generators are rank 0's (seed the ranks alike, as DDP's identical replicas assume).

    Raises:
        dltricks.checkpoint.CheckpointError: on every rank, naming each rank that could not load it.
    """
    from dltricks.checkpoint import CheckpointError, load_checkpoint, restore
    from dltricks.checkpoint import resume as resume_here
    from dltricks.checkpoint_file import _newest_good

    rank, world = rank_and_world()
    if world == 1:
        return resume_here(state, source)
    chosen: list[Any] = [None, None]  # the path rank 0 picked, or rank 0's error
    payload = None
    if rank == 0:
        path = Path(source)
        try:
            found = (path, load_checkpoint(path)) if path.is_file() else _newest_good(path, quarantine=True)
        except (CheckpointError, OSError) as err:  # told to the others, which would wait for a path
            found, chosen[1] = None, f"{type(err).__name__}: {err}"
        if found is not None:
            chosen[0], payload = str(found[0]), found[1]
    dist.broadcast_object_list(chosen, src=0)
    if chosen[1] is not None:
        raise CheckpointError(f"rank 0 of {world} could not pick a checkpoint in {source}: {chosen[1]}")
    if chosen[0] is None:
        return None
    error = None
    try:
        restore(state, payload if payload is not None else load_checkpoint(chosen[0]), chosen[0])
    except (CheckpointError, OSError) as err:
        error = f"{type(err).__name__}: {err}"
    errors: list[Any] = [None] * world
    dist.all_gather_object(errors, error)
    bad = {r: e for r, e in enumerate(errors) if e}
    if bad:
        raise CheckpointError(
            f"rank(s) {sorted(bad)} of {world} could not resume from {chosen[0]}, which rank 0 picked "
            f"(every rank must load the same checkpoint; on several machines, a shared file system): "
            + "; ".join(f"rank {r}: {e}" for r, e in bad.items())
        )
    return Path(chosen[0])
