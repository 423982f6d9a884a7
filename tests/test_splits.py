"""Seeded hold-out splits and small-data subsets (dltricks.splits)."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks.splits import subsample, train_val_split


def _toy(n: int = 100) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n * 2).reshape(n, 2)  # x[i, 0] // 2 == i identifies the example
    y = np.repeat(np.arange(4), [n // 2, n // 4, n // 5, n - n // 2 - n // 4 - n // 5])
    return x, y


@pytest.mark.parametrize(("val_size", "n_val"), [(20, 20), (0.25, 25), (1, 1), (99, 99)])
@pytest.mark.parametrize("stratify", [False, True])
def test_split_sizes_disjoint_and_covering(val_size: float, n_val: int, stratify: bool) -> None:
    x, y = _toy()
    x_tr, y_tr, x_va, y_va = train_val_split(x, y, val_size=val_size, seed=3, stratify=stratify)
    assert len(x_va) == len(y_va) == n_val and len(x_tr) == len(y_tr) == 100 - n_val
    ids_tr, ids_va = x_tr[:, 0] // 2, x_va[:, 0] // 2
    assert not set(ids_tr) & set(ids_va) and set(ids_tr) | set(ids_va) == set(range(100))
    np.testing.assert_array_equal(y_tr, y[ids_tr])  # labels stay with their examples
    np.testing.assert_array_equal(y_va, y[ids_va])


def test_split_is_seeded() -> None:
    x, y = _toy()
    a = train_val_split(x, y, val_size=0.2, seed=0)
    b = train_val_split(x, y, val_size=0.2, seed=0)
    c = train_val_split(x, y, val_size=0.2, seed=1)
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[2], c[2])


@settings(max_examples=60, deadline=None, database=None)
@given(labels=st.lists(st.integers(0, 4), min_size=2, max_size=200), data_=st.data())
def test_stratified_split_keeps_proportions(labels: list[int], data_: st.DataObject) -> None:
    y = np.array(labels)
    n_val = data_.draw(st.integers(1, len(y) - 1))
    _, y_tr, _, y_va = train_val_split(np.arange(len(y)), y, val_size=n_val, seed=0, stratify=True)
    assert len(y_va) == n_val
    for c in np.unique(y):
        n_c = int((y == c).sum())
        assert abs(int((y_va == c).sum()) - n_c * n_val / len(y)) < 1


def test_split_and_subsample_accept_tensors() -> None:
    x, y = _toy()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    split = train_val_split(tx, ty, val_size=0.3, seed=5, stratify=True)
    assert all(isinstance(t, torch.Tensor) for t in split)
    for t, a in zip(split, train_val_split(x, y, val_size=0.3, seed=5, stratify=True), strict=True):
        np.testing.assert_array_equal(t.numpy(), a)
    sx, sy = subsample(tx, ty, n=12, seed=0)
    assert isinstance(sx, torch.Tensor) and sx.shape == (12, 2) and torch.equal(sy, ty[sx[:, 0] // 2])


def test_subsample_is_balanced() -> None:
    y = np.arange(1000) % 10
    x = np.arange(1000)
    for n in (100, 105, 7):
        sx, sy = subsample(x, y, n=n, seed=0)
        counts = np.bincount(sy, minlength=10)
        assert counts.sum() == n and counts.max() - counts.min() <= 1
        assert len(set(sx)) == n and np.array_equal(sy, y[sx])
    # A class with too few examples gives all it has; the others share the rest evenly.
    x, y = _toy()  # class sizes 50, 25, 20, 5
    _, sy = subsample(x, y, n=40, seed=1)
    counts = np.bincount(sy)
    assert counts[3] == 5 and sorted(counts[:3]) == [11, 12, 12]
    a, _ = subsample(x, y, n=30, seed=2, stratify=False)
    b, _ = subsample(x, y, n=30, seed=2, stratify=False)
    assert len(a) == 30 and len(set(a[:, 0])) == 30 and np.array_equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "error", "received"),
    [
        ({"val_size": 0}, ValueError, "val_size=0"),
        ({"val_size": 1.0}, ValueError, "val_size=1.0"),
        ({"val_size": -3}, ValueError, "val_size=-3"),
        ({"val_size": 100}, ValueError, "val_size=100"),
        ({"val_size": 0.001}, ValueError, "val_size=0.001"),
        ({"val_size": "a"}, TypeError, "val_size='a'"),
        ({"val_size": True}, TypeError, "val_size=True"),
        ({"val_size": 10, "seed": -1}, ValueError, "seed=-1"),
        ({"val_size": 10, "seed": "s"}, TypeError, "seed='s'"),
        ({"val_size": 10, "stratify": "yes"}, TypeError, "stratify='yes'"),
    ],
)
def test_split_rejects_bad_arguments(kwargs: dict, error: type[Exception], received: str) -> None:
    x, y = _toy()
    kwargs = {"seed": 0, **kwargs}
    name = received.split("=")[0]
    with pytest.raises(error, match=re.escape(f"`{name}` must be")) as info:
        train_val_split(x, y, **kwargs)
    assert f"Received: {received}" in str(info.value)


def test_subsample_and_pairs_reject_bad_arguments() -> None:
    x, y = _toy()
    with pytest.raises(ValueError, match=re.escape("Received: n=101")):
        subsample(x, y, n=101, seed=0)
    with pytest.raises(ValueError, match=re.escape("Received: n=0")):
        subsample(x, y, n=0, seed=0)
    with pytest.raises(ValueError, match=re.escape("Received: len(y)=99")):
        train_val_split(x, y[:99], val_size=10, seed=0)
    with pytest.raises(ValueError, match=re.escape("Received: len(y)=99")):
        subsample(x, y[:99], n=10, seed=0)
    with pytest.raises(TypeError, match=re.escape("Received: x=[1, 2]")):
        train_val_split([1, 2], y[:2], val_size=1, seed=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("Received: y.shape=(100, 1)")):
        subsample(x, y[:, None], n=10, seed=0)


def test_unstratified_draws_are_the_documented_permutation_and_do_not_stratify() -> None:
    # stratify=False: the validation part is the first n_val of default_rng(seed).permutation(n), the
    # subset the first n of it, whatever the labels; a stratified draw of the same sizes looks different.
    x, y = _toy()
    _, _, x_va, _ = train_val_split(x, y, val_size=20, seed=4, stratify=False)
    assert np.array_equal(x_va[:, 0] // 2, np.sort(np.random.default_rng(4).permutation(100)[:20]))
    sx, _ = subsample(x, y, n=30, seed=5, stratify=False)
    assert np.array_equal(sx[:, 0] // 2, np.sort(np.random.default_rng(5).permutation(100)[:30]))
    # Over seeds, an unstratified validation part of 20 from classes of 50/25/20/5 does not always hold
    # exactly the stratified counts 10/5/4/1; the stratified one always does.
    plain, strat = set(), set()
    for seed in range(10):
        plain.add(tuple(np.bincount(train_val_split(x, y, val_size=20, seed=seed)[3], minlength=4)))
        strat.add(
            tuple(np.bincount(train_val_split(x, y, val_size=20, seed=seed, stratify=True)[3], minlength=4))
        )
    assert strat == {(10, 5, 4, 1)} and len(plain) > 1


def test_a_fraction_is_rounded_to_the_nearest_count() -> None:
    x, y = np.arange(10), np.arange(10) % 2
    for fraction, n_val in [(0.14, 1), (0.16, 2), (0.44, 4), (0.46, 5), (0.9, 9)]:
        assert len(train_val_split(x, y, val_size=fraction, seed=0)[2]) == n_val
    assert len(train_val_split(x, y, val_size=np.float32(0.5), seed=0)[2]) == 5
    assert len(train_val_split(x, y, val_size=np.int64(3), seed=0)[2]) == 3


NONEMPTY = "`val_size` must be a fraction leaving both parts non-empty for 10 examples."


def _exact(message: str) -> str:
    return "^" + re.escape(message) + "$"


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda x, y: train_val_split(x, y, val_size=0.04, seed=0), ValueError,
         f"{NONEMPTY} Received: val_size=0.04"),
        (lambda x, y: train_val_split(x, y, val_size=0.96, seed=0), ValueError,
         f"{NONEMPTY} Received: val_size=0.96"),
        (lambda x, y: train_val_split(x, y, val_size=1.0, seed=0), ValueError,
         "`val_size` must be a real number in (0, 1). Received: val_size=1.0"),
        (lambda x, y: train_val_split(x, y, val_size=10, seed=0), ValueError,
         "`val_size` must be an integer in [1, 9]. Received: val_size=10"),
        (lambda x, y: train_val_split(x, y, val_size="3", seed=0), TypeError,
         "`val_size` must be an int count or a float fraction in (0, 1). Received: val_size='3'"),
        (lambda x, y: train_val_split(x, y, val_size=3, seed=-1), ValueError,
         "`seed` must be an integer >= 0. Received: seed=-1"),
        (lambda x, y: train_val_split(x, y, val_size=3, seed=0, stratify=1), TypeError,
         "`stratify` must be a bool. Received: stratify=1"),
        (lambda x, y: subsample(x, y, n=11, seed=0), ValueError,
         "`n` must be an integer in [1, 10]. Received: n=11"),
        (lambda x, y: subsample(x, y, n=3, seed=-2), ValueError,
         "`seed` must be an integer >= 0. Received: seed=-2"),
        (lambda x, y: subsample(x, y, n=3, seed=0, stratify=None), TypeError,
         "`stratify` must be a bool. Received: stratify=None"),
        (lambda x, y: subsample(x.tolist(), y, n=3, seed=0), TypeError,
         "`x` must be a numpy array or torch tensor. Received: x=[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"),
        (lambda x, y: subsample(x, y.tolist(), n=3, seed=0), TypeError,
         "`y` must be a numpy array or torch tensor. Received: y=[0, 1, 0, 1, 0, 1, 0, 1, 0, 1]"),
        (lambda x, y: subsample(np.float64(1.0), y, n=3, seed=0), TypeError,
         "`x` must be a numpy array or torch tensor. Received: x=np.float64(1.0)"),
        (lambda x, y: subsample(np.array(1.0), y, n=3, seed=0), ValueError,
         "`x` must have the examples along a first axis. Received: x.shape=()"),
        (lambda x, y: subsample(x, y[:, None], n=3, seed=0), ValueError,
         "`y` must be a 1-D array of labels. Received: y.shape=(10, 1)"),
        (lambda x, y: subsample(x, y[:9], n=3, seed=0), ValueError,
         "`y` must have one label per example of `x` (10). Received: len(y)=9"),
    ],
)  # fmt: skip
def test_errors_have_the_right_type_and_the_whole_message(call, error, message) -> None:
    x, y = np.arange(10), np.arange(10) % 2
    with pytest.raises(error, match=_exact(message)):
        call(x, y)


def test_remainder_ties_go_to_the_earlier_class_among_many_classes() -> None:
    # Largest remainder with a stable sort: 20 classes, 12 of size 6 and 8 of size 5, a quarter held out
    # (28 of 112). Quotas 1.5 and 1.25 round down to 1 each (20 in all); the 8 left over go to the largest
    # remainder, 0.5, which 12 classes share: the 8 earliest of them (in label order) get a second one.
    # Over 16 keys numpy's default sort is not stable: this pins the stable one (and the split across CPUs).
    sizes = np.array([6, 5, 6, 6, 5] * 4)
    y = np.repeat(np.arange(20), sizes)
    _, _, _, y_va = train_val_split(np.arange(len(y)), y, val_size=28, seed=0, stratify=True)
    expected = np.ones(20, dtype=np.int64)
    expected[np.flatnonzero(sizes == 6)[:8]] = 2
    np.testing.assert_array_equal(np.bincount(y_va, minlength=20), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subsample_leftovers_go_to_equal_classes_in_the_order_of_the_seeds_permutation(seed: int) -> None:
    # 10 classes of 4 and 10 of 10, n=103: the small ones are filled first (4 each, 40), then 63 over the
    # ten large ones is 6 each with 3 left over, which go to the last 3 large classes in the order of
    # default_rng(seed).permutation(20) (the first draw; a stable sort keeps that order among equal sizes).
    sizes = np.array([4, 10] * 10)
    y = np.repeat(np.arange(20), sizes)
    _, y_sub = subsample(np.arange(len(y)), y, n=103, seed=seed)
    large_in_order = [c for c in np.random.default_rng(seed).permutation(20) if sizes[c] == 10]
    expected = np.where(sizes == 4, 4, 6)
    expected[large_in_order[-3:]] = 7
    np.testing.assert_array_equal(np.bincount(y_sub, minlength=20), expected)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_unstratified_subsample_returns_the_labels_of_its_examples(as_tensor: bool) -> None:
    x, y = _toy()
    if as_tensor:
        x, y = torch.from_numpy(x), torch.from_numpy(y)
    sx, sy = subsample(x, y, n=30, seed=2, stratify=False)
    assert tuple(sy.shape) == (30,) and type(sy) is type(y)
    assert np.array_equal(np.asarray(sy), np.asarray(y)[np.asarray(sx[:, 0]) // 2])


def test_labels_may_be_a_tensor_that_requires_grad() -> None:
    # The labels are read as a numpy array for the stratified draw: a tensor that requires grad is detached.
    x, y = _toy()
    y_grad = torch.from_numpy(y).double().requires_grad_()
    _, _, _, y_va = train_val_split(torch.from_numpy(x), y_grad, val_size=20, seed=0, stratify=True)
    assert np.bincount(y_va.detach().long().numpy()).tolist() == [10, 5, 4, 1]
    _, sy = subsample(x, y_grad, n=8, seed=0)
    assert np.bincount(sy.detach().long().numpy()).tolist() == [2, 2, 2, 2]


def test_numpy_inputs_work_when_torch_was_never_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _toy()
    monkeypatch.delitem(sys.modules, "torch")  # as in a process that never imported torch
    _, _, _, y_va = train_val_split(x, y, val_size=20, seed=0, stratify=True)
    _, sy = subsample(x, y, n=8, seed=0)
    assert np.bincount(y_va).tolist() == [10, 5, 4, 1] and np.bincount(sy).tolist() == [2, 2, 2, 2]
    with pytest.raises(
        TypeError, match=re.escape("`x` must be a numpy array or torch tensor. Received: x=[1]")
    ):
        subsample([1], y[:1], n=1, seed=0)  # type: ignore[arg-type]
