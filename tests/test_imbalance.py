"""Imbalanced classes (dltricks.imbalance): resampling indices, balanced weights, the prior output bias.

Parity: ``class_weights`` equals scikit-learn's ``compute_class_weight("balanced")`` to 1e-12. The weighted
sampler is checked statistically: every class frequency within 5 binomial standard deviations of 1/C.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from dltricks.imbalance import (
    class_weight_dict,
    class_weights,
    init_output_bias_,
    oversample_indices,
    prior_bias,
    prior_bias_from_labels,
    undersample_indices,
    weighted_sampler,
)

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None

# Classes 0..3 with 50, 25, 20 and 5 examples, interleaved.
LABELS = torch.tensor([0] * 50 + [1] * 25 + [2] * 20 + [3] * 5)[
    torch.randperm(100, generator=torch.Generator().manual_seed(0))
]


def test_oversampling_keeps_every_example_and_balances_with_same_class_repeats():
    idx = oversample_indices(LABELS, seed=1)
    assert idx.dtype == torch.long and len(idx) == 4 * 50
    assert torch.bincount(LABELS[idx]).tolist() == [50, 50, 50, 50]
    assert set(range(100)) <= set(idx.tolist())  # all originals kept
    assert not torch.equal(idx[:100], torch.arange(100))  # shuffled, not originals first
    assert torch.equal(idx, oversample_indices(LABELS, seed=1))
    assert not torch.equal(idx, oversample_indices(LABELS, seed=2))
    target = oversample_indices(LABELS.tolist(), target=80)
    assert torch.bincount(LABELS[target]).tolist() == [80, 80, 80, 80]


def test_undersampling_keeps_the_smallest_class_count_without_repeats():
    idx = undersample_indices(LABELS, seed=0)
    assert idx.dtype == torch.long and torch.bincount(LABELS[idx]).tolist() == [5, 5, 5, 5]
    assert len(set(idx.tolist())) == 20  # without replacement
    assert set(torch.nonzero(LABELS == 3).squeeze(1).tolist()) <= set(idx.tolist())
    assert torch.equal(idx, undersample_indices(LABELS, seed=0))
    assert not torch.equal(idx, undersample_indices(LABELS, seed=3))


@settings(max_examples=60, deadline=None, database=None)
@given(labels=st.lists(st.sampled_from([0, 2, 3, 7]), min_size=1, max_size=120), seed=st.integers(0, 2**31))
def test_resampling_invariants(labels, seed):
    y = torch.tensor(labels)
    counts = {c: labels.count(c) for c in set(labels)}
    over = oversample_indices(y, seed=seed)
    assert sorted(torch.unique(y[over], return_counts=True)[1].tolist()) == [max(counts.values())] * len(
        counts
    )
    assert set(over.tolist()) >= set(range(len(y)))
    under = undersample_indices(y, seed=seed)
    assert sorted(torch.unique(y[under], return_counts=True)[1].tolist()) == [min(counts.values())] * len(
        counts
    )
    assert len(set(under.tolist())) == len(under)


@pytest.mark.skipif(not HAS_SKLEARN, reason="scikit-learn is not installed")
def test_class_weights_match_sklearn_balanced():
    from sklearn.utils.class_weight import compute_class_weight

    y = LABELS.numpy()
    theirs = compute_class_weight("balanced", classes=np.unique(y), y=y)
    np.testing.assert_allclose(class_weights(LABELS, dtype=torch.float64).numpy(), theirs, rtol=1e-12, atol=0)
    assert class_weight_dict(LABELS) == pytest.approx(dict(enumerate(theirs)), rel=1e-12)


def test_class_weights_give_every_class_the_same_total_weight():
    w = class_weights(LABELS)
    assert w.dtype == torch.float32
    counts = torch.bincount(LABELS).float()
    torch.testing.assert_close(counts * w, torch.full((4,), 25.0))  # n / C each; mean weight per example 1
    # Absent classes (here 1 and 5 of 6): weight 0, and C counts the present classes only.
    y = torch.tensor([0, 0, 0, 2, 3, 3])
    w6 = class_weights(y, num_classes=6, dtype=torch.float64)
    assert w6.tolist() == [6 / 9, 0.0, 2.0, 1.0, 0.0, 0.0]
    assert class_weight_dict(y) == {0: 6 / 9, 2: 2.0, 3: 1.0}
    # With the weights, cross-entropy treats a wrong prediction on each class alike: uniform logits give
    # a loss of log C whatever the imbalance, and a weighted mean equal to the per-class mean of the losses.
    logits = torch.randn(len(LABELS), 4, generator=torch.Generator().manual_seed(0))
    per_example = F.cross_entropy(logits, LABELS, reduction="none")
    per_class = torch.stack([per_example[LABELS == c].mean() for c in range(4)]).mean()
    torch.testing.assert_close(F.cross_entropy(logits, LABELS, weight=w), per_class)


def test_weighted_sampler_draws_classes_equally_often():
    # 90% / 9% / 1% imbalance; each draw lands in a class with probability 1/3.
    y = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    n = 30_000
    sampler = weighted_sampler(y, seed=0, num_samples=n)
    drawn = torch.tensor(list(sampler))
    assert len(drawn) == n
    freq = torch.bincount(y[drawn], minlength=3).double()
    sigma = math.sqrt(n * (1 / 3) * (2 / 3))  # binomial standard deviation of one class's count
    assert bool(((freq - n / 3).abs() < 5 * sigma).all()), freq
    again = torch.tensor(list(weighted_sampler(y, seed=0, num_samples=n)))
    assert torch.equal(drawn, again)
    assert len(weighted_sampler(y)) == 1000
    assert len(set(weighted_sampler(y, num_samples=50, replacement=False))) == 50


def test_prior_bias_makes_the_sigmoid_start_at_the_prior():
    assert prior_bias(1, 1) == 0.0
    assert prior_bias(10, 990) == pytest.approx(math.log(10 / 990), rel=1e-15)
    assert torch.sigmoid(torch.tensor(prior_bias(10, 990), dtype=torch.float64)).item() == pytest.approx(0.01)
    assert prior_bias_from_labels(torch.tensor([1, 0, 0, 0])) == pytest.approx(math.log(1 / 3))
    assert prior_bias_from_labels([True, False]) == 0.0
    assert prior_bias_from_labels(torch.tensor([[1.0], [0.0], [1.0]])) == pytest.approx(math.log(2))


def _binary_entropy(p):
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


@settings(max_examples=40, deadline=None, database=None)
@given(pos=st.integers(1, 500), neg=st.integers(1, 500))
def test_initial_bce_loss_equals_the_binary_entropy_of_the_prior(pos, neg):
    y = torch.tensor([1.0] * pos + [0.0] * neg)
    x = torch.randn(pos + neg, 8)
    head = nn.Linear(8, 1)
    nn.init.zeros_(head.weight)  # so the logit is the bias alone
    init_output_bias_(head, y)
    p = pos / (pos + neg)
    assert torch.sigmoid(head.bias).item() == pytest.approx(p, rel=1e-6)
    loss = F.binary_cross_entropy_with_logits(head(x).squeeze(1), y)
    assert loss.item() == pytest.approx(_binary_entropy(p), rel=1e-6, abs=1e-6)


@settings(max_examples=40, deadline=None, database=None)
@given(counts=st.lists(st.integers(1, 300), min_size=2, max_size=8))
def test_initial_softmax_loss_equals_the_entropy_of_the_prior(counts):
    y = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    head = nn.Linear(5, len(counts))
    nn.init.zeros_(head.weight)
    init_output_bias_(head, y)
    prior = torch.tensor(counts, dtype=torch.float64) / sum(counts)
    torch.testing.assert_close(torch.softmax(head.bias.double(), 0), prior, rtol=1e-6, atol=1e-7)
    loss = F.cross_entropy(head(torch.randn(len(y), 5)), y)
    entropy = -(prior * prior.log()).sum().item()
    assert loss.item() == pytest.approx(entropy, rel=1e-6, abs=1e-6)


def test_init_output_bias_leaves_the_weights_and_beats_the_default_start():
    torch.manual_seed(0)
    y = (torch.rand(2000) < 0.02).float()  # 2% positives
    x = torch.randn(2000, 16)
    head = nn.Linear(16, 1)
    weight = head.weight.detach().clone()
    default_loss = F.binary_cross_entropy_with_logits(head(x).squeeze(1), y).item()
    assert init_output_bias_(head, y) is head
    assert torch.equal(head.weight, weight)
    loss = F.binary_cross_entropy_with_logits(head(x).squeeze(1), y).item()
    assert loss < 0.3 < default_loss  # about 0.1 versus about 0.7 from a logit near 0


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: prior_bias(0, 5), ValueError, r"`pos`.*Received: pos=0"),
        (lambda: prior_bias(5, -1), ValueError, r"`neg`.*Received: neg=-1"),
        (lambda: prior_bias("5", 1), TypeError, r"Received: pos='5'"),
        (lambda: prior_bias_from_labels([0, 1, 2]), ValueError, r"binary.*Received: labels containing 2"),
        (lambda: prior_bias_from_labels([0.0, 0.5]), ValueError, r"Received: labels containing 0.5"),
        (lambda: prior_bias_from_labels([0, 0]), ValueError, r"both classes.*0 positives and 2 negatives"),
        (lambda: init_output_bias_(nn.Linear(3, 1), [1, 2]), ValueError, r"Received: labels containing 2"),
        (lambda: init_output_bias_(nn.Linear(3, 1, bias=False), [0, 1]), ValueError, r"with a bias"),
        (lambda: init_output_bias_(nn.Conv2d(3, 1, 1), [0, 1]), TypeError, r"`layer` must be an nn.Linear"),
        (lambda: init_output_bias_(nn.Linear(3, 3), [0, 1, 1]), ValueError, r"no example of class 2"),
        (lambda: init_output_bias_(nn.Linear(3, 3), [0, 1, 3]), ValueError, r"Received: labels\[2\]=3"),
        (lambda: init_output_bias_(nn.Linear(3, 2), [0.0, 1.0]), TypeError, r"labels.dtype=torch.float64"),
        (lambda: oversample_indices([0, 0, 1], target=1), ValueError, r"`target`.*>= 2. Received: target=1"),
        (lambda: oversample_indices([0, -1]), ValueError, r"Received: labels\[1\]=-1"),
        (lambda: oversample_indices([[0, 1]]), ValueError, r"Received: labels.shape=\(1, 2\)"),
        (lambda: oversample_indices([]), ValueError, r"Received: labels.shape=\(0,\)"),
        (lambda: undersample_indices([0, 1], seed=-1), ValueError, r"Received: seed=-1"),
        (lambda: undersample_indices("abc"), TypeError, r"Received: labels='abc'"),
        (lambda: class_weights([0, 1, 5], num_classes=3), ValueError, r"Received: labels\[2\]=5"),
        (lambda: class_weights([0, 1], num_classes=0), ValueError, r"Received: num_classes=0"),
        (lambda: weighted_sampler([0, 1], num_samples=3, replacement=False), ValueError, r"num_samples=3"),
        (lambda: weighted_sampler([0, 1], replacement=1), TypeError, r"Received: replacement=1"),
    ],
)
def test_bad_input_is_rejected(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
