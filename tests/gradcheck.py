"""Finite-difference gradient checking, shared by the test modules."""

import numpy as np

EPS = 1e-6
RTOL = 1e-6


def numeric_grad(f, x, eps=EPS):
    """Central differences of the scalar ``f()`` with respect to ``x`` (perturbed in place)."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        f_plus = f()
        x[i] = old - eps
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def assert_grad_close(analytic, numeric, rtol=RTOL):
    """Largest absolute difference relative to the largest numeric entry."""
    analytic = np.asarray(analytic)
    assert analytic.shape == numeric.shape
    scale = max(float(np.max(np.abs(numeric))), 1e-12)
    err = float(np.max(np.abs(analytic - numeric))) / scale
    assert err < rtol, f"relative gradient error {err:.2e} >= {rtol:.0e}"
