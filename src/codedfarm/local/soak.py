"""``codedfarm soak``: a bounded steady load on a local farm, watching memory and keys.

A private Redis, worker processes and a ``codedfarm collector`` service; one client submits
batches at a fixed rate for a fixed time. Every few seconds it records the collector's RSS,
the workers' RSS (main processes and pool children) and Redis's key count and memory. A
healthy farm stays flat: keys expire or are deleted, nothing accumulates per batch.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from codedfarm.coordinator import BatchSpec, FarmClient
from codedfarm.errors import CodecError, ConfigError
from codedfarm.local.farm import LocalFarm
from codedfarm.models.registry import get_model_spec
from codedfarm.redis_conn import redis_from_url
from codedfarm.settings import Settings, check_float, check_int
from codedfarm.worker import WorkerOptions

__all__ = ["SoakConfig", "SoakSample", "run_soak"]


@dataclass(frozen=True)
class SoakConfig:
    seconds: float = 600.0
    rate: float = 5.0  # batches per second
    sample_every: float = 10.0
    k: int = 8
    n: int = 24
    s: int = 4
    model: str = "noop"
    codec: str | None = None  # None: the model's config.json, then DEFAULT_CODEC
    engine: str = "batch"  # worker engine: batch (2 x 16 slots) or celery (2 x 4 processes)

    def __post_init__(self) -> None:
        """Checks every field, the model, codec and engine included, before anything
        starts: a bad value raises :class:`ConfigError` naming it."""
        from codedfarm.codecs import plan_codec

        for name in ("seconds", "rate", "sample_every"):
            object.__setattr__(self, name, check_float(getattr(self, name), name, above=0))
        check_int(self.k, "k", minimum=1)
        check_int(self.n, "n", minimum=1)
        check_int(self.s, "s", minimum=0)
        get_model_spec(self.model)
        if self.codec is not None:
            try:
                plan_codec(self.codec)
            except CodecError as exc:  # a bad option, as every other field's
                raise ConfigError(str(exc)) from exc
        WorkerOptions(engine=self.engine)


@dataclass(frozen=True)
class SoakSample:
    t: float
    batches: int
    collector_rss_mb: float
    workers_rss_mb: float
    redis_keys: int
    redis_memory_mb: float


@dataclass
class SoakReport:
    config: SoakConfig
    samples: list[SoakSample] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def growth(self, attr: str) -> float:
        """Mean of the last third of the samples minus the mean of the first third."""
        values = [getattr(s, attr) for s in self.samples]
        third = max(1, len(values) // 3)
        return float(np.mean(values[-third:]) - np.mean(values[:third]))

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "samples": [asdict(s) for s in self.samples],
            "outcomes": self.outcomes,
            "growth": {a: self.growth(a) for a in ("collector_rss_mb", "workers_rss_mb",
                                                    "redis_keys", "redis_memory_mb")},
        }  # fmt: skip


def _tree_rss(pid: int) -> float:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        return float(sum(p.memory_info().rss for p in procs)) / 2**20
    except psutil.Error:
        return float("nan")


def run_soak(
    config: SoakConfig, settings: Settings, echo: Callable[[str], None] = print
) -> SoakReport:
    slots = 4 if config.engine == "celery" else 16
    workers = [
        WorkerOptions((f"soak{i}",), config.engine, slots, preload=(config.model,))
        for i in range(2)
    ]
    report = SoakReport(config)
    with LocalFarm(workers, settings=settings) as farm:
        collector = farm.start_collector("soak")
        store = redis_from_url(farm.settings.redis_url)
        shape = get_model_spec(config.model).input_shape
        x = np.random.default_rng(0).random((config.k, *shape)).astype(np.float32)
        spec = BatchSpec(model=config.model, codec=config.codec, n=config.n, s=config.s,
                         queues=("soak0", "soak1"), deadline=10.0)  # fmt: skip
        with FarmClient(farm.settings, collector="soak") as client:
            start = time.monotonic()
            next_sample = start
            submitted = 0
            while (now := time.monotonic()) - start < config.seconds:
                if now >= next_sample:
                    info = store.info("memory")
                    sample = SoakSample(
                        t=round(now - start, 1),
                        batches=submitted,
                        collector_rss_mb=_tree_rss(collector.pid),
                        workers_rss_mb=sum(_tree_rss(w.pid) for w in farm.workers),
                        redis_keys=int(store.dbsize()),
                        redis_memory_mb=info["used_memory"] / 2**20,
                    )
                    report.samples.append(sample)
                    echo(f"t={sample.t:6.1f}s batches={sample.batches:6d} "
                         f"collector={sample.collector_rss_mb:6.1f}MB "
                         f"workers={sample.workers_rss_mb:7.1f}MB keys={sample.redis_keys:4d} "
                         f"redis={sample.redis_memory_mb:5.1f}MB")  # fmt: skip
                    next_sample += config.sample_every
                result = client.submit(x, spec)
                report.outcomes[result.outcome] = report.outcomes.get(result.outcome, 0) + 1
                submitted += 1
                target = start + submitted / config.rate
                if target > time.monotonic():
                    time.sleep(target - time.monotonic())
    return report


def write_report(report: SoakReport, path: Path) -> None:
    path.write_text(json.dumps(report.to_dict(), indent=2))
