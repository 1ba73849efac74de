"""Codec costs: matrix builds, encode and decode, against a model forward on the same batch.

Run:  .venv/bin/python benchmarks/codecs.py [--quick]

Prints, for (k, n) = (8, 24) and (20, 100) and inputs of 784 floats (LeNet5-sized, 1x28x28)
and 150528 floats (ViT-sized, 3x224x224), with S = n/5 stragglers: the time to build the
encoder matrix and a decoder matrix for a new returned set (for lam_dec="auto", a whole
decode on a new set: basis, GCV choice and product), encode and decode times, and encode+decode as a
fraction of the model's forward pass on the same batch of k inputs (LeNet5 on 1x32x32, or
torchvision's vit_b_16 with random weights). "enc-into" encodes into a reused buffer
(``encode(x, out=buf)``), which the ratio uses. Every number comes from this one run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from codedfarm.codecs import make_codec
from codedfarm.models.lenet import LeNet5

CODECS = {
    "mds": {},
    "berrut": {},
    "spline": {"lam_enc": 1e-6, "lam_dec": 1e-4},
    "spline-auto": {"lam_dec": "auto"},
}


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls after one warm-up call."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def model_forward_seconds(kind: str, k: int, repeat: int) -> float:
    torch.set_grad_enabled(False)
    if kind == "lenet5":
        model: torch.nn.Module = LeNet5().eval()
        x = torch.randn(k, 1, 32, 32)
    else:
        from torchvision.models import vit_b_16

        model = vit_b_16().eval()
        x = torch.randn(k, 3, 224, 224)
    return timed(lambda: model(x), repeat)


def bench_row(
    name: str, k: int, n: int, size: int, forward: float, repeat: int, rng: np.random.Generator
) -> str:
    params = CODECS[name]
    codec_name = "spline" if name.startswith("spline") else name
    auto = params.get("lam_dec") == "auto"
    s = n // 5
    out_dim = 10 if size == 784 else 1000
    # encoder matrix: a fresh codec each time, so nothing is cached
    enc_build = timed(lambda: make_codec(codec_name, k, n, **params).encoder_matrix, repeat * 3)
    codec = make_codec(codec_name, k, n, **params)
    sets = iter([np.sort(rng.choice(n, n - s, replace=False)).tolist() for _ in range(200)])
    y = torch.randn(n - s, out_dim)
    if auto:  # the decoder depends on the results: time a whole decode on a new returned set
        dec_build = timed(lambda: codec.decode(y, next(sets)), 40)
    else:
        dec_build = timed(lambda: codec.decoder_matrix(next(sets)), 40)
    x = torch.randn(k, size)
    buffer = torch.empty(n, size)
    workers = next(sets)
    enc = timed(lambda: codec.encode(x), repeat)
    enc_into = timed(lambda: codec.encode(x, out=buffer), repeat)
    dec = timed(lambda: codec.decode(y, workers), repeat)
    ratio = (min(enc, enc_into) + dec) / forward
    return (
        f"{name:12} {k:3d} {n:4d} {size:7d} {enc_build * 1e3:10.3f} {dec_build * 1e3:10.3f} "
        f"{enc * 1e3:9.3f} {enc_into * 1e3:11.3f} {dec * 1e3:9.3f} {ratio * 100:12.3f}%"
    )


def encode_against_gemm(repeat: int) -> None:
    """The dispatcher's encode of a large batch (K=20, N=100, 3x224x224, numpy float32)
    against a bare float32 GEMM of the same shape into a preallocated output."""
    k, n, size = 20, 100, 3 * 224 * 224
    x = np.random.default_rng(1).random((k, size), dtype=np.float32)
    buffer = np.empty((n, size), np.float32)
    print(f"encode vs a bare float32 GEMM, k={k}, n={n}, {size} floats per input:")
    for name in ("mds", "berrut", "spline"):
        codec = make_codec(name, k, n)
        matrix = codec.encoder_matrix.astype(np.float32)
        # interleaved, so that each ratio compares runs made under the same machine load
        runs: dict[str, list[float]] = {"gemm": [], "fresh": [], "into": []}
        calls = {
            "gemm": lambda: np.matmul(matrix, x, out=buffer),  # noqa: B023
            "fresh": lambda: codec.encode(x),  # noqa: B023
            "into": lambda: codec.encode(x, out=buffer),  # noqa: B023
        }
        for _ in range(repeat):
            for key, call in calls.items():
                runs[key].append(timed(call, 1))
        gemm, fresh, into = (statistics.median(runs[key]) for key in ("gemm", "fresh", "into"))
        fresh_ratio = statistics.median(
            f / g for f, g in zip(runs["fresh"], runs["gemm"], strict=True)
        )
        into_ratio = statistics.median(
            i / g for i, g in zip(runs["into"], runs["gemm"], strict=True)
        )
        print(f"  {name:7} GEMM {gemm * 1e3:7.2f} ms   encode (new array) {fresh * 1e3:7.2f} ms "
              f"= {fresh_ratio:.2f}x   encode into the dispatcher's reused buffer "
              f"{into * 1e3:7.2f} ms = {into_ratio:.2f}x (median of paired ratios)")  # fmt: skip
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeat = 3 if args.quick else 10
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    encode_against_gemm(repeat * 2)
    forwards: dict[tuple[int, int], float] = {}
    for size, kind in ((784, "lenet5"), (150528, "vit_b_16")):
        for k in (8, 20):
            reps = 2 if kind == "vit_b_16" else repeat
            forwards[size, k] = model_forward_seconds(kind, k, reps)
            print(f"forward {kind:9} batch k={k:3d}: {forwards[size, k] * 1e3:9.2f} ms")
    print()
    print(
        f"{'codec':12} {'k':>3} {'n':>4} {'input':>7} {'enc-mat ms':>10} {'dec-mat ms':>10} "
        f"{'encode ms':>9} {'enc-into ms':>11} {'decode ms':>9} {'(enc+dec)/fwd':>13}"
    )
    for k, n in ((8, 24), (20, 100)):
        for name in CODECS:
            for size in (784, 150528):
                print(bench_row(name, k, n, size, forwards[size, k], repeat, rng))


if __name__ == "__main__":
    main()
