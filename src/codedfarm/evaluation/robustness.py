"""Decode fidelity against wrong results: MSE and RelAcc as the number of corrupt results
A grows, for each codec with and without ``byzantine``, and with those results absent.

Setting (the issue's): K inputs on n workers, S stragglers, then A of the returned results
replaced by wrong ones, ``large`` (noise of 100x the result's spread), ``subtle`` (of its
spread) or ``swap`` (its entries rotated: another class's answer), the modes of the
worker's ``--corrupt`` fault. Every codec sees the same
batches, straggler patterns, corrupt positions and noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from codedfarm.codecs import plan_codec
from codedfarm.corruption import corrupt_rows
from codedfarm.evaluation.fidelity import Batch, Model, accuracy, batch_mse, linear_unless_named

__all__ = ["RobustnessRow", "measure_robustness"]


@dataclass(frozen=True)
class RobustnessRow:
    model: str
    codec: str  # the plain spec; "byzantine" rows use it with byzantine=A_max
    mode: str  # large, subtle or swap
    a: int  # corrupt results among those returned
    trials: int
    mse_plain: float  # the plain decode, corrupt results included
    mse_byzantine: float  # the same codec with byzantine=A_max
    mse_absent: float  # the plain decode without the corrupt results
    mse_clean: float  # the plain decode with every result right
    rel_acc_plain: float
    rel_acc_byzantine: float
    found: float  # fraction of corrupt results the locator rejected
    false_rejections: float  # honest results rejected per trial


def measure_robustness(
    model_name: str,
    model: Model,
    data: Sequence[Batch],
    codec_specs: Sequence[str],
    *,
    n: int,
    s: int,
    corrupt: Sequence[int],
    byzantine: int,
    patterns: int,
    seed: int = 0,
    modes: Sequence[str] = ("large", "subtle", "swap"),
    progress: Callable[[int], None] = lambda _: None,
) -> list[RobustnessRow]:
    """Rows for every codec, corruption mode and A in ``corrupt`` (``byzantine``: the A
    the robust decoder is built for)."""
    k = len(data[0].x)
    rows = []
    for spec in codec_specs:
        built = linear_unless_named(spec)  # rows keep the spec as given
        plain = plan_codec(built).codec(k, n, s)
        robust = plan_codec(f"{built}{',' if ':' in built else ':'}byzantine={byzantine}")
        robust_codec = robust.codec(k, n, s)
        stats: dict[tuple[str, int], list[tuple[float, ...]]] = {}
        rng = np.random.default_rng(seed)
        for batch in data:
            outputs = model(plain.encode(batch.x).astype(np.float32)).astype(np.float64)
            base_acc = max(accuracy(batch.truth, batch.labels), 1e-12)
            for _ in range(patterns):
                workers = sorted(rng.choice(n, n - s, replace=False).tolist())
                y = outputs[workers]
                clean = batch_mse(plain.decode(y, workers), batch.truth)
                for mode in modes:
                    for a in corrupt:
                        bad = rng.choice(len(workers), a, replace=False)
                        wrong = y.copy()
                        wrong[bad] = corrupt_rows(y[bad], mode, rng)
                        keep = [i for i in range(len(workers)) if i not in set(bad.tolist())]
                        plain_out = plain.decode(wrong, workers)
                        report = robust_codec.decode_report(wrong, workers)
                        rejected = {workers.index(w) for w in report.rejected}
                        absent = plain.decode(wrong[keep], [workers[i] for i in keep])
                        stats.setdefault((mode, a), []).append((
                            batch_mse(plain_out, batch.truth),
                            batch_mse(report.values, batch.truth),
                            batch_mse(absent, batch.truth), clean,
                            accuracy(plain_out, batch.labels) / base_acc,
                            accuracy(report.values, batch.labels) / base_acc,
                            len(rejected & set(bad.tolist())) / a if a else 1.0,
                            len(rejected - set(bad.tolist())),
                        ))  # fmt: skip
            progress(1)
        for (mode, a), values in stats.items():
            mean = np.mean(np.array(values), axis=0)
            rows.append(RobustnessRow(model_name, spec, mode, a, len(values), *map(float, mean)))
    return rows
