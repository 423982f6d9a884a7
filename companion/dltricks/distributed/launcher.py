"""Launching N worker processes on this machine, each in a ``torch.distributed`` process group.

:func:`launch` starts ``world_size`` processes with ``torch.multiprocessing`` (the *spawn* method: fresh
interpreters, safe with CUDA), gives each a rank, joins them in one process group at ``127.0.0.1`` on a
free port (``gloo`` on CPU, ``NCCL`` on GPUs), calls ``fn(rank, world_size, *args)`` in each, and returns
the ranks' results in rank order.

A collective (``all_reduce``) waits for every rank, so one failing worker leaves the others blocked
forever. The launcher therefore watches every worker: the first one to report an error (or to die without a
report) ends all of them, and :class:`WorkerError` names its rank and its error; an overall ``timeout``
ends a run that hangs for another reason. ``torchrun`` does the same for multi-machine jobs
(``torchrun --nproc-per-node=N script.py``, with the rank in ``$RANK``); this is its single-machine,
in-Python core, usable from a notebook and a test.

References:
    PyTorch, "Distributed communication package - torch.distributed" (backends, ``init_process_group``,
    TCP initialization) and "Multiprocessing package - torch.multiprocessing" (``spawn``).
"""

from __future__ import annotations

import datetime
import io
import math
import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dltricks._checks import check_choice, check_float, check_int, check_type, fail

BACKENDS = ("gloo", "nccl")
GRACE = 2.0  # seconds to wait for the other reports after a first error


