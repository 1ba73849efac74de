"""``codedfarm demo``: a whole farm on this machine, real digits, four codes, one table."""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from codedfarm.codecs import plan_codec
from codedfarm.coordinator import BatchSpec, FarmClient
from codedfarm.errors import CodecError, ConfigError
from codedfarm.local.farm import LocalFarm
from codedfarm.settings import Settings, check_float, check_int
from codedfarm.stragglers import parse_straggler_spec
from codedfarm.worker import WorkerOptions

__all__ = ["DemoConfig", "DemoRow", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    k: int = 8
    n: int = 24
    s: int = 4
    batches: int = 5
    straggle: str = "fixed:S=4,delay=1.5"
    codecs: tuple[str, ...] = ("uncoded", "replication", "berrut", "spline")
    worker_processes: int = 2
    deadline: float = 20.0

    def __post_init__(self) -> None:
        """Checks every field before anything starts: a bad value raises
        :class:`ConfigError` naming it."""
        for name in ("k", "n", "s", "batches", "worker_processes"):
            check_int(getattr(self, name), name)
        if self.k < 1 or self.n < self.k or not 0 <= self.s < self.n:
            raise ConfigError(f"need 1 <= k <= n and 0 <= s < n, got k={self.k}, n={self.n}, "
                              f"s={self.s}")  # fmt: skip
        check_int(self.batches, "batches", minimum=1)
        check_int(self.worker_processes, "worker_processes", minimum=1)
        object.__setattr__(self, "deadline", check_float(self.deadline, "deadline", above=0))
        parse_straggler_spec(self.straggle)
        if isinstance(self.codecs, str) or not self.codecs:
            raise ConfigError(f"codecs must be a list of codec specs, got {self.codecs!r}")
        object.__setattr__(self, "codecs", tuple(self.codecs))
        for codec in self.codecs:
            try:
                plan_codec(codec)  # unknown codecs and bad parameters fail here
            except CodecError as exc:  # a bad option, as every other field's
                raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class DemoRow:
    codec: str
    n: int
    latencies: list[float]
    outcomes: list[str]
    accuracy: float  # argmax vs the true digit labels
    agreement: float  # argmax vs the uncoded model's argmax
    mse: float  # vs the uncoded model's outputs

    def line(self) -> str:
        p50 = statistics.median(self.latencies)
        decoded = sum(o in ("decoded", "deadline_decoded") for o in self.outcomes)
        return (
            f"{self.codec:14} {self.n:4d} {p50 * 1e3:10.1f} {max(self.latencies) * 1e3:10.1f} "
            f"{decoded:>4}/{len(self.outcomes):<4} {self.accuracy:9.3f} {self.agreement:10.3f} "
            f"{self.mse:10.4f}"
        )


HEADER = (
    f"{'codec':14} {'n':>4} {'p50 ms':>10} {'max ms':>10} {'decoded':>9} {'accuracy':>9} "
    f"{'agreement':>10} {'MSE':>10}"
)


def _reference(cache_dir: object, x: np.ndarray) -> np.ndarray:
    import torch

    from codedfarm.models.registry import load_model

    model = load_model("lenet5", cache_dir)  # type: ignore[arg-type]
    with torch.inference_mode():
        out: np.ndarray = model(torch.from_numpy(x)).numpy()
    return out


def _spec(codec: str, config: DemoConfig) -> BatchSpec:
    # the demo's n and s are a budget every code fits itself into (uncoded: one task per
    # input, no straggler tolerated; replication: the whole copies that fit)
    n, s = plan_codec(codec).fit_workers(config.k, config.n, config.s)
    return BatchSpec(
        model="lenet5",
        codec=codec,
        n=n,
        s=s,
        straggle=config.straggle,
        deadline=config.deadline,
        queues=tuple(f"demo{i}" for i in range(config.worker_processes)),
    )


def run_demo(
    config: DemoConfig,
    settings: Settings,
    echo: Callable[[str], None] = print,
) -> list[DemoRow]:
    """Start the farm, run every codec on the same batches, print the table, stop the farm."""
    from codedfarm.models.digits import load_digits_split
    from codedfarm.models.training import trained_lenet5

    echo("preparing LeNet5 (trained on sklearn's digits, cached) ...")
    trained_lenet5(settings.cache_dir)
    data = load_digits_split()
    per_process = -(-config.n // config.worker_processes)
    workers = [
        WorkerOptions(queues=(f"demo{i}",), concurrency=per_process, preload=("lenet5",))
        for i in range(config.worker_processes)
    ]
    redis_url = settings.redis_url if _redis_named() else None
    echo(
        f"starting {'a private Redis, ' if redis_url is None else ''}"
        f"{config.worker_processes} worker processes ({per_process} slots each) "
        "and a collector ..."
    )
    farm = LocalFarm(workers, redis_url=redis_url, settings=settings)
    try:
        farm.start()
        farm.start_collector("demo")
        rows = _run(config, farm.settings, data.test_x, data.test_y, echo)
    finally:
        echo("shutting down ...")
        farm.stop()
    return rows


def _redis_named() -> bool:
    return bool(os.environ.get("CODEDFARM_REDIS_URL"))


def _run(
    config: DemoConfig,
    settings: Settings,
    images: np.ndarray,
    labels: np.ndarray,
    echo: Callable[[str], None],
) -> list[DemoRow]:
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(labels), config.k, replace=False) for _ in range(config.batches)]
    reference = _reference(settings.cache_dir, images)
    echo(
        f"{config.batches} batches of {config.k} digits per codec, stragglers: {config.straggle}, "
        f"tolerating S={config.s} with n={config.n}"
    )
    rows = []
    with FarmClient(settings, collector="demo") as client:
        client.submit(images[batches[0]], _spec("berrut", config))  # warm up every worker
        for codec in config.codecs:
            spec = _spec(codec, config)
            latencies, outcomes, predicted, reference_rows, label_rows = [], [], [], [], []
            for index in batches:
                result = client.submit(images[index], spec)
                latencies.append(result.record.timings.end_to_end)
                outcomes.append(result.outcome)
                if result.predictions is not None:
                    predicted.append(result.predictions)
                    reference_rows.append(reference[index])
                    label_rows.append(labels[index])
            rows.append(_row(codec, spec.n or config.n, latencies, outcomes, predicted,
                             reference_rows, label_rows))  # fmt: skip
            echo(f"  {codec}: done")
    echo("")
    echo(HEADER)
    for row in rows:
        echo(row.line())
    echo(
        "accuracy: argmax vs the digit labels; agreement and MSE: vs the uncoded model's "
        "outputs on the same images"
    )
    return rows


def _row(
    codec: str,
    n: int,
    latencies: list[float],
    outcomes: list[str],
    predicted: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
) -> DemoRow:
    if not predicted:
        nan = float("nan")
        return DemoRow(codec, n, latencies, outcomes, nan, nan, nan)
    pred = np.concatenate(predicted)
    ref = np.concatenate(reference)
    return DemoRow(
        codec=codec,
        n=n,
        latencies=latencies,
        outcomes=outcomes,
        accuracy=float(np.mean(pred.argmax(1) == np.concatenate(labels))),
        agreement=float(np.mean(pred.argmax(1) == ref.argmax(1))),
        mse=float(np.mean((pred - ref) ** 2)),
    )
