"""Mini-batches from tensors that already sit in memory.

``torch.utils.data.DataLoader`` over a ``TensorDataset`` indexes one example at a time and collates the
results, which dominates the step time of the small MLPs in this book on a CPU. When the whole data set is a
pair of tensors, slicing a permuted index is enough: one gather per batch, on the tensors' own device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from dltricks._checks import check_int, check_type


class TensorBatches:
    """Iterate over ``(x, y)`` mini-batches of in-memory tensors, reshuffled every epoch.

    The order is reproducible: epoch ``e`` uses a permutation drawn from a generator seeded with
    ``seed + e``, independent of the global random state (so evaluating a model in between does not
    change the batches a later epoch sees).

    Args:
        x: inputs, first dimension indexes examples.
        y: targets with the same first dimension.
        batch_size: examples per batch (default 128).
        shuffle: draw a new permutation every epoch (default ``True``).
        seed: base seed of the permutation (default 0).
        drop_last: drop the last, smaller batch (default ``False``).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        check_type("x", x, torch.Tensor, "a torch.Tensor")
        check_type("y", y, torch.Tensor, "a torch.Tensor")
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"`y` must have as many rows as `x` ({x.shape[0]}). Received: y with shape {tuple(y.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError(f"`x` must hold at least one example. Received: x with shape {tuple(x.shape)}")
        self.x, self.y = x, y
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.shuffle = bool(shuffle)
        self.seed = check_int("seed", seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            # The permutation is drawn on the CPU (generators are per-device) and moved once per epoch.
            order = torch.randperm(n, generator=gen).to(self.x.device)
        else:
            order = None
        self.epoch += 1
        for i in range(len(self)):
            if order is None:
                yield (
                    self.x[i * self.batch_size : (i + 1) * self.batch_size],
                    self.y[i * self.batch_size : (i + 1) * self.batch_size],
                )
            else:
                idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                yield self.x[idx], self.y[idx]

    def in_order(self) -> TensorBatches:
        """The same tensors in their stored order, for evaluation; this object's epoch count is untouched."""
        return TensorBatches(self.x, self.y, self.batch_size, shuffle=False)
