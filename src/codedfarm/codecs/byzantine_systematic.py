"""Locating wrong results of a systematic code: large errors, then clusters, then the curve.

A systematic code's parity workers sit *beside* the data points (``placement=measured``
with enough parity: :func:`codedfarm.codecs.points.parity_points`), so its results come in
**clusters**: a data point's own result and the parity results a few percent of a gap away.
Honest members of a cluster nearly agree where the curve is smooth (they sample it at
nearly the same point), while a result predicted from the rest of the curve is predicted
from far away, with the code's whole approximation error. The generic locator
(:mod:`.byzantine`) mixes the two geometries in one test: honest own results without a
partner were rejected and wrong ones beside a partner passed (docs/results.md). Here:

0. **Large errors first.** A result far from every other one (:data:`GROSS_FACTOR`) is
   rejected before anything else, so the budget of ``A`` goes to it first.
1. **Within clusters.** Each cluster of two or more results has a *slope*: the largest
   ``|y_a - y_b|^2 / (beta_a - beta_b)^2`` over its pairs (squared norms over the output
   columns). A cluster is inconsistent when its slope exceeds :data:`CLUSTER_THRESHOLD`
   times the larger of the ``(A+1)``-th largest slope of the clusters (at most ``A``
   clusters hold a wrong result, so that one is honest) and its squared secant slope to
   the neighbouring clusters (where the curve is steep across a gap its clusters are too:
   probabilities are flat in most places and steep in a few). From an inconsistent
   cluster the fewest members whose absence leaves the rest consistent are rejected; of a
   pair, the one farther from the curve the other clusters predict; an own result only on
   stronger evidence than a parity result (:data:`OWN_MARGIN`: rejecting an honest own
   result turns an exact row into a decoded one, an honest parity result beside it costs
   nothing). A cluster whose own result is missing loses nothing here: its parity results
   decode the row, and a sharp classifier honestly changes class inside one.
2. **Along the curve.** One representative per cluster (the own result when kept, else the
   member nearest the data point; a result beside no data point is its own cluster) goes
   to the generic locator, whose representatives now all sit at comparable spacing, as in
   the codes that are not systematic. A representative it rejects takes its whole cluster
   with it (its members agreed with it) when the budget allows, unless the cluster's own
   result is late (as in step 1).

Where no cluster has two members (few parity workers: ``placement=midpoints``) this is
step 0 and the generic locator. Measured in docs/results.md
(``benchmarks/byzantine_clean_cost.py --systematic-only``).
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
    "GROSS_FACTOR",
    "OWN_MARGIN",
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


OWN_MARGIN = 2.0
"""How much stronger the case against an own result must be than against a parity result
beside it (squared norms): of a pair that disagrees, its misfit against the curve the
other clusters predict; in a larger cluster, how much more consistent the rest is without
it. A parity result rejected in its place costs nothing when both are honest."""


GROSS_FACTOR = 10.0
"""Large errors are taken out first: a result whose nearest other result is farther than
this many times the results' median norm (100x a result's spread is far beyond; honest
results lie within about twice it of each other, probabilities within sqrt 2). Then, in a
cluster whose own result is missing, nothing more is rejected: its parity results are
what decode the row, and a sharp classifier changes class within a few percent of a gap
(ViT on digits), so such a cluster disagrees honestly; an error of the outputs' size there
is left to the decode."""


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


def _odd_ones(y: FloatMatrix, points: FloatMatrix, members: list[int], own: Sequence[bool],
              outside: list[int], predict: Predictor, budget: int,
              limit: float) -> list[int]:  # fmt: skip
    """The members of an inconsistent cluster to reject: the fewest (at most ``budget``)
    whose absence leaves the rest consistent, the one leaving it most consistent, but
    sparing the own result where a set without it leaves the rest within
    :data:`OWN_MARGIN` of that or within the cluster's honest reference slope (a class
    boundary between the members; a parity result rejected beside its own costs the
    decode nothing, the own result rejected turns an exact row into a decoded one); when
    one member is left, the one nearest the curve the ``outside`` results predict (all sit
    at nearly the same point, so the prediction errs alike for each), an own result
    rejected only if it misses by :data:`OWN_MARGIN` times more. If no set within the
    budget leaves the rest consistent, nothing: a cluster that is steep all through is a
    sharp stretch of the curve (a class boundary), not a wrong result."""
    for size in range(1, min(budget, len(members) - 1) + 1):
        if len(members) - size == 1:
            if len(outside) < 2:
                return []  # nothing outside the cluster to tell its members apart
            guess = predict(outside, members) @ y[outside]
            misfit = np.sum((y[members] - guess) ** 2, axis=1)
            keep = int(np.argmin(misfit))
            owned = [i for i, m in enumerate(members) if own[m]]
            if owned and keep != owned[0] and misfit[owned[0]] < OWN_MARGIN * misfit[keep]:
                keep = owned[0]
            return [m for i, m in enumerate(members) if i != keep]
        options = sorted(
            (_slope(y, points, [m for m in members if m not in chosen]), chosen)
            for chosen in itertools.combinations(members, size)
        )
        consistent = [(slope, chosen) for slope, chosen in options if slope <= limit]
        if consistent:
            spare = [o for o in consistent if not any(own[m] for m in o[1])]
            honest = limit / CLUSTER_THRESHOLD  # the cluster's honest reference slope
            if spare and spare[0][0] <= max(OWN_MARGIN * consistent[0][0], honest):
                return list(spare[0][1])
            return list(consistent[0][1])
    return []


def _generic(y: FloatMatrix, subset: list[int], predict: Predictor, loo: LooMatrix | None,
             a: int) -> tuple[int, ...]:  # fmt: skip
    """The generic locator on the results ``subset`` alone (indexes into ``subset``)."""

    def predict_subset(known: Sequence[int], targets: Sequence[int]) -> FloatMatrix:
        return predict([subset[i] for i in known], [subset[i] for i in targets])

    loo_subset = None if loo is None else (lambda where: loo([subset[i] for i in where]))
    return locate_wrong_results(y[subset], predict_subset, a, min_kept=2, loo=loo_subset)


def _gross(y: FloatMatrix, a: int) -> list[int]:
    """At most ``a`` results far from every other one: their nearest neighbour (norm) more
    than :data:`GROSS_FACTOR` times the results' median norm (their size, not their spread:
    where most rows are of one class the results hardly differ, and a spread would call an
    honest neighbouring class gross)."""
    scale = float(np.median(np.linalg.norm(y, axis=1)))
    distance = np.sqrt(np.maximum(np.sum(y**2, 1)[:, None] + np.sum(y**2, 1)[None, :]
                                  - 2 * y @ y.T, 0.0))  # fmt: skip
    np.fill_diagonal(distance, np.inf)
    nearest = distance.min(axis=1)
    far = [int(m) for m in np.argsort(-nearest) if nearest[m] > GROSS_FACTOR * scale]
    return far[:a]


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

    rejected = _gross(y, a)
    clusters = [kept for c in clusters_of(points, anchors)
                if (kept := [m for m in c if m not in rejected])]  # fmt: skip
    if len(rejected) < a and sum(len(c) >= 2 for c in clusters) > a - len(rejected):
        limits = _limits(y, points, clusters, a)
        flagged = [(c, lim) for c, lim in zip(clusters, limits, strict=True)
                   if len(c) >= 2 and _slope(y, points, c) > lim]  # fmt: skip
        steady = [c for c in clusters if all(c is not f for f, _ in flagged)]
        outside = [_representative(c, own, points, anchor_of) for c in steady]
        if flagged and len(outside) >= 3:  # a wrong result alone would spoil the prediction
            odd_out = _generic(y, outside, predict, loo, a)
            outside = [m for i, m in enumerate(outside) if i not in odd_out]
        for cluster, limit in sorted(flagged, key=lambda f: -_slope(y, points, f[0]) / f[1]):
            odd = _odd_ones(y, points, list(cluster), own, outside, predict, a - len(rejected),
                            limit)  # fmt: skip
            if not any(own[m] for m in cluster):  # these decode the row: see GROSS_FACTOR
                odd = []
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
    for i in _generic(y, reps, predict, loo, budget):
        cluster = clusters[i]
        if not any(own[m] for m in cluster):
            continue  # its parity results decode a late row: left to the decode (step 1)
        if len(cluster) <= a - len(rejected) and len(y) - len(rejected) - len(cluster) >= min_kept:
            rejected.extend(cluster)
    return tuple(sorted(rejected))
