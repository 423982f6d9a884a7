"""Knowledge distillation: a student trained to match a teacher's softened outputs.

The teacher's logits :math:`v` and the student's logits :math:`z` are both softened by a temperature
:math:`T`, :math:`p_i = \\operatorname{softmax}(v/T)_i` and :math:`q_i = \\operatorname{softmax}(z/T)_i`,
and the student minimizes

.. math::

    L = \\alpha\\, T^2\\, \\frac{1}{B} \\sum_{b=1}^{B} \\mathrm{KL}(p_b \\,\\|\\, q_b)
        + (1-\\alpha)\\, \\frac{1}{B} \\sum_{b=1}^{B} -\\log \\operatorname{softmax}(z_b)_{y_b},

the soft-target term (its mean over the *batch*, not over batch x classes) plus the usual cross-entropy on
the hard labels. The factor :math:`T^2` keeps the soft term's gradients the same size as :math:`T` changes
(Hinton, Vinyals & Dean 2015, sec. 2): its gradient with respect to a student logit is :math:`T(q_i - p_i)`,
which at high temperature tends to :math:`(z_i - v_i)/N` for zero-mean logits over :math:`N` classes.

Training with :func:`dltricks.train.fit` works from *cached* teacher logits: compute them once for the fixed
transfer set with :func:`teacher_logits`, pack them with the labels into one target tensor
(:func:`pack_targets`), and pass a :class:`DistillationLoss` as ``loss_fn``. The same loss applied to plain
integer labels (the validation and test batches) is ordinary cross-entropy, so ``fit``'s ``val_loss`` stays
comparable with a student trained alone.

References:
    Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network", arXiv:1503.02531,
    sec. 2 (eq. 1, eq. 2 and the high-temperature limit) and sec. 3.
    Bucilua, Caruana & Niculescu-Mizil (2006), "Model Compression", KDD.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from dltricks._checks import check_float, check_int, check_type, fail
from dltricks._modes import eval_mode

__all__ = [
    "DistillationLoss",
    "accuracy",
    "distillation_loss",
    "ensemble_logits",
    "pack_targets",
    "soft_targets",
    "teacher_logits",
    "unpack_targets",
]


def _check_temperature(temperature: float) -> float:
    return check_float("temperature", temperature, minimum=0.0, min_inclusive=False)


def _check_logits(name: str, logits: torch.Tensor) -> torch.Tensor:
    check_type(name, logits, torch.Tensor, "a torch.Tensor of logits")
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] < 2:
        fail(name, "a tensor of shape (batch, classes) with batch >= 1 and classes >= 2",
             f"tensor of shape {tuple(logits.shape)}")  # fmt: skip
    return logits


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in float32 at least: bfloat16 keeps 8 bits of mantissa, too few for a log-softmax."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def soft_targets(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The softmax of ``logits / temperature`` (Hinton et al. 2015, eq. 1).

    Args:
        logits: shape ``(batch, classes)``.
        temperature: ``T > 0``; ``T = 1`` is the ordinary softmax, larger ``T`` gives softer targets.

    Returns:
        Probabilities of shape ``(batch, classes)``, each row summing to one.

    Raises:
        ValueError: if ``temperature`` is not a positive finite number or ``logits`` is not 2-D.
    """
    t = _check_temperature(temperature)
    return torch.softmax(_check_logits("logits", logits) / t, dim=1)


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """The soft term: :math:`T^2` times the batch mean of :math:`\\mathrm{KL}(p \\| q)` at temperature T.

    This is the soft-target objective of Hinton et al. (2015), sec. 2.

    The teacher's logits are detached: no gradient ever reaches the teacher. The mean is over the batch
    (``kl_div(..., reduction="batchmean")``); ``reduction="mean"``, PyTorch's default, would also divide by
    the number of classes and silently shrink the term by that factor.

    Args:
        student_logits: shape ``(batch, classes)``.
        teacher_logits: same shape; treated as constants.
        temperature: ``T > 0`` (default 4).

    Half-precision logits (float16, bfloat16, as autocast gives them) are upcast first, so the
    log-softmax and the loss are computed, and returned, in float32 (float64 logits stay float64).

    Returns:
        A scalar tensor; zero when the two sets of logits are equal up to a constant per row.

    Raises:
        ValueError: if ``temperature`` is not positive or the shapes are wrong or differ.
    """
    t = _check_temperature(temperature)
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        fail("teacher_logits", f"of the student's shape {tuple(student_logits.shape)}",
             f"tensor of shape {tuple(teacher_logits.shape)}")  # fmt: skip
    # Upcast: autocast gives bfloat16 logits, and log_softmax keeps its input's dtype (it is on no autocast
    # list that lowers precision, so float32 inputs stay float32 under autocast too).
    log_q = F.log_softmax(_upcast(student_logits) / t, dim=1)
    log_p = F.log_softmax(_upcast(teacher_logits.detach()) / t, dim=1)
    # T^2: the gradient of the KL term scales as 1/T (eq. 2); this restores its size (sec. 2, end).
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * t**2


