"""Locating wrong worker results: the error locator behind a codec's ``byzantine=A``.

A coded result is a sample of one curve, ``y_j = f(u(beta_j))``, so the others predict it:
every codec that supports ``byzantine`` provides a *result predictor*, the linear map from
the results of some workers to the results the code expects at other workers (Berrut's
interpolant, the spline, the polynomial fit). The locator works on those predictions:

1. **Leave-one-out residuals.** ``r_j = y_j - P(others -> j) y_others`` for every result,
   as ``r = L y`` with the ``(m, m)`` matrix ``L`` (``L_jj = 1``).
2. **Candidates.** A wrong value ``e`` at result ``c`` adds ``L[:, c] e`` to ``r``: it also
   spoils its neighbours' predictions, often more than its own (a spline extrapolating from
   a spike at the ends). So the ``A`` candidates are the set ``C`` whose columns
   ``L[:, C]`` explain most of ``r`` (least squares; every ``A``-subset when there are at
   most :data:`EXHAUSTIVE_LIMIT`, else greedy, one at a time), not the largest ``|r_j|``.
3. **Test.** Without the candidates the rest is taken as honest, and its own leave-one-out
   residuals ``s_i = |r_i|`` (norms over the output columns) say how well this code
   predicts this function on this decode. A candidate ``c`` predicted as
   ``sum_i w_ci y_i`` from the rest is rejected only if its misfit exceeds
   ``threshold`` times its *honest scale*: the larger of ``(sum_i |w_ci| s_i)^2``, the
   rest's residuals carried through the very weights that predict it (large where the
   prediction extrapolates, at the ends, or leans on a rough stretch), and ``max_i s_i^2``,
   the largest honest residual (a sharp feature elsewhere on the curve). A candidate that
   fits is kept, so an honest batch loses (almost) nothing.

The scale comes from each decode's own residuals, so an honest candidate's ratio stays in
the same range whatever the model (below 4.01 in 99.9% of the toy's decodes). The first
version compared a candidate with a constant times the *median* residual of the rest:
honest results where the curve is extrapolated (its ends) or swings reached thousands of
times it, and a smooth held-out network paid 29.5x the plain decode on honest batches.

Where the code's geometry varies along the curve the scale is coarse: a systematic code's
own result beside its parity partner is compared with residuals the rest has without it,
so a wrong own result of the outputs' size often passes, and an own result without a
partner is sometimes rejected (docs/results.md measures both).

Exact codes have honest residuals at rounding level, so any wrong value stands out.
Approximate codes have honest residuals of the size of their approximation error: a wrong
value much larger than that is always found; one of that size, or another class's
plausible answer, passes and costs what it costs. Measured in docs/results.md.

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
    "honest_scale_ratios",
    "least_squares_loo",
    "locate_wrong_results",
    "loo_from_predictor",
    "misfit_ratios",
]

Predictor = Callable[[Sequence[int], Sequence[int]], FloatMatrix]
"""``(known, targets) -> (len(targets), len(known))``: the results the code expects at the
``targets`` positions from the results at the ``known`` positions (indexes into ``y``)."""

LooMatrix = Callable[[Sequence[int]], FloatMatrix]
"""``positions -> (m, m)``: the leave-one-out matrix ``L`` over those results, where a code
has it in closed form (else it is built from the predictor, one result at a time)."""

BYZANTINE_THRESHOLD = 15.0
"""Misfit over honest scale (squared norms) above which a candidate is rejected. Calibrated
on the toy tanh network only (benchmarks/byzantine_threshold.py: inputs scaled by 0.5, 1,
2 and 4, raw and softmax outputs, berrut and spline, K=8, n=24, S=4, 1000 decodes each):
99.9% of honest decodes stay below 4.01 (largest 7.30), 99.9% of errors of 100x a result's
spread lie above 58.8 (smallest 34.9, on the roughest outputs); 15 is about the geometric mean
of 4.01 and 58.8. Reported on the zoo and two held-out networks (docs/results.md,
benchmarks/byzantine_clean_cost.py)."""

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


TWIN_COSINE = 0.9
"""Columns of ``L`` this collinear belong to results the residuals cannot tell apart."""


def _untwinned(
    y: FloatMatrix, loo: LooMatrix, full: FloatMatrix, candidates: list[int]
) -> list[int]:
    """``candidates`` with each one swapped for its *twin* (a result whose column of ``L``
    is collinear with its own: two results at nearly the same point, a systematic code's
    own result and its parity partner) where that leaves the rest more consistent (less
    leave-one-out residual energy). The residuals of a close pair are mirror images, so
    either could be the wrong one; only the rest, predicted without it, can say. (Both of
    a pair at once is not tried: without both, the rest of an honest systematic batch is
    often smoother, and the pair, predicted from far, would then be rejected.)"""
    norms = np.linalg.norm(full, axis=0) + 1e-300
    cosine = np.abs(full.T @ full) / np.outer(norms, norms)
    chosen = list(candidates)

    def energy(subset: list[int]) -> float:
        kept = [i for i in range(len(y)) if i not in subset]
        return float(np.sum((loo(kept) @ y[kept]) ** 2))

    for k, c in enumerate(candidates):
        twins = [int(j) for j in np.flatnonzero(cosine[c] >= TWIN_COSINE) if j not in chosen]
        if twins:
            options = [chosen, *([*chosen[:k], j, *chosen[k + 1 :]] for j in twins)]
            chosen = min(options, key=energy)
    return chosen


def honest_scale_ratios(
    y: FloatMatrix, predict: Predictor, loo: LooMatrix, candidates: Sequence[int]
) -> FloatMatrix:
    """Each candidate's misfit against the fit on the rest over its honest scale (squared
    norms over the output columns; see the module docstring)."""
    kept = [i for i in range(len(y)) if i not in candidates]
    spread = np.sqrt(np.sum((loo(kept) @ y[kept]) ** 2, axis=1))
    weights = predict(kept, candidates)
    misfit = np.sum((y[list(candidates)] - weights @ y[kept]) ** 2, axis=1)
    floor = 1e-24 * float(np.mean(y**2)) + 1e-300
    scale = np.maximum((np.abs(weights) @ spread) ** 2, float(spread.max()) ** 2) + floor
    ratios: FloatMatrix = misfit / scale
    return ratios


def misfit_ratios(
    y: FloatMatrix, predict: Predictor, a: int, loo: LooMatrix
) -> tuple[list[int], FloatMatrix]:
    """The ``a`` candidates (indexes into ``y``) and their :func:`honest_scale_ratios`,
    which :func:`locate_wrong_results` compares with its threshold. ``a`` must leave at
    least two results."""
    full = loo(list(range(len(y))))
    candidates = _untwinned(y, loo, full, _candidates(full, full @ y, a))
    return candidates, honest_scale_ratios(y, predict, loo, candidates)


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
    a = min(a, len(y) - max(min_kept, 2))
    if a <= 0:
        return ()
    candidates, ratios = misfit_ratios(y, predict, a, loo)
    return tuple(sorted(c for c, r in zip(candidates, ratios, strict=True) if r > threshold))
