"""Berrut approximate coded computing (BACC; Jahani-Nezhad & Maddah-Ali 2022)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from codedfarm.codecs.arrays import FloatMatrix
from codedfarm.codecs.base import Codec, Workers
from codedfarm.codecs.points import SYSTEMATIC_PLACEMENT, code_points

__all__ = ["BerrutCodec", "berrut_matrix"]


def berrut_matrix(nodes: FloatMatrix, targets: FloatMatrix) -> FloatMatrix:
    """Berrut's rational interpolant as a matrix: ``(len(targets), len(nodes))``.

    ``r(z) = sum_p w_p y_p / (z - x_p) / sum_p w_p / (z - x_p)`` with ``w_p = (-1)^p``
    over the position ``p`` of each node in sorted order, which keeps ``r`` free of
    poles for any node set. Columns follow the order of ``nodes``; a target equal to a
    node gets that node's value exactly.
    """
    nodes = np.asarray(nodes, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    order = np.argsort(nodes, kind="stable")
    signs = np.empty(len(nodes))
    signs[order] = np.where(np.arange(len(nodes)) % 2 == 0, 1.0, -1.0)
    diff = targets[:, None] - nodes[None, :]
    hit = diff == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = signs[None, :] / diff
        matrix: FloatMatrix = weights / weights.sum(axis=1, keepdims=True)
    exact_rows = hit.any(axis=1)
    matrix[exact_rows] = hit[exact_rows].astype(np.float64)
    return matrix


class BerrutCodec(Codec):
    """Encoder: Berrut interpolant through ``(alpha_i, x_i)`` at ``beta_j``; decoder: through
    the returned ``(beta_j, y_j)`` at ``alpha_i``. Works from any number of results >= 1.

    ``systematic=True``: worker ``i < k`` sits at ``alpha_i`` and computes ``x_i`` itself;
    the ``n - k`` parity workers sit at the points of
    :func:`~codedfarm.codecs.points.systematic_points` (``placement``, for experiments).
    """

    name = "berrut"
    exact = False
    DEFAULT_SPACE = "auto"
    PARAMS: ClassVar[dict[str, type]] = {"byzantine": int, "space": str, "systematic": bool}

    def __init__(
        self, k: int, n: int, *, placement: str = SYSTEMATIC_PLACEMENT, **kwargs: Any
    ) -> None:
        super().__init__(k, n, **kwargs)
        self._alpha, self._beta = code_points(self.k, self.n, self.systematic, placement)

    @property
    def base_min_results(self) -> int:
        return 1

    def _loo_matrix(self, workers: Workers) -> FloatMatrix | None:
        nodes = self._beta[list(workers)]
        rank = np.empty(len(nodes), dtype=np.int64)
        rank[np.argsort(nodes, kind="stable")] = np.arange(len(nodes))
        # without node j, the nodes after it in sorted order move up one: their signs flip
        shifted = rank[None, :] - (rank[None, :] > rank[:, None])
        signs = np.where(shifted % 2 == 0, 1.0, -1.0)
        diff = nodes[:, None] - nodes[None, :]
        np.fill_diagonal(diff, 1.0)
        weights = signs / diff
        np.fill_diagonal(weights, 0.0)
        loo: FloatMatrix = np.eye(len(nodes)) - weights / weights.sum(axis=1, keepdims=True)
        return loo

    def _result_predictor(self, known: Workers, targets: Workers) -> FloatMatrix:
        return berrut_matrix(self._beta[list(known)], self._beta[list(targets)])

    def _build_encoder(self) -> FloatMatrix:
        return berrut_matrix(self._alpha, self._beta)

    def _build_decoder(self, workers: Workers) -> FloatMatrix:
        return berrut_matrix(self._beta[list(workers)], self._alpha)
