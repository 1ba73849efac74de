"""Decode fidelity of the codecs on a model: MSE and RelAcc over random batches and stragglers.

Definitions (NeRCC's): for a batch of K inputs, ``MSE = (1/K) sum_k ||f_hat(x_k) - f(x_k)||^2``
over the model's output vector (probabilities or logits), and
``RelAcc = acc(argmax f_hat) / acc(argmax f)`` against the true labels. Each (codec, batch)
is encoded and run through the model once; the many straggler patterns then only cost
decodes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from codedfarm.codecs import plan_codec
from codedfarm.codecs.base import Codec
from codedfarm.errors import ConfigError, NotEnoughResultsError

__all__ = [
    "Batch",
    "FidelityRow",
    "Model",
    "accuracy",
    "batch_mse",
    "batches",
    "build_codec",
    "linear_unless_named",
    "measure_fidelity",
]

Array = npt.NDArray[np.float32]
Model = Callable[[npt.NDArray[Any]], npt.NDArray[Any]]
"""``(B, *in_shape) -> (B, outputs)`` on numpy arrays."""


@dataclass(frozen=True)
class Batch:
    x: Array  # (K, *in_shape)
    labels: npt.NDArray[np.int64]  # (K,)
    truth: Array  # (K, outputs): the model's own outputs


@dataclass(frozen=True)
class FidelityRow:
    model: str
    codec: str
    k: int
    n: int
    s: int
    trials: int  # (batch, straggler pattern) pairs attempted
    decoded: int  # of which decodable
    mse: float
    mse_std: float
    rel_acc: float
    rel_acc_std: float
    extra: dict[str, Any] = field(default_factory=dict)


def batches(
    model: Model,
    images: Array,
    labels: npt.NDArray[np.int64],
    k: int,
    count: int,
    rng: np.random.Generator,
) -> list[Batch]:
    """``count`` random batches of ``k`` distinct images with the model's outputs on them."""
    if len(images) < k:
        raise ConfigError(f"need at least k={k} images, got {len(images)}")
    out = []
    for _ in range(count):
        index = rng.choice(len(images), k, replace=False)
        out.append(Batch(images[index], labels[index], model(images[index])))
    return out


def linear_unless_named(spec: str) -> str:
    """``spec``, decoding in linear space unless it names a space: the evaluation reproduces
    NeRCC's setting (the farm's default, ``space=auto``, is a row of its own)."""
    plan = plan_codec(spec)
    if "space" not in plan.cls.PARAMS or "space" in dict(plan.params):
        return spec
    return f"{spec}{',' if ':' in spec else ':'}space=linear"


def build_codec(spec: str, k: int, n: int, s: int) -> Codec:
    """A codec from a spec (linear space unless it names one); codes that take S
    (``letcc``) get ``s`` unless the spec sets it."""
    return plan_codec(linear_unless_named(spec)).codec(k, n, s)


def _patterns(n: int, s: int, count: int, rng: np.random.Generator) -> Iterator[list[int]]:
    for _ in range(count):
        yield sorted(rng.choice(n, n - s, replace=False).tolist())


def batch_mse(decoded: npt.NDArray[Any], truth: npt.NDArray[Any]) -> float:
    """NeRCC's MSE of one batch: the mean over its K rows of the squared error norm."""
    return float(np.mean(np.sum((decoded - truth) ** 2, axis=1)))


def accuracy(outputs: npt.NDArray[Any], labels: npt.NDArray[np.int64]) -> float:
    return float(np.mean(outputs.argmax(1) == labels))


def measure_fidelity(
    model_name: str,
    model: Model,
    data: Sequence[Batch],
    codec_specs: Sequence[str],
    *,
    n: int,
    stragglers: Sequence[int],
    patterns: int,
    rng: np.random.Generator,
    noise: float = 0.0,
    progress: Callable[[int], None] = lambda _: None,
) -> list[FidelityRow]:
    """Rows for every codec and S. ``noise`` adds N(0, noise^2) to every worker output."""
    k = len(data[0].x)
    rows = []
    # the same straggler patterns for every codec: differences are the codecs', not luck's
    state = rng.bit_generator.state
    for spec in codec_specs:
        rng.bit_generator.state = state
        per_s: dict[int, tuple[list[float], list[float], int]] = {
            s: ([], [], 0) for s in stragglers
        }
        per_batch: dict[int, list[float]] = {s: [] for s in stragglers}  # mean MSE per batch
        for batch in data:
            codec = build_codec(spec, k, n, max(stragglers))
            coded_out = model(codec.encode(batch.x).astype(np.float32))
            if noise:
                coded_out = coded_out + rng.normal(0, noise, coded_out.shape).astype(np.float32)
            base_acc = accuracy(batch.truth, batch.labels)
            for s in stragglers:
                if plan_codec(spec).takes_s:  # its smoothing depends on S
                    codec = build_codec(spec, k, n, s)
                mses, accs, attempts = per_s[s]
                before = len(mses)
                for workers in _patterns(n, s, patterns, rng):
                    attempts += 1
                    try:
                        decoded = codec.decode(coded_out[workers], workers)
                    except NotEnoughResultsError:
                        continue
                    mses.append(batch_mse(decoded, batch.truth))
                    if base_acc > 0:
                        accs.append(accuracy(decoded, batch.labels) / base_acc)
                per_s[s] = (mses, accs, attempts)
                per_batch[s].append(float(np.mean(mses[before:])) if len(mses) > before else np.nan)
            progress(1)
        for s, (mses, accs, attempts) in per_s.items():
            rows.append(
                FidelityRow(
                    model=model_name,
                    codec=spec,
                    k=k,
                    n=n,
                    s=s,
                    trials=attempts,
                    decoded=len(mses),
                    mse=float(np.mean(mses)) if mses else float("nan"),
                    mse_std=float(np.std(mses)) if mses else float("nan"),
                    rel_acc=float(np.mean(accs)) if accs else float("nan"),
                    rel_acc_std=float(np.std(accs)) if accs else float("nan"),
                    extra={"batch_mse": per_batch[s]},
                )
            )
    return rows
