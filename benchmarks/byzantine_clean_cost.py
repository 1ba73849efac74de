"""What ``byzantine=2`` costs when every result is right, and which locator finds subtle errors.

    .venv/bin/python benchmarks/byzantine_clean_cost.py            # about 12 min on 2 cores
    .venv/bin/python benchmarks/byzantine_clean_cost.py --quick    # 6 batches a row, 2 min

K=8, n=24, S=4 (20 results returned), 30 batches x 8 straggler draws per row, every model
run on the coded inputs and its decode compared with its own uncoded outputs (MSE summed
over the outputs, averaged over the batch). Codecs: berrut and the spline
(``lam_enc=0,lam_dec=auto``) decoding in linear space, and the log-space spline
(``lam_dec=0,space=log``) on probability outputs. Columns:

- **clean:** MSE(``byzantine=2``) / MSE(plain decode), every result honest;
- **large, subtle, swap:** MSE(``byzantine=2``) / MSE(plain decode with the two wrong
  results absent), two of the 20 results given noise of 100x / 1x their spread or their
  entries rolled (``codedfarm.corruption``, as ``codedfarm eval``); ``found``: share of
  the subtle ones rejected; ``lost``: honest results rejected per clean decode; ``ms``:
  one clean decode, plain and with ``byzantine=2``.

Model families. **Calibration** (the threshold was chosen on these and only these, in
benchmarks/byzantine_threshold.py): the toy tanh network of
``codedfarm.evaluation.compare.toy_model``, raw and softmax outputs. **Reported**,
never used to choose anything: the zoo (lenet5, repvgg, vit_small trained on sklearn's
digits, cached in ~/.cache/codedfarm; the first run trains them, minutes), probabilities
and logits; a CNN the project never saw (random 3x3 convolutions, width 16, a linear head
trained for seconds on digits: benchmarks/serve_cost.py's model, narrower), probabilities
and logits; and a tanh MLP on the 8x8 digits (64-64-64-10, raw outputs), with PyTorch's
random initial weights and trained for 200 Adam steps.

Locators, each a candidate choice and a test:

- ``median x500``: the first version (candidates: the pair whose leave-one-out columns
  explain most residual; rejected above 500x the median leave-one-out residual);
- ``honest scale`` (shipped, ``codecs/byzantine.py``): the same candidates, rejected above
  BYZANTINE_THRESHOLD x the larger of the rest's residuals carried through the weights
  that predict the candidate and the rest's largest residual;
- ``multivariate``: the same test on the outputs whitened by the covariance of the rest's
  leave-one-out residuals (all output coordinates jointly: an error off the directions in
  which this curve's honest residuals lie counts more), candidates chosen again in the
  whitened space; its threshold calibrated on the toy here, by the same rule;
- ``BW rational``: ApproxIFER's Berlekamp-Welch-style decoding: numerators ``N_i`` and
  one shared denominator ``D`` of degree K-1+A (Chebyshev basis) with
  ``N_i(beta_j) = y_ij D(beta_j)`` in least squares; the A results where ``|D|`` is
  smallest are the errors. ``BW, always`` rejects them (as published); ``BW + test``
  keeps those that pass the shipped test.

Last, systematic codes (``systematic=true``, linear space) at S=4 and n = 2K + 2A (their
default) and 3K + 2A, the generic locator (honest scale) / the cluster locator they use
(``codecs/byzantine_systematic.py``), on every family (``--systematic-only``: this table
alone, about 10 min).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import codedfarm.codecs.base as base
import codedfarm.codecs.byzantine as bz
from codedfarm.codecs import plan_codec
from codedfarm.corruption import corrupt_rows

K, N, S, A = 8, 24, 4, 2
CACHE = Path.home() / ".cache" / "codedfarm"
CODECS = {
    "berrut": "berrut:space=linear",
    "spline": "spline:lam_enc=0,lam_dec=auto,space=linear",
    "spline (log)": "spline:lam_enc=0,lam_dec=0,space=log",
}
SHRINK = 0.1  # the multivariate test's covariance shrinkage, toward a multiple of I


# ----- model families ---------------------------------------------------------------------
def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def toy(space: str, gain: float = 1.0) -> tuple[Callable, Callable]:
    from codedfarm.evaluation.compare import toy_model

    f = toy_model("tanh", in_dim=32, out_dim=10)

    def run(x: np.ndarray) -> np.ndarray:
        out = f(gain * x)
        return out if space == "raw" else softmax(3 * out)

    return run, lambda rng: rng.standard_normal((K, 32))


def tanh_mlp(trained: bool) -> tuple[Callable, Callable]:
    import torch
    from torch import nn

    from codedfarm.models.digits import load_digits_split

    data = load_digits_split(shape=(1, 8, 8))
    train_x = torch.from_numpy(data.train_x.reshape(len(data.train_x), -1)).double()
    test_x = data.test_x.reshape(len(data.test_x), -1).astype(np.float64)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10)
    ).double()
    if trained:
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        labels = torch.from_numpy(data.train_y)
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(net(train_x), labels).backward()
            opt.step()
    net.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(np.asarray(x, np.float64))).numpy()

    return run, lambda rng: test_x[rng.choice(len(test_x), K, replace=False)]


def cnn(space: str, width: int = 16) -> tuple[Callable, Callable]:
    import torch
    from torch import nn

    from codedfarm.models.digits import load_digits_split

    torch.manual_seed(0)
    c = width
    features = nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
    ).eval()  # fmt: skip
    data = load_digits_split(shape=(1, 28, 28))
    with torch.no_grad():
        feats = features(torch.from_numpy(data.train_x))
        scale = float(feats.std()) or 1.0
        feats /= scale
    head = nn.Linear(feats.shape[1], 10)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(head(feats), torch.from_numpy(data.train_y)).backward()
        opt.step()
    with torch.no_grad():
        head.weight /= scale
    model = nn.Sequential(features, head).eval()
    images = data.test_x

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).double()
            return (out.softmax(-1) if space == "probs" else out).numpy()

    return run, lambda rng: images[rng.choice(len(images), K, replace=False)]


def zoo(name: str, space: str) -> tuple[Callable, Callable]:
    from codedfarm.evaluation.loading import load_eval_model

    model, data, _ = load_eval_model(
        name, CACHE, dataset="digits", data_dir=None, output_space=space
    )
    images = data.test_x[len(data.test_x) // 2 :]  # the half codedfarm eval reports on

    def run(x: np.ndarray) -> np.ndarray:
        return model(np.asarray(x, np.float32)).astype(np.float64)

    return run, lambda rng: images[rng.choice(len(images), K, replace=False)]


CALIBRATION = {"toy tanh, raw": lambda: toy("raw"), "toy tanh, softmax": lambda: toy("soft")}
REPORTED: dict[str, Callable[[], tuple[Callable, Callable]]] = {
    **{
        f"{z}, {'probs' if s == 'probs' else 'logits'}": (lambda z=z, s=s: zoo(z, s))
        for z in ("lenet5", "repvgg", "vit_small")
        for s in ("probs", "logits")
    },
    "CNN, probs": lambda: cnn("probs"),
    "CNN, logits": lambda: cnn("logits"),
    "tanh MLP (random), raw": lambda: tanh_mlp(False),
    "tanh MLP (trained), raw": lambda: tanh_mlp(True),
}


# ----- locators ---------------------------------------------------------------------------
class Context:
    """What a locator may know beyond ``y``: the code points of the results it judges
    (set per decode; only the Berlekamp-Welch locator uses them)."""

    beta: np.ndarray = np.zeros(0)
    rows: np.ndarray = np.zeros((0, 0))


def median_x500(y, predict, a, *, min_kept=1, threshold=None, loo=None):
    """The first version of the test, kept here for the before/after columns."""
    a = min(a, len(y) - max(min_kept, 2))
    if a <= 0:
        return ()
    full = loo(list(range(len(y))))
    candidates = bz._candidates(full, full @ y, a)
    kept = [i for i in range(len(y)) if i not in candidates]
    floor = 1e-24 * float(np.mean(y**2)) + 1e-300
    typical = float(np.median(np.sum((loo(kept) @ y[kept]) ** 2, axis=1))) + floor
    misfit = np.sum((y[candidates] - predict(kept, candidates) @ y[kept]) ** 2, axis=1)
    return tuple(sorted(c for c, e in zip(candidates, misfit, strict=True) if e > 500 * typical))


def whiten(y: np.ndarray, predict, a: int, loo) -> np.ndarray:
    """``y`` with its output columns whitened by the shrunk covariance of the leave-one-out
    residuals of the results left after a first, plain choice of candidates."""
    full = loo(list(range(len(y))))
    first = bz._candidates(full, full @ y, a)
    kept = [i for i in range(len(y)) if i not in first]
    resid = loo(kept) @ y[kept]
    cov = resid.T @ resid / len(kept)
    ridge = SHRINK * np.trace(cov) / len(cov) + 1e-300
    vals, vecs = np.linalg.eigh(cov + ridge * np.eye(len(cov)))
    return y @ (vecs / np.sqrt(vals))


def multivariate(tau: float):
    def locate(y, predict, a, *, min_kept=1, threshold=None, loo=None):
        a = min(a, len(y) - max(min_kept, 2))
        if a <= 0:
            return ()
        candidates, ratios = bz.misfit_ratios(whiten(y, predict, a, loo), predict, a, loo)
        return tuple(sorted(c for c, r in zip(candidates, ratios, strict=True) if r > tau))

    return locate


def bw_candidates(y: np.ndarray, beta: np.ndarray, a: int) -> list[int]:
    """ApproxIFER-style: a shared denominator ``D`` and numerators ``N_i`` of degree
    K-1+a with ``N_i(beta_j) ~ y_ij D(beta_j)``: the smallest eigenvector of
    ``sum_i (diag(y_i) V)^T (I - P_V) (diag(y_i) V)``; errors where ``|D|`` is least."""
    m = len(y)
    degree = min(K - 1 + a, (m - 1) // 2)
    basis = np.polynomial.chebyshev.chebvander(beta, degree)
    q, _ = np.linalg.qr(basis)
    centred = (y - y.mean(0)) / (y.std(0) + 1e-300)  # each output on the same footing
    outer = np.zeros((degree + 1, degree + 1))
    for column in centred.T:
        scaled = column[:, None] * basis
        off = scaled - q @ (q.T @ scaled)
        outer += off.T @ off
    _, vecs = np.linalg.eigh(outer)
    denominator = basis @ vecs[:, 0]
    return sorted(np.argsort(np.abs(denominator))[:a].tolist())


def bw_check(trials: int = 20) -> None:
    """The Berlekamp-Welch locator on smooth curves at the code's points (a polynomial of
    degree K-1 and a tanh curve, 10 outputs, two errors of 1x the outputs' spread): a
    check of the implementation before it meets networks' outputs."""
    beta = plan_codec(CODECS["berrut"]).codec(K, N, S)._beta
    rng = np.random.default_rng(0)
    located = 0
    for trial in range(trials):
        ids = sorted(rng.choice(N, N - S, replace=False).tolist())
        z = beta[ids]
        if trial % 2:
            y = np.tanh(3 * np.outer(z, rng.uniform(0.2, 2.0, 10)) + rng.standard_normal(10))
        else:
            y = np.polynomial.chebyshev.chebval(z, rng.standard_normal((K, 10))).T
        bad = sorted(rng.choice(len(ids), A, replace=False).tolist())
        y[bad] += rng.standard_normal((A, 10)) * y.std()
        located += bw_candidates(y, z, A) == bad
    print(f"BW on smooth synthetic curves: both errors located in {located} of {trials}\n")


