"""GPU efficiency: measuring right, padding to multiples, mixed precision, channels-last, feeding the device.

* :mod:`dltricks.perf.timing`: :func:`time_call` (``torch.utils.benchmark.Timer`` with warm-up and device
  synchronization), :func:`time_cuda_events`, the naive timer :func:`naive_times` and :func:`check_warmup`,
  :func:`throughput` in examples per second.
* :mod:`dltricks.perf.padding`: :func:`pad_to_multiple`, :func:`pad_channels`, :func:`pad_conv_in_channels`,
  :func:`pad_linear` (NVIDIA's Tensor Core size rules).
* :mod:`dltricks.perf.amp`: :class:`MixedPrecision` (autocast, a ``GradScaler`` for float16),
  :func:`default_amp_dtype`, :class:`AutocastModel` (bfloat16 inside ``fit``), :func:`to_channels_last`.
* :mod:`dltricks.perf.device_batches`: :class:`DeviceBatches`, data on the device, shuffled and augmented
  there.

Every piece runs on a CPU; only :func:`time_cuda_events` needs a GPU.
"""

from dltricks.perf.amp import (
    AutocastModel,
    MixedPrecision,
    default_amp_dtype,
    resolve_amp_dtype,
    to_channels_last,
)
from dltricks.perf.device_batches import DeviceBatches
from dltricks.perf.padding import pad_channels, pad_conv_in_channels, pad_linear, pad_to_multiple
from dltricks.perf.timing import (
    Timing,
    WarmupCheck,
    check_warmup,
    naive_times,
    throughput,
    time_call,
    time_cuda_events,
)

__all__ = [
    "AutocastModel",
    "DeviceBatches",
    "MixedPrecision",
    "Timing",
    "WarmupCheck",
    "check_warmup",
    "default_amp_dtype",
    "naive_times",
    "pad_channels",
    "pad_conv_in_channels",
    "pad_linear",
    "pad_to_multiple",
    "resolve_amp_dtype",
    "throughput",
    "time_call",
    "time_cuda_events",
    "to_channels_last",
]
