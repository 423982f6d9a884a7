"""Choosing the compute device from a chapter's ``DEVICE`` parameter."""

from __future__ import annotations

import torch

from dltricks._checks import check_choice, check_type

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` (or a ``torch.device``) into a usable ``torch.device``.

    ``"auto"`` picks CUDA when a GPU is visible, else Apple's MPS (Metal) when it is available, else the
    CPU. Asking for ``"cuda"`` on a machine
    without a GPU is an error rather than a silent fallback: a chapter run for published numbers must not
    quietly train on the CPU.

    Args:
        device: ``"auto"`` (default), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.

    Raises:
        ValueError: for an unknown name, or a device that is not available here (a GPU index included).
    """
    if isinstance(device, torch.device):
        return device
    check_type("device", device, str, "a string such as 'auto', 'cpu' or 'cuda', or a torch.device")
    base = device.split(":", 1)[0]
    check_choice("device", base, DEVICE_CHOICES)
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"`device` must name an available device; no CUDA GPU is visible. Received: device={device!r}"
        )
    if base == "cuda" and torch.device(device).index is not None:
        count = torch.cuda.device_count()
        if torch.device(device).index >= count:  # torch would fail only at the first tensor moved there
            raise ValueError(
                f"`device` must name a visible GPU, cuda:0 to cuda:{count - 1}. Received: device={device!r}"
            )
    if base == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"`device` must name an available device; MPS is not available. Received: device={device!r}"
        )
    return torch.device(device)