def _beta_of(y: np.ndarray) -> np.ndarray:
    """The code points of the rows the locator sees (under log space, the probability
    vectors among the returned results: matched row by row)."""
    if len(y) == len(Context.rows):
        return Context.beta
    index = [int(np.flatnonzero((Context.rows == row).all(1))[0]) for row in y]
    return Context.beta[index]


def bw(always: bool):
    def locate(y, predict, a, *, min_kept=1, threshold=None, loo=None):
        a = min(a, len(y) - max(min_kept, 2))
        if a <= 0:
            return ()
        candidates = bw_candidates(y, _beta_of(y), a)
        if always:
            return tuple(candidates)
        ratios = bz.honest_scale_ratios(y, predict, loo, candidates)
        ratios = ratios > bz.BYZANTINE_THRESHOLD
        return tuple(c for c, r in zip(candidates, ratios, strict=True) if r)

    return locate


# ----- measuring --------------------------------------------------------------------------
def draws(
    f, draw, spec: str, batches: int, patterns: int, seed: int = 0, n: int = N, s: int = S
) -> list[tuple]:
    """``(truth, workers, results, wrong positions, {mode: wrong results})`` per decode."""
    plain = plan_codec(spec).codec(K, n, s)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        x = draw(rng)
        truth = f(x)
        coded = f(plain.encode(np.asarray(x, np.float64)).astype(np.asarray(x).dtype))
        for _ in range(patterns):
            ids = sorted(rng.choice(n, n - s, replace=False).tolist())
            y = coded[ids]
            bad = rng.choice(len(ids), A, replace=False)
            wrong = {}
            for mode in ("subtle", "large", "swap"):
                wrong[mode] = y.copy()
                wrong[mode][bad] = corrupt_rows(y[bad], mode, rng)
            out.append((truth, ids, y, bad, wrong))
    return out


