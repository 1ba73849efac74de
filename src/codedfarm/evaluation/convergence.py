"""Error against the number of workers N at fixed S, with the fitted log-log slope.

LeTCC predicts MSE = O(S^4 N^-3) for noiseless computation; a smooth function should show a
slope of -3 or steeper for the spline code. The noisy variant adds Gaussian noise to every
worker output.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codedfarm.evaluation.fidelity import Model, build_codec

__all__ = ["ConvergenceCurve", "convergence"]


@dataclass(frozen=True)
class ConvergenceCurve:
    function: str
    codec: str
    s: int
    noise: float
    ns: tuple[int, ...]
    mse: tuple[float, ...]

    @property
    def slope(self) -> float:
        """Least-squares slope of log MSE against log N."""
        logs = np.log(np.maximum(np.asarray(self.mse), 1e-300))
        return float(np.polyfit(np.log(self.ns), logs, 1)[0])


def convergence(
    function: str,
    model: Model,
    inputs: Sequence[np.ndarray],
    codec_specs: Sequence[str],
    *,
    ns: Sequence[int],
    s: int,
    patterns: int,
    rng: np.random.Generator,
    noise: float = 0.0,
) -> list[ConvergenceCurve]:
    """MSE of each codec for each N, averaged over ``inputs`` batches and straggler patterns."""
    curves = []
    for spec in codec_specs:
        values = []
        for n in ns:
            errors = []
            for x in inputs:
                codec = build_codec(spec, len(x), n, s)
                truth = model(x)
                out = model(codec.encode(x).astype(np.float32)).astype(np.float64)
                if noise:
                    out = out + rng.normal(0, noise, out.shape)
                for _ in range(patterns):
                    workers = sorted(rng.choice(n, n - s, replace=False).tolist())
                    decoded = codec.decode(out[workers], workers)
                    errors.append(np.mean(np.sum((decoded - truth) ** 2, axis=1)))
            values.append(float(np.mean(errors)))
        curves.append(ConvergenceCurve(function, spec, s, noise, tuple(ns), tuple(values)))
    return curves
