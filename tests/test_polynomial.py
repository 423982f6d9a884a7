"""Polynomial regression: features, exact least squares, and the data generator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dltricks import polynomial


def test_features_are_a_vandermonde_matrix():
    x = np.array([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(polynomial.polynomial_features(x, 3), np.vander(x, 4, increasing=True))


def test_fit_matches_numpy_polyfit():
    x, y = polynomial.make_data(50, noise=0.1, seed=3)
    ours = polynomial.fit(x, y, 4)
    theirs = np.polynomial.polynomial.polyfit(x, y, 4)
    np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10)


def test_noiseless_cubic_is_recovered_exactly():
    x, y = polynomial.make_data(30, noise=0.0, seed=0)
    np.testing.assert_allclose(polynomial.fit(x, y, 3), polynomial.TRUE_COEFS, atol=1e-10)
    assert polynomial.mse(polynomial.fit(x, y, 3), x, y) < 1e-20


@settings(max_examples=30, deadline=None, database=None)
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000))
def test_degree_n_minus_1_interpolates(n, seed):
    x, y = polynomial.make_data(n, noise=0.5, seed=seed)
    assert polynomial.mse(polynomial.fit(x, y, n - 1), x, y) < 1e-8


def test_ridge_matches_the_closed_form_and_shrinks():
    x, y = polynomial.make_data(40, seed=1)
    X = polynomial.polynomial_features(x, 6)
    lam = 0.3
    expected = np.linalg.solve(X.T @ X + lam * np.eye(7), X.T @ y)
    np.testing.assert_allclose(polynomial.fit(x, y, 6, ridge=lam), expected, rtol=1e-10)
    assert np.linalg.norm(polynomial.fit(x, y, 6, ridge=10.0)) < np.linalg.norm(polynomial.fit(x, y, 6))


def test_noise_level_is_as_requested():
    x, y = polynomial.make_data(200_000, noise=0.1, seed=0)
    residual = y - polynomial.polynomial_features(x, 3) @ np.array(polynomial.TRUE_COEFS)
    assert residual.std() == pytest.approx(0.1, rel=0.01)
    assert x.min() >= -1 and x.max() <= 1
