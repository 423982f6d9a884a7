"""Seeded, optionally stratified splits of a data set: hold-out validation and small-data subsets.

Both functions work on numpy arrays and torch tensors alike, return the examples in their original order,
and draw from ``np.random.default_rng(seed)``, so a split is reproducible from its seed alone.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from dltricks._checks import check_float, check_int, check_type, fail


def _check_xy(x: Any, y: Any) -> tuple[int, np.ndarray]:
    """Validate a pair of arrays/tensors; return the length and the labels as a numpy array."""
    torch = sys.modules.get("torch")  # if torch was never imported, nothing can be a tensor
    types: tuple[type, ...] = (np.ndarray,) if torch is None else (np.ndarray, torch.Tensor)
    check_type("x", x, types, "a numpy array or torch tensor")
    check_type("y", y, types, "a numpy array or torch tensor")
    if x.ndim == 0:
        raise ValueError(f"`x` must have the examples along a first axis. Received: x.shape={tuple(x.shape)}")
    if y.ndim != 1:
        raise ValueError(f"`y` must be a 1-D array of labels. Received: y.shape={tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"`y` must have one label per example of `x` ({len(x)}). Received: len(y)={len(y)}")
    labels = y.detach().cpu().numpy() if not isinstance(y, np.ndarray) else y
    return len(x), labels


def _take(a: Any, idx: np.ndarray) -> Any:
    if isinstance(a, np.ndarray):
        return a[idx]
    import torch

    return a[torch.from_numpy(idx).to(a.device)]


def _largest_remainder(quotas: np.ndarray, total: int) -> np.ndarray:
    """Round ``quotas`` (summing to ``total``) to integers with the same sum, each off by less than one."""
    counts = np.floor(quotas).astype(np.int64)
    # Stable sort so that ties go to the earlier class, which keeps the result deterministic.
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def _pick(rng: np.random.Generator, inverse: np.ndarray, per_class: np.ndarray) -> np.ndarray:
    """Draw ``per_class[c]`` random indices among those with ``inverse == c``, for every class ``c``."""
    return np.concatenate(
        [rng.permutation(np.flatnonzero(inverse == c))[:k] for c, k in enumerate(per_class)]
    )


def train_val_split(
    x: Any, y: Any, *, val_size: int | float, seed: int, stratify: bool = False
) -> tuple[Any, Any, Any, Any]:
    """Split ``(x, y)`` into a training and a validation part, reproducibly for a seed.

    Args:
        x: Examples, a numpy array or torch tensor with the examples along the first axis.
        y: The 1-D labels of ``x``, same type family.
        val_size: Number of validation examples (int in [1, N-1]) or their fraction (float in (0, 1)).
        seed: Seed of ``np.random.default_rng``; the same seed gives the same split.
        stratify: Keep each class's proportion in both parts (to within one example per class).

    Returns:
        ``(x_train, y_train, x_val, y_val)``, each part in the original order of the examples.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``x`` and ``y`` disagree in length or ``val_size`` leaves a part empty.
    """
    n, labels = _check_xy(x, y)
    if isinstance(val_size, float | np.floating):
        fraction = check_float(
            "val_size", val_size, minimum=0, maximum=1, min_inclusive=False, max_inclusive=False
        )
        n_val = round(fraction * n)
        if not 1 <= n_val <= n - 1:
            fail("val_size", f"a fraction leaving both parts non-empty for {n} examples", val_size)
    elif isinstance(val_size, int | np.integer) and not isinstance(val_size, bool):
        n_val = check_int("val_size", val_size, minimum=1, maximum=n - 1)
    else:
        fail("val_size", "an int count or a float fraction in (0, 1)", val_size, TypeError)
    seed = check_int("seed", seed, minimum=0)
    check_type("stratify", stratify, bool, "a bool")
    rng = np.random.default_rng(seed)
    if stratify:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        val_idx = _pick(rng, inverse, _largest_remainder(counts * n_val / n, n_val))
    else:
        val_idx = rng.permutation(n)[:n_val]
    is_val = np.zeros(n, dtype=bool)
    is_val[val_idx] = True
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    return _take(x, train_idx), _take(y, train_idx), _take(x, val_idx), _take(y, val_idx)


def subsample(x: Any, y: Any, *, n: int, seed: int, stratify: bool = True) -> tuple[Any, Any]:
    """Draw a reproducible subset of ``n`` examples, balanced over classes when ``stratify``.

    Args:
        x: Examples, a numpy array or torch tensor with the examples along the first axis.
        y: The 1-D labels of ``x``.
        n: Subset size, in [1, len(x)].
        seed: Seed of ``np.random.default_rng``.
        stratify: Give every class the same number of examples (to within one); a class with too few
            examples contributes all it has and the others make up the difference.

    Returns:
        ``(x_subset, y_subset)`` in the original order of the examples.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``x`` and ``y`` disagree in length or ``n`` is out of range.
    """
    total, labels = _check_xy(x, y)
    n = check_int("n", n, minimum=1, maximum=total)
    seed = check_int("seed", seed, minimum=0)
    check_type("stratify", stratify, bool, "a bool")
    rng = np.random.default_rng(seed)
    if not stratify:
        idx = np.sort(rng.permutation(total)[:n])
        return _take(x, idx), _take(y, idx)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    # Fill the smallest classes first so a short class's deficit spreads over the larger ones; the random
    # permutation before the stable sort decides which equal-sized classes get the leftover examples.
    order = rng.permutation(len(counts))
    order = order[np.argsort(counts[order], kind="stable")]
    take = np.zeros(len(counts), dtype=np.int64)
    remaining = n
    for i, c in enumerate(order):
        take[c] = min(counts[c], remaining // (len(counts) - i))
        remaining -= take[c]
    idx = np.sort(_pick(rng, inverse, take))
    return _take(x, idx), _take(y, idx)
