"""One rank's mini-batches of in-memory tensors, so that the ranks together replay one process's batches.

:class:`ShardedBatches` is :class:`dltricks.batches.TensorBatches` split over the ranks: ``batch_size`` is
the *global* batch, and in epoch ``e`` rank ``r`` of ``W`` takes its :func:`shard_indices` (the permutation
``TensorBatches`` draws with seed ``seed + e``, every ``W``-th entry from ``r``, as ``DistributedSampler``
after ``set_epoch(e)``) and cuts it into local batches of ``batch_size / W``. Local batch ``k`` of all ranks
together holds exactly the examples of batch ``k`` of ``TensorBatches(x, y, batch_size, seed=seed)``, so data
parallelism with a mean loss takes the steps one process takes (up to the order of float additions).
Exactly so when ``drop_last`` or when ``batch_size`` divides the data; otherwise the last, partial batch is
padded with the epoch's first examples, as ``DistributedSampler`` pads, and differs from one process's.

It keeps ``TensorBatches``' position (``state_dict``), so a run checkpointed mid-epoch resumes exactly;
``fit`` makes one from a ``TensorBatches`` when it runs in several processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from dltricks._checks import check_int, fail
from dltricks.batches import TensorBatches
from dltricks.distributed.sharding import shard_indices


class ShardedBatches(TensorBatches):
    """Rank ``rank``'s share of the batches of ``TensorBatches(x, y, batch_size, ...)``.

    Args:
        x, y: the whole data set, the same on every rank (each rank indexes its shard).
        batch_size: the global batch, divisible by ``world_size``.
        rank, world_size: this process's rank and the number of ranks.
        shuffle, seed, drop_last: as :class:`~dltricks.batches.TensorBatches`.

    Raises:
        TypeError: for an argument of the wrong type.
        ValueError: for a ``rank`` outside ``[0, world_size)``, a ``batch_size`` not divisible by
            ``world_size``, or fewer examples than ranks.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 128,
        *,
        rank: int,
        world_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(x, y, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self.world_size = check_int("world_size", world_size, minimum=1)
        self.rank = check_int("rank", rank, minimum=0, maximum=self.world_size - 1)
        if self.batch_size % self.world_size:
            fail(
                "batch_size",
                f"divisible by world_size={self.world_size} (it is the global batch)",
                batch_size,
            )
        check_int("len(x)", int(x.shape[0]), minimum=self.world_size)
        self.local_batch = self.batch_size // self.world_size

    def _shard(self, epoch: int) -> torch.Tensor:
        n = int(self.x.shape[0])
        return shard_indices(n, self.rank, self.world_size, epoch=epoch, seed=self.seed, shuffle=self.shuffle,
                             drop_last=self.drop_last)  # fmt: skip

    def __len__(self) -> int:
        n, w = int(self.x.shape[0]), self.world_size
        per_rank = n // w if self.drop_last else -(-n // w)  # shard_indices' length, every epoch and rank
        return per_rank // self.local_batch if self.drop_last else -(-per_rank // self.local_batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._shard(self.epoch).to(self.x.device)
        first, self._resume_at = self._resume_at, 0
        self.epoch += 1
        token = object()
        self._served, self._current = first, token
        b = self.local_batch
        try:
            for i in range(first, len(self)):
                self._served = i + 1  # counted before the yield, as TensorBatches
                part = idx[i * b : (i + 1) * b]
                yield self.x[part], self.y[part]
        finally:
            if self._current is token:
                self._served = None

    def _layout(self) -> dict[str, Any]:
        # The rank is left out: every rank resumes from rank 0's checkpoint, at the same position.
        return {**super()._layout(), "world_size": self.world_size}

    def in_order(self) -> TensorBatches:
        """The whole data in its stored order (``fit`` shards an evaluation over the ranks itself)."""
        return TensorBatches(self.x, self.y, self.batch_size, shuffle=False)
