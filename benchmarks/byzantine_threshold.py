"""Calibrate the byzantine locator's threshold (BYZANTINE_THRESHOLD) on the toy tanh network.

    .venv/bin/python benchmarks/byzantine_threshold.py     # about 4 min on 2 cores

The toy of ``codedfarm.evaluation.compare.toy_model`` with its inputs scaled by 0.5, 1, 2
and 4 (smooth to rough outputs), raw (tanh) and softmax outputs, berrut and the spline
(lam_dec=auto), K=8, n=24, S=4, 250 batches x 4 straggler draws each. First the ratio the
locator tests (a candidate's misfit over its honest scale, codecs/byzantine.py): the
largest of each honest decode, and the smallest of each decode with two large errors
(100x a result's spread) whose candidates are the two errors, which the threshold must
separate. The threshold is the geometric mean of the honest ratios' 99.9th percentile and
the large-error ratios' 0.1st percentile, pooled, rounded. Then, for thresholds on a grid
(60 batches x 4 draws): clean = MSE(byzantine=2) / MSE(plain) with every result right,
and large / subtle = MSE(byzantine=2) / MSE(plain, the two wrong results absent). Only the
toy is used here: the zoo and the held-out networks are the report
(benchmarks/byzantine_clean_cost.py).
"""

from __future__ import annotations

import numpy as np

import codedfarm.codecs.base as base
import codedfarm.codecs.byzantine as bz
from byzantine_clean_cost import CODECS, A, K, N, S, draws, measure, toy
from codedfarm.codecs import plan_codec

GAINS = (0.5, 1.0, 2.0, 4.0)
BATCHES, PATTERNS, SEED = 250, 4, 2


def separation(f, draw, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The largest ratio of each honest decode; the smallest of each decode with two large
    errors, where the candidates are the two errors (else 0: not located)."""
    seen: list[tuple[list[int], np.ndarray]] = []

    def spy(y, predict, a, *, min_kept=1, threshold=None, loo=None):
        seen.append(bz.misfit_ratios(y, predict, a, loo))
        return ()

    robust = plan_codec(CODECS[key] + f",byzantine={A}").codec(K, N, S)
    honest, large = [], []
    real = base.locate_wrong_results
    base.locate_wrong_results = spy
    try:
        for _, ids, y, bad, wrong in draws(f, draw, CODECS[key], BATCHES, PATTERNS, SEED):
            robust.decode_report(y, ids)
            honest.append(float(seen.pop()[1].max()))
            robust.decode_report(wrong["large"], ids)
            candidates, ratios = seen.pop()
            located = sorted(candidates) == sorted(bad.tolist())
            large.append(float(ratios.min()) if located else 0.0)
    finally:
        base.locate_wrong_results = real
    return np.array(honest), np.array(large)


def main() -> None:
    print("| input gain | outputs | codec | honest: 99.9th pct, largest | "
          "large errors: 0.1st pct, smallest | not located |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    honest, large = [], []
    for gain in GAINS:
        for space in ("raw", "soft"):
            f, draw = toy(space, gain)
            for key in ("berrut", "spline"):
                h, w = separation(f, draw, key)
                honest.append(h)
                large.append(w[w > 0])
                print(f"| {gain:g} | {space} | {key} | {np.quantile(h, 0.999):.2f}, "
                      f"{h.max():.2f} | {np.quantile(w[w > 0], 0.001):.1f}, {w[w > 0].min():.1f} "
                      f"| {np.mean(w == 0):.4f} |", flush=True)  # fmt: skip
    h, w = np.concatenate(honest), np.concatenate(large)
    top, bottom = np.quantile(h, 0.999), np.quantile(w, 0.001)
    print(f"\npooled over {len(h)} honest and {len(w)} located decodes: honest 99.9th "
          f"percentile {top:.2f} (largest {h.max():.2f}), large-error 0.1st percentile "
          f"{bottom:.1f} (smallest {w.min():.1f}); geometric mean of the percentiles "
          f"{np.sqrt(top * bottom):.1f} (shipped: {bz.BYZANTINE_THRESHOLD:g})\n")  # fmt: skip
    print("| threshold | input gain | outputs | codec | clean | large | subtle |")
    print("|---|---|---|---|---|---|---|")
    for tau in (4, 8, 16, 32, 64):

        def locate(y, predict, a, *, min_kept=1, threshold=None, loo=None, tau=tau):
            return bz.locate_wrong_results(y, predict, a, min_kept=min_kept, threshold=tau, loo=loo)

        for gain in (1.0, 4.0):
            for space in ("raw", "soft"):
                f, draw = toy(space, gain)
                for key in ("berrut", "spline"):
                    data = draws(f, draw, CODECS[key], 60, PATTERNS, SEED + 1)
                    r = measure(CODECS[key], data, locate)
                    print(f"| {tau} | {gain:g} | {space} | {key} | {r['clean']:.3f} | "
                          f"{r['large']:.3f} | {r['subtle']:.3f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
