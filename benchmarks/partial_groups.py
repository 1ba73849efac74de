"""A partial coding group: pad it to K with copies of its rows, or code it for its size?

Run:  .venv/bin/python benchmarks/partial_groups.py [--batches 40] [--patterns 20]

The server forms a group of r < K rows when the queue delay passes first. For r = 1..K
(K = 8, N = 24, S = 4) and the approximate codes, this compares the two choices on LeNet5
(the zoo model, trained on digits) with test digits:

- ``pad``: the r rows and copies of them (row i % r) make K; the codec for K, the server's
  cached one; the copies' answers are dropped.
- ``own``: a codec for k = r (a new shape for every r: its matrices are built on the way).

Per (codec, r, choice): the mean squared error of the decoded logits against the model's
own (``--patterns`` random sets of S stragglers on each of ``--batches`` random groups),
top-1 agreement with the model's own predictions, and the server-side cost of a group
(encode + decode, ms, matrices cached as in a running server). The workers run N tasks either
way, so their cost is the same. Every number comes from this one run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from codedfarm.codecs import plan_codec
from codedfarm.codecs.base import Codec
from codedfarm.errors import CodedFarmError
from codedfarm.models.digits import load_digits_split
from codedfarm.models.registry import load_model
from codedfarm.settings import Settings

K, N, S = 8, 24, 4


def forward(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()


def measure(codec: Codec, model: torch.nn.Module, groups: list[np.ndarray], pad: bool,
            patterns: int, rng: np.random.Generator) -> dict[str, float]:  # fmt: skip
    errors, agree, cost = [], [], []
    for x in groups:
        r = len(x)
        truth = forward(model, x)
        sent = x[np.arange(K) % r] if pad else x
        start = time.perf_counter()
        coded = codec.encode(sent)
        encode_s = time.perf_counter() - start
        y = forward(model, coded)
        for _ in range(patterns):
            workers = np.sort(rng.choice(N, N - S, replace=False))
            start = time.perf_counter()
            decoded = codec.decode(y[workers], workers.tolist())[:r]
            cost.append(encode_s + time.perf_counter() - start)
            errors.append(float(np.mean(np.sum((decoded - truth) ** 2, axis=1))))
            agree.append(float(np.mean(decoded.argmax(1) == truth.argmax(1))))
    # the cost after the first decodes of each worker set: a server reuses its matrices
    return {"mse": float(np.mean(errors)), "agree": float(np.mean(agree)),
            "cost_ms": float(np.median(cost)) * 1e3}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--patterns", type=int, default=20)
    parser.add_argument("--codec", action="append", default=None)
    args = parser.parse_args()
    model = load_model("lenet5", Settings().cache_dir).eval()
    images = load_digits_split().test_x
    rng = np.random.default_rng(0)
    print("| codec | rows r | pad: MSE | own k=r: MSE | pad: top-1 agree | own: top-1 agree |"
          " pad: ms | own: ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for spec in args.codec or ["berrut", "spline"]:
        plan = plan_codec(spec)
        padded = plan.codec(K, N, S)
        for r in range(1, K + 1):
            groups = [images[rng.choice(len(images), r, replace=False)]
                      for _ in range(args.batches)]  # fmt: skip
            pad = measure(padded, model, groups, True, args.patterns, np.random.default_rng(r))
            try:
                own = measure(plan.codec(r, N, S), model, groups, False, args.patterns,
                              np.random.default_rng(r))  # fmt: skip
            except CodedFarmError as exc:
                own = None
                reason = str(exc).split(":")[0]
            cells = (f"{own['mse']:.3g} | " if own else f"cannot ({reason}) | ",
                     f"{own['agree']:.3f} | " if own else "- | ",
                     f"{own['cost_ms']:.2f}" if own else "-")  # fmt: skip
            print(
                f"| {spec} | {r} | {pad['mse']:.3g} | {cells[0]}{pad['agree']:.3f} | "
                f"{cells[1]}{pad['cost_ms']:.2f} | {cells[2]} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
