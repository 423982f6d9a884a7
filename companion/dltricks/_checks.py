"""Argument checks shared by the package.

Every public function validates its arguments before doing any work and fails with one message shape,
borrowed from Keras: what was expected, then what was received::

    ValueError: `k` must be an integer >= 2. Received: k=1

Tests match on the argument's name and the received value, so keep both in every message.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any


def fail(name: str, expected: str, value: Any, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` with the package's message shape."""
    raise error(f"`{name}` must be {expected}. Received: {name}={value!r}")


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` as ``int`` if it is an integer (not a bool) within ``[minimum, maximum]``."""
    bounds = _bounds_text(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, f"an integer{bounds}", value, TypeError)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        fail(name, f"an integer{bounds}", value)
    return int(value)


def check_float(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
) -> float:
    """Return ``value`` as ``float`` if it is a finite real number within the stated interval."""
    lo = "" if minimum is None else ("[" if min_inclusive else "(") + f"{minimum:g}"
    hi = "" if maximum is None else f"{maximum:g}" + ("]" if max_inclusive else ")")
    interval = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (minimum is not None or maximum is not None) else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, f"a real number{interval}", value, TypeError)
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        fail(name, f"a finite real number{interval}", value)
    if minimum is not None and (v < minimum or (not min_inclusive and v == minimum)):
        fail(name, f"a real number{interval}", value)
    if maximum is not None and (v > maximum or (not max_inclusive and v == maximum)):
        fail(name, f"a real number{interval}", value)
    return v


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``."""
    options = tuple(choices)
    if value not in options:
        fail(name, "one of " + ", ".join(repr(c) for c in options), value)
    return value


def check_type(name: str, value: Any, types: type | tuple[type, ...], expected: str) -> Any:
    """Return ``value`` if ``isinstance(value, types)``; otherwise raise ``TypeError``."""
    if not isinstance(value, types):
        fail(name, expected, value, TypeError)
    return value


def check_tensors(name: str, value: Any) -> list[Any]:
    """Return ``value`` as a non-empty list of tensors: one tensor, or an iterable of them (not a module).

    Passing a whole ``nn.Module`` where its parameters are meant is a common slip, so it gets its own hint.
    """
    import torch  # imported here: the other checks do not need torch

    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, torch.nn.Module):
        fail(name, "an iterable of tensors (e.g. model.parameters() or weights_only(model))",
             type(value).__name__, TypeError)  # fmt: skip
    tensors = list(value)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        fail(name, "a non-empty iterable of tensors", tensors)
    return tensors


def _bounds_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
