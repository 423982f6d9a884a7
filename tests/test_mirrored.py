"""Keras: ``MirroredStrategy`` over two logical CPU devices equals one device at the global batch.

Runs :mod:`dltricks.examples.mirrored` in a subprocess (logical devices must be configured before TensorFlow
starts its runtime, which the test process may already have done): four SGD steps with momentum, global
batch 64, float64. Stated tolerance: 1e-12 on the weights (measured 6e-17: only the order of the gradient
additions differs), while the steps move them by more than 1e-2. About 10 s, most of it importing TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = [
    pytest.mark.keras,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed"),
]

SCRIPT = """
import json
from dltricks.examples.mirrored import compare
result = compare(replicas=2, steps=4, batch_size=64, seed=0, dtype="float64")
try:  # the runtime has started: the logical devices can no longer change (the same ones may be asked again)
    compare(replicas=3, batch_size=63)
    result["second_call"] = "no error"
except RuntimeError as err:
    result["second_call"] = "RuntimeError"
print("RESULT " + json.dumps(result))
"""


@pytest.fixture(scope="module")
def mirrored():
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        "CUDA_VISIBLE_DEVICES": "",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def test_mirrored_strategy_on_two_logical_devices_equals_one_device_at_the_global_batch(mirrored):
    assert mirrored["replicas"] == 2 and mirrored["dtype"] == "float64"
    assert mirrored["moved"] > 1e-2  # the four steps did change the weights
    assert mirrored["max_diff"] <= 1e-12
    assert mirrored["loss_mirrored"] == pytest.approx(mirrored["loss_single"], abs=1e-12)


def test_logical_devices_cannot_change_once_tensorflow_has_started(mirrored):
    assert mirrored["second_call"] == "RuntimeError"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"replicas": 0}, "`replicas` must be an integer >= 1"),
        ({"batch_size": 63}, "`batch_size` must be divisible"),
        ({"dtype": "float16"}, "`dtype` must be one of"),
    ],
)
def test_compare_rejects_bad_arguments_before_importing_tensorflow(kwargs, match):
    from dltricks.examples.mirrored import compare

    with pytest.raises(ValueError, match=match):
        compare(**kwargs)
