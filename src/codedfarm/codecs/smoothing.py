"""Natural cubic smoothing splines as linear operators (Reinsch / Green & Silverman form).

For knots ``t_1 < ... < t_m`` and data ``y`` the smoothing spline minimises
``sum_i (y_i - u(t_i))^2 + lam * integral u''(t)^2 dt`` (scipy's
``make_smoothing_spline`` convention). It is the natural cubic spline through its fitted
values ``g = S_lam y`` with ``S_lam = (I + lam Q R^-1 Q^T)^-1``, so every quantity here is
a matrix applied to ``y``. Outside ``[t_1, t_m]`` the natural spline is linear
(``u'' = 0``), continuing the end slopes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import linalg

from codedfarm.codecs.arrays import FloatMatrix
from codedfarm.errors import CodecParameterError

__all__ = [
    "SplineBasis",
    "gcv_scores",
    "penalty_matrix",
    "smoothing_spline_matrix",
]


def _sorted_nodes(nodes: FloatMatrix) -> tuple[npt.NDArray[np.intp], FloatMatrix]:
    nodes = np.asarray(nodes, dtype=np.float64)
    order = np.argsort(nodes, kind="stable")
    knots = nodes[order]
    if len(knots) > 1 and np.any(np.diff(knots) <= 0):
        raise CodecParameterError("spline knots must be distinct")
    return order, knots


def _banded_q_r(knots: FloatMatrix) -> tuple[FloatMatrix, FloatMatrix]:
    """``Q`` ``(m, m-2)`` dense and ``R`` ``(m-2, m-2)`` dense tridiagonal."""
    m = len(knots)
    h = np.diff(knots)
    q = np.zeros((m, m - 2))
    cols = np.arange(m - 2)
    q[cols, cols] = 1.0 / h[:-1]
    q[cols + 1, cols] = -1.0 / h[:-1] - 1.0 / h[1:]
    q[cols + 2, cols] = 1.0 / h[1:]
    r = np.diag((h[:-1] + h[1:]) / 3.0)
    if m > 3:
        off = h[1:-1] / 6.0
        r += np.diag(off, 1) + np.diag(off, -1)
    return q, r


def _to_upper_banded(a: FloatMatrix, bandwidth: int) -> FloatMatrix:
    """Symmetric ``a`` in LAPACK upper banded storage for ``solveh_banded``."""
    size = a.shape[0]
    ab = np.zeros((bandwidth + 1, size))
    for d in range(bandwidth + 1):
        ab[bandwidth - d, d:] = np.diagonal(a, d)
    return ab


def _solve_banded(a: FloatMatrix, b: FloatMatrix, bandwidth: int) -> FloatMatrix:
    """``a^-1 b`` for symmetric positive definite banded ``a``. A 1 x 1 ``a`` (three knots)
    is divided directly: scipy's tridiagonal path rejects an empty off-diagonal."""
    if a.shape[0] == 1:
        out: FloatMatrix = b / a[0, 0]
        return out
    return np.asarray(
        linalg.solveh_banded(_to_upper_banded(a, bandwidth), b, check_finite=False), np.float64
    )


def _evaluation_weights(
    knots: FloatMatrix, targets: FloatMatrix
) -> tuple[FloatMatrix, FloatMatrix]:
    """Weights on fitted values ``g`` and on second derivatives ``gamma`` (both ``(T, m)``)."""
    m = len(knots)
    h = np.diff(knots)
    t = len(targets)
    w_g = np.zeros((t, m))
    w_gamma = np.zeros((t, m))
    rows = np.arange(t)
    left = targets < knots[0]
    right = targets > knots[-1]
    inside = ~(left | right)
    idx = np.clip(np.searchsorted(knots, targets, side="right") - 1, 0, m - 2)
    i, z, r = idx[inside], targets[inside], rows[inside]
    a = (knots[i + 1] - z) / h[i]
    b = 1.0 - a
    w_g[r, i] += a
    w_g[r, i + 1] += b
    w_gamma[r, i] += (a**3 - a) * h[i] ** 2 / 6.0
    w_gamma[r, i + 1] += (b**3 - b) * h[i] ** 2 / 6.0
    d, r = targets[left] - knots[0], rows[left]
    w_g[r, 0] += 1.0 - d / h[0]
    w_g[r, 1] += d / h[0]
    w_gamma[r, 1] += -d * h[0] / 6.0
    d, r = targets[right] - knots[-1], rows[right]
    w_g[r, m - 1] += 1.0 + d / h[-1]
    w_g[r, m - 2] += -d / h[-1]
    w_gamma[r, m - 2] += d * h[-1] / 6.0
    return w_g, w_gamma


