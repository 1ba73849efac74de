"""Smoothing-spline codes: NeRCC's nested regression (``spline``) and LeTCC's rule (``letcc``)."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any, ClassVar, Literal

import numpy as np

from codedfarm.codecs.arrays import Array, FloatMatrix, is_torch
from codedfarm.codecs.base import Codec, Workers, check_int
from codedfarm.codecs.cache import LRUCache
from codedfarm.codecs.params import check_bool
from codedfarm.codecs.points import SYSTEMATIC_PLACEMENT, code_points
from codedfarm.codecs.smoothing import (
    SplineBasis,
    gcv_scores,
    penalty_matrix,
    smoothing_spline_matrix,
)
from codedfarm.codecs.threads import single_threaded_blas
from codedfarm.errors import CodecParameterError

__all__ = ["LetccCodec", "SplineCodec", "letcc_lambdas"]

Auto = Literal["auto"]


def _check_lambda(codec: str, name: str, value: object, allow_auto: bool) -> float | Auto:
    if allow_auto and value == "auto":
        return "auto"
    try:
        lam = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        allowed = "a number >= 0 or 'auto'" if allow_auto else "a number >= 0"
        raise CodecParameterError(f"{codec}: {name} must be {allowed}, got {value!r}") from exc
    if not math.isfinite(lam) or lam < 0:
        raise CodecParameterError(f"{codec}: {name} must be finite and >= 0, got {value!r}")
    return lam


class SplineCodec(Codec):
    """NeRCC: encoder and decoder are natural cubic smoothing splines.

    Encoder: the spline with ``lam_enc`` fitted to ``(alpha_i, x_i)`` and sampled at
    ``beta_j``. Decoder: the spline with ``lam_dec`` fitted to the returned
    ``(beta_j, y_j)`` and sampled at ``alpha_i``. ``lam = 0`` interpolates.
    ``lam_dec="auto"`` (the default) picks the decoder's lambda for every decode by
    generalized cross-validation on the returned results (no per-model tuning).
    ``systematic=True``: workers ``0..k-1`` compute the inputs themselves, and the decoder
    interpolates by default (``lam_dec=0``): GCV reads the gap between an input's result and
    its parity partner's as noise and smooths it away (docs/systematic.md).
    """

    name = "spline"
    exact = False
    DEFAULT_SPACE = "auto"
    PARAMS: ClassVar[dict[str, type]] = {
        "lam_enc": float,
        "lam_dec": float,
        "byzantine": int,
        "space": str,
        "systematic": bool,
    }

    def __init__(
        self,
        k: int,
        n: int,
        *,
        lam_enc: float = 0.0,
        lam_dec: float | Auto | None = None,
        placement: str = SYSTEMATIC_PLACEMENT,
        **kwargs: Any,
    ) -> None:
        super().__init__(k, n, **kwargs)
        if lam_dec is None:
            lam_dec = 0.0 if self.systematic else "auto"
        lam_e = _check_lambda(self.name, "lam_enc", lam_enc, allow_auto=False)
        assert lam_e != "auto"
        self.lam_enc: float = lam_e
        self.lam_dec: float | Auto = _check_lambda(self.name, "lam_dec", lam_dec, allow_auto=True)
        self._alpha, self._beta = code_points(self.k, self.n, self.systematic, placement)
        self._bases: LRUCache[Workers, SplineBasis] = LRUCache(self._decoders.maxsize)

    @property
    def base_min_results(self) -> int:
        return 1

    def params(self) -> dict[str, Any]:
        return {"lam_enc": self.lam_enc, "lam_dec": self.lam_dec, **self._decode_params()}

    @property
    def _screening_lam(self) -> float:
        """The fit the byzantine locator predicts results with: the decoder's own, or
        interpolation under "auto" (GCV's choice needs the results being judged)."""
        return 0.0 if self.lam_dec == "auto" else self.lam_dec

    def _loo_matrix(self, workers: Workers) -> FloatMatrix | None:
        if len(workers) < 3:
            return None
        penalty = penalty_matrix(self._beta[list(workers)])
        lam = self._screening_lam
        if lam:  # the smoother's identity: (I - S) / (1 - S_jj), I - S = lam K (I + lam K)^-1
            residual = np.linalg.solve(np.eye(len(workers)) + lam * penalty, lam * penalty).T
        else:  # its limit: the interpolating spline through the others
            residual = penalty
        loo: FloatMatrix = residual / np.diag(residual)[:, None]
        return loo

    def _result_predictor(self, known: Workers, targets: Workers) -> FloatMatrix:
        nodes, at = self._beta[list(known)], self._beta[list(targets)]
        return smoothing_spline_matrix(nodes, at, self._screening_lam)

    def _build_encoder(self) -> FloatMatrix:
        return smoothing_spline_matrix(self._alpha, self._beta, self.lam_enc)

    def decoder_matrix(self, workers: Iterable[int]) -> FloatMatrix:
        """``(k, m)`` decoder for a fixed ``lam_dec``; under ``'auto'`` the matrix depends on
        the results, so use ``decode`` or :meth:`decoder_matrix_for_lambda`."""
        if self.lam_dec == "auto":
            raise CodecParameterError(
                f"{self.name}: lam_dec='auto' chooses the decoder from the results; call "
                "decode(y, workers) or decoder_matrix_for_lambda(workers, lam)"
            )
        return super().decoder_matrix(workers)

    def _build_decoder(self, workers: Workers) -> FloatMatrix:
        assert self.lam_dec != "auto"
        return smoothing_spline_matrix(self._beta[list(workers)], self._alpha, self.lam_dec)

    def _make_decoder(self, key: Hashable) -> FloatMatrix:
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[1], float):
            workers, lam = key
            return self._with_own_rows(self._basis(workers).matrix(lam), workers)
        return super()._make_decoder(key)

    def decoder_matrix_for_lambda(self, workers: Workers, lam: float) -> FloatMatrix:
        """``(k, m)`` decoder with an explicit decoder lambda (cached)."""
        ids = self.validate_workers(workers)
        self._check_decodable(ids)
        value = _check_lambda(self.name, "lam_dec", lam, allow_auto=False)
        return self._cached_decoder((ids, value))

    def _basis(self, workers: Workers) -> SplineBasis:
        basis = self._bases.get(workers)
        if basis is None:
            basis = SplineBasis.build(self._beta[list(workers)], self._alpha)
            self._bases.put(workers, basis)
        return basis

    def choose_lam_dec(self, y: Array, workers: Workers) -> float:
        """GCV choice of the decoder lambda for results ``y`` ``(m, *out_shape)``."""
        basis = self._basis(workers)
        grid = basis.lambda_grid()
        if len(grid) == 1:
            return float(grid[0])
        if is_torch(y):
            rotated = basis_rotate_torch(basis.eigenvectors, y)
        else:
            flat = np.asarray(y, dtype=np.float64).reshape(len(workers), -1)
            rotated = ((basis.eigenvectors.T @ flat) ** 2).sum(axis=1)
        scores = gcv_scores(basis.eigenvalues, rotated, grid)
        best = int(np.argmin(scores))
        # refine between the neighbours of the best grid point, in one vectorized pass
        lo = math.log(grid[max(best - 1, 0)])
        hi = math.log(grid[min(best + 1, len(grid) - 1)])
        fine = np.exp(np.linspace(lo, hi, 41))
        return float(fine[int(np.argmin(gcv_scores(basis.eigenvalues, rotated, fine)))])

    def _decoder_for(self, y: Array, ids: Workers) -> tuple[Hashable, FloatMatrix, float | None]:
        if self.lam_dec != "auto":
            return ids, self._cached_decoder(ids), self.lam_dec
        with single_threaded_blas():
            lam = self.choose_lam_dec(y, ids)
            matrix = self._basis(ids).matrix(lam)
        # a fresh lam per decode: not cached, so one-off keys do not fill the cache
        return None, matrix, lam


