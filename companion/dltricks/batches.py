"""Mini-batches from tensors that already sit in memory.

``torch.utils.data.DataLoader`` over a ``TensorDataset`` indexes one example at a time and collates the
results, which dominates the step time of the small MLPs in this book on a CPU. When the whole data set is a
pair of tensors, slicing a permuted index is enough: one gather per batch, on the tensors' own device.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch

from dltricks._checks import check_int, check_type, fail


class TensorBatches:
    """Iterate over ``(x, y)`` mini-batches of in-memory tensors, reshuffled every epoch.

    The order is reproducible: epoch ``e`` uses a permutation drawn from a generator seeded with
    ``seed + e``, independent of the global random state (so evaluating a model in between does not
    change the batches a later epoch sees).

    ``state_dict()`` records the epoch and how many of its batches were served; after ``load_state_dict``
    the next iteration serves exactly the remaining batches of that epoch's permutation, so a training run
    checkpointed in the middle of an epoch resumes without repeating or skipping an example. (The position
    is that of the latest iteration: iterate one epoch at a time, as ``fit`` does.)

    Args:
        x: inputs, first dimension indexes examples.
        y: targets with the same first dimension.
        batch_size: examples per batch (default 128).
        shuffle: draw a new permutation every epoch (default ``True``).
        seed: base seed of the permutation (default 0).
        drop_last: drop the last, smaller batch (default ``False``).

    Raises:
        TypeError: for a ``batch_size``, ``seed``, ``x`` or ``y`` of the wrong type.
        ValueError: for a ``batch_size`` out of its allowed range.
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
        self.epoch = 0  # epochs started
        self._resume_at = 0  # batches to leave out at the next iteration (set by load_state_dict)
        self._served: int | None = None  # batches served of the epoch in progress; None between epochs
        self._current: object = None  # identifies the latest iteration

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
        first, self._resume_at = self._resume_at, 0
        self.epoch += 1
        token = object()  # this iteration, to tell it from a later one
        self._served, self._current = first, token
        try:
            for i in range(first, len(self)):
                # Counted before the yield: the consumer's step runs while this generator is suspended.
                self._served = i + 1
                if order is None:
                    yield (
                        self.x[i * self.batch_size : (i + 1) * self.batch_size],
                        self.y[i * self.batch_size : (i + 1) * self.batch_size],
                    )
                else:
                    idx = order[i * self.batch_size : (i + 1) * self.batch_size]
                    yield self.x[idx], self.y[idx]
        finally:  # exhausted or abandoned (and not superseded): the next iteration starts a new epoch
            if self._current is token:
                self._served = None

    def state_dict(self) -> dict[str, Any]:
        """The data-order position: ``epoch`` (0-based) and ``batch``, the batches of it already served.

        Between epochs this is the next epoch with ``batch=0``; during one (at a step of ``fit``) it is the
        epoch in progress, with ``batch`` up to ``len(self)``. The sizes and seed come along so that
        ``load_state_dict`` can refuse a position meant for different data.
        """
        if self._served is None:
            epoch, batch = self.epoch, self._resume_at
        else:
            epoch, batch = self.epoch - 1, self._served
        return {"epoch": epoch, "batch": batch, **self._layout()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict`: the next iteration serves batches ``batch ..`` of ``epoch``.

        Raises:
            TypeError: if ``state`` is not a mapping with integer ``epoch`` and ``batch``.
            ValueError: if ``batch`` is out of range, or the state was saved for a loader with other data
                size, batch size, seed or shuffling.
        """
        if not isinstance(state, Mapping) or "epoch" not in state or "batch" not in state:
            fail("state", "a mapping from TensorBatches.state_dict()", state, TypeError)
        for key, mine in self._layout().items():
            if key in state and state[key] != mine:
                fail(f"state[{key!r}]", f"{mine!r}, as in this loader", state[key])
        epoch = check_int("state['epoch']", state["epoch"], minimum=0)
        batch = check_int("state['batch']", state["batch"], minimum=0, maximum=len(self))
        self.epoch, self._resume_at, self._served = epoch, batch, None

    def _layout(self) -> dict[str, Any]:
        return {
            "examples": int(self.x.shape[0]),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "drop_last": self.drop_last,
        }

    def in_order(self) -> TensorBatches:
        """The same tensors in their stored order, for evaluation; this object's epoch count is untouched."""
        return TensorBatches(self.x, self.y, self.batch_size, shuffle=False)
