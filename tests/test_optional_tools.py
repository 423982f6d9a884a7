"""The optional tools really are hidden in the smoke runs of tests/test_build.py, and the package says so.

A machine without TensorFlow, TensorBoard or a C++ compiler must run every chapter, skipping what needs
them with a printed reason. tests/test_build.py runs each chapter that way (HIDE_OPTIONAL); this checks
that the hiding itself works, in a fresh interpreter started as the chapter kernels are.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_build import HIDE_OPTIONAL

from dltricks import book

PROBE = r"""
import importlib.util, json
result = {name: importlib.util.find_spec(name) is None for name in ("tensorflow", "keras", "tensorboard")}
try:
    import torch.utils.tensorboard  # torch's writer imports tensorboard
    result["torch_tensorboard"] = False
except ImportError:
    result["torch_tensorboard"] = True
from torch._inductor import cpp_builder, exc
try:
    cpp_builder.get_cpp_compiler()
    result["compiler"] = False
except exc.InvalidCxxCompiler:
    result["compiler"] = True
import numpy, torch, sklearn  # what every chapter needs is still there
print(json.dumps(result))
"""


def test_the_smoke_runs_hide_tensorflow_tensorboard_and_the_compiler():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **HIDE_OPTIONAL}, check=True)  # fmt: skip
    hidden = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert all(hidden.values()), hidden


def test_module_available_finds_installed_modules_and_names_missing_ones(capsys):
    assert book.module_available("numpy", needed_for="anything")
    assert capsys.readouterr().out == ""
    assert not book.module_available("dltricks_no_such_module", needed_for="the example")
    assert (
        "Skipped: the example needs the optional package `dltricks_no_such_module`" in capsys.readouterr().out
    )
    assert not book.module_available("dltricks_no_such_module.sub")  # a missing parent is not an error
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("kwargs", "argument"), [(dict(name=3), "name"), (dict(name="numpy", needed_for=1), "needed_for")]
)
def test_module_available_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(TypeError, match=rf"`{argument}` must be .* Received: "):
        book.module_available(**kwargs)