def basis_rotate_torch(eigenvectors: FloatMatrix, y: Array) -> FloatMatrix:
    """Row energies ``||(U^T y)_i||^2`` for a torch tensor ``y``, returned as numpy."""
    import torch

    flat = y.reshape(y.shape[0], -1).to(torch.float64)
    u = torch.as_tensor(eigenvectors, dtype=torch.float64, device=flat.device)
    energy: FloatMatrix = ((u.T @ flat) ** 2).sum(dim=1).cpu().numpy()
    return energy


def letcc_lambdas(k: int, n: int, s: int) -> tuple[float, float]:
    """LeTCC's smoothing parameters ``(lam_enc, lam_dec)`` for ``k`` inputs, ``n`` workers
    and ``s`` stragglers, for noiseless workers (the floor of ``letcc``'s decoder lambda).

    The derivation is in ``docs/letcc.md``. In short: the end-to-end error is bounded by
    the decoder's generalization error plus the encoder's training error times the
    model's Lipschitz constant, so the encoder interpolates (``lam_enc = 0``: zero
    training error). The decoder sees ``m = n - s`` results with largest gap
    ``delta ~ pi (s+1) / (n-1)``; for noiseless results a smoothing spline's error is
    ``O(lam / m + delta^4)`` (Ragozin 1983), so ``lam_dec = C_NOISELESS * m * delta^4``
    (``~ (s+1)^4 n^-3``) keeps the smoothing bias below the gap error and keeps the
    ``O(S^4 N^-3)`` rate.
    """
    k = check_int("letcc", "k", k, 1)
    n = check_int("letcc", "n", n, 1)
    s = check_int("letcc", "s", s, 0)
    if s >= n:
        raise CodecParameterError(
            f"letcc: s must be < n (some results must arrive), got n={n}, s={s}"
        )
    m = n - s
    delta = math.pi * (s + 1) / max(n - 1, 1)
    return 0.0, LETCC_C_NOISELESS * m * delta**4


