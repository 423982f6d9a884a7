"""Teacher-student agreement: how closely a distilled student matches its teacher, not only the labels.

Accuracy alone cannot say whether distillation transferred the teacher's function: a student can be as
accurate as its teacher and still disagree with it on many examples. Stanton et al. (2021, "Does knowledge
distillation really work?", section 3) measure fidelity by the top-1 agreement (the fraction of examples on
which both arg-max classes coincide) and by the KL divergence from the teacher's predictive distribution to
the student's, both on held-out data.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from dltricks._checks import fail


class Agreement(NamedTuple):
    """Result of :func:`agreement`."""

    top1: float
    """Fraction of examples on which the student's and the teacher's arg-max classes are equal, in [0, 1]."""
    kl: float
    """Mean over examples of KL(teacher || student) at temperature 1, in nats (>= 0)."""


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> Agreement:
    r"""Top-1 agreement and mean KL divergence between a teacher's and a student's predictions.

    Args:
        student_logits: ``(N, C)`` logits of the student on N examples, C >= 2 classes.
        teacher_logits: ``(N, C)`` logits of the teacher on the same examples.

    Returns:
        :class:`Agreement`: ``top1`` :math:`= \frac1N \sum_n [\arg\max s_n = \arg\max t_n]` and ``kl``
        :math:`= \frac1N \sum_n \mathrm{KL}(\mathrm{softmax}(t_n) \,\|\, \mathrm{softmax}(s_n))` in nats,
        both computed in float64 (Stanton et al. 2021, section 3, "fidelity").

    Raises:
        TypeError: if either argument is not a floating-point tensor.
        ValueError: if the shapes differ, are not ``(N, C)`` with N >= 1 and C >= 2, or hold non-finite
            values.
    """
    for name, value in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            fail(name, "a floating-point torch.Tensor", value, TypeError)
        if value.dim() != 2 or value.shape[0] < 1 or value.shape[1] < 2:
            fail(name, "shape (N, C) with N >= 1 and C >= 2", tuple(value.shape))
        if not bool(torch.isfinite(value).all()):
            fail(name, "finite values", "a tensor with NaN or infinity")
    if student_logits.shape != teacher_logits.shape:
        fail(
            "student_logits",
            f"the teacher's shape {tuple(teacher_logits.shape)}",
            tuple(student_logits.shape),
        )
    s = student_logits.detach().to("cpu", torch.float64)
    t = teacher_logits.detach().to("cpu", torch.float64)
    top1 = float((s.argmax(1) == t.argmax(1)).double().mean())
    log_p, log_q = torch.log_softmax(t, 1), torch.log_softmax(s, 1)
    kl = float((log_p.exp() * (log_p - log_q)).sum(1).mean())
    return Agreement(top1, max(kl, 0.0))  # rounding can leave -1e-17 for identical inputs
