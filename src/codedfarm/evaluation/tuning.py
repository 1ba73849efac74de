"""Grid search of the spline code's (lam_enc, lam_dec) on a tuning split: NeRCC's
smoothness-effect sweep, and the pair the "tuned" spline uses on the held-out split."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from codedfarm.codecs import SplineCodec
from codedfarm.evaluation.fidelity import Batch, Model

__all__ = ["DEFAULT_LAM_DEC", "DEFAULT_LAM_ENC", "LambdaGrid", "grid_search"]

DEFAULT_LAM_ENC = (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3)
DEFAULT_LAM_DEC = (0.0, *np.logspace(-9, -1, 17).tolist())


@dataclass(frozen=True)
class LambdaGrid:
    """Mean MSE over the S range for every (lam_enc, lam_dec) on the tuning split."""

    lam_enc: tuple[float, ...]
    lam_dec: tuple[float, ...]
    mse: np.ndarray  # (len(lam_enc), len(lam_dec))

    @property
    def best(self) -> tuple[float, float, float]:
        i, j = np.unravel_index(int(np.nanargmin(self.mse)), self.mse.shape)
        return self.lam_enc[i], self.lam_dec[j], float(self.mse[i, j])

    def best_dec(self, lam_enc: float) -> tuple[float, float]:
        """Best lam_dec (and its MSE) at a fixed lam_enc."""
        i = self.lam_enc.index(lam_enc)
        j = int(np.nanargmin(self.mse[i]))
        return self.lam_dec[j], float(self.mse[i, j])

    def spec(self) -> str:
        lam_enc, lam_dec, _ = self.best
        return f"spline:lam_enc={lam_enc:g},lam_dec={lam_dec:g}"


def grid_search(
    model: Model,
    data: Sequence[Batch],
    *,
    n: int,
    stragglers: Sequence[int],
    patterns: int,
    rng: np.random.Generator,
    lam_enc: Sequence[float] = DEFAULT_LAM_ENC,
    lam_dec: Sequence[float] = DEFAULT_LAM_DEC,
    progress: Callable[[int], None] = lambda _: None,
) -> LambdaGrid:
    """Every pair is scored on the same batches and straggler patterns."""
    k = len(data[0].x)
    sets = {
        (b, s): [sorted(rng.choice(n, n - s, replace=False).tolist()) for _ in range(patterns)]
        for b in range(len(data))
        for s in stragglers
    }
    totals = np.zeros((len(lam_enc), len(lam_dec)))
    counts = np.zeros_like(totals)
    for i, le in enumerate(lam_enc):
        codec = SplineCodec(k, n, lam_enc=le, lam_dec=0.0, space="linear")  # NeRCC's
        for b, batch in enumerate(data):
            coded_out = model(codec.encode(batch.x).astype(np.float32)).astype(np.float64)
            for s in stragglers:
                for workers in sets[b, s]:
                    y = coded_out[workers]
                    for j, ld in enumerate(lam_dec):
                        decoded = codec.decoder_matrix_for_lambda(tuple(workers), ld) @ y
                        totals[i, j] += np.mean(np.sum((decoded - batch.truth) ** 2, axis=1))
                        counts[i, j] += 1
            progress(1)
    return LambdaGrid(tuple(lam_enc), tuple(lam_dec), totals / np.maximum(counts, 1))
