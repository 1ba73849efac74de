"""Codec comparison on a toy model: a smooth random two-layer tanh network."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codedfarm.codecs import plan_codec
from codedfarm.codecs.base import Codec
from codedfarm.errors import ConfigError, NotEnoughResultsError

__all__ = ["DEFAULT_CODECS", "TOY_MODELS", "CodecComparison", "compare_codecs", "toy_model"]

DEFAULT_CODECS = (
    "uncoded",
    "replication",
    "mds",
    "berrut",
    "spline:lam_enc=0,lam_dec=0",
    "spline:lam_enc=0,lam_dec=auto",
    "letcc",
)

Model = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


TOY_MODELS = ("tanh", "linear")


def toy_model(kind: str = "tanh", in_dim: int = 32, out_dim: int = 10, seed: int = 0) -> Model:
    """``(B, in_dim) -> (B, out_dim)`` with fixed random weights.

    ``tanh``: ``tanh(tanh(x A1) A2)``, smooth and nonlinear. ``linear``: ``x W + b``, the
    function class MDS codes are exact for.
    """
    if kind not in TOY_MODELS:
        raise ConfigError(f"unknown toy model {kind!r}; choose from {', '.join(TOY_MODELS)}")
    rng = np.random.default_rng(seed)
    a1 = rng.standard_normal((in_dim, 32)) / np.sqrt(in_dim) * 1.5
    a2 = rng.standard_normal((32, out_dim)) / np.sqrt(32) * 1.5
    if kind == "linear":
        weight = rng.standard_normal((in_dim, out_dim))
        bias = rng.standard_normal(out_dim)

        def linear(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            out: npt.NDArray[np.float64] = x.reshape(len(x), -1) @ weight + bias
            return out

        return linear

    def model(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = np.tanh(np.tanh(x.reshape(len(x), -1) @ a1) @ a2)
        return out

    return model


@dataclass(frozen=True)
class CodecComparison:
    """One row of the comparison: a codec at a straggler count, over many random trials."""

    codec: str
    k: int
    n: int
    stragglers: int
    trials: int
    decoded: int  # trials whose returned set could be decoded
    mse: float  # mean over decoded trials (nan if none)
    max_abs_error: float


def _build(spec: str, k: int, n: int, stragglers: int) -> Codec:
    plan = plan_codec(spec)
    return plan.codec(k, plan.fit_workers(k, n, stragglers)[0], stragglers)


def compare_codecs(
    codecs: Sequence[str] = DEFAULT_CODECS,
    *,
    k: int = 8,
    n: int = 24,
    stragglers: Sequence[int] = (0, 4, 8),
    trials: int = 50,
    seed: int = 0,
    model: str | Model = "tanh",
    in_dim: int = 32,
) -> list[CodecComparison]:
    """Encode random batches, drop ``S`` random workers' results, decode, and measure the error.

    Every codec sees the same inputs and straggler draws. Codes with fewer workers than
    ``n`` (``uncoded`` uses ``k``) lose ``S`` of their own workers (all of them if
    ``S >= k``).
    """
    if trials < 1:
        raise ConfigError(f"trials must be >= 1, got {trials}")
    f = toy_model(model, in_dim) if isinstance(model, str) else model
    rows = []
    for spec in codecs:
        for s in stragglers:
            if not 0 <= s < n:
                raise ConfigError(f"stragglers must be in [0, n={n}), got {s}")
            codec = _build(spec, k, n, s)
            rng = np.random.default_rng([seed, s])
            errors: list[float] = []
            worst = 0.0
            for _ in range(trials):
                x = rng.standard_normal((k, in_dim))
                workers = np.sort(rng.permutation(codec.n)[: max(codec.n - s, 0)])
                y = f(codec.encode(x))[workers]
                try:
                    decoded = codec.decode(y, workers)
                except NotEnoughResultsError:
                    continue
                err = decoded - f(x)
                errors.append(float(np.mean(err**2)))
                worst = max(worst, float(np.abs(err).max()))
            rows.append(
                CodecComparison(
                    codec=spec,
                    k=k,
                    n=codec.n,
                    stragglers=s,
                    trials=trials,
                    decoded=len(errors),
                    mse=float(np.mean(errors)) if errors else float("nan"),
                    max_abs_error=worst if errors else float("nan"),
                )
            )
    return rows
