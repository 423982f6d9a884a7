"""``resolve_device``: the order ``"auto"`` tries (CUDA, then Apple's MPS, then the CPU), shown with patched
availability, and the refusals of a device that is not there."""

from __future__ import annotations

import pytest
import torch

from dltricks.device import resolve_device


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_the_cpu(monkeypatch, cuda, mps, expected):
    # Before: "auto" went from CUDA straight to the CPU, ignoring a Mac's GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected)
    assert resolve_device() == torch.device(expected)  # "auto" is the default


def test_a_named_device_that_is_missing_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"no CUDA GPU is visible. Received: device='cuda:1'"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match=r"MPS is not available. Received: device='mps'"):
        resolve_device("mps")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cuda")) == torch.device("cuda")  # a torch.device is taken as given


@pytest.mark.parametrize(
    ("device", "error", "pattern"),
    [
        ("tpu", ValueError, r"`device` must be one of 'auto', 'cpu', 'cuda', 'mps'. Received: device='tpu'"),
        (0, TypeError, r"`device` must be a string such as 'auto', 'cpu' or 'cuda', or a torch.device"),
    ],
)
def test_bad_devices_are_rejected_naming_the_argument(device, error, pattern):
    with pytest.raises(error, match=pattern):
        resolve_device(device)


def test_a_gpu_index_beyond_the_visible_ones_is_refused(monkeypatch):
    # Before: resolve_device("cuda:3") on a one-GPU machine returned cuda:3 and the run failed later, at the
    # first tensor moved there, with torch's "invalid device ordinal".
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"a visible GPU, cuda:0 to cuda:0. Received: device='cuda:3'"):
        resolve_device("cuda:3")