def pack_targets(labels: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """One target tensor ``[label, teacher logits...]`` of shape ``(n, 1 + classes)``, for ``fit``'s batches.

    The labels must come back exact (:func:`unpack_targets`), so the packed tensor is never of a low
    precision: float32 when the teacher's logits are float16, bfloat16 or float32 and every label is at
    most ``2**24`` in magnitude, float64 otherwise (bfloat16 alone would turn label 257 into 256).

    Returns:
        ``(n, 1 + classes)``, of dtype float32 or float64 (the teacher's logits converted to it).

    Raises:
        TypeError: if ``labels`` is not a tensor.
        ValueError: if ``labels`` is not 1-D integer, the lengths differ, or a label exceeds ``2**53``.
    """
    check_type("labels", labels, torch.Tensor, "a torch.Tensor of integer labels")
    _check_logits("teacher_logits", teacher_logits)
    if labels.ndim != 1 or labels.is_floating_point() or labels.shape[0] != teacher_logits.shape[0]:
        fail("labels", f"a 1-D integer tensor of length {teacher_logits.shape[0]}",
             f"tensor of shape {tuple(labels.shape)} and dtype {labels.dtype}")  # fmt: skip
    # A float of p mantissa bits holds every integer up to 2**p exactly (bfloat16: 2**8 = 256; float16:
    # 2**11; float32: 2**24; float64: 2**53): the packed tensor is at least float32, float64 past 2**24.
    largest = int(labels.abs().max()) if labels.numel() else 0
    dtype = torch.promote_types(teacher_logits.dtype, torch.float32)
    if largest > 2**24:
        dtype = torch.float64
    if largest > 2**53:
        fail("labels", "integers of magnitude at most 2**53 (exact in float64)", largest)
    return torch.cat([labels.to(dtype)[:, None], teacher_logits.detach().to(dtype)], dim=1)


def unpack_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a packed target into ``(labels (n,), teacher_logits (n, classes))``."""
    return target[:, 0].round().long(), target[:, 1:]


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Accuracy against integer labels or packed targets (the metric ``fit`` needs for packed batches)."""
    labels = unpack_targets(target)[0] if target.ndim == 2 else target
    return (logits.argmax(dim=1) == labels).float().mean()


class DistillationLoss:
    """``loss(student_logits, target)`` for ``fit``: soft term times ``alpha``, hard term times ``1 - alpha``.

    ``target`` is a packed tensor from :func:`pack_targets`, or plain integer labels, for which the loss is
    the ordinary cross-entropy (so validation losses compare with a student trained alone).

    Args:
        temperature: ``T > 0`` of the soft term.
        alpha: weight of the soft term in ``[0, 1]``; ``1`` uses the teacher only, ``0`` the labels only.
            Keras' ``Distiller(student_loss_weight=w)`` computes ``w * hard + (1 - w) * soft``, so
            ``alpha = 1 - w``.

    Raises:
        ValueError: if ``temperature`` is not positive or ``alpha`` is outside ``[0, 1]``.
    """

    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        self.temperature = _check_temperature(temperature)
        self.alpha = check_float("alpha", alpha, minimum=0.0, maximum=1.0)

    def __call__(self, student_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        z = _upcast(student_logits)  # float32 at least: losses stay float32 (dltricks.perf.amp)
        if target.ndim == 1:
            return F.cross_entropy(z, target)
        labels, teacher = unpack_targets(target)
        soft = distillation_loss(z, teacher, self.temperature) if self.alpha > 0 else 0.0
        hard = F.cross_entropy(z, labels) if self.alpha < 1 else 0.0
        loss = self.alpha * soft + (1 - self.alpha) * hard
        assert isinstance(loss, torch.Tensor)  # at least one term is a tensor: alpha is in [0, 1]
        return loss

    def __repr__(self) -> str:
        return f"DistillationLoss(temperature={self.temperature:g}, alpha={self.alpha:g})"


@torch.no_grad()
def teacher_logits(
    teacher: nn.Module, x: torch.Tensor, *, batch_size: int = 1000, device: str | torch.device | None = None
) -> torch.Tensor:
    """The teacher's logits for a fixed transfer set, computed once, in evaluation mode, without gradients.

    The teacher's mode is restored afterwards; its parameters are not touched.

    Args:
        teacher: the trained network.
        x: inputs ``(n, ...)``.
        batch_size: examples per forward pass (>= 1).
        device: where to compute (default: where the teacher's parameters are).

    Returns:
        Logits ``(n, classes)`` on ``x``'s device, detached.

    Raises:
        TypeError: if ``teacher`` is not a module or ``x`` not a tensor.
    """
    check_type("teacher", teacher, nn.Module, "a torch.nn.Module")
    check_type("x", x, torch.Tensor, "a torch.Tensor")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    params = next(teacher.parameters(), None)
    dev = torch.device(device) if device is not None else (params.device if params is not None else x.device)
    with eval_mode(teacher):  # dropout off; afterwards every submodule has its own mode back
        out = [teacher(x[i : i + batch_size].to(dev)).to(x.device) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out)


def ensemble_logits(logits: Sequence[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Logits whose soft targets at ``temperature`` are the ensemble's averaged soft targets.

    Returns :math:`T \\log \\frac{1}{M}\\sum_m \\operatorname{softmax}(v_m / T)`, so that
    ``soft_targets(result, T)`` equals the arithmetic mean of the members' soft targets at that ``T``
    (Hinton et al. 2015, sec. 1: "the arithmetic or geometric mean of their individual predictive
    distributions"). At another temperature it is only an approximation: compute it at the ``T`` you train
    with.

    Args:
        logits: the members' logits, each ``(n, classes)``, at least one.
        temperature: ``T > 0``.

    Raises:
        ValueError: if ``logits`` is empty, the shapes differ or ``temperature`` is not positive.
    """
    t = _check_temperature(temperature)
    if isinstance(logits, torch.Tensor) or not isinstance(logits, Sequence) or len(logits) == 0:
        fail("logits", "a non-empty sequence of (n, classes) tensors", type(logits).__name__, TypeError)
    shape = _check_logits("logits[0]", logits[0]).shape
    for i, v in enumerate(logits):
        if _check_logits(f"logits[{i}]", v).shape != shape:
            fail(
                f"logits[{i}]", f"of shape {tuple(shape)} like logits[0]", f"tensor of shape {tuple(v.shape)}"
            )
    log_p = torch.stack([F.log_softmax(v.detach() / t, dim=1) for v in logits])
    return t * (torch.logsumexp(log_p, dim=0) - torch.log(torch.tensor(float(len(logits)))))
