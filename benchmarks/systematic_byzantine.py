"""Systematic codes under ``byzantine=A``: are wrong results found, and what do they cost?

    .venv/bin/python benchmarks/systematic_byzantine.py     # about 2 min on 2 cores

K=8 on n = 2K + 2A workers (the systematic default n) and on n = 3K + 2A (the default of
the codes that are not systematic), every result returned, A of them made wrong by noise
of 10x (``medium``) or 1x (``subtle``, as codedfarm.corruption) the spread of the row, or
rolled (``swap``: another class's answer, still a probability vector; the ``large``
fault, 100x, is found every time by every code here), on the toy tanh network (raw
outputs, linear space) and LeNet5 on digits (probabilities: ``space=auto`` decodes in log
space and rejects the rows that are no longer probabilities, whatever the locator says).
For berrut and spline (its default lam_dec: auto, or 0 when systematic), systematic or
not: the share of wrong results rejected, the honest results rejected per batch, the
wrong results kept as a row's own result per batch, and the MSE of the byzantine decode
and of the plain decode without the wrong results (per row, over the output vector).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from codedfarm.codecs import make_codec
from codedfarm.evaluation.compare import toy_model

K, TRIALS = 8, 30
MODES = {"medium": 10.0, "subtle": 1.0, "swap": 0.0}  # noise in units of the row's spread


def corrupt(rows: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    if not scale:  # swap: each row rolled by 1..d-1 places
        return np.stack([np.roll(r, int(rng.integers(1, r.shape[-1]))) for r in rows])
    spread = rows.std(axis=1, keepdims=True)
    return rows + rng.standard_normal(rows.shape) * np.where(spread == 0, 1.0, spread) * scale


def lenet5():
    import torch

    from codedfarm.models.datasets import load_dataset
    from codedfarm.models.training import trained_model

    cache = Path.home() / ".cache" / "codedfarm"
    module = trained_model("lenet5", cache)
    images = load_dataset("digits", (1, 32, 32), cache).test_x

    def run(x):
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
            return out.float().softmax(-1).double().numpy()

    return run, lambda rng: images[rng.choice(len(images), K, replace=False)]


def main() -> None:
    toy = toy_model("tanh", in_dim=32, out_dim=10)
    models = {"toy_tanh": (toy, lambda rng: rng.standard_normal((K, 32))), "lenet5": lenet5()}
    print("| model | fault | codec | systematic | A | n | found | honest lost |"
          " wrong kept as own | MSE byz | MSE absent |")  # fmt: skip
    print("|---" * 11 + "|")
    for (name, (f, draw)), mode, codec_name, systematic, a in itertools.product(
        models.items(), MODES, ("berrut", "spline"), (False, True), (1, 2)
    ):
        for n in (2 * K + 2 * a, 3 * K + 2 * a):
            robust = make_codec(codec_name, K, n, systematic=systematic, byzantine=a)
            plain = make_codec(codec_name, K, n, systematic=systematic)
            rng = np.random.default_rng(a * 100 + n)
            found = lost = kept = 0
            byz, absent = [], []
            for _ in range(TRIALS):
                x = draw(rng)
                truth = f(x)
                y = f(robust.encode(x.astype(np.float64)).astype(x.dtype))
                bad = rng.choice(n, a, replace=False)
                wrong = y.copy()
                wrong[bad] = corrupt(y[bad], MODES[mode], rng)
                report = robust.decode_report(wrong, list(range(n)))
                found += len(set(report.rejected) & set(bad.tolist()))
                lost += len(set(report.rejected) - set(bad.tolist()))
                kept += len(set(report.own) & set(bad.tolist()))
                keep = [w for w in range(n) if w not in set(bad.tolist())]
                byz.append(np.mean(np.sum((report.values - truth) ** 2, -1)))
                absent.append(np.mean(np.sum((plain.decode(y[keep], keep) - truth) ** 2, -1)))
            print(f"| {name} | {mode} | {codec_name} | {systematic} | {a} | {n} | "
                  f"{found / (TRIALS * a):.2f} | {lost / TRIALS:.2f} | {kept / TRIALS:.2f} | "
                  f"{np.mean(byz):.3g} | {np.mean(absent):.3g} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
