"""Keras counterparts of the package's PyTorch pieces, for the chapters' Keras cells.

Keras is imported inside the functions, so ``import dltricks`` never pays TensorFlow's start-up time and the
package works where TensorFlow is not installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from dltricks._checks import check_float, check_int, fail

# TensorFlow's C++ logging reads TF_CPP_MIN_LOG_LEVEL once, when TensorFlow is imported: 2 keeps errors and
# drops the INFO and WARNING lines it prints at start-up (the CUDA/cuDNN/cuBLAS factory probes). Keras 3 reads
# KERAS_BACKEND the same way. On a CPU with AVX-512, TensorFlow 2.21 turns on oneDNN's custom operations and
# says so in a line (with absl's "All log messages before absl::InitializeLog()") that it writes before its
# log level applies; TF_ENABLE_ONEDNN_OPTS=0 keeps them off, so that line is not printed and the Keras cells
# compute the same way whether or not the CPU has those instructions. Python warnings (the ``warnings``
# module: a deprecation a reader should see) are unaffected.
QUIET_TENSORFLOW_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "KERAS_BACKEND": "tensorflow",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}


def quiet_tensorflow() -> dict[str, str]:
    """Set TensorFlow's log level and Keras' backend in ``os.environ`` (values already set are kept), for a
    TensorFlow imported after this call; return the values in effect. The one place the book sets them.

    Nothing changes for a TensorFlow already imported: its C++ log level was read at import.
    """
    import os

    return {key: os.environ.setdefault(key, value) for key, value in QUIET_TENSORFLOW_ENV.items()}


def regularizer(l1: float = 0.0, l2: float = 0.0) -> Any:
    """A Keras kernel regularizer: ``l1 * sum|w| + l2 * sum(w**2)`` (``None`` when both are zero).

    Note the Keras convention: ``L2(l2)`` has no one-half, so it equals ``weight_decay = 2 * l2`` in
    PyTorch's SGD (see :func:`dltricks.regularization.keras_l2_factor`).

    Raises:
        TypeError: for a ``l1`` or ``l2`` of the wrong type.
        ValueError: for a ``l1`` or ``l2`` out of its allowed range.
    """
    import keras

    l1 = check_float("l1", l1, minimum=0.0)
    l2 = check_float("l2", l2, minimum=0.0)
    if l1 == 0 and l2 == 0:
        return None
    return keras.regularizers.L1L2(l1=l1, l2=l2)


def mlp(
    hidden: Sequence[int] = (256, 256),
    classes: int = 10,
    *,
    l1: float = 0.0,
    l2: float = 0.0,
    input_shape: tuple[int, ...] = (28, 28),
) -> Any:
    """The Keras twin of :func:`dltricks.models.mlp`: Flatten, ReLU Dense layers, a logits Dense layer.

    Every Dense layer shares the same arguments through ``functools.partial``, so the regularizer is written
    once instead of once per layer (Géron, Hands-On Machine Learning, 3rd ed., ch. 11).

    Raises:
        TypeError: for a ``classes``, ``hidden`` or ``hidden[i]`` of the wrong type.
        ValueError: for a ``classes`` or ``hidden[i]`` out of its allowed range.
    """
    import keras

    if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
        fail("hidden", "a sequence of positive integers", hidden, TypeError)
    widths = [check_int("hidden[i]", h, minimum=1) for h in hidden]
    classes = check_int("classes", classes, minimum=1)
    RegularizedDense = partial(
        keras.layers.Dense, kernel_initializer="he_normal", kernel_regularizer=regularizer(l1, l2)
    )
    layers = [keras.Input(shape=input_shape), keras.layers.Flatten()]
    layers += [RegularizedDense(width, activation="relu") for width in widths]
    layers.append(RegularizedDense(classes))  # logits: the loss applies the softmax
    return keras.Sequential(layers)
