r"""Mixed precision (autocast with bfloat16 or float16, a gradient scaler for float16) and channels-last.

Automatic mixed precision runs the operations on autocast's lower-precision list (matrix multiplications,
convolutions) in a 16-bit type and keeps the weights, their gradients and the optimizer state in float32.
Operations on autocast's float32 list (on the CPU, among others, ``cross_entropy``, ``nll_loss``,
``mse_loss``) run in float32; every other operation runs in the dtype of its inputs, so on the CPU a
``softmax``, ``log_softmax`` or ``sum`` of bfloat16 logits computes in bfloat16 (about 3 significant
digits). A loss written by hand from such operations is therefore not float32 under autocast: cast the
logits with ``.float()`` first (``tests/test_perf.py`` checks these dtypes on the installed torch). The
two types:

* **bfloat16** keeps float32's 8 exponent bits (same range) with 8 bits of mantissa (about 3 significant
  digits): gradients do not underflow, so no scaling is needed. Supported on recent CPUs (AVX-512 BF16,
  AMX) and NVIDIA GPUs from Ampere on. The default here, and the only choice :func:`autocast_model` allows.
* **float16** has 11 bits of mantissa but only 5 of exponent: small gradients underflow to zero. The loss
  is multiplied by a scale :math:`S` before ``backward`` and the gradients divided by :math:`S` before the
  step; ``torch.amp.GradScaler`` picks :math:`S` dynamically, skipping a step whose gradients overflowed
  and halving :math:`S` (Micikevicius et al., 2018, sec. 3.2).

:meth:`MixedPrecision.step` skips a non-finite step with either type (bfloat16 has no scaler to do it) and
says so (:attr:`MixedPrecision.last_skipped`), so that a schedule can count only the updates taken.

Channels-last (NHWC) stores an image batch pixel by pixel with its channels adjacent, the layout
convolution kernels on Tensor Cores (and oneDNN on CPUs) prefer; :func:`to_channels_last` converts a
model's 4-D weights and its inputs.

References:
    Micikevicius et al., "Mixed Precision Training", ICLR 2018 (float32 master weights, loss scaling);
    Kalamkar et al., "A Study of BFLOAT16 for Deep Learning Training", 2019; PyTorch, "Automatic Mixed
    Precision package - torch.amp" and the "Channels Last Memory Format" tutorial; NVIDIA, "Train With Mixed
    Precision" (Deep Learning Performance Documentation).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from dltricks._checks import check_type, fail
from dltricks.nonfinite import gradients, loss_and_finite, optimizer_params

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_amp_dtype(dtype: str | torch.dtype = "bfloat16") -> torch.dtype:
    """``torch.bfloat16`` or ``torch.float16`` from a name or a dtype.

    Raises:
        ValueError: for any other type.
    """
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if dtype in (torch.bfloat16, torch.float16):
        return dtype
    fail("dtype", "'bfloat16', 'float16', torch.bfloat16 or torch.float16", dtype)
    raise AssertionError  # unreachable: fail raises


def default_amp_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """bfloat16 where the device supports it (CPUs; NVIDIA GPUs from Ampere on), float16 otherwise.

    Raises:
        TypeError: for a ``device`` of the wrong type.
    """
    check_type("device", device, (str, torch.device), "a device name or torch.device")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16  # Volta and Turing: float16 Tensor Cores only (use it with a GradScaler)
    return torch.bfloat16


class MixedPrecision:
    """One mixed-precision training step: autocast forward and loss, scaled backward, optimizer step.

    ``float16`` uses a ``torch.amp.GradScaler``; ``bfloat16`` needs none (the scaler is then disabled and
    every call on it is a no-op). The weights, their gradients and the optimizer state stay float32.

    A step whose loss or a gradient is NaN or infinite is skipped with either type: float16's scaler skips
    it (and halves its scale), and bfloat16, which has no scaler, is guarded by the same check
    (:func:`dltricks.nonfinite.loss_and_finite`), so a NaN in a batch never reaches the weights. Whether the
    latest step was taken is :attr:`last_skipped`; step a schedule only when it is ``False`` (the updates
    taken are :attr:`steps` minus :attr:`skipped`).

    Args:
        dtype: ``"bfloat16"`` (default) or ``"float16"`` (or the torch dtypes).
        device: the device type the model runs on (``"cpu"`` or ``"cuda"``, or a ``torch.device``).
        enabled: ``False`` turns autocast and scaling off (a float32 step, for comparisons; non-finite
            steps are skipped all the same).

    Attributes:
        scaler: the ``torch.amp.GradScaler`` (disabled unless float16); save its ``state_dict`` with the run.
        last_skipped: whether the latest :meth:`step` was skipped (``False`` before any).
        steps: calls of :meth:`step`; ``skipped``: those skipped for a non-finite loss or gradient.

    Raises:
        TypeError: for a ``device`` of the wrong type.
        ValueError: for another ``dtype`` or an unknown device type.

    Example::

        amp = MixedPrecision("bfloat16", device="cpu")
        clip = lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for x, y in batches:
            loss = amp.step(model, optimizer, x, y, before_step=clip)  # clips the unscaled gradients
            if not amp.last_skipped:
                scheduler.step()  # only after an update that happened
    """

    def __init__(
        self, dtype: str | torch.dtype = "bfloat16", device: str | torch.device = "cpu", enabled: bool = True
    ) -> None:
        self.dtype = resolve_amp_dtype(dtype)
        check_type("device", device, (str, torch.device), "a device name or torch.device")
        self.device_type = torch.device(device).type
        if self.device_type not in ("cpu", "cuda"):
            fail("device", "a CPU or CUDA device", str(device))
        self.enabled = bool(enabled)
        # float16's narrow exponent range needs loss scaling; bfloat16's does not.
        self.scaler = torch.amp.GradScaler(
            self.device_type, enabled=self.enabled and self.dtype == torch.float16
        )
        self.last_skipped = False
        self.steps = self.skipped = 0

    def autocast(self) -> AbstractContextManager[Any]:
        """The ``torch.autocast`` context of this device type and dtype (a no-op when not enabled)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def step(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
        before_step: Callable[[], object] | None = None,
    ) -> torch.Tensor:
        """One step on the batch ``(x, y)``; returns the loss as a detached float32 0-d tensor.

        The order is that of PyTorch's AMP examples ("Gradient clipping"): backward on the scaled loss,
        ``scaler.unscale_(optimizer)``, then ``before_step()`` sees the true gradients (clip them there:
        a threshold applied to scaled gradients would be :math:`S` times too small), then the optimizer
        step. A step whose loss or a gradient is not finite is skipped (its gradients are dropped, and
        ``before_step`` does not run) and :attr:`last_skipped` says so.

        Host synchronization: one per step, which reads the loss and the finite flag together (for
        float16 ``scaler.step`` reads its own overflow flag too, unless the optimizer is fused). A loop
        that must never wait for the device uses ``fit(sync_every=k)`` with a fused optimizer instead.

        Args:
            model, optimizer, x, y: the network, its optimizer and one batch.
            loss_fn: ``loss_fn(output, y)``, computed under autocast.
            before_step: optional ``before_step()``, called after unscaling and before the optimizer step
                when the step is finite, e.g. ``lambda: clip_grad_norm_(model.parameters(), 1.0)``.

        Raises:
            TypeError: for a ``model``, ``optimizer`` or ``before_step`` of the wrong type.
        """
        check_type("model", model, nn.Module, "a torch.nn.Module")
        check_type("optimizer", optimizer, torch.optim.Optimizer, "a torch.optim.Optimizer")
        if before_step is not None and not callable(before_step):
            fail("before_step", "None or a callable before_step()", before_step, TypeError)
        optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = loss_fn(model(x), y)
        # backward runs outside autocast: each op's backward uses the dtype its forward used.
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)  # the true gradients from here on (a no-op without a scaler)
        # GradScaler skips float16 overflows but bfloat16 has no scaler: one check guards both types.
        _, finite = loss_and_finite(loss, gradients(optimizer_params(optimizer)))
        self.steps += 1
        self.last_skipped = not finite
        if finite:
            if before_step is not None:
                before_step()  # clipping goes here: after unscale_, before the step
            self.scaler.step(optimizer)  # does not unscale again; skips if its own flag is set
        else:
            self.skipped += 1
            optimizer.zero_grad(set_to_none=True)  # the non-finite gradients never outlive the step
        self.scaler.update()  # halves the scale after a float16 overflow (its flag came from unscale_)
        return loss.detach().float()


