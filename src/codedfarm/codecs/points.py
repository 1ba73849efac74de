"""Interpolation points shared by the Berrut, spline and Lagrange codes."""

from __future__ import annotations

import numpy as np

from codedfarm.codecs.arrays import FloatMatrix

__all__ = ["data_points", "worker_points"]


def data_points(k: int) -> FloatMatrix:
    """Chebyshev points of the first kind, ``alpha_i = cos((2i+1) pi / (2k))``: ``(k,)``."""
    i = np.arange(k, dtype=np.float64)
    return np.cos((2.0 * i + 1.0) * np.pi / (2.0 * k))


def worker_points(n: int) -> FloatMatrix:
    """Chebyshev points of the second kind, ``beta_j = cos(j pi / (n-1))``: ``(n,)``.

    For ``n == 1`` the single worker sits at 0.
    """
    if n == 1:
        return np.zeros(1)
    j = np.arange(n, dtype=np.float64)
    points = np.cos(j * np.pi / (n - 1))
    # cos(pi/2) is 6e-17, not 0: snap the exact middle so that symmetric sets stay symmetric.
    if n % 2 == 1:
        points[(n - 1) // 2] = 0.0
    return points
