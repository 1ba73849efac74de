"""Locating wrong results of a systematic code: twins first, then the curve.

A systematic code's parity workers sit *beside* the data points (``placement=measured``
with enough parity: :func:`codedfarm.codecs.points.parity_points`), so its results come in
**clusters**: a data point's own result and the parity results a few percent of a gap away.
Honest members of a cluster nearly agree (they sample the same curve at nearly the same
point), while a result predicted from the rest of the curve is predicted from far away,
with the code's whole approximation error. The generic locator (:mod:`.byzantine`) mixes
the two geometries in one test: honest own results without a partner were rejected and
wrong ones beside a partner passed (docs/results.md). Here they are tested apart:

1. **Within clusters.** Each cluster of two or more results has a *slope*: the largest
   ``|y_a - y_b|^2 / (beta_a - beta_b)^2`` over its pairs (squared norms over the output
   columns). A cluster is inconsistent when its slope exceeds :data:`CLUSTER_THRESHOLD`
   times the larger of the ``(A+1)``-th largest slope of the clusters (at most ``A``
   clusters hold a wrong result, so that one is honest) and its squared secant slope to
   the neighbouring clusters (where the curve is steep across a gap its clusters are too:
   probabilities are flat in most places and steep in a few). From an inconsistent
   cluster the fewest members whose absence leaves the rest consistent are rejected; when
   one member is left, the one nearest the curve that the other clusters predict (every
   member sits at nearly the same point, so that prediction errs alike for each). An
   honest own result rejected here costs little: its partner, a few percent of a gap
   away, decodes the row.
2. **Along the curve.** One representative per cluster (the own result when kept, else the
   member nearest the data point; a result beside no data point is its own cluster) goes
   to the generic locator, whose representatives now all sit at comparable spacing, as in
   the codes that are not systematic. A representative it rejects takes its whole cluster
   with it (its members agreed with it) when the budget allows.

Where no cluster has two members (few parity workers: ``placement=midpoints``) this is
the generic locator. Measured in docs/results.md (``benchmarks/byzantine_clean_cost.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from codedfarm.codecs.arrays import FloatMatrix
from codedfarm.codecs.byzantine import LooMatrix, Predictor, locate_wrong_results

__all__ = [
    "CLUSTER_REACH",
    "CLUSTER_THRESHOLD",
    "clusters_of",
    "locate_wrong_systematic",
]

CLUSTER_REACH = 0.25
"""A result belongs to a data point's cluster within this fraction of the gap to the data
point's nearest neighbour (``beside`` parity sits at 2-6%; ``midpoints`` at 50%)."""

CLUSTER_THRESHOLD = 40.0
"""A cluster's slope over its honest reference (see :func:`_limits`) above which it is
inconsistent. Chosen on the toy tanh network only (raw and softmax outputs, berrut and the
spline, n = 2K + 2A and 3K + 2A, S=4, 480 decodes each:
benchmarks/byzantine_cluster_threshold.py): honest clusters reached 31.5 (99.9% below 25),
clusters holding an error of 100x a result's spread 778 or more, of 1x its spread 1.9 or
more (1% below 9.5-24). Above every honest ratio seen, since a rejection costs the decode
something; an honest own result rejected here costs little (its partner decodes the row)."""


def clusters_of(points: FloatMatrix, anchors: FloatMatrix) -> list[list[int]]:
    """Indexes into ``points`` ``(m,)`` grouped by the data point (``anchors`` ``(k,)``)
    they sit beside (within :data:`CLUSTER_REACH` of its nearest gap), each point beside
    none in a group of its own; groups in the order of their first point."""
    ordered = np.sort(np.asarray(anchors, dtype=np.float64))
    if len(ordered) > 1:
        gaps = np.diff(ordered)
        nearest_gap = np.minimum(np.r_[gaps[0], gaps], np.r_[gaps, gaps[-1]])
    else:
        nearest_gap = np.ones(1)
    groups: dict[object, list[int]] = {}
    for j, point in enumerate(np.asarray(points, dtype=np.float64)):
        i = int(np.argmin(np.abs(ordered - point)))
        near = abs(point - ordered[i]) <= CLUSTER_REACH * nearest_gap[i]
        groups.setdefault(i if near else ("alone", j), []).append(j)
    return list(groups.values())


def _slope(y: FloatMatrix, points: FloatMatrix, members: Sequence[int]) -> float:
    return max(
        float(np.sum((y[a] - y[b]) ** 2)) / max(float(points[a] - points[b]) ** 2, 1e-300)
        for a, b in itertools.combinations(members, 2)
    )


def _representative(members: Sequence[int], own: Sequence[bool], points: FloatMatrix,
                    anchor_of: Callable[[int], float]) -> int:  # fmt: skip
    owned = [m for m in members if own[m]]
    if owned:
        return owned[0]
    return min(members, key=lambda m: abs(float(points[m]) - anchor_of(m)))


