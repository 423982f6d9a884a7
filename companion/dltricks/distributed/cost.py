r"""A model of what data parallelism costs: the bytes a ring all-reduce moves, and the scaling it allows.

A ring all-reduce over :math:`W` ranks of a gradient of :math:`G` bytes runs a reduce-scatter and an
all-gather, each :math:`W - 1` steps of :math:`G / W` bytes: every rank sends (and receives)

.. math::

    2 \, \frac{W - 1}{W} \, G \ \text{bytes per step},

nearly :math:`2G` for any :math:`W`, so the time does not grow with the number of ranks; each of the
:math:`2 (W - 1)` steps also pays a latency :math:`\alpha`. With a link of bandwidth :math:`\beta` bytes/s
and a compute time :math:`t_c` per step on one rank's share of the batch, a step takes about

.. math::

    t_W \approx t_c / W + (1 - o) \big(2 (W - 1) \alpha + 2 \tfrac{W - 1}{W} G / \beta\big)

for the same global batch, where :math:`o \in [0, 1]` is the fraction of the communication hidden behind
the backward pass (DDP overlaps bucket all-reduces with it). Assumptions: equal ranks, one link speed, no
contention, compute that divides perfectly.

References:
    Patarasuk & Yuan, "Bandwidth Optimal All-reduce Algorithms for Clusters of Workstations", JPDC 2009;
    Thakur, Rabenseifner & Gropp, "Optimization of Collective Communication Operations in MPICH", IJHPCA
    2005 (the alpha-beta cost model); Li et al., "PyTorch Distributed", VLDB 2020 (overlap in DDP).
"""

from __future__ import annotations

from torch import nn

from dltricks._checks import check_float, check_int, check_type


def gradient_bytes(model: nn.Module) -> int:
    """Bytes of the gradients of ``model``'s trainable parameters (number of elements times element size).

    Raises:
        TypeError: if ``model`` is not a module.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def ring_allreduce_bytes(grad_bytes: int, world_size: int) -> float:
    r"""Bytes each rank sends in a ring all-reduce of ``grad_bytes``: :math:`2 (W-1)/W \cdot G` (0 for W=1).

    Raises:
        TypeError: for a count of the wrong type.
        ValueError: for ``grad_bytes < 0`` or ``world_size < 1``.
    """
    g = check_int("grad_bytes", grad_bytes, minimum=0)
    w = check_int("world_size", world_size, minimum=1)
    return 2 * (w - 1) / w * g


def predicted_step_seconds(
    compute_seconds: float,
    grad_bytes: int,
    world_size: int,
    bandwidth: float,
    *,
    latency: float = 0.0,
    overlap: float = 0.0,
) -> float:
    r"""Seconds per step of ``world_size`` ranks sharing a global batch that takes ``compute_seconds`` on one.

    :math:`t_c / W + (1 - o)\,(2 (W-1) \alpha + 2 \frac{W-1}{W} G / \beta)` (see the module docstring).

    Args:
        compute_seconds: forward, backward and step of the whole global batch on one rank, > 0.
        grad_bytes: gradient bytes (:func:`gradient_bytes`), >= 0.
        world_size: ranks, >= 1.
        bandwidth: bytes per second of one rank's link, > 0 (measure it: an all-reduce of a large tensor).
        latency: seconds per message, >= 0.
        overlap: fraction of the communication hidden behind computation, in [0, 1].

    Raises:
        TypeError: for a number of the wrong type.
        ValueError: for a number out of its range.
    """
    t = check_float("compute_seconds", compute_seconds, minimum=0.0, min_inclusive=False)
    w = check_int("world_size", world_size, minimum=1)
    beta = check_float("bandwidth", bandwidth, minimum=0.0, min_inclusive=False)
    alpha = check_float("latency", latency, minimum=0.0)
    o = check_float("overlap", overlap, minimum=0.0, maximum=1.0)
    comm = 2 * (w - 1) * alpha + ring_allreduce_bytes(grad_bytes, w) / beta
    return t / w + (1 - o) * comm


def scaling_efficiency(seconds_one: float, seconds_n: float, world_size: int) -> float:
    """Speed-up per rank for the same global batch: ``seconds_one / (world_size * seconds_n)`` (1 is perfect).

    Raises:
        TypeError: for a number of the wrong type.
        ValueError: for non-positive times or ``world_size < 1``.
    """
    t1 = check_float("seconds_one", seconds_one, minimum=0.0, min_inclusive=False)
    tn = check_float("seconds_n", seconds_n, minimum=0.0, min_inclusive=False)
    w = check_int("world_size", world_size, minimum=1)
    return t1 / (w * tn)
