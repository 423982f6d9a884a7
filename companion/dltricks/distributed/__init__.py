"""Data parallelism with ``torch.distributed``: launching workers, sharding data, averaging gradients.

* :mod:`dltricks.distributed.launcher`: :func:`launch` runs ``fn(rank, world_size, ...)`` in N processes
  (gloo on CPU, NCCL on GPUs, ``127.0.0.1``, a free port) and fails with the failing worker's rank.
* :mod:`dltricks.distributed.sharding`: :func:`shard_indices`, each rank's share of an epoch, exactly as
  ``DistributedSampler``.
* :mod:`dltricks.distributed.data_parallel`: the from-scratch version (:func:`broadcast_parameters`,
  :func:`broadcast_buffers`, :func:`average_gradients`, :func:`data_parallel_step`) and
  :func:`train_data_parallel`, a worker that trains with it or with ``DistributedDataParallel``.
* :mod:`dltricks.distributed.ranks`: under ``torchrun``, :func:`init_from_env` joins the process group the
  environment describes; :func:`rank_and_world`, :func:`is_main` (the rank that writes files).
* :mod:`dltricks.distributed.sharded_batches`: :class:`ShardedBatches`, a rank's share of global batches.
* :mod:`dltricks.distributed.fitting`: what ``dltricks.train.fit`` does in several processes (DDP, sharding,
  all-reduced metrics, rank 0 writes, every rank resumes from one checkpoint).
* :mod:`dltricks.distributed.cost`: the ring all-reduce's bytes (:func:`ring_allreduce_bytes`), a predicted
  step time for N ranks (:func:`predicted_step_seconds`), :func:`scaling_efficiency`.
"""

from dltricks.distributed.cost import (
    gradient_bytes,
    predicted_step_seconds,
    ring_allreduce_bytes,
    scaling_efficiency,
)
from dltricks.distributed.data_parallel import (
    average_gradients,
    broadcast_buffers,
    broadcast_parameters,
    data_parallel_step,
    train_data_parallel,
)
from dltricks.distributed.launcher import WorkerError, free_port, launch
from dltricks.distributed.ranks import init_from_env, is_main, rank_and_world
from dltricks.distributed.sharded_batches import ShardedBatches
from dltricks.distributed.sharding import shard_indices

__all__ = [
    "ShardedBatches",
    "WorkerError",
    "average_gradients",
    "broadcast_buffers",
    "broadcast_parameters",
    "data_parallel_step",
    "free_port",
    "gradient_bytes",
    "init_from_env",
    "is_main",
    "launch",
    "predicted_step_seconds",
    "rank_and_world",
    "ring_allreduce_bytes",
    "scaling_efficiency",
    "shard_indices",
    "train_data_parallel",
]