def mse(decoded: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(np.sum((decoded - truth) ** 2, axis=1)))


def measure(
    spec: str, data: list[tuple], locator, n: int = N, s: int = S, modes=("subtle", "large")
) -> dict[str, float]:
    """Clean cost, each mode's MSE over the decode without the wrong results, the share of
    subtle errors found, honest results lost per clean decode, ms per clean decode (with
    and without ``byzantine``)."""
    plain = plan_codec(spec).codec(K, n, s)
    robust = plan_codec(f"{spec},byzantine={A}").codec(K, n, s)
    sums: dict[str, float] = {"plain": 0.0, "clean": 0.0}
    lost = found = found_large = 0
    seconds = plain_seconds = 0.0
    real = base.locate_wrong_results
    base.locate_wrong_results = locator
    try:
        for truth, ids, y, bad, wrong in data:
            Context.beta = robust._beta[ids]
            start = time.perf_counter()
            sums["plain"] += mse(plain.decode(y, ids), truth)
            plain_seconds += time.perf_counter() - start
            Context.rows = np.asarray(y, np.float64)
            start = time.perf_counter()
            report = robust.decode_report(y, ids)
            seconds += time.perf_counter() - start
            sums["clean"] += mse(report.values, truth)
            lost += len(report.rejected)
            keep = [i for i in range(len(ids)) if i not in set(bad.tolist())]
            for mode in modes:
                Context.rows = np.asarray(wrong[mode], np.float64)
                report = robust.decode_report(wrong[mode], ids)
                sums[mode] = sums.get(mode, 0.0) + mse(report.values, truth)
                absent = plain.decode(wrong[mode][keep], [ids[i] for i in keep])
                sums[mode + "_absent"] = sums.get(mode + "_absent", 0.0) + mse(absent, truth)
                caught = len(set(report.rejected) & {ids[i] for i in bad})
                found += caught if mode == "subtle" else 0
                found_large += caught if mode == "large" else 0
    finally:
        base.locate_wrong_results = real
    count = len(data)
    out = {
        "clean": sums["clean"] / sums["plain"],
        "found": found / (A * count),
        "large found": found_large / (A * count),
        "lost": lost / count,
        "ms": 1000 * seconds / count,
        "plain ms": 1000 * plain_seconds / count,
    }
    out.update({mode: sums[mode] / sums[mode + "_absent"] for mode in modes})
    return out


