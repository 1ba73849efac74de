"""Interpolation points shared by the Berrut, spline and Lagrange codes, and where the
parity workers of a systematic code sit."""

from __future__ import annotations

import math

import numpy as np

from codedfarm.codecs.arrays import FloatMatrix
from codedfarm.errors import CodecParameterError

__all__ = [
    "BESIDE_FRACTION",
    "BESIDE_FROM",
    "PLACEMENTS",
    "SYSTEMATIC_PLACEMENT",
    "code_points",
    "data_points",
    "parity_points",
    "systematic_points",
    "worker_points",
]


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


# ----- systematic codes ---------------------------------------------------------------------
PLACEMENTS = ("measured", "chebyshev", "midpoints", "beside", "outside")
"""Where a systematic code's parity workers can sit (benchmarks/systematic_placement.py
compares them): ``measured`` (the default, below); ``chebyshev``: the Chebyshev points of
all ``n`` workers, parity ones spread among them (the first, naive placement);
``midpoints``: halfway between neighbouring data points, in gaps spread over the range;
``beside``: next to data points, :data:`BESIDE_FRACTION` of the way to a neighbour;
``outside``: beyond the ends of the data points."""

SYSTEMATIC_PLACEMENT = "measured"

BESIDE_FROM = 0.75
"""``measured`` puts the parity workers beside data points once there are at least this
many per data point (``n - k >= BESIDE_FROM * k``), else at midpoints. Chosen in
docs/systematic.md: with fewer parity workers than inputs, a parity halfway between two
inputs helps both; with about one per input, a parity beside each input nearly repeats it
and recovers its row almost exactly."""

BESIDE_FRACTION = 0.02
"""How far beside its data point a parity worker sits, as a fraction of the gap to the
neighbouring data point (docs/systematic.md)."""


def _spread(count: int, slots: int) -> list[int]:
    """``count`` distinct indexes spread evenly over ``range(slots)`` (``count <= slots``)."""
    return [math.floor((p + 0.5) * slots / count) for p in range(count)]


def _beside(data: FloatMatrix, count: int, fraction: float) -> list[float]:
    """``count`` points next to the sorted ``data``: each data point gets ``count // k``
    or one more (spread), first on the side towards the middle, then alternating, at
    ``fraction``, ``2 fraction``, ... of the gap on that side."""
    k = len(data)
    per = np.full(k, count // k)
    if count % k:
        per[_spread(count % k, k)] += 1
    gaps = np.diff(data) if k > 1 else np.ones(1)
    out: list[float] = []
    for i, c in enumerate(per):
        inward = 1.0 if i < (k - 1) / 2 or k == 1 else -1.0
        per_side = math.ceil(c / 2)
        step = min(fraction, 0.45 / max(per_side, 1))
        for j in range(c):
            side = inward if j % 2 == 0 else -inward
            if k == 1:
                gap = 1.0
            elif side > 0:
                gap = gaps[i] if i < k - 1 else gaps[i - 1]
            else:
                gap = gaps[i - 1] if i > 0 else gaps[0]
            out.append(float(data[i] + side * step * (j // 2 + 1) * gap))
    return out


def _midpoints(data: FloatMatrix, count: int) -> list[float]:
    """``count`` midpoints of gaps spread over the sorted ``data``; past ``k - 1``, the
    rest beside data points (a quarter of the way)."""
    k = len(data)
    inner = min(count, k - 1)
    out = [float((data[g] + data[g + 1]) / 2) for g in _spread(inner, k - 1)] if inner else []
    return out + _beside(data, count - inner, 0.25) if count > inner else out


def _outside(data: FloatMatrix, count: int) -> list[float]:
    """``count`` points beyond the ends of the sorted ``data``, alternating right and left,
    one end gap apart."""
    gap = float(data[-1] - data[-2]) if len(data) > 1 else 1.0
    return [
        float(data[-1] + gap * (j // 2 + 1)) if j % 2 == 0 else float(data[0] - gap * (j // 2 + 1))
        for j in range(count)
    ]


def parity_points(
    data: FloatMatrix,
    count: int,
    placement: str = SYSTEMATIC_PLACEMENT,
    *,
    beside_from: float = BESIDE_FROM,
    fraction: float = BESIDE_FRACTION,
) -> FloatMatrix:
    """``(count,)`` points for the parity workers of a systematic code whose data points
    are ``data``, in ascending order (``placement`` other than ``chebyshev``)."""
    ordered = np.sort(np.asarray(data, dtype=np.float64))
    k = len(ordered)
    if count == 0:
        return np.zeros(0)
    if placement == "measured":
        chosen = "beside" if count >= beside_from * k or k == 1 else "midpoints"
        return parity_points(ordered, count, chosen, fraction=fraction)
    if placement == "beside":
        points = _beside(ordered, count, fraction)
    elif placement == "midpoints":
        points = _midpoints(ordered, count) if k > 1 else _beside(ordered, count, 0.5)
    elif placement == "outside":
        points = _outside(ordered, count)
    else:
        raise CodecParameterError(
            f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}"
        )
    return np.sort(np.asarray(points, dtype=np.float64))


def systematic_points(
    k: int,
    n: int,
    placement: str = SYSTEMATIC_PLACEMENT,
    *,
    beside_from: float = BESIDE_FROM,
    fraction: float = BESIDE_FRACTION,
) -> tuple[FloatMatrix, FloatMatrix]:
    """``(alpha, beta)`` of a systematic code: the ``(k,)`` data points and the ``(n,)``
    worker points, where worker ``i < k`` sits at ``alpha_i`` (its encoder row is the
    identity) and workers ``k..n-1`` at the parity points.

    Except for ``chebyshev``, the data points are those of the codes that are not
    systematic (:func:`data_points`), and the parity points come from
    :func:`parity_points`.
    """
    name, _, given = placement.partition(":")
    if given:  # "beside:0.2": a placement with its fraction (experiments)
        try:
            fraction = float(given)
        except ValueError as exc:
            raise CodecParameterError(f"bad placement {placement!r}") from exc
        if not 0 < fraction < 0.5:
            raise CodecParameterError(f"placement fraction must be in (0, 0.5): {placement!r}")
        placement = name
    if placement == "chebyshev":
        every = np.sort(worker_points(n))
        spread = _spread(n - k, n) if n > k else []
        alpha = every[[i for i in range(n) if i not in spread]][::-1].copy()
        return alpha, np.concatenate([alpha, every[spread]])
    alpha = data_points(k)
    parity = parity_points(alpha, n - k, placement, beside_from=beside_from, fraction=fraction)
    beta = np.concatenate([alpha, parity])
    if len(np.unique(beta)) != n:  # cannot happen with the placements above
        raise CodecParameterError(f"systematic points collide for k={k}, n={n}: {beta}")
    return alpha, beta


def code_points(
    k: int, n: int, systematic: bool, placement: str = SYSTEMATIC_PLACEMENT
) -> tuple[FloatMatrix, FloatMatrix]:
    """``(alpha, beta)``: the data and worker points of an approximate code: Chebyshev
    points of both kinds, or :func:`systematic_points`."""
    if systematic:
        return systematic_points(k, n, placement)
    if placement != SYSTEMATIC_PLACEMENT:
        raise CodecParameterError("placement applies to systematic codes only")
    return data_points(k), worker_points(n)
