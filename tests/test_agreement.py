"""Teacher-student agreement (dltricks.agreement): values by hand, bounds and input checks."""

import math

import pytest
import torch

from dltricks.agreement import agreement


def test_identical_logits_agree_fully_with_zero_kl():
    z = torch.randn(50, 10, generator=torch.Generator().manual_seed(0))
    res = agreement(z, z.clone())
    assert res.top1 == 1.0
    assert res.kl == pytest.approx(0.0, abs=1e-12)


def test_values_by_hand():
    t = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    s = torch.tensor([[0.0, 1.0], [0.0, 3.0]])  # disagrees on the first example, agrees on the second
    res = agreement(s, t)
    assert res.top1 == 0.5

    def kl(a, b):
        p, q = torch.softmax(a.double(), 0), torch.softmax(b.double(), 0)
        return float((p * (p / q).log()).sum())

    assert res.kl == pytest.approx((kl(t[0], s[0]) + kl(t[1], s[1])) / 2, rel=1e-12)
    assert res.kl > 0


def test_kl_is_teacher_to_student_not_symmetric():
    t = torch.tensor([[4.0, 0.0, 0.0]])
    s = torch.tensor([[1.0, 0.5, 0.0]])
    p, q = torch.softmax(t.double(), 1), torch.softmax(s.double(), 1)
    forward = float((p * (p / q).log()).sum())
    backward = float((q * (q / p).log()).sum())
    assert not math.isclose(forward, backward, rel_tol=1e-3)
    assert agreement(s, t).kl == pytest.approx(forward, rel=1e-12)


def test_half_precision_inputs_are_computed_in_float64():
    z = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    res = agreement(z.half(), z.half())
    assert res.top1 == 1.0 and res.kl == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("s", "t", "error", "match"),
    [
        (torch.zeros(3, 4, dtype=torch.long), torch.zeros(3, 4), TypeError, "student_logits"),
        ([[0.0, 1.0]], torch.zeros(1, 2), TypeError, "student_logits"),
        (torch.zeros(3, 4), torch.zeros(3, 5), ValueError, "student_logits"),
        (torch.zeros(4), torch.zeros(4), ValueError, "student_logits"),
        (torch.zeros(3, 1), torch.zeros(3, 1), ValueError, "C >= 2"),
        (torch.zeros(0, 3), torch.zeros(0, 3), ValueError, "N >= 1"),
        (
            torch.zeros(2, 3),
            torch.tensor([[0.0, float("nan"), 0.0], [0.0, 0.0, 0.0]]),
            ValueError,
            "teacher_logits",
        ),
    ],
)
def test_bad_input_is_refused_naming_the_argument(s, t, error, match):
    with pytest.raises(error, match=match):
        agreement(s, t)


@pytest.mark.parametrize(
    ("s", "t", "error", "message"),
    [
        ([[0.0, 1.0]], torch.zeros(1, 2), TypeError,
         "`student_logits` must be a floating-point torch.Tensor. Received: student_logits=[[0.0, 1.0]]"),
        (torch.zeros(1, 2), [[0.0, 1.0]], TypeError,
         "`teacher_logits` must be a floating-point torch.Tensor. Received: teacher_logits=[[0.0, 1.0]]"),
        (torch.zeros(4), torch.zeros(4), ValueError,
         "`student_logits` must be shape (N, C) with N >= 1 and C >= 2. Received: student_logits=(4,)"),
        (torch.zeros(2, 3), torch.tensor([[0.0, float("inf"), 0.0], [0.0, 0.0, 0.0]]), ValueError,
         "`teacher_logits` must be finite values. Received: teacher_logits='a tensor with NaN or infinity'"),
        (torch.zeros(3, 4), torch.zeros(3, 5), ValueError,
         "`student_logits` must be the teacher's shape (3, 5). Received: student_logits=(3, 4)"),
    ],
)  # fmt: skip
def test_refusals_word_for_word(s, t, error, message):
    with pytest.raises(error) as info:
        agreement(s, t)
    assert str(info.value) == message
