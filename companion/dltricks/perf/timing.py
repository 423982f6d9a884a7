r"""Timing code correctly: warm-up, device synchronization, many runs, a robust summary; and the naive way.

Three things make a naive ``t0 = time.perf_counter(); f(); t1 - t0`` wrong:

* **No warm-up.** The first call pays one-off costs: lazy initialization (``nn.LazyLinear``, cuDNN's
  algorithm search with ``benchmark=True``, the CUDA context), memory-allocator growth, ``torch.compile``'s
  compilation. :func:`time_call` runs ``warmup`` calls first; :func:`check_warmup` spots a first call far
  slower than the steady state in a series of naive timings.
* **No synchronization.** CUDA kernels run asynchronously: without ``torch.cuda.synchronize()`` the clock
  measures how long it took to *queue* the work. ``torch.utils.benchmark.Timer`` synchronizes the device
  before each reading of the clock; :func:`time_cuda_events` times on the GPU's own clock with CUDA events.
* **One noisy sample.** Other processes, frequency scaling and the garbage collector add time. The Timer
  runs blocks of calls for at least ``min_run_time`` seconds; the median per call and its interquartile
  range (IQR) summarize them. (On a shared CPU the spread is real: compare ratios measured in one run.)

References:
    PyTorch, "Benchmark utils: torch.utils.benchmark" (the ``Timer``, ``blocked_autorange`` and
    ``Measurement`` used here) and the "PyTorch Benchmark" recipe (why warm-up and synchronization matter);
    NVIDIA, "CUDA C++ Best Practices Guide", sec. "Using CUDA GPU Timers" (timing with events).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.benchmark import Timer

from dltricks._checks import check_float, check_int, check_type, fail
from dltricks.device import resolve_device


@dataclass(frozen=True)
class Timing:
    """Seconds per call of a timed function: the median over runs, its IQR, and how it was measured.

    Attributes:
        median: median seconds per call over the runs.
        iqr: interquartile range of the per-call seconds over the runs (a robust spread).
        runs: the number of measurements (each a block of ``number`` calls).
        number: calls per measurement; each measurement's time is divided by it.
        times: the per-call seconds of each measurement, in order.
        device: the device the work ran on (``"cpu"``, ``"cuda:0"``).
        method: what the clock measured, in words.
    """

    median: float
    iqr: float
    runs: int
    number: int
    times: tuple[float, ...]
    device: str
    method: str

    def throughput(self, examples: int) -> float:
        """Examples per second when each call processes ``examples`` examples (``examples / median``).

        Raises:
            TypeError: if ``examples`` is not an integer.
            ValueError: if ``examples < 1``.
        """
        return throughput(examples, self.median)

    def __str__(self) -> str:
        return (
            f"{_ms(self.median)} per call (IQR {_ms(self.iqr)}, {self.runs} runs of {self.number} calls) "
            f"on {self.device}: {self.method}"
        )


def throughput(examples: int, seconds: float) -> float:
    """Examples per second: ``examples / seconds``.

    Args:
        examples: examples processed (e.g. the batch size of one timed step), >= 1.
        seconds: the time they took, > 0.

    Raises:
        TypeError: for an ``examples`` or ``seconds`` of the wrong type.
        ValueError: for ``examples < 1`` or ``seconds <= 0``.
    """
    examples = check_int("examples", examples, minimum=1)
    seconds = check_float("seconds", seconds, minimum=0.0, min_inclusive=False)
    return examples / seconds


def time_call(
    fn: Callable[[], object],
    *,
    device: str | torch.device = "cpu",
    warmup: int = 3,
    min_run_time: float = 0.2,
    threads: int = 1,
) -> Timing:
    """Time ``fn()`` the right way, with ``torch.utils.benchmark.Timer.blocked_autorange``.

    First ``warmup`` calls (then a device synchronization), so one-off costs are left out; then the Timer
    picks a block size so that one block lasts long enough for the clock's resolution, and times blocks for
    at least ``min_run_time`` seconds, synchronizing an accelerator before each clock reading. The result
    is the median and IQR of the per-call times of the blocks.

    On a CPU the clock is the wall clock (``timeit.default_timer``) around blocks of calls, with the
    Timer's thread count set to ``threads``. On a GPU, the Timer synchronizes the device, so the time
    includes the kernels' execution (not just their launch).

    Args:
        fn: a function of no arguments (close over the inputs), e.g. ``lambda: step(x, y)``.
        device: where ``fn`` computes, for synchronization and the report (``"auto"``, ``"cpu"``,
            ``"cuda"``, ...; see :func:`dltricks.device.resolve_device`).
        warmup: untimed calls first (>= 0).
        min_run_time: seconds of timed blocks, at least (> 0).
        threads: torch intra-op threads during the timing (>= 1).

    Returns:
        A :class:`Timing`.

    Raises:
        TypeError: if ``fn`` is not callable, or a count or time has the wrong type.
        ValueError: for ``warmup < 0``, ``min_run_time <= 0``, ``threads < 1`` or an unavailable device.
    """
    _check_fn(fn)
    dev = resolve_device(device)
    warmup = check_int("warmup", warmup, minimum=0)
    min_run_time = check_float("min_run_time", min_run_time, minimum=0.0, min_inclusive=False)
    threads = check_int("threads", threads, minimum=1)
    for _ in range(warmup):
        fn()
    _sync(dev)
    m = Timer("fn()", globals={"fn": fn}, num_threads=threads).blocked_autorange(min_run_time=min_run_time)
    clock = "synchronized wall clock" if dev.type != "cpu" else f"wall clock, {threads} thread(s)"
    method = f"torch.utils.benchmark.Timer.blocked_autorange after {warmup} warm-up call(s), {clock}"
    return _summary(list(m.times), m.number_per_run, dev, method)


def time_cuda_events(
    fn: Callable[[], object], *, runs: int = 20, warmup: int = 3, device: str = "cuda"
) -> Timing:
    """Time each of ``runs`` calls of ``fn()`` on the GPU's clock with CUDA events (GPU only).

    An event pair is recorded around every call in the stream's order, and the host synchronizes once, at
    the end: the times are the GPU's execution times, without the host's clock or a sync per call.

    Args:
        fn: a function of no arguments that launches GPU work.
        runs: timed calls (>= 1).
        warmup: untimed calls first (>= 0).
        device: the CUDA device.

    Returns:
        A :class:`Timing` with ``number=1``.

    Raises:
        TypeError: if ``fn`` is not callable, or ``runs`` or ``warmup`` is not an integer.
        ValueError: for ``runs < 1``, ``warmup < 0``, or when no CUDA GPU is available.
    """
    _check_fn(fn)
    runs = check_int("runs", runs, minimum=1)
    warmup = check_int("warmup", warmup, minimum=0)
    dev = _device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        fail("device", "an available CUDA device (CUDA events time GPU work only)", str(device))
    with torch.cuda.device(dev):
        for _ in range(warmup):
            fn()
        pairs = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)
        ]
        for start, end in pairs:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(dev)  # the one host sync: every event has completed after it
    times = [start.elapsed_time(end) / 1e3 for start, end in pairs]  # elapsed_time is in milliseconds
    return _summary(times, 1, dev, f"CUDA events around each call after {warmup} warm-up call(s), GPU clock")


def naive_times(fn: Callable[[], object], runs: int = 10) -> list[float]:
    """Seconds of each of ``runs`` calls of ``fn()``, timed naively: no warm-up, no synchronization.

    This is the common mistake, kept for contrast: the first entry includes the one-off costs, and on a GPU
    every entry measures only how long it took to queue the kernels. See :func:`check_warmup`.

    Raises:
        TypeError: if ``fn`` is not callable or ``runs`` is not an integer.
        ValueError: for ``runs < 1``.
    """
    _check_fn(fn)
    runs = check_int("runs", runs, minimum=1)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


@dataclass(frozen=True)
class WarmupCheck:
    """What :func:`check_warmup` found: the first call against the steady state.

    Attributes:
        first: seconds of the first call.
        steady: median seconds of the other calls.
        ratio: ``first / steady``.
        forgotten: whether ``ratio`` exceeds the threshold: timing that first call would mislead.
        message: the finding in words.
    """

    first: float
    steady: float
    ratio: float
    forgotten: bool
    message: str


def check_warmup(times: Sequence[float], *, factor: float = 3.0) -> WarmupCheck:
    """Report a forgotten warm-up: a first call more than ``factor`` times the median of the later ones.

    Args:
        times: seconds of consecutive calls, first call first (e.g. from :func:`naive_times`), at least 3.
        factor: how many times the steady state the first call may take before it is flagged (> 1).

    Returns:
        A :class:`WarmupCheck`.

    Raises:
        TypeError: if ``times`` is not a sequence of numbers or ``factor`` is not a number.
        ValueError: for fewer than 3 times, a negative or non-finite time, or ``factor <= 1``.
    """
    if isinstance(times, (str, bytes)) or not isinstance(times, Sequence):
        fail("times", "a sequence of seconds", times, TypeError)
    values = [check_float("times[i]", t, minimum=0.0) for t in times]
    if len(values) < 3:
        fail("times", "at least 3 timings (the first call and a steady state)", list(times))
    factor = check_float("factor", factor, minimum=1.0, min_inclusive=False)
    first, steady = values[0], statistics.median(values[1:])
    ratio = first / steady if steady > 0 else float("inf")
    forgotten = ratio > factor
    verdict = "warm-up forgotten: the first call is not representative" if forgotten else "no warm-up effect"
    numbers = f"first call {_ms(first)}, steady state {_ms(steady)}, ratio {ratio:.1f}, threshold {factor:g}"
    message = f"{verdict} ({numbers})"
    return WarmupCheck(first, steady, ratio, forgotten, message)


def _summary(times: list[float], number: int, dev: torch.device, method: str) -> Timing:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    return Timing(statistics.median(times), q[2] - q[0], len(times), number, tuple(times), str(dev), method)


def _check_fn(fn: object) -> None:
    if not callable(fn):
        fail("fn", "a callable of no arguments", fn, TypeError)


def _device(device: str | torch.device) -> torch.device:
    check_type("device", device, (str, torch.device), "a device name or torch.device")
    try:
        return torch.device(device)
    except RuntimeError:
        fail("device", "a device name such as 'cpu' or 'cuda'", device)
        raise AssertionError from None  # unreachable: fail raises


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"
