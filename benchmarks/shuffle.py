"""Coded data shuffling measured against its theory: bytes per epoch against the storage
fraction s, for each scheme beside its load curves, and the wall-clock per epoch.

    .venv/bin/python benchmarks/shuffle.py                  # n = 4, 8, 16; a few minutes
    .venv/bin/python benchmarks/shuffle.py --workers 4 --epochs 2 --threads   # a first look

Every run is a real one (codedfarm.shuffle.run_shuffle): a private redis-server, the
master here, the workers as processes (``--threads``: threads), sklearn's digits (1797
rows of 64 float64, 512 bytes; the last q mod n rows dropped). s runs over the multiples
of 1/n (the structured scheme's corner points). Columns, per epoch, averaged over the
epochs (a new random permutation each):

- ``measured``: payload bytes the master wrote to Redis (broadcast + unicast);
- ``theory``: the scheme's exact load for these shuffles, from counts alone
  (codedfarm.shuffle.theory.shuffle_load); ``m/t`` their ratio;
- ``mean``: the mean of that exact load over 64 independent random placements and
  shuffles (theory.mean_load, counting only): the expected load at this q; ``m/mean``;
- ``expected``: the closed form in (q, n, s, R) for a random permutation
  (theory.expected_load: uncoded q(1-s)R; lee the decentralized coded-caching limit;
  structured q(n-1-t)/(n(t+2))R); ``m/e`` measured over it;
- ``overhead``: the protocol's bytes (headers, the assignment), not in the payload;
- ``s/epoch``: wall-clock from the first write of the epoch to the last checksum back;
- ``ok``: every worker held exactly its new batch (row checksums) after every epoch.

A structured configuration whose rows cannot be cut into C(n-1, t) chunks of at least one
byte is listed as skipped.
"""

from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction

import numpy as np
from sklearn.datasets import load_digits

from codedfarm.errors import ConfigError
from codedfarm.local.redis_server import LocalRedis
from codedfarm.shuffle import SCHEMES, ShuffleConfig, run_shuffle
from codedfarm.shuffle.theory import expected_load, mean_load, worst_case_optimum

HEADER = ("n", "s", "scheme", "measured", "theory", "m/t", "mean", "m/mean", "expected", "m/e",
          "overhead", "s/epoch", "ok")  # fmt: skip


def _measure(data: np.ndarray, url: str, n: int, s: float, scheme: str, args: argparse.Namespace
             ) -> dict[str, object] | None:  # fmt: skip
    config = ShuffleConfig(workers=n, storage=s, epochs=args.epochs, scheme=scheme,
                           seed=args.seed)  # fmt: skip
    try:
        report = run_shuffle(data, config, url, processes=not args.threads)
    except ConfigError:
        return None
    epochs = report.epochs
    measured = float(np.mean([e.payload_bytes for e in epochs]))
    theory = float(np.mean([e.theory_bytes for e in epochs]))
    expected = epochs[0].expected_bytes
    mean = mean_load(scheme, report.q, n, s, report.row_bytes)
    return {
        "n": n, "s": s, "scheme": scheme, "measured": measured, "theory": theory,
        "ratio": measured / theory if theory else 1.0,
        "mean": mean, "ratio_mean": measured / mean if mean else 1.0, "expected": expected,
        "ratio_expected": measured / expected if expected else 1.0,
        "overhead": float(np.mean([e.overhead_bytes for e in epochs])),
        "seconds": float(np.mean([e.seconds for e in epochs])), "ok": report.ok,
        "q": report.q, "row_bytes": report.row_bytes, "t": config.t,
    }  # fmt: skip


def _line(row: dict[str, object] | None, n: int, s: Fraction, scheme: str) -> str:
    label = f"{s.numerator}/{s.denominator}" if s != 1 else "1"
    if row is None:
        return f"| {n} | {label} | {scheme} | skipped: C(n-1, t) chunks > 512 B a row ||||||||||"
    return (
        f"| {n} | {label} | {scheme} | {row['measured']:.0f} | {row['theory']:.0f} | "
        f"{row['ratio']:.3f} | {row['mean']:.0f} | {row['ratio_mean']:.3f} | "
        f"{row['expected']:.0f} | {row['ratio_expected']:.3f} | "
        f"{row['overhead']:.0f} | {row['seconds']:.3f} | {'yes' if row['ok'] else 'NO'} |"
    )


def _storages(n: int) -> list[Fraction]:
    """Every multiple of 1/n up to n = 8; beyond, 1/n, 2/n, the multiples of 1/8, (n-1)/n."""
    if n <= 8:
        return [Fraction(i, n) for i in range(1, n + 1)]
    return sorted({Fraction(1, n), Fraction(2, n), Fraction(n - 1, n)}
                  | {Fraction(i, 8) for i in range(1, 9)})  # fmt: skip


def curves(workers: list[int], q: int = 1792, row_bytes: int = 512) -> None:
    """The load curves alone (no run), as fractions of the data's bytes q*R: uncoded,
    Lee et al. (q -> infinity), structured (balanced shuffle), and the worst-case optimum
    with uncoded caches (theory.worst_case_optimum)."""
    print("| n | s | uncoded | lee (q -> inf) | structured (random) | optimum (worst case) |")
    print("|---|---|---|---|---|---|")
    total = q * row_bytes
    for n in workers:
        for s in _storages(n):
            cells = [expected_load(k, q, n, float(s), row_bytes) / total for k in SCHEMES]
            best = worst_case_optimum(q, n, float(s), row_bytes) / total
            label = f"{s.numerator}/{s.denominator}" if s != 1 else "1"
            print(f"| {n} | {label} | " + " | ".join(f"{c:.3f}" for c in cells)
                  + f" | {best:.3f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="4,8,16", help="Comma list of n.")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per run (averaged).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", action="store_true", help="Workers as threads.")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON too.")
    parser.add_argument("--curves", action="store_true", help="Only the load curves (no run).")
    args = parser.parse_args()
    if args.curves:
        curves([int(x) for x in args.workers.split(",")])
        return
    data = load_digits().data
    rows: list[dict[str, object]] = []
    started = time.perf_counter()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    with LocalRedis() as server:
        for n in (int(x) for x in args.workers.split(",")):
            for s in _storages(n):
                for scheme in SCHEMES:
                    row = _measure(data, server.url, n, float(s), scheme, args)
                    print(_line(row, n, s, scheme), flush=True)
                    if row is not None:
                        rows.append(row)
            by = {r["scheme"]: r["measured"] for r in rows if r["n"] == n and r["s"] == 0.5}
            if len(by) == len(SCHEMES) and by["uncoded"]:
                ratios = {k: f"{v / by['uncoded']:.3f}" for k, v in by.items()}  # type: ignore[operator]
                print(f"n={n}, s=1/2, measured / uncoded: {ratios}", flush=True)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
