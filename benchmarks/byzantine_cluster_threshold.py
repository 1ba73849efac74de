"""Calibrate the systematic locator's CLUSTER_THRESHOLD on the toy tanh network.

    .venv/bin/python benchmarks/byzantine_cluster_threshold.py     # about 1 min on 2 cores

Systematic berrut and spline (linear space), K=8, n = 2K + 2A and 3K + 2A, S=4, on the toy
of ``codedfarm.evaluation.compare.toy_model`` with raw and softmax outputs, 60 batches x 8
straggler draws each. For every cluster of two or more results (an own result and the
parity results beside it, ``codecs/byzantine_systematic.py``): its slope over its honest
reference, scaled so the threshold compares with it directly; on honest decodes, and on
decodes where one result was given noise of 1x (``subtle``) or 100x (``large``) its spread
(the cluster holding it). Only the toy is used; the zoo and the held-out networks are the
report (``benchmarks/byzantine_clean_cost.py --systematic-only``).
"""

from __future__ import annotations

import numpy as np

import codedfarm.codecs.byzantine_systematic as bs
from byzantine_clean_cost import CALIBRATION, SYSTEMATIC, A, K, S
from codedfarm.codecs import plan_codec
from codedfarm.corruption import corrupt_rows

BATCHES, PATTERNS, SEED = 60, 8, 1


def ratios(y: np.ndarray, points: np.ndarray, clusters: list[list[int]], only: int | None):
    """Slope over honest reference of each cluster of 2+ (only the one holding ``only``)."""
    limits = bs._limits(y, points, clusters, A)
    return [
        bs._slope(y, points, c) / limit * bs.CLUSTER_THRESHOLD
        for c, limit in zip(clusters, limits, strict=True)
        if len(c) >= 2 and (only is None or only in c)
    ]


def main() -> None:
    print(f"CLUSTER_THRESHOLD now {bs.CLUSTER_THRESHOLD:g}\n")
    print("| outputs | codec | n | honest: 99.9% / largest | subtle: 1% / smallest "
          "| large: smallest |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for family, make in CALIBRATION.items():
        f, draw = make()
        for key, spec in SYSTEMATIC.items():
            for n in (2 * K + 2 * A, 3 * K + 2 * A):
                codec = plan_codec(spec).codec(K, n, S)
                rng = np.random.default_rng(SEED)
                seen: dict[str, list[float]] = {"honest": [], "subtle": [], "large": []}
                for _ in range(BATCHES):
                    coded = f(codec.encode(np.asarray(draw(rng), np.float64)))
                    for _ in range(PATTERNS):
                        ids = sorted(rng.choice(n, n - S, replace=False).tolist())
                        y, points = coded[ids].astype(np.float64), codec._beta[ids]
                        clusters = bs.clusters_of(points, codec._alpha)
                        seen["honest"] += ratios(y, points, clusters, None)
                        for mode in ("subtle", "large"):
                            bad = int(rng.integers(len(ids)))
                            wrong = y.copy()
                            wrong[bad] = corrupt_rows(y[bad : bad + 1], mode, rng)[0]
                            seen[mode] += ratios(wrong, points, clusters, bad)
                honest, subtle = np.array(seen["honest"]), np.array(seen["subtle"])
                print(f"| {family} | {key} | {n} | {np.quantile(honest, 0.999):.1f} / "
                      f"{honest.max():.1f} | {np.quantile(subtle, 0.01):.1f} / {subtle.min():.1f} "
                      f"| {min(seen['large']):.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
