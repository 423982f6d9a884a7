"""Diagnostics: look inside a network while it trains.

- :mod:`dltricks.diagnostics.hooks`: per-layer gradient norms and activation statistics through hooks.
- :mod:`dltricks.diagnostics.lr_range`: the learning-rate range test.
- :mod:`dltricks.diagnostics.overfit`: overfit one batch, the first check of a new model and pipeline.
"""

from dltricks.diagnostics.hooks import ActivationStats, GradientNormRecorder, layer_gradient_norms
from dltricks.diagnostics.lr_range import LRRangeResult, lr_range_test
from dltricks.diagnostics.overfit import OverfitReport, overfit_one_batch

__all__ = [
    "ActivationStats",
    "GradientNormRecorder",
    "LRRangeResult",
    "OverfitReport",
    "layer_gradient_norms",
    "lr_range_test",
    "overfit_one_batch",
]
