"""Data augmentation on whole image batches ``(N, C, H, W)``: random shifts and horizontal flips.

Everything is a tensor operation on the batch's own device (a pad and one gather for the shifts, a
``where`` for the flips), with no per-image Python loop and no PIL, so augmenting costs little next to the
training step even on a GPU. Random draws are made on the CPU, from an optional CPU generator, and moved:
the same seed then gives the same augmentations on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.nn import functional as F

from dltricks._checks import check_float, check_int, check_type, fail

Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, *, fill: float = 0.0) -> torch.Tensor:
    r"""Translate image ``n`` by ``dy[n]`` rows (down) and ``dx[n]`` columns (right), filling with ``fill``.

    .. math::

        y_{n,c,i,j} = \begin{cases} x_{n,c,\,i - \delta y_n,\, j - \delta x_n} & \text{inside the image} \\
        \text{fill} & \text{otherwise.} \end{cases}

    Args:
        x: images ``(N, C, H, W)``.
        dy: integer row offsets, shape ``(N,)``.
        dx: integer column offsets, shape ``(N,)``.
        fill: value of the pixels shifted in from outside the image.

    Raises:
        TypeError: for a ``fill`` of the wrong type.
        ValueError: for a ``fill`` out of its allowed range.
    """
    _check_images(x)
    n = x.shape[0]
    for name, d in (("dy", dy), ("dx", dx)):
        check_type(name, d, torch.Tensor, "an integer torch.Tensor of shape (N,)")
        if d.shape != (n,) or d.is_floating_point() or d.is_complex() or d.dtype == torch.bool:
            raise ValueError(
                f"`{name}` must be an integer tensor of shape ({n},). "
                f"Received: {name} with shape {tuple(d.shape)} and dtype {d.dtype}"
            )
    fill = check_float("fill", fill)
    pad = int(torch.maximum(dy.abs(), dx.abs()).max()) if n else 0  # one host sync per batch
    return _shift(x, dy.to(x.device), dx.to(x.device), pad, fill)


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int, fill: float) -> torch.Tensor:
    """``shift`` with ``pad >= max |offset|`` known, so no host synchronization is needed."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), value=fill)
    # Output pixel (i, j) reads padded pixel (i - dy + pad, j - dx + pad): a per-example crop, as one gather.
    rows = torch.arange(h, device=x.device) - dy[:, None] + pad  # (N, H)
    cols = torch.arange(w, device=x.device) - dx[:, None] + pad  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_shift(
    x: torch.Tensor, max_shift: int = 2, *, fill: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image by independent random integer offsets in ``[-max_shift, max_shift]`` per axis.

    Args:
        x: images ``(N, C, H, W)`` on any device.
        max_shift: the largest offset in pixels (>= 0); 2 on 28x28 digits is the classic choice.
        fill: value of the uncovered border.
        generator: optional CPU ``torch.Generator``; the offsets are drawn on the CPU and moved to ``x``.

    Raises:
        TypeError: for a ``fill`` or ``max_shift`` of the wrong type.
        ValueError: for a ``fill`` or ``max_shift`` out of its allowed range.

    References:
        Simard, Steinkraus & Platt, "Best Practices for Convolutional Neural Networks Applied to Visual
        Document Analysis", ICDAR 2003, sec. 2 (expanding the training set with distorted copies).
    """
    _check_images(x)
    max_shift = check_int("max_shift", max_shift, minimum=0)
    fill = check_float("fill", fill)
    n = x.shape[0]
    offsets = torch.randint(-max_shift, max_shift + 1, (2, n), generator=_cpu(generator)).to(x.device)
    return _shift(x, offsets[0], offsets[1], max_shift, fill)


def random_flip(
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    p: float = 0.5,
    flippable: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``.

    A mirror image is only a valid training example when its label survives the mirroring (a shoe is still
    a shoe; a "2" is not). ``flippable`` lists those classes; other examples are never flipped.

    Args:
        x: images ``(N, C, H, W)``.
        y: integer labels ``(N,)``; required when ``flippable`` is given.
        p: probability of flipping an allowed example, in ``[0, 1]``.
        flippable: class ids that may be flipped; ``None`` allows every example.
        generator: optional CPU ``torch.Generator``; the coin flips are drawn on the CPU.

    Raises:
        TypeError: for a ``flippable``, ``flippable[i]``, ``p`` or ``y`` of the wrong type.
        ValueError: for a ``p`` out of its allowed range.

    References:
        Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
        NeurIPS 2012, sec. 4.1 (horizontal reflections as label-preserving transformations).
    """
    _check_images(x)
    p = check_float("p", p, minimum=0.0, maximum=1.0)
    n = x.shape[0]
    flip = torch.rand(n, generator=_cpu(generator)) < p
    if flippable is not None:
        if isinstance(flippable, (str, bytes)) or not isinstance(flippable, Sequence):
            fail("flippable", "a sequence of class ids or None", flippable, TypeError)
        classes = torch.tensor([check_int("flippable[i]", k) for k in flippable], dtype=torch.long)
        if not isinstance(y, torch.Tensor):
            fail("y", "a tensor of labels (N,) when `flippable` is given", y, TypeError)
        elif y.shape != (n,):
            raise ValueError(f"`y` must be a tensor of shape ({n},). Received: y with shape {tuple(y.shape)}")
        else:
            flip &= torch.isin(y.detach().cpu().long(), classes)
    flip = flip.to(x.device)[:, None, None, None]
    return torch.where(flip, x.flip(-1), x)


def shift_and_flip(
    max_shift: int = 2,
    p_flip: float = 0.5,
    flippable: Sequence[int] | None = None,
    seed: int = 0,
    *,
    fill: float = 0.0,
) -> Transform:
    """A transform ``fn(x, y) -> x``: :func:`random_shift` then :func:`random_flip`, from its own generator.

    The CPU generator seeded with ``seed`` lives in the closure, so a run is reproducible and independent of
    the global random state. ``p_flip=0`` disables flipping (e.g. for digits). ``fill`` is the value of the
    uncovered border: the images' background, which is *not* 0 once inputs are standardized (a blank pixel
    becomes ``-mean / std``); filling with 0 there would draw a visible frame around every shifted image.

    Raises:
        TypeError: for a ``fill``, ``max_shift``, ``p_flip`` or ``seed`` of the wrong type.
        ValueError: for a ``fill``, ``max_shift`` or ``p_flip`` out of its allowed range.
    """
    max_shift = check_int("max_shift", max_shift, minimum=0)
    p_flip = check_float("p_flip", p_flip, minimum=0.0, maximum=1.0)
    fill = check_float("fill", fill)
    generator = torch.Generator().manual_seed(check_int("seed", seed))

    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = random_shift(x, max_shift, fill=fill, generator=generator)
        return random_flip(x, y, p=p_flip, flippable=flippable, generator=generator) if p_flip > 0 else x

    return fn


class Augmented:
    """Batches ``(fn(x, y), y)`` from a batch iterable; ``in_order()`` gives the clean, unaugmented data.

    Args:
        batches: a re-iterable of ``(x, y)`` batches, e.g. ``TensorBatches``.
        fn: the transform, e.g. ``shift_and_flip(...)``; it receives the labels so it can respect them.

    Raises:
        TypeError: for a ``fn`` of the wrong type.
    """

    shift_and_flip = staticmethod(shift_and_flip)

    def __init__(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], fn: Transform) -> None:
        if not callable(fn):
            fail("fn", "a callable fn(x, y) -> x", fn, TypeError)
        self.batches, self.fn = batches, fn

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.batches:
            yield self.fn(x, y), y

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]

    def in_order(self) -> Any:
        """The wrapped loader's ``in_order()`` (or the loader itself), unaugmented: for evaluation."""
        in_order = getattr(self.batches, "in_order", None)
        return in_order() if callable(in_order) else self.batches


def _check_images(x: Any) -> None:
    check_type("x", x, torch.Tensor, "a torch.Tensor of images (N, C, H, W)")
    if x.ndim != 4:
        raise ValueError(
            f"`x` must be a 4-D tensor of images (N, C, H, W). Received: x with shape {tuple(x.shape)}"
        )


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    check_type("generator", generator, (torch.Generator, type(None)), "a CPU torch.Generator or None")
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            f"`generator` must be a CPU torch.Generator. Received: generator on {generator.device}"
        )
    return generator
