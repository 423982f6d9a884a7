"""Diagnostics: look inside a network while it trains.

- :mod:`dltricks.diagnostics.hooks`: per-layer gradient norms and activation statistics through hooks.
- :mod:`dltricks.diagnostics.lr_range`: the learning-rate range test.
- :mod:`dltricks.diagnostics.overfit`: overfit one batch, the first check of a new model and pipeline.
"""
