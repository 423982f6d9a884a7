"""Hide optional packages from a Python process, as on a machine without them (a GPU box without TensorFlow).

Put this directory first on ``PYTHONPATH`` and name the top-level packages in ``$DLTRICKS_HIDE``
(comma-separated): Python imports ``sitecustomize`` at start-up, and this one makes the standard path finder
report those packages as absent, so ``import tensorflow`` raises ``ModuleNotFoundError`` and
``importlib.util.find_spec("tensorflow")`` returns ``None``, exactly as when they are not installed.
Used by ``tests/test_build.py`` (chapters in the smoke profile) and ``tests/test_optional_tools.py``.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder

HIDDEN = frozenset(filter(None, os.environ.get("DLTRICKS_HIDE", "").split(",")))


class _HidingPathFinder(PathFinder):
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):  # type: ignore[override]
        if fullname.partition(".")[0] in HIDDEN:
            return None
        return super().find_spec(fullname, path, target)


if HIDDEN:
    sys.meta_path[:] = [_HidingPathFinder if f is PathFinder else f for f in sys.meta_path]