def _sorted_matrix(knots: FloatMatrix, targets: FloatMatrix, lam: float) -> FloatMatrix:
    m = len(knots)
    if m == 1:
        return np.ones((len(targets), 1))
    w_g, w_gamma = _evaluation_weights(knots, targets)
    if m == 2:
        return w_g
    q, r = _banded_q_r(knots)
    # gamma = (R + lam Q^T Q)^-1 Q^T y and g = y - lam Q gamma (Reinsch), so the value at the
    # targets is  W_g y + (W_gamma - lam W_g Q) gamma.
    system = r + lam * (q.T @ q) if lam else r
    gamma_op = _solve_banded(system, q.T, 2)
    coupling = w_gamma[:, 1:-1] - lam * (w_g @ q) if lam else w_gamma[:, 1:-1]
    matrix: FloatMatrix = w_g + coupling @ gamma_op
    return matrix


def smoothing_spline_matrix(nodes: FloatMatrix, targets: FloatMatrix, lam: float) -> FloatMatrix:
    """The smoothing spline through ``(nodes, y)`` evaluated at ``targets``, as a matrix.

    ``nodes``: ``(m,)`` distinct, any order; ``targets``: ``(T,)``; ``lam >= 0``
    (0 = natural interpolating cubic spline). Returns ``(T, m)`` with columns in the order
    of ``nodes``. One point gives a constant, two a straight line.
    """
    order, knots = _sorted_nodes(nodes)
    sorted_matrix = _sorted_matrix(knots, np.asarray(targets, dtype=np.float64), float(lam))
    matrix = np.empty_like(sorted_matrix)
    matrix[:, order] = sorted_matrix
    return matrix


def penalty_matrix(nodes: FloatMatrix) -> FloatMatrix:
    """``K = Q R^-1 Q^T`` ``(m, m)`` in the order of ``nodes`` (``m >= 3``): the smoothing
    spline is ``(I + lam K)^-1 y``, and ``diag(K)^-1 K y`` are the interpolating spline's
    leave-one-out residuals (the limit ``lam -> 0`` of the smoother's LOO identity)."""
    order, knots = _sorted_nodes(nodes)
    q, r = _banded_q_r(knots)
    k_sorted = q @ _solve_banded(r, q.T, 1)
    k_matrix: FloatMatrix = np.empty_like(k_sorted)
    k_matrix[np.ix_(order, order)] = k_sorted
    return k_matrix


@dataclass(frozen=True)
class SplineBasis:
    """Per-node-set pieces for choosing ``lam`` from data (generalized cross-validation).

    ``S_lam = U diag(1 / (1 + lam * eigenvalues)) U^T`` and the spline at the targets is
    ``interpolation @ S_lam``; all matrices are in the order of the nodes given.
    """

    interpolation: FloatMatrix  # (T, m): natural interpolating spline at the targets
    eigenvectors: FloatMatrix  # (m, m) U
    eigenvalues: FloatMatrix  # (m,) of K = Q R^-1 Q^T, >= 0 (two are 0: lines)

    @classmethod
    def build(cls, nodes: FloatMatrix, targets: FloatMatrix) -> SplineBasis:
        m = len(nodes)
        interpolation = smoothing_spline_matrix(nodes, targets, 0.0)
        if m <= 2:
            return cls(interpolation, np.eye(m), np.zeros(m))
        k_matrix = penalty_matrix(nodes)
        eigenvalues, eigenvectors = linalg.eigh(k_matrix, check_finite=False, driver="evd")
        return cls(interpolation, eigenvectors, np.clip(eigenvalues, 0.0, None))

    def lambda_grid(self, points: int = 81) -> FloatMatrix:
        """Log-spaced ``lam`` from nearly-interpolating to nearly-linear fits."""
        positive = self.eigenvalues[self.eigenvalues > 1e-12 * max(self.eigenvalues.max(), 1e-300)]
        if positive.size == 0:
            return np.zeros(1)
        return np.logspace(np.log10(1e-4 / positive.max()), np.log10(1e4 / positive.min()), points)

    def matrix(self, lam: float) -> FloatMatrix:
        """``(T, m)`` smoothing-spline matrix for this ``lam``."""
        shrink = 1.0 / (1.0 + lam * self.eigenvalues)
        matrix: FloatMatrix = (
            self.interpolation @ self.eigenvectors * shrink
        ) @ self.eigenvectors.T
        return matrix


def gcv_scores(eigenvalues: FloatMatrix, energy: FloatMatrix, lams: FloatMatrix) -> FloatMatrix:
    """GCV score ``m * RSS(lam) / (m - tr S_lam)^2`` for each ``lam``.

    ``energy[i]`` is ``||(U^T y)_i||^2`` summed over output columns, so
    ``RSS(lam) = sum_i (lam d_i / (1 + lam d_i))^2 energy_i``.
    """
    m = len(eigenvalues)
    scaled = np.outer(lams, eigenvalues)
    residual = (scaled / (1.0 + scaled)) ** 2 @ energy
    dof = (1.0 / (1.0 + scaled)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores: FloatMatrix = m * residual / (m - dof) ** 2
    scores[~np.isfinite(scores)] = np.inf
    return scores
