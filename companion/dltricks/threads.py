"""A fixed CPU thread budget for chapters, tests and lab kernels.

Why one thread. The chapters train small models (MLPs of a few hundred units, small CNNs) on two-core
machines that are often shared. torch's intra-op pool spins while it waits for a core: measured on a 2-core
machine, 400 steps of a 784-256-256-10 MLP took 0.58 s with two threads on an idle machine but 2.50 s when
another process kept one core busy (4.3x slower), against 0.78 s and 0.86 s with one thread. Parallelism
across chapters (``make book JOBS=2``) uses the cores better than parallelism inside tiny matrix products.

Why a *fixed* budget. A sum over a thread-split reduction is added in another order with another number of
threads, so the last bits of a result (and, after many steps, the chapter's numbers) depend on it. With the
same budget everywhere, a chapter gives the same numbers in the build, in a parallel build, under load, in
JupyterLab and in the tests.

The budget is read from ``DLTRICKS_THREADS`` (default 1).
"""

from __future__ import annotations

import os
import sys

from dltricks._checks import check_int, fail

THREADS_ENV = "DLTRICKS_THREADS"

_POOL_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_TF_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def thread_budget() -> int:
    """The budget asked for by ``$DLTRICKS_THREADS`` (default 1).

    Raises:
        ValueError: if the variable is set to something other than a positive integer.
    """
    raw = os.environ.get(THREADS_ENV, "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        fail(THREADS_ENV, "a positive integer", raw)
    return n


def thread_env(n: int) -> dict[str, str]:
    """The environment variables that give a process started with them ``n`` compute threads.

    OpenMP, MKL and OpenBLAS read theirs when they load, torch sizes its intra-op pool from
    ``OMP_NUM_THREADS``, and TensorFlow sizes its intra- and inter-op pools from ``TF_NUM_INTRAOP_THREADS``
    and ``TF_NUM_INTEROP_THREADS`` when its runtime starts. So they must be in the environment of the
    process *before* it imports these libraries: a kernel's or a test run's environment.

    Args:
        n: threads per process, ``n >= 1``.

    Returns:
        A dict of variable names to values, to merge into ``os.environ`` or a subprocess's ``env``.

    Raises:
        TypeError: if ``n`` is not an integer.
        ValueError: if ``n < 1``.
    """
    n = check_int("n", n, minimum=1)
    env = dict.fromkeys((*_POOL_VARIABLES, *_TF_VARIABLES, THREADS_ENV), str(n))
    return env


def limit_threads(n: int | None = None) -> int:
    """Give this process ``n`` compute threads (default :func:`thread_budget`), as far as it still can.

    Sets the variables of :func:`thread_env` (for libraries not loaded yet and for child processes), torch's
    intra-op threads, torch's inter-op threads (possible only before torch's first parallel work; otherwise
    left as they are), NumPy's BLAS pool (through threadpoolctl, when installed) and, when TensorFlow is
    already imported, its threading configuration (possible only before its runtime starts).

    Args:
        n: threads, ``n >= 1``; ``None`` reads ``$DLTRICKS_THREADS``.

    Returns:
        The number of intra-op threads torch now uses.

    Raises:
        TypeError, ValueError: as :func:`thread_env`.
    """
    n = thread_budget() if n is None else check_int("n", n, minimum=1)
    os.environ.update(thread_env(n))
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # the inter-op pool is fixed once used; eager small models barely use it
        pass
    try:  # NumPy's BLAS (OpenBLAS or MKL) loaded before the variables were set: limit it at run time
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(n)
        except RuntimeError:  # TensorFlow's runtime already started: its pools are fixed
            pass
    return torch.get_num_threads()