class AutocastModel(nn.Module):
    """``model`` whose forward runs under bfloat16 autocast and returns float32: a drop-in for ``fit``.

    ``fit(AutocastModel(model), ...)`` trains with bfloat16 mixed precision and no other change (no scaler
    is needed). Autocast follows the device of the model's parameters at each call, so ``fit(...,
    device="cuda")`` moving the model is enough. The wrapped model is ``self.module`` (state-dict keys get
    the prefix ``module.``, as with ``DistributedDataParallel``).

    Args:
        model: the network.
        dtype: ``"bfloat16"`` only: float16 needs a gradient scaler in the step, which
            :class:`MixedPrecision` provides.

    Raises:
        TypeError: for a ``model`` of the wrong type.
        ValueError: for ``dtype`` float16 or another type.
    """

    def __init__(self, model: nn.Module, dtype: str | torch.dtype = "bfloat16") -> None:
        super().__init__()
        check_type("model", model, nn.Module, "a torch.nn.Module")
        if resolve_amp_dtype(dtype) != torch.bfloat16:
            fail("dtype", "bfloat16 here (float16 needs a GradScaler: use MixedPrecision.step)", dtype)
        self.module = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        param = next(self.module.parameters(), None)
        device_type = param.device.type if param is not None else "cpu"
        with torch.autocast(device_type, dtype=torch.bfloat16):
            out = self.module(*args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out


def to_channels_last(model: nn.Module, *inputs: torch.Tensor) -> tuple[Any, ...]:
    """``model`` (its 4-D parameters and buffers) and the 4-D ``inputs`` in channels-last memory format.

    The shapes stay ``(N, C, H, W)``; only the strides change (NHWC order in memory). The model is
    converted in place (``model.to(memory_format=...)``) and returned first, then the converted inputs.

    Raises:
        TypeError: if ``model`` is not a module or an input is not a tensor.
        ValueError: if an input is not 4-D.
    """
    check_type("model", model, nn.Module, "a torch.nn.Module")
    out: list[Any] = [model.to(memory_format=torch.channels_last)]  # type: ignore[call-overload]
    for i, x in enumerate(inputs):
        check_type(f"inputs[{i}]", x, torch.Tensor, "a torch.Tensor (N, C, H, W)")
        if x.ndim != 4:
            fail(f"inputs[{i}]", "4-D (N, C, H, W)", f"tensor of shape {tuple(x.shape)}")
        out.append(x.contiguous(memory_format=torch.channels_last))
    return tuple(out)
