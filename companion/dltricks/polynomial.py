r"""Polynomial regression, the smallest model whose capacity we can dial: the degree.

The data follow Dive into Deep Learning's example, a cubic with a little Gaussian noise,

.. math:: y = 5 + 1.2\,x - 3.4\,\frac{x^2}{2!} + 5.6\,\frac{x^3}{3!} + \varepsilon,
   \quad \varepsilon \sim \mathcal N(0, \sigma^2),

except that the inputs are drawn uniformly from :math:`[-1, 1]` rather than from a Gaussian, so that test
points never lie far outside the training range. A model of degree :math:`d` is linear in the monomials
:math:`x^k,\ k = 0..d` (on :math:`[-1, 1]` they stay well scaled up to the degrees used here). Models are
fitted exactly by least squares, with the minimum-norm solution when there are more coefficients than
points, so every difference between training and test error comes from the model and the data, not from an
optimizer that stopped early.
"""

from __future__ import annotations

import numpy as np

from dltricks._checks import check_float, check_int, fail

TRUE_COEFS = (5.0, 1.2, -3.4 / 2, 5.6 / 6)
"""The cubic's coefficients on :math:`1, x, x^2, x^3` (Zhang et al., Dive into Deep Learning, sec. 4.4)."""


def polynomial_features(x: np.ndarray, degree: int) -> np.ndarray:
    """The Vandermonde design matrix ``[x**k for k in 0..degree]``, shape ``(len(x), degree + 1)``.

    Raises:
        TypeError: for a ``degree`` of the wrong type.
        ValueError: for a ``degree`` or ``x`` out of its allowed range.
    """
    degree = check_int("degree", degree, minimum=0)
    x = np.asarray(x, dtype=float)
    if x.ndim != 1:
        fail("x", "a 1-D array", f"array of shape {x.shape}")
    return x[:, None] ** np.arange(degree + 1)


def make_data(n: int, *, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` points: ``x`` uniform on [-1, 1], ``y`` the cubic plus Gaussian noise of std ``noise``.

    Raises:
        TypeError: for a ``n``, ``noise`` or ``seed`` of the wrong type.
        ValueError: for a ``n``, ``noise`` or ``seed`` out of its allowed range.
    """
    n = check_int("n", n, minimum=1)
    noise = check_float("noise", noise, minimum=0.0)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    x = rng.uniform(-1.0, 1.0, size=n)
    y = polynomial_features(x, len(TRUE_COEFS) - 1) @ np.array(TRUE_COEFS) + noise * rng.normal(size=n)
    return x, y


def fit(x: np.ndarray, y: np.ndarray, degree: int, *, ridge: float = 0.0) -> np.ndarray:
    r"""Least-squares coefficients of a degree-``degree`` polynomial, optionally with an L2 penalty.

    Minimizes :math:`\|Xw - y\|^2 + \text{ridge}\,\|w\|^2`; with ``ridge=0`` and more features than points it
    returns the minimum-norm interpolating solution (``np.linalg.lstsq``).

    Raises:
        TypeError: for a ``ridge`` of the wrong type.
        ValueError: for a ``ridge`` or ``y`` out of its allowed range.
    """
    ridge = check_float("ridge", ridge, minimum=0.0)
    X = polynomial_features(x, degree)
    y = np.asarray(y, dtype=float)
    if y.shape != (X.shape[0],):
        fail("y", f"an array of shape ({X.shape[0]},)", f"array of shape {y.shape}")
    if ridge > 0:
        return np.linalg.solve(X.T @ X + ridge * np.eye(X.shape[1]), X.T @ y)
    return np.linalg.lstsq(X, y, rcond=None)[0]


def mse(coefs: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of the polynomial with ``coefs`` on ``(x, y)``."""
    coefs = np.asarray(coefs, dtype=float)
    pred = polynomial_features(x, len(coefs) - 1) @ coefs
    return float(np.mean((pred - np.asarray(y, dtype=float)) ** 2))