class WorkerError(RuntimeError):
    """A worker of :func:`launch` failed. ``rank`` is its rank; the message holds its error and traceback."""

    def __init__(self, rank: int, message: str) -> None:
        super().__init__(f"worker rank {rank} failed: {message}")
        self.rank = rank


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    fn: Callable[..., Any],
    world_size: int,
    args: Sequence[Any] = (),
    *,
    backend: str | None = None,
    timeout: float = 120.0,
    threads: int = 1,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` processes joined in one process group.

    ``fn`` and ``args`` are pickled to fresh interpreters, so ``fn`` must be importable (a module-level
    function of a module, not a lambda or a notebook cell's function), and a script that calls ``launch``
    must do so under ``if __name__ == "__main__":`` (each worker imports the script's module again).
    Each worker sets ``threads`` torch threads, joins the group (``tcp://127.0.0.1:<free port>``) and,
    with ``nccl``, uses GPU ``rank % device_count``. Arguments and results travel serialized with
    ``torch.save``, so each worker gets its own copy of every tensor (not shared memory).

    Args:
        fn: the worker function; its return value is this rank's result.
        world_size: the number of processes (>= 1).
        args: further positional arguments for ``fn`` (picklable).
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors, one GPU per rank); ``None`` picks
            ``nccl`` when at least ``world_size`` GPUs are visible and ``gloo`` otherwise.
        timeout: seconds for the whole run (> 0); also the process group's timeout.
        threads: torch intra-op threads per worker (>= 1).

    Returns:
        The results of ranks ``0 .. world_size - 1``.

    Raises:
        TypeError: for an ``fn`` that is not callable, or a number of the wrong type.
        ValueError: for ``world_size < 1``, an unknown ``backend``, ``nccl`` without enough GPUs, or a
            ``timeout`` or ``threads`` out of range.
        WorkerError: when a worker raises or dies; the message names its rank and error. The other workers
            are ended first.
        TimeoutError: when the run takes longer than ``timeout``; every worker is ended first.
    """
    if not callable(fn):
        fail("fn", "a module-level function fn(rank, world_size, *args)", fn, TypeError)
    try:
        pickle.dumps(fn)  # a lambda or a nested function cannot reach a spawned worker
    except (pickle.PicklingError, AttributeError, TypeError):
        fail("fn", "a module-level function (picklable by name) fn(rank, world_size, *args)", fn, TypeError)
    world_size = check_int("world_size", world_size, minimum=1)
    check_type("args", args, (tuple, list), "a tuple of arguments")
    timeout = check_float("timeout", timeout, minimum=0.0, min_inclusive=False)
    threads = check_int("threads", threads, minimum=1)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= world_size else "gloo"
    check_choice("backend", backend, BACKENDS)
    if backend == "nccl" and torch.cuda.device_count() < world_size:  # NCCL wants one GPU per rank
        fail("backend", f"'gloo' with fewer than world_size={world_size} CUDA GPUs", backend)

    # The arguments travel as bytes: pickled as they are, their tensors would be moved to shared memory
    # and every worker would train the *same* storage (torch.multiprocessing shares tensors, never copies).
    buf = io.BytesIO()
    torch.save(tuple(args), buf)
    ctx = mp.get_context("spawn")
    reports = ctx.Queue()
    port = free_port()
    procs = [
        ctx.Process(
            target=_worker,
            args=(fn, rank, world_size, buf.getvalue(), backend, port, timeout, threads, reports),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    try:
        for p in procs:
            p.start()
        return _collect(procs, reports, world_size, time.monotonic() + timeout, timeout)
    finally:
        for p in procs:  # after a failure, a timeout or an interrupt: nobody is left blocked in a collective
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
        reports.close()


def _collect(procs: list[Any], reports: Any, world_size: int, deadline: float, timeout: float) -> list[Any]:
    """Gather every rank's result, or raise for the worker that failed first.

    One failure makes the other ranks fail too ("connection closed by peer" in their collective), and their
    reports can arrive first. So, once an error arrives, the launcher waits ``GRACE`` seconds and blames the
    worker that died without a report (a crash: its peers failed after it), else the earliest error.
    """
    results: dict[int, Any] = {}
    errors: dict[int, tuple[float, str]] = {}  # rank -> (when it failed, by the wall clock; its error)
    dead_since: dict[int, float] = {}
    first_error = math.inf
    while len(results) < world_size:
        try:
            status, rank, when, payload = reports.get(timeout=0.05)
            if status == "ok":
                results[rank] = torch.load(io.BytesIO(payload), weights_only=False)
            else:
                errors[rank] = (when, payload)
                first_error = min(first_error, time.monotonic())
        except queue.Empty:
            pass
        now = time.monotonic()
        for rank, p in enumerate(procs):
            if p.exitcode is not None and rank not in results and rank not in errors:
                # Exited without a report: wait a moment for one still in the pipe, then blame it.
                if now - dead_since.setdefault(rank, now) > GRACE / 2:
                    raise WorkerError(
                        rank,
                        f"the process exited with code {p.exitcode} without a result (a crash, or `fn` or an "
                        "argument could not be unpickled there: define them in an importable module)",
                    )
        if errors and (now - first_error > GRACE or len(errors) + len(results) == world_size):
            rank = min(errors, key=lambda r: errors[r][0])
            raise WorkerError(rank, errors[rank][1])
        if now > deadline:
            running = [r for r in range(world_size) if r not in results]
            raise TimeoutError(f"ranks {running} did not finish within timeout={timeout:g} s")
    return [results[r] for r in range(world_size)]


def _worker(
    fn: Callable[..., Any],
    rank: int,
    world_size: int,
    payload: bytes,
    backend: str,
    port: int,
    timeout: float,
    threads: int,
    reports: Any,
) -> None:
    try:
        torch.set_num_threads(threads)
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank))
        os.environ["WORLD_SIZE"] = str(world_size)
        kwargs: dict[str, Any] = {}
        device = None
        if backend == "nccl":
            device = torch.device("cuda", rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
            kwargs["device_id"] = device
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
            **kwargs,
        )
        where = device if backend == "nccl" else None  # CUDA tensors onto this rank's GPU
        args = torch.load(io.BytesIO(payload), map_location=where, weights_only=False)  # its own copy
        result = fn(rank, world_size, *args)
        if dist.is_initialized():  # (unless fn did) only after success: a failure is reported first
            dist.destroy_process_group()
        buf = io.BytesIO()
        torch.save(result, buf)
        reports.put(("ok", rank, time.time(), buf.getvalue()))
    except BaseException as exc:  # noqa: BLE001 - any failure, reported to the launcher with its rank
        when = time.time()  # the wall clock, comparable between the workers: the first failure is the cause
        reports.put(("error", rank, when, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        raise SystemExit(1) from None  # the queue's feeder thread flushes the report before the exit
