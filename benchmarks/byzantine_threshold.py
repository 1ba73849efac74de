"""Calibrate the byzantine locator's threshold (BYZANTINE_THRESHOLD) on the toy tanh network.

    .venv/bin/python benchmarks/byzantine_threshold.py

On raw (tanh) and softmax outputs, for berrut and the spline (lam_dec=auto), at K=8, n=24,
S=4 (60 random batches each): first the ratios the locator tests (a candidate's misfit
over the median leave-one-out residual of the rest) for honest batches and for batches
with two large errors, which the threshold must separate; then, for each threshold on a
grid, clean = MSE(byzantine=2) / MSE(plain) with every result right, and large / subtle =
MSE(byzantine=2) / MSE(plain, the two wrong results absent). The zoo models are not used
here: they are the held-out report (codedfarm eval, docs/results.md).
"""

import numpy as np

import codedfarm.codecs.base as base
import codedfarm.codecs.byzantine as bz
from codedfarm.codecs import make_codec
from codedfarm.corruption import corrupt_rows
from codedfarm.evaluation.compare import toy_model

K, N, S, A = 8, 24, 4, 2


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def trial_set(f, kind, tau, trials=60, seed=0):
    bz.BYZANTINE_THRESHOLD = tau
    params = {} if kind == "berrut" else {"lam_enc": 0.0, "lam_dec": "auto"}
    plain = make_codec(kind, K, N, **params)
    byz = make_codec(kind, K, N, byzantine=A, **params)
    rng = np.random.default_rng(seed)
    res = {k: [] for k in ("plain", "clean", "absent_l", "byz_l", "absent_s", "byz_s")}
    for _ in range(trials):
        x = rng.standard_normal((K, 32))
        truth, coded = f(x), f(plain.encode(x))
        ids = sorted(rng.choice(N, N - S, replace=False).tolist())
        y = coded[ids]

        def mse(d, truth=truth):
            return np.mean(np.sum((d - truth) ** 2, 1))

        res["plain"].append(mse(plain.decode(y, ids)))
        res["clean"].append(mse(byz.decode(y, ids)))
        bad = rng.choice(len(ids), A, replace=False)
        keep = [i for i in range(len(ids)) if i not in bad]
        for mode, scale in (("l", 100.0), ("s", 1.0)):
            wrong = y.copy()
            for i in bad:
                wrong[i] += rng.normal(0, scale * wrong[i].std(), wrong[i].shape)
            res["absent_" + mode].append(mse(plain.decode(wrong[keep], [ids[i] for i in keep])))
            res["byz_" + mode].append(mse(byz.decode(wrong, ids)))
    m = {k: np.mean(v) for k, v in res.items()}
    return m["clean"] / m["plain"], m["byz_l"] / m["absent_l"], m["byz_s"] / m["absent_s"]


def separation(f, kind, trials=60, seed=0):
    """The ratios the locator compares with its threshold: the largest over an honest
    batch's candidates, the smallest over the two large errors of a corrupted batch."""
    seen = []

    def spy(y, predict, a, *, min_kept=1, threshold=None, loo=None):
        full = loo(list(range(len(y))))
        candidates = bz._candidates(full, full @ y, a)
        kept = [i for i in range(len(y)) if i not in candidates]
        typical = np.median(np.sum((loo(kept) @ y[kept]) ** 2, axis=1))
        misfit = np.sum((y[candidates] - predict(kept, candidates) @ y[kept]) ** 2, axis=1)
        seen.append(misfit / typical)
        return ()

    params = {} if kind == "berrut" else {"lam_enc": 0.0, "lam_dec": "auto"}
    codec = make_codec(kind, K, N, byzantine=A, **params)
    rng = np.random.default_rng(seed)
    honest, wrong = [], []
    real = base.locate_wrong_results
    base.locate_wrong_results = spy
    try:
        for _ in range(trials):
            x = rng.standard_normal((K, 32))
            ids = sorted(rng.choice(N, N - S, replace=False).tolist())
            y = f(codec.encode(x))[ids]
            codec.decode(y, ids)
            honest.append(seen.pop().max())
            bad = rng.choice(len(ids), A, replace=False)
            y[bad] = corrupt_rows(y[bad], "large", rng)
            codec.decode(y, ids)
            wrong.append(seen.pop().min())
    finally:
        base.locate_wrong_results = real
    return max(honest), min(wrong)


def main():
    tanh = toy_model("tanh", in_dim=32, out_dim=10)
    print("| codec | outputs | largest honest ratio | smallest large-error ratio |")
    print("|---|---|---|---|")
    for kind in ("berrut", "spline"):
        for space in ("tanh", "softmax"):
            f = tanh if space == "tanh" else (lambda x: softmax(3 * tanh(x)))
            honest, wrong = separation(f, kind)
            print(f"| {kind} | {space} | {honest:.0f} | {wrong:.0f} |", flush=True)
    print()
    print("| threshold | codec | outputs | clean | large | subtle |")
    print("|---|---|---|---|---|---|")
    for tau in (10, 50, 100, 500, 1000, 3000):
        for kind in ("berrut", "spline"):
            for space in ("tanh", "softmax"):
                f = tanh if space == "tanh" else (lambda x: softmax(3 * tanh(x)))
                clean, large, subtle = trial_set(f, kind, tau)
                print(
                    f"| {tau} | {kind} | {space} | {clean:.3f} | {large:.3f} | {subtle:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