def calibrate_multivariate(batches: int, patterns: int) -> float:
    """The multivariate test's threshold, by the rule that chose BYZANTINE_THRESHOLD
    (benchmarks/byzantine_threshold.py, the same toy draws): the geometric mean of the
    largest honest ratio and the smallest large-error ratio."""
    seen: list[tuple[list[int], np.ndarray]] = []

    def spy(y, predict, a, *, min_kept=1, threshold=None, loo=None):
        seen.append(bz.misfit_ratios(whiten(y, predict, a, loo), predict, a, loo))
        return ()

    honest, large = 0.0, np.inf
    real = base.locate_wrong_results
    base.locate_wrong_results = spy
    try:
        for gain in (0.5, 1.0, 2.0, 4.0):
            for space in ("raw", "soft"):
                f, draw = toy(space, gain)
                for key in ("berrut", "spline"):
                    robust = plan_codec(CODECS[key] + f",byzantine={A}").codec(K, N, S)
                    for _, ids, y, bad, wrong in draws(f, draw, CODECS[key], batches, patterns, 2):
                        robust.decode_report(y, ids)
                        honest = max(honest, float(seen.pop()[1].max()))
                        robust.decode_report(wrong["large"], ids)
                        candidates, ratios = seen.pop()
                        if sorted(candidates) == sorted(bad.tolist()):
                            large = min(large, float(ratios.min()))
    finally:
        base.locate_wrong_results = real
    tau = float(np.sqrt(honest * large))
    print(f"multivariate threshold: largest honest ratio {honest:.1f}, smallest large-error "
          f"ratio {large:.1f} on the toy -> {tau:.1f}\n", flush=True)  # fmt: skip
    return tau


def num(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.3g}"


SYSTEMATIC = {
    "berrut": "berrut:systematic=true,space=linear",
    "spline": "spline:systematic=true,space=linear",
}
SYSTEMATIC_FAMILIES = ("toy tanh, raw", "toy tanh, softmax", *REPORTED)


def generic_on_systematic(y, predict, a, *, points, anchors, own, min_kept=1, loo=None):
    """The generic locator where systematic codes now use ``byzantine_systematic``."""
    return bz.locate_wrong_results(y, predict, a, min_kept=min_kept, loo=loo)


