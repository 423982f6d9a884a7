"""Model selection: K-fold cross-validation.

Hold-out validation is :func:`dltricks.splits.train_val_split`; this module adds K-fold splits and a small
driver that scores one candidate across the folds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from dltricks._checks import check_int, fail


def kfold_indices(
    n: int, k: int, *, shuffle: bool = False, seed: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(train_idx, val_idx)`` for each of ``k`` folds over ``n`` examples.

    The examples (shuffled first when ``shuffle``) are cut into ``k`` contiguous folds; the first
    ``n % k`` folds get one extra example. Fold ``i`` validates on its own examples and trains on the
    other ``k - 1`` folds, so every example is validated exactly once. Both index arrays are returned
    sorted, as scikit-learn returns them.

    Convention: this reproduces scikit-learn's ``KFold(n_splits=k, shuffle=shuffle, random_state=seed)``
    split for split (the shuffle is ``np.random.RandomState(seed).shuffle``), which the tests check.

    Args:
        n: number of examples (>= k).
        k: number of folds (>= 2).
        shuffle: shuffle the examples before cutting folds (default ``False``).
        seed: seed of the shuffle; required when ``shuffle`` is true, refused otherwise (as scikit-learn
            refuses ``random_state`` without ``shuffle``: a seed that changes nothing is a mistake).

    Raises:
        TypeError: for a non-integer ``n``, ``k`` or ``seed``.
        ValueError: for ``k < 2``, ``n < k``, ``shuffle`` without a ``seed``, or a ``seed`` without it
            (raised when the first split is asked for).

    References:
        Stone, "Cross-validatory choice and assessment of statistical predictions", JRSS B, 1974.
    """
    k = check_int("k", k, minimum=2)
    n = check_int("n", n, minimum=1)
    if n < k:
        fail("n", f"at least the number of folds k={k}", n)
    if not shuffle and seed is not None:
        fail("seed", "None when shuffle=False (unshuffled folds: a seed would change nothing)", seed)
    indices = np.arange(n)
    if shuffle:
        if seed is None:
            fail("seed", "an integer when shuffle=True (an unseeded split cannot be reproduced)", seed)
        np.random.RandomState(check_int("seed", seed, minimum=0)).shuffle(indices)
    sizes = np.full(k, n // k, dtype=int)
    sizes[: n % k] += 1
    start = 0
    for size in sizes:
        in_fold = np.zeros(n, dtype=bool)
        in_fold[indices[start : start + size]] = True
        yield np.flatnonzero(~in_fold), np.flatnonzero(in_fold)
        start += size


def cross_validate(
    score: Callable[[np.ndarray, np.ndarray], float],
    n: int,
    k: int = 5,
    *,
    shuffle: bool = True,
    seed: int | None = None,
) -> np.ndarray:
    """Run ``score(train_idx, val_idx)`` on each K-fold split and return the ``k`` scores.

    ``score`` trains a fresh model on ``train_idx`` and returns its validation error (or any score) on
    ``val_idx``; averaging the returned array estimates how well the candidate generalizes. With
    ``shuffle`` and no ``seed`` the shuffle uses seed 0, so that the default is reproducible.

    Raises:
        TypeError: if ``score`` is not callable; as :func:`kfold_indices` for the other arguments.
        ValueError: as :func:`kfold_indices` (e.g. a ``seed`` with ``shuffle=False``).
    """
    if not callable(score):
        fail("score", "a callable score(train_idx, val_idx) -> float", score, TypeError)
    if shuffle and seed is None:
        seed = 0
    return np.array([float(score(tr, va)) for tr, va in kfold_indices(n, k, shuffle=shuffle, seed=seed)])
