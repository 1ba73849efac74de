"""Locating wrong worker results: the error locator behind a codec's ``byzantine=A``.

A coded result is a sample of one curve, ``y_j = f(u(beta_j))``, so the others predict it:
every codec that supports ``byzantine`` provides a *result predictor*, the linear map from
the results of some workers to the results the code expects at other workers (Berrut's
interpolant, the spline, the polynomial fit). The locator works on those predictions:

1. **Leave-one-out residuals.** ``r_j = y_j - P(others -> j) y_others`` for every result,
   as ``r = L y`` with the ``(m, m)`` matrix ``L`` (``L_jj = 1``).
2. **Candidates.** A wrong value ``e`` at result ``c`` adds ``L[:, c] e`` to ``r``: it also
   spoils its neighbours' predictions, often more than its own (a spline extrapolating from
   a spike at the ends). So the ``A`` candidates are the set ``R`` whose columns
   ``L[:, R]`` explain most of ``r`` (least squares; every ``A``-subset when there are at
   most :data:`EXHAUSTIVE_LIMIT`, else greedy, one at a time), not the largest ``|r_j|``.
3. **Test.** Without the candidates the rest is clean: each candidate is rejected only if
   its residual against the fit on the rest exceeds ``threshold`` times the median
   leave-one-out residual of the rest (squared norms over the output columns). A candidate
   that fits is kept, so an honest batch loses (almost) nothing.

Exact codes have honest residuals at rounding level, so any wrong value stands out.
Approximate codes have honest residuals of the size of their approximation error: a wrong
value much larger than that is always found; one of that size, or another class's
plausible answer, passes and costs what it costs (up to 2.7x the decode without it on the
zoo's probabilities, more on logits and in log space). Measured in docs/results.md.

Written here rather than taken from a library: robust regression packages fit a model
class of their own, while the locator must use the code's own interpolant.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np

from codedfarm.codecs.arrays import FloatMatrix

__all__ = [
    "BYZANTINE_THRESHOLD",
    "EXHAUSTIVE_LIMIT",
    "LooMatrix",
    "Predictor",
    "least_squares_loo",
    "locate_wrong_results",
    "loo_from_predictor",
]

Predictor = Callable[[Sequence[int], Sequence[int]], FloatMatrix]
"""``(known, targets) -> (len(targets), len(known))``: the results the code expects at the
``targets`` positions from the results at the ``known`` positions (indexes into ``y``)."""

LooMatrix = Callable[[Sequence[int]], FloatMatrix]
"""``positions -> (m, m)``: the leave-one-out matrix ``L`` over those results, where a code
has it in closed form (else it is built from the predictor, one result at a time)."""

BYZANTINE_THRESHOLD = 500.0
"""Squared-residual ratio above which a candidate is rejected. Calibrated on the toy tanh
network, raw and softmax outputs, berrut and spline, K=8, n=24, S=4
(benchmarks/byzantine_threshold.py): honest candidates reach a ratio of 74 there, errors of
100x the spread start at 4028; 500 is about their geometric mean. Reported on the zoo
(docs/results.md): lower values (50) left out honest results on LeNet5's logits and cost
up to 9.6x in MSE."""

EXHAUSTIVE_LIMIT = 2000
"""Most candidate sets tried one by one; above it candidates are chosen greedily."""


def loo_from_predictor(predict: Predictor, kept: Sequence[int]) -> FloatMatrix:
    """``(m, m)`` ``L`` with ``(L y)_j = y_j - P(others -> j) y_others`` over ``kept``."""
    m = len(kept)
    loo = np.eye(m)
    for j in range(m):
        others = [i for i in range(m) if i != j]
        loo[j, others] = -predict([kept[i] for i in others], [kept[j]])[0]
    return loo


def least_squares_loo(design: FloatMatrix) -> FloatMatrix:
    """``L`` of a least-squares fit with ``design`` ``(m, p)``: ``(I - H) / (1 - h_jj)`` row
    by row (the leave-one-out identity), ``H = X X^+``."""
    hat = design @ np.linalg.pinv(design)
    residual = np.eye(len(design)) - hat
    loo: FloatMatrix = residual / np.maximum(np.diag(residual), 1e-12)[:, None]
    return loo


def _explained(columns: FloatMatrix, residuals: FloatMatrix) -> float:
    coef, *_ = np.linalg.lstsq(columns, residuals, rcond=None)
    return float(np.sum((columns @ coef) ** 2))


def _best_pair(loo: FloatMatrix, residuals: FloatMatrix) -> list[int] | None:
    """Every pair at once: the energy of ``r`` in the span of columns i and j is
    ``(C_jj |B_i|^2 - 2 C_ij B_i.B_j + C_ii |B_j|^2) / (C_ii C_jj - C_ij^2)`` with
    ``C = L^T L`` and ``B = L^T r``."""
    gram = loo.T @ loo
    b = loo.T @ residuals
    inner = b @ b.T
    d = np.diag(gram)
    det = np.outer(d, d) - gram**2
    norms = np.diag(inner)
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = (
            d[None, :] * norms[:, None] - 2 * gram * inner + d[:, None] * norms[None, :]
        ) / det
    energy[~np.isfinite(energy) | (det <= 1e-12 * np.outer(d, d))] = -np.inf
    np.fill_diagonal(energy, -np.inf)
    if not np.isfinite(energy.max()):
        return None  # every pair degenerate: let least squares decide
    i, j = np.unravel_index(int(np.argmax(energy)), energy.shape)
    return sorted((int(i), int(j)))


def _candidates(loo: FloatMatrix, residuals: FloatMatrix, a: int) -> list[int]:
    m = loo.shape[0]
    pair = _best_pair(loo, residuals) if a == 2 else None
    if pair is not None:
        return pair
    if math.comb(m, a) <= EXHAUSTIVE_LIMIT:
        best = max(
            itertools.combinations(range(m), a),
            key=lambda subset: _explained(loo[:, list(subset)], residuals),
        )
        return list(best)
    chosen: list[int] = []
    for _ in range(a):
        rest = [c for c in range(m) if c not in chosen]
        chosen.append(max(rest, key=lambda c: _explained(loo[:, [*chosen, c]], residuals)))
    return chosen


def locate_wrong_results(
    y: FloatMatrix,
    predict: Predictor,
    a: int,
    *,
    min_kept: int = 1,
    threshold: float | None = None,
    loo: LooMatrix | None = None,
) -> tuple[int, ...]:
    """Positions (indexes into ``y``, sorted) of at most ``a`` results judged wrong.

    ``y``: ``(m, d)`` float64 results, one row per returned result. ``predict``: the code's
    result predictor. ``min_kept``: the fewest results the decode needs afterwards.
    ``threshold``: default :data:`BYZANTINE_THRESHOLD`. ``loo``: the code's closed-form
    leave-one-out matrix, if it has one.
    """
    threshold = BYZANTINE_THRESHOLD if threshold is None else threshold
    if loo is None:
        loo = functools.partial(loo_from_predictor, predict)
    m = len(y)
    a = min(a, m - max(min_kept, 2))
    if a <= 0:
        return ()
    everyone = list(range(m))
    full = loo(everyone)
    candidates = _candidates(full, full @ y, a)
    kept = [i for i in everyone if i not in candidates]
    clean = loo(kept) @ y[kept]
    floor = 1e-24 * float(np.mean(y**2)) + 1e-300
    typical = float(np.median(np.sum(clean**2, axis=1))) + floor
    expected = predict(kept, candidates) @ y[kept]
    misfit = np.sum((y[candidates] - expected) ** 2, axis=1)
    return tuple(
        sorted(c for c, e in zip(candidates, misfit, strict=True) if e > threshold * typical)
    )
