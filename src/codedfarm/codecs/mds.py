"""Real-valued systematic MDS code (exact for linear and affine f; Lee et al. 2018)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from codedfarm.codecs.arrays import FloatMatrix
from codedfarm.codecs.base import Codec, Workers, check_int
from codedfarm.codecs.byzantine import least_squares_loo

__all__ = ["MDSCodec"]

DEFAULT_SEED = 20180101


class MDSCodec(Codec):
    """Systematic ``(n, k)`` MDS code over the reals.

    The generator is ``[I_k; P]``: workers ``0..k-1`` compute the inputs themselves and
    the ``n - k`` parity workers compute combinations with seeded Gaussian coefficients,
    shifted so that every row sums to 1. Any ``k`` rows are invertible (with probability
    one), so any ``k`` results recover ``f(x_i)`` exactly for linear ``f``; rows summing
    to 1 make it exact for affine ``f`` (a linear layer with bias) too. With more than
    ``k`` results the decoder is the least-squares solution over all of them.

    Random parity is used instead of a Vandermonde construction because it stays well
    conditioned on every subset: at k=20, n=100 the median condition number of a random
    k-row subset is ~65 (p99 ~3e3), whereas Chebyshev-Vandermonde rows reach 1e12-1e19
    on clustered subsets and the monomial Vandermonde is ~1e7 even on all rows.
    """

    name = "mds"
    exact = True
    PARAMS: ClassVar[dict[str, type]] = {"seed": int, "byzantine": int}

    @classmethod
    def exact_degree(cls, params: dict[str, Any]) -> int | None:
        return 1

    def __init__(self, k: int, n: int, *, seed: int = DEFAULT_SEED, **kwargs: Any) -> None:
        super().__init__(k, n, **kwargs)
        self.seed = check_int(self.name, "seed", seed, 0)

    @property
    def base_min_results(self) -> int:
        return self.k

    def params(self) -> dict[str, Any]:
        seed = {"seed": self.seed} if self.seed != DEFAULT_SEED else {}
        return {**seed, **self._decode_params()}

    def _loo_matrix(self, workers: Workers) -> FloatMatrix | None:
        return least_squares_loo(self.encoder_matrix[list(workers)])

    def _result_predictor(self, known: Workers, targets: Workers) -> FloatMatrix:
        generator = self.encoder_matrix
        predictor: FloatMatrix = generator[list(targets)] @ np.linalg.pinv(generator[list(known)])
        return predictor

    def _build_encoder(self) -> FloatMatrix:
        rng = np.random.default_rng([self.seed, self.k, self.n])
        parity = rng.standard_normal((self.n - self.k, self.k)) / np.sqrt(self.k)
        parity += 1.0 / self.k - parity.mean(axis=1, keepdims=True)
        return np.vstack([np.eye(self.k), parity]).astype(np.float64)

    def _build_decoder(self, workers: Workers) -> FloatMatrix:
        decoder = np.asarray(np.linalg.pinv(self.encoder_matrix[list(workers)]), dtype=np.float64)
        return decoder