def systematic(batches: int, patterns: int) -> None:
    """Systematic codes (own rows returned as computed), S=4, n = 2K + 2A (their default)
    and 3K + 2A, linear space; the generic locator (honest scale) / the cluster locator
    (``codecs/byzantine_systematic.py``, shipped)."""
    print("\n## Systematic codes, S=4: generic / clusters\n")
    print("| family | codec | n | clean | honest lost | large | large found | subtle | swap "
          "| subtle found |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    families = {**CALIBRATION, **REPORTED}
    for family in SYSTEMATIC_FAMILIES:
        f, draw = families[family]()
        for key, spec in SYSTEMATIC.items():
            for n in (2 * K + 2 * A, 3 * K + 2 * A):
                data = draws(f, draw, spec, batches, patterns, n=n)
                rows = []
                shipped = base.locate_wrong_systematic
                for loc in (generic_on_systematic, shipped):
                    base.locate_wrong_systematic = loc
                    try:
                        rows.append(measure(spec, data, bz.locate_wrong_results, n=n,
                                            modes=("large", "subtle", "swap")))  # fmt: skip
                    finally:
                        base.locate_wrong_systematic = shipped
                cells = [
                    " / ".join(f"{r[k]:.2f}" if k in ("found", "lost", "large found")
                               else num(r[k]) for r in rows)
                    for k in ("clean", "lost", "large", "large found", "subtle", "swap", "found")
                ]  # fmt: skip
                print(f"| {family} | {key} | {n} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 batches x 4 draws a row")
    parser.add_argument("--systematic-only", action="store_true", help="only the last table")
    args = parser.parse_args()
    batches, patterns = (6, 4) if args.quick else (30, 8)
    if args.systematic_only:
        systematic(batches, patterns)
        return
    bw_check()
    tau_mv = calibrate_multivariate(*((10, 4) if args.quick else (100, 4)))
    locators = {
        "median x500": median_x500,
        "honest scale": bz.locate_wrong_results,
        "multivariate": multivariate(tau_mv),
        "BW + test": bw(always=False),
        "BW, always": bw(always=True),
    }
    results: list[tuple[str, str, str, dict[str, dict[str, float]]]] = []
    for role, families in (("calibration", CALIBRATION), ("reported", REPORTED)):
        for family, make in families.items():
            f, draw = make()
            probs = "prob" in family or "softmax" in family
            for key in ("berrut", "spline", *(("spline (log)",) if probs else ())):
                data = draws(f, draw, CODECS[key], batches, patterns)
                rows = {
                    name: measure(CODECS[key], data, loc, modes=("large", "subtle", "swap"))
                    for name, loc in locators.items()
                }
                results.append((role, family, key, rows))
                print(f"{family} | {key} | " + " | ".join(
                    f"{name}: clean {r['clean']:.3g} large {r['large']:.3g} "
                    f"subtle {r['subtle']:.3g} found {r['found']:.2f} lost {r['lost']:.2f} "
                    f"{r['ms']:.2f} ms" for name, r in rows.items()), flush=True)  # fmt: skip
    names = list(locators)
    print("\n## Clean cost: MSE(byzantine=2) / MSE(plain), every result honest\n")
    print("| family | codec | before (median x500) | after (honest scale) | honest lost, "
          "before / after | ms: plain / before / after |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for role, family, key, rows in results:
        b, a = rows["median x500"], rows["honest scale"]
        tag = " (calibration)" if role == "calibration" else ""
        print(f"| {family}{tag} | {key} | {num(b['clean'])} | {num(a['clean'])} | "
              f"{b['lost']:.2f} / {a['lost']:.2f} | "
              f"{a['plain ms']:.2f} / {b['ms']:.2f} / {a['ms']:.2f} |")  # fmt: skip
    for metric, title in (
        ("subtle", "Subtle errors (1x spread): MSE(byzantine=2) / MSE(wrong results absent)"),
        ("found", "Subtle errors: share of them rejected"),
        ("large", "Large errors (100x spread): MSE(byzantine=2) / MSE(wrong results absent)"),
        ("swap", "Swapped results (entries rolled): MSE(byzantine=2) / MSE(wrong results absent)"),
        ("clean", "Clean cost of every locator"),
        ("ms", "ms per clean byzantine=2 decode"),
    ):
        print(f"\n## {title}\n")
        print("| family | codec | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        for role, family, key, rows in results:
            tag = " (calibration)" if role == "calibration" else ""
            cells = [f"{rows[n][metric]:.2f}" if metric == "found" else num(rows[n][metric])
                     for n in names]  # fmt: skip
            print(f"| {family}{tag} | {key} | " + " | ".join(cells) + " |")
    systematic(batches, patterns)


if __name__ == "__main__":
    main()
