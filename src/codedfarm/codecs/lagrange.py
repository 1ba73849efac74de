"""Lagrange coded computing (Yu et al. 2019): exact for polynomial f of a given degree."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.polynomial import chebyshev

from codedfarm.codecs.arrays import FloatMatrix
from codedfarm.codecs.base import Codec, Workers, check_int
from codedfarm.codecs.byzantine import least_squares_loo
from codedfarm.codecs.points import data_points, worker_points
from codedfarm.errors import CodecParameterError

__all__ = ["LagrangeCodec"]


class LagrangeCodec(Codec):
    """Encoder: the degree ``k-1`` polynomial through ``(alpha_i, x_i)`` sampled at ``beta_j``.

    A worker computing a polynomial ``f`` of degree ``degree`` returns samples of
    ``f(u(z))``, a polynomial of degree ``(k-1)*degree``, so any ``(k-1)*degree + 1``
    results determine it; the decoder fits it (least squares when more results are in)
    and evaluates it at ``alpha_i``. Polynomials are handled in the Chebyshev basis on
    Chebyshev points, which keeps the linear algebra well conditioned.
    """

    name = "lagrange"
    exact = True
    PARAMS: ClassVar[dict[str, type]] = {"degree": int, "byzantine": int}

    def __init__(self, k: int, n: int, *, degree: int = 1, **kwargs: Any) -> None:
        super().__init__(k, n, **kwargs)
        self.degree = check_int(self.name, "degree", degree, 1)
        if self.n < self.min_results:
            extra = f" + 2*byzantine = {self.min_results}" if self.byzantine else ""
            raise CodecParameterError(
                f"{self.name}: n={self.n} is too small: degree={self.degree} with k={self.k} "
                f"needs n >= (k-1)*degree+1 = {self.base_min_results}{extra}"
            )
        self._alpha = data_points(self.k)
        self._beta = worker_points(self.n)

    @classmethod
    def exact_degree(cls, params: dict[str, Any]) -> int | None:
        return int(params.get("degree", 1))

    @classmethod
    def default_n(cls, k: int, s: int, params: dict[str, Any]) -> int:
        """The fewest workers that tolerate ``s`` stragglers: ``(k-1)*degree + 1 + s``
        (``+ 2A`` under ``byzantine=A``)."""
        return (k - 1) * int(params.get("degree", 1)) + 1 + s + 2 * int(params.get("byzantine", 0))

    @property
    def base_min_results(self) -> int:
        return (self.k - 1) * self.degree + 1

    def params(self) -> dict[str, Any]:
        return {"degree": self.degree, **self._decode_params()}

    def _loo_matrix(self, workers: Workers) -> FloatMatrix | None:
        top = self.base_min_results - 1
        design = np.asarray(chebyshev.chebvander(self._beta[list(workers)], top), np.float64)
        return least_squares_loo(design)

    def _result_predictor(self, known: Workers, targets: Workers) -> FloatMatrix:
        top = self.base_min_results - 1
        fit = np.linalg.pinv(chebyshev.chebvander(self._beta[list(known)], top))
        predictor: FloatMatrix = chebyshev.chebvander(self._beta[list(targets)], top) @ fit
        return predictor

    def _build_encoder(self) -> FloatMatrix:
        basis_at_alpha = chebyshev.chebvander(self._alpha, self.k - 1)
        basis_at_beta = chebyshev.chebvander(self._beta, self.k - 1)
        encoder: FloatMatrix = np.linalg.solve(basis_at_alpha.T, basis_at_beta.T).T
        return encoder

    def _build_decoder(self, workers: Workers) -> FloatMatrix:
        top = self.base_min_results - 1
        fit_basis = chebyshev.chebvander(self._beta[list(workers)], top)
        decoder: FloatMatrix = chebyshev.chebvander(self._alpha, top) @ np.linalg.pinv(fit_basis)
        return decoder
