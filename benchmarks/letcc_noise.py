"""letcc without a given sigma, on noisy and clean workers (docs/letcc.md).

    .venv/bin/python benchmarks/letcc_noise.py                 # K=12, N=48, S=0..20
    .venv/bin/python benchmarks/letcc_noise.py -k 20 -n 100    # S=0..60

Workers return logits plus Gaussian noise of ``level`` x the outputs' spread (the standard
deviation of the model's clean outputs on the test images). For each model and level:
letcc's S-averaged decode MSE over that of the best single fixed lam_dec chosen with
hindsight (a log grid), and over plain interpolation (lam_dec = 0), with 95% bootstrap
intervals over batches. letcc's only constant (the noiseless rule's) and GCV have nothing
fitted to these models: the toy tanh network is the calibration set, the zoo held out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from codedfarm.codecs import make_codec
from codedfarm.evaluation.compare import toy_model

GRID = (0.0, *np.logspace(-9, 1, 41).tolist())
LEVELS = (0.3, 0.1, 0.0)


def zoo(name: str):
    import torch

    from codedfarm.evaluation.runner import EvalConfig, _load

    torch.set_num_threads(1)
    model, data, _ = _load(name, EvalConfig(), Path.home() / ".cache" / "codedfarm")
    return model, data.test_x


def toy(seed: int):
    return toy_model("tanh", in_dim=32, out_dim=10, seed=seed), None


def measure(model, images, k: int, n: int, stragglers, batches: int, patterns: int, seed: int):
    rng = np.random.default_rng(seed)
    letcc = {s: make_codec("letcc", k, n, s=s) for s in stragglers}
    grid_codec = make_codec("spline", k, n, lam_enc=0.0, lam_dec=0.0)
    xs = [images[rng.choice(len(images), k, replace=False)] if images is not None
          else rng.standard_normal((k, 32)) for _ in range(batches)]  # fmt: skip
    outs = [np.asarray(model(grid_codec.encode(x).astype(np.float32)), np.float64) for x in xs]
    truths = [np.asarray(model(x.astype(np.float32)), np.float64) for x in xs]
    spread = float(np.std(np.concatenate(truths)))
    # err[level][batch] -> (len(GRID) + 1,) summed over S and patterns: the grid, then letcc
    err = {level: np.zeros((batches, len(GRID) + 1)) for level in LEVELS}
    for b, (out, truth) in enumerate(zip(outs, truths, strict=True)):
        for s in stragglers:
            for _ in range(patterns):
                workers = tuple(sorted(rng.choice(n, n - s, replace=False).tolist()))
                noise = rng.standard_normal((n - s, out.shape[1]))
                for level in LEVELS:
                    y = out[list(workers)] + level * spread * noise
                    for j, lam in enumerate(GRID):
                        dec = grid_codec.decoder_matrix_for_lambda(workers, lam) @ y
                        err[level][b, j] += np.mean(np.sum((dec - truth) ** 2, 1))
                    dec = letcc[s].decode(y, list(workers))
                    err[level][b, -1] += np.mean(np.sum((dec - truth) ** 2, 1))
    return err


def ratios(err: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float, float]:
    def stats(e: np.ndarray) -> tuple[float, float]:
        total = e.sum(axis=0)
        return total[-1] / total[:-1].min(), total[-1] / total[0]

    best, interp = stats(err)
    boot = np.array([stats(err[rng.integers(0, len(err), len(err))]) for _ in range(1000)])
    return best, float(np.percentile(boot[:, 0], 97.5)), interp, float(
        np.percentile(boot[:, 1], 97.5))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", type=int, default=12)
    parser.add_argument("-n", type=int, default=48)
    parser.add_argument("--batches", type=int, default=24)
    parser.add_argument("--patterns", type=int, default=3)
    args = parser.parse_args()
    top = int(0.6 * args.n) if args.n >= 100 else int(0.42 * args.n)
    stragglers = sorted({round(top * i / 6) for i in range(7)}) if args.n >= 100 else [
        round(top * i / 5) for i in range(6)]  # fmt: skip
    print(f"K={args.k}, N={args.n}, S={stragglers}, {args.batches} batches x {args.patterns}")
    print("| model | set | noise 0.3: letcc / best fixed | noise 0.1: letcc / best fixed | "
          "clean: letcc / interpolation |")  # fmt: skip
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(1)
    models = [("tanh (seed 0)", "calibration", *toy(0)), ("tanh (seed 1)", "calibration", *toy(1))]
    models += [(name, "held out", *zoo(name)) for name in ("lenet5", "repvgg", "vit_small")]
    for label, role, model, images in models:
        err = measure(model, images, args.k, args.n, stragglers, args.batches, args.patterns, 0)
        cells = []
        for level in LEVELS:
            best, best_hi, interp, interp_hi = ratios(err[level], rng)
            cells.append(f"{best:.2f} (≤{best_hi:.2f})" if level else
                         f"{interp:.2f} (≤{interp_hi:.2f})")  # fmt: skip
        print(f"| {label} | {role} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