LETCC_C_NOISELESS = 1e-10
"""Calibrated on smooth synthetic models (docs/letcc.md): larger values over-smooth at low S."""


def _check_sigma(value: object) -> float | Auto:
    if value == "auto":
        return "auto"
    sigma = _check_lambda("letcc", "sigma", value, allow_auto=False)
    if sigma != 0:
        raise CodecParameterError(
            f"letcc: sigma={value!r}: the noise level is estimated from the results "
            "(sigma=auto, the default; a given sigma in LeTCC's noisy rule was 2-21x off the "
            "best lambda on models it was not calibrated on, docs/letcc.md); sigma=0 declares "
            "noiseless workers"
        )
    return 0.0


class LetccCodec(SplineCodec):
    """The spline code with LeTCC's smoothing: the encoder interpolates, and the decoder's
    lambda is :func:`letcc_lambdas`' noiseless rule of ``(k, n, s)``, raised to the GCV
    choice on the returned results when they are noisy (``sigma="auto"``, the default:
    the noise is judged from the results, no sigma to give). ``sigma=0`` declares
    noiseless workers: the rule alone, a fixed decoder per worker set; it is the default of
    a systematic ``letcc`` (docs/systematic.md)."""

    name = "letcc"
    PARAMS: ClassVar[dict[str, type]] = {
        "s": int,
        "sigma": float,
        "byzantine": int,
        "space": str,
        "systematic": bool,
    }
    takes_s = True

    def __init__(
        self, k: int, n: int, *, s: int = 0, sigma: float | Auto | None = None, **kwargs: Any
    ) -> None:
        for forbidden in ("lam_enc", "lam_dec"):
            if forbidden in kwargs:
                raise CodecParameterError(
                    f"letcc: {forbidden} is derived from (k, n, s); use codec 'spline' to set it"
                )
        if sigma is None:
            systematic = check_bool(self.name, "systematic", kwargs.get("systematic", False))
            sigma = 0.0 if systematic else "auto"
        checked = _check_sigma(sigma)
        lam_enc, floor = letcc_lambdas(k, n, s)
        super().__init__(
            k, n, lam_enc=lam_enc, lam_dec="auto" if checked == "auto" else floor, **kwargs
        )
        self.s = int(s)
        self.sigma: float | Auto = checked
        self.lam_floor = floor

    def params(self) -> dict[str, Any]:
        return {"s": self.s, "sigma": self.sigma, **super().params()}

    def choose_lam_dec(self, y: Array, workers: Workers) -> float:
        """The noiseless rule, or GCV's choice on ``y`` where that is larger."""
        return max(self.lam_floor, super().choose_lam_dec(y, workers))
