"""Sharding a data set over ranks, reproducibly: each rank's indices of an epoch, as ``DistributedSampler``.

Every rank draws the *same* permutation of ``0 .. n-1`` (a generator seeded with ``seed + epoch``, so no
communication is needed) and takes every ``world_size``-th entry from its rank on: rank ``r`` gets
``perm[r], perm[r + W], perm[r + 2W], ...``. When ``W`` does not divide ``n``, the permutation is padded by
repeating its first entries (every rank gets the same number of examples, so the collectives stay in step)
or, with ``drop_last``, truncated. Exactly ``torch.utils.data.DistributedSampler``'s rule, tested equal.

A useful consequence: when rank ``r`` cuts its shard into local batches of ``b``, local batch ``k`` of all
ranks together is positions ``k b W .. (k+1) b W - 1`` of the permutation: the ``k``-th batch of ``b W``
that one process would draw from the same permutation. Data parallelism then replays single-process
training exactly (:mod:`dltricks.distributed.data_parallel`).

References:
    PyTorch, ``torch.utils.data.distributed.DistributedSampler`` (documentation and source).
"""

from __future__ import annotations

import torch

from dltricks._checks import check_int, check_type


def shard_indices(
    n: int,
    rank: int,
    world_size: int,
    *,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> torch.Tensor:
    """The indices of the examples rank ``rank`` of ``world_size`` sees in ``epoch``, a 1-D int64 tensor.

    Args:
        n: the data set's size (>= 1).
        rank: this process's rank, ``0 <= rank < world_size``.
        world_size: the number of ranks (>= 1).
        epoch: the epoch (>= 0); the permutation is drawn with seed ``seed + epoch``.
        seed: the base seed, the same on every rank.
        shuffle: draw a permutation (``False``: the stored order).
        drop_last: drop the tail that does not divide evenly, instead of padding with repeats.

    Returns:
        ``ceil(n / W)`` indices (``floor(n / W)`` with ``drop_last``), the same on every call.

    Raises:
        TypeError: for a number of the wrong type.
        ValueError: for ``n < 1``, ``world_size < 1``, a ``rank`` outside ``[0, world_size)``, ``epoch < 0``,
            or ``drop_last`` with ``n < world_size`` (nothing left to share).
    """
    n = check_int("n", n, minimum=1)
    world_size = check_int("world_size", world_size, minimum=1)
    rank = check_int("rank", rank, minimum=0, maximum=world_size - 1)
    epoch = check_int("epoch", epoch, minimum=0)
    seed = check_int("seed", seed)
    check_type("shuffle", shuffle, bool, "True or False")
    check_type("drop_last", drop_last, bool, "True or False")
    if drop_last:
        check_int("n", n, minimum=world_size)  # "`n` must be an integer >= W": otherwise no rank gets one
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    else:
        order = torch.arange(n)
    per_rank = n // world_size if drop_last else -(-n // world_size)
    total = per_rank * world_size
    if total > n:  # pad with the first entries, repeated as often as needed (as DistributedSampler)
        order = torch.cat([order] * (-(-total // n)))
    return order[:total][rank::world_size].clone()
