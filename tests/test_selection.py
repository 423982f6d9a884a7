"""K-fold splits: identical to scikit-learn's KFold, and a partition of the data."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import KFold

from dltricks.selection import cross_validate, kfold_indices


@settings(max_examples=200, deadline=None, database=None)
@given(n=st.integers(2, 300), data=st.data(), shuffle=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_same_splits_as_sklearn(n, data, shuffle, seed):
    k = data.draw(st.integers(2, n))
    ours = list(kfold_indices(n, k, shuffle=shuffle, seed=seed if shuffle else None))
    theirs = list(KFold(k, shuffle=shuffle, random_state=seed if shuffle else None).split(np.arange(n)))
    assert len(ours) == len(theirs) == k
    for (a_tr, a_va), (b_tr, b_va) in zip(ours, theirs):
        np.testing.assert_array_equal(a_tr, b_tr)
        np.testing.assert_array_equal(a_va, b_va)


@settings(max_examples=100, deadline=None, database=None)
@given(n=st.integers(2, 500), data=st.data(), seed=st.integers(0, 1000))
def test_folds_partition_the_data(n, data, seed):
    k = data.draw(st.integers(2, min(n, 20)))
    vals = []
    for train, val in kfold_indices(n, k, shuffle=True, seed=seed):
        assert np.intersect1d(train, val).size == 0
        assert np.union1d(train, val).size == n
        vals.append(val)
    every = np.concatenate(vals)
    np.testing.assert_array_equal(np.sort(every), np.arange(n))  # each example validated exactly once
    sizes = [len(v) for v in vals]
    assert max(sizes) - min(sizes) <= 1


def test_shuffle_depends_on_seed():
    a = [v for _, v in kfold_indices(50, 5, shuffle=True, seed=0)]
    b = [v for _, v in kfold_indices(50, 5, shuffle=True, seed=1)]
    c = [v for _, v in kfold_indices(50, 5, shuffle=True, seed=0)]
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))
    assert all(np.array_equal(x, y) for x, y in zip(a, c))


def test_cross_validate_calls_score_once_per_fold():
    seen = []

    def score(train, val):
        seen.append((train, val))
        return float(len(val))

    scores = cross_validate(score, 23, 5, seed=3)
    assert len(seen) == 5
    np.testing.assert_array_equal(scores, [5, 5, 5, 4, 4])