def _odd_ones(y: FloatMatrix, points: FloatMatrix, members: list[int], outside: list[int],
              predict: Predictor, budget: int, limit: float) -> list[int]:  # fmt: skip
    """The members of an inconsistent cluster to reject: the fewest (at most ``budget``)
    whose absence leaves the rest consistent (the most consistent of those); when one
    member is left, the one nearest the curve the ``outside`` results predict (all sit at
    nearly the same point, so the prediction errs alike for each). If no such set fits the
    budget, the ``budget`` members whose absence leaves the rest most consistent."""
    best: tuple[float, tuple[int, ...]] | None = None
    for size in range(1, min(budget, len(members) - 1) + 1):
        if len(members) - size == 1:
            if len(outside) < 2:
                return []  # nothing outside the cluster to tell its members apart
            guess = predict(outside, members) @ y[outside]
            keep = members[int(np.argmin(np.sum((y[members] - guess) ** 2, axis=1)))]
            return [m for m in members if m != keep]
        options = [
            (_slope(y, points, [m for m in members if m not in chosen]), chosen)
            for chosen in itertools.combinations(members, size)
        ]
        best = min(options)
        if best[0] <= limit:
            return list(best[1])
    return [] if best is None else list(best[1])


def _limits(y: FloatMatrix, points: FloatMatrix, clusters: list[list[int]], a: int) -> list[float]:
    """Each cluster's largest honest slope: :data:`CLUSTER_THRESHOLD` times the larger of
    the ``(a+1)``-th largest slope of the clusters and the squared secant slope from its
    mean to its neighbours' (where the curve is steep across a gap, its clusters are too:
    probability outputs are flat in most places and steep in a few)."""
    multi = [c for c in clusters if len(c) >= 2]
    slopes = sorted(_slope(y, points, c) for c in multi)
    common = slopes[-(a + 1)] if len(slopes) > a else slopes[-1]
    order = sorted(range(len(clusters)), key=lambda i: float(np.mean(points[clusters[i]])))
    where = np.array([np.mean(points[c]) for c in clusters])
    level = np.array([np.mean(y[c], axis=0) for c in clusters])
    limits = []
    for i in range(len(clusters)):
        rank = order.index(i)
        secant = 0.0
        for j in order[max(rank - 1, 0) : rank + 2]:
            if j != i:
                step = float(np.sum((level[i] - level[j]) ** 2))
                secant = max(secant, step / max(float(where[i] - where[j]) ** 2, 1e-300))
        limits.append(CLUSTER_THRESHOLD * (max(common, secant) + 1e-300))
    return limits


def locate_wrong_systematic(
    y: FloatMatrix,
    predict: Predictor,
    a: int,
    *,
    points: FloatMatrix,
    anchors: FloatMatrix,
    own: Sequence[bool],
    min_kept: int = 1,
    loo: LooMatrix | None = None,
) -> tuple[int, ...]:
    """Positions (indexes into ``y``, sorted) of at most ``a`` results judged wrong.

    ``y``: ``(m, d)`` float64 results; ``points``: ``(m,)`` each result's worker point;
    ``anchors``: the ``(k,)`` data points; ``own``: whether each result is a row's own
    (its worker computes an input unchanged). ``predict``, ``loo``, ``min_kept``: as
    :func:`~codedfarm.codecs.byzantine.locate_wrong_results`.
    """
    a = min(a, len(y) - max(min_kept, 2))
    if a <= 0:
        return ()
    points = np.asarray(points, dtype=np.float64)
    anchor_array = np.sort(np.asarray(anchors, dtype=np.float64))

    def anchor_of(m: int) -> float:
        return float(anchor_array[int(np.argmin(np.abs(anchor_array - points[m])))])

    clusters = clusters_of(points, anchors)
    rejected: list[int] = []
    if sum(len(c) >= 2 for c in clusters) > a:
        limits = _limits(y, points, clusters, a)
        flagged = [(c, lim) for c, lim in zip(clusters, limits, strict=True)
                   if len(c) >= 2 and _slope(y, points, c) > lim]  # fmt: skip
        steady = [c for c in clusters if all(c is not f for f, _ in flagged)]
        outside = [_representative(c, own, points, anchor_of) for c in steady]
        for cluster, limit in sorted(flagged, key=lambda f: -_slope(y, points, f[0]) / f[1]):
            odd = _odd_ones(y, points, list(cluster), outside, predict, a - len(rejected), limit)
            rejected.extend(odd)
            if len(odd) < len(cluster):
                steady.append([m for m in cluster if m not in odd])
        clusters = steady
    budget = a - len(rejected)
    if budget <= 0:
        return tuple(sorted(rejected))
    reps = [_representative(c, own, points, anchor_of) for c in clusters]
    if len(reps) < 3:
        return tuple(sorted(rejected))

    def predict_reps(known: Sequence[int], targets: Sequence[int]) -> FloatMatrix:
        return predict([reps[i] for i in known], [reps[i] for i in targets])

    loo_reps = None if loo is None else (lambda positions: loo([reps[i] for i in positions]))
    found = locate_wrong_results(y[reps], predict_reps, budget, min_kept=2, loo=loo_reps)
    for i in found:
        cluster = clusters[i]
        if len(cluster) <= a - len(rejected) and len(y) - len(rejected) - len(cluster) >= min_kept:
            rejected.extend(cluster)
    return tuple(sorted(rejected))
