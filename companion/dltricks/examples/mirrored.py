"""Keras' ``tf.distribute.MirroredStrategy`` over logical CPU devices against one device at the global batch.

Run it as::

    python -m dltricks.examples.mirrored [--replicas 2] [--steps 4] [--batch-size 64] [--dtype float64]

It prints one JSON line: the number of replicas, the largest weight difference between the mirrored run and
the single-device run after ``--steps`` SGD steps (with momentum) from the same weights on the same batches,
how far the steps moved the weights, and both runs' reported losses.

Inside ``strategy.scope()`` every variable is mirrored on each device; ``fit`` splits each global batch
over the replicas, each replica's loss is its examples' sum divided by the *global* batch size, and the
replicas' gradients are summed (an all-reduce) before the same update is applied everywhere: one device's
step on the whole batch, up to the order of float additions. PyTorch's DDP averages per-rank mean losses
instead, the same thing for equal shards. Across machines, ``MultiWorkerMirroredStrategy`` plays the role of
``torchrun``.

Run it in a fresh process: the logical devices must be configured before TensorFlow starts its runtime
(``tf.config.set_logical_device_configuration`` raises ``RuntimeError`` afterwards).

References:
    TensorFlow, "Distributed training with TensorFlow" and "Distributed training with Keras" guides
    (``MirroredStrategy``, the loss scaled by the global batch size).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from dltricks._checks import check_choice, check_int


def compare(replicas: int = 2, steps: int = 4, batch_size: int = 64, seed: int = 0, dtype: str = "float32"):
    """Train one device and ``replicas`` mirrored CPU devices from the same weights; return the differences.

    Raises:
        TypeError, ValueError: for a bad count or ``dtype``; ``batch_size`` must be divisible by
            ``replicas``.
        RuntimeError: when TensorFlow's runtime had already started in this process.
    """
    replicas = check_int("replicas", replicas, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=replicas)
    if batch_size % replicas:
        raise ValueError(
            f"`batch_size` must be divisible by replicas={replicas}. Received: batch_size={batch_size}"
        )
    dtype = check_choice("dtype", dtype, ("float32", "float64"))
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    import keras

    keras.config.set_floatx(dtype)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(steps * batch_size, 20)).astype(dtype)
    y = rng.integers(0, 10, steps * batch_size)

    def build() -> Any:
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10)])  # fmt: skip
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        return model

    single = build()
    start = [w.copy() for w in single.get_weights()]
    one = single.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0).history["loss"]
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
    with strategy.scope():  # variables made here are mirrored on every replica
        mirrored = build()
    mirrored.set_weights(start)
    many = mirrored.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0).history["loss"]
    pairs = list(zip(single.get_weights(), mirrored.get_weights(), strict=True))
    return {
        "replicas": int(strategy.num_replicas_in_sync),
        "dtype": dtype,
        "steps": steps,
        "max_diff": max(float(np.abs(a - b).max()) for a, b in pairs),
        "moved": max(float(np.abs(a - w).max()) for (a, _), w in zip(pairs, start, strict=True)),
        "loss_single": [float(v) for v in one],
        "loss_mirrored": [float(v) for v in many],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        prog="python -m dltricks.examples.mirrored", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = ap.parse_args(argv)
    result = compare(args.replicas, args.steps, args.batch_size, args.seed, args.dtype)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
