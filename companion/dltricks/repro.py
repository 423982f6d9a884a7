"""Seeding every random number generator a run touches, and saving and restoring their states.

``seed_everything`` makes two runs started the same way draw the same numbers. ``rng_state`` and
``set_rng_state`` go further: a run resumed from a checkpoint continues the *same* streams (the dropout
masks of step 1001 are the ones the uninterrupted run would have drawn), which a fresh seed cannot give.
The states are tensors, integers and floats only, so a checkpoint stores them without pickling objects.
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dltricks._checks import check_int, check_type, fail

RNG_KEYS = ("python", "numpy", "torch", "cuda")


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python's ``random``, NumPy's global generator, torch (CPU and every CUDA device) and Keras.

    TensorFlow and Keras are seeded only when the program has already imported them: importing TensorFlow
    costs seconds and this function never does it. ``PYTHONHASHSEED`` is set in ``os.environ``, which
    affects only child processes started afterwards (this interpreter fixed its string hashing at start-up).

    Args:
        seed: the seed, an integer in ``[0, 2**32 - 1]`` (NumPy's range).
        deterministic: also ask for deterministic kernels: ``torch.use_deterministic_algorithms(True)``,
            cuDNN deterministic without benchmarking, ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (read when cuBLAS
            starts, so call this before the first CUDA operation) and TensorFlow's op determinism when
            imported. Operations without a deterministic kernel then raise instead of varying. ``False``
            leaves these settings as they are.

    Raises:
        TypeError: if ``seed`` is not an integer or ``deterministic`` not a bool.
        ValueError: if ``seed`` is out of range.

    References:
        PyTorch documentation, "Reproducibility" (notes/randomness.html).
    """
    seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
    check_type("deterministic", deterministic, bool, "a bool")
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global generator is the one to seed)
    torch.manual_seed(seed)  # seeds the CUDA generators too
    torch.cuda.manual_seed_all(seed)  # explicit; deferred until CUDA starts, a no-op without it
    if "keras" in sys.modules:
        sys.modules["keras"].utils.set_random_seed(seed)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed)
    if deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        if "tensorflow" in sys.modules:
            sys.modules["tensorflow"].config.experimental.enable_op_determinism()


def rng_state() -> dict[str, Any]:
    """The states of Python's ``random``, NumPy's global generator and torch's CPU and CUDA generators.

    Returns:
        A dict of tensors, integers, floats and lists (no NumPy arrays, no tuples of objects), ready for
        :func:`dltricks.checkpoint.save_checkpoint`; ``cuda`` is an empty list without a GPU.
    """
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys).astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`, so that the random streams continue exactly.

    A state saved with CUDA generators is restored on a machine with as many GPUs; elsewhere the CUDA part
    is left out with a warning (the CPU streams are still restored).

    Raises:
        TypeError: if ``state`` is not a mapping with the keys of :func:`rng_state`.
        ValueError: if one of its parts is malformed.
    """
    if not isinstance(state, Mapping) or any(key not in state for key in RNG_KEYS):
        fail("state", f"a mapping from rng_state() with the keys {list(RNG_KEYS)}", state, TypeError)
    torch_state = check_type("state['torch']", state["torch"], torch.Tensor, "a torch.ByteTensor")
    try:  # everything is read before anything is set: a malformed state changes no generator
        py, npy = state["python"], state["numpy"]
        python = (int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"])
        keys = npy["keys"].numpy().astype(np.uint32)
        numpy_state = (
            npy["name"],
            keys,
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    except (KeyError, AttributeError, TypeError) as err:
        raise ValueError(f"`state` must come from rng_state(); it is malformed ({err!r})") from err
    random.setstate(python)
    np.random.set_state(numpy_state)  # noqa: NPY002
    torch.set_rng_state(torch_state)
    cuda = list(state["cuda"])
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    elif cuda:
        warnings.warn(
            f"the saved CUDA random state ({len(cuda)} devices) was not restored: "
            f"{torch.cuda.device_count()} CUDA devices are visible; GPU random streams will differ",
            RuntimeWarning,
            stacklevel=2,
        )
