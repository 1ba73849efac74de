"""The options of one worker, as one value object from the command line to the engines."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedfarm.corruption import CorruptionSpec, parse_corruption_spec
from codedfarm.errors import ConfigError
from codedfarm.stragglers import StragglerSpec, parse_straggler_spec

__all__ = ["ENGINES", "POOLS", "WorkerOptions", "queue_for_device"]

ENGINES = ("celery", "batch")
POOLS = ("prefork", "threads", "solo")
DEFAULT_SLOTS = {"celery": 1, "batch": 32}


def queue_for_device(device: str) -> str:
    """The conventional queue of a device: ``cpu``, ``gpu0``, ``gpu1``, ..."""
    if device == "cpu":
        return "cpu"
    index = device.split(":", 1)[1] if ":" in device else "0"
    return f"gpu{index}"


@dataclass(frozen=True)
class WorkerOptions:
    """What one ``codedfarm worker`` runs with (``codedfarm worker --help`` documents each).

    ``engine``: ``batch`` (the default: one process, many tasks per Redis round trip and
    per forward pass) or ``celery`` (a Celery worker and its pools). ``concurrency``: Celery
    pool processes, or tasks in flight in the batch engine (None: 1 for celery, 32 for
    batch). ``queues`` empty: the device's queue.
    ``slowdown`` and ``straggle`` inject slowness for experiments; ``corrupt`` makes a
    fraction of the outputs wrong (for testing ``byzantine`` decoding).
    """

    queues: tuple[str, ...] = ()
    engine: str = "batch"
    concurrency: int | None = None
    pool: str | None = None  # Celery pool (None: prefork); not for the batch engine
    device: str = "cpu"
    slowdown: float = 1.0  # a persistently slow node multiplies its compute time by this
    straggle: str = "none"  # default straggler spec for tasks that carry no plan
    corrupt: str = "none"  # a fault for tests: none, large:p=P or subtle:p=P
    preload: tuple[str, ...] = ()
    torch_threads: int = 1
    metrics_port: int = 0
    metrics_addr: str = "0.0.0.0"
    hostname: str | None = None
    loglevel: str = "warning"  # "info" logs every task: costly at high task rates
    events: bool = False  # send task events (Celery's -E); worker heartbeats are always sent

    def __post_init__(self) -> None:
        for name in ("queues", "preload"):  # JSON round trips give lists
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @functools.cached_property
    def straggler_spec(self) -> StragglerSpec:
        """``straggle``, parsed once."""
        return parse_straggler_spec(self.straggle)

    @functools.cached_property
    def corruption(self) -> CorruptionSpec:
        """``corrupt``, parsed once."""
        return parse_corruption_spec(self.corrupt)

    @property
    def queue_names(self) -> tuple[str, ...]:
        return self.queues or (queue_for_device(self.device),)

    @property
    def slots(self) -> int:
        """Pool processes (celery) or tasks in flight (batch)."""
        return self.concurrency or DEFAULT_SLOTS[self.engine]

    def validate(self) -> WorkerOptions:
        """Check everything that needs neither torch nor the models; returns self. Raises
        :class:`ConfigError`."""
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.pool is not None and self.engine != "celery":
            raise ConfigError("--pool is for --engine celery; the batch engine is one process")
        if self.pool is not None and self.pool not in POOLS:
            raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        if any(not q or ":" in q or "," in q for q in self.queue_names):
            raise ConfigError(
                f"queue names must be non-empty without ':' or ',', got {self.queues}"
            )
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.slowdown < 1:
            raise ConfigError(f"slowdown must be >= 1, got {self.slowdown}")
        self.corruption  # noqa: B018 (parse: a bad spec fails here)
        if self.straggler_spec.per_batch:
            raise ConfigError(
                "--straggle fixed:... picks S tasks of a batch; give it per submit, not per worker"
            )
        device = self.device
        if device != "cpu" and (
            not device.startswith("cuda")
            or (device != "cuda" and not (device[:5] == "cuda:" and device[5:].isdigit()))
        ):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        return self

    def check_models(self, repository: Path | None) -> None:
        """Every ``preload`` reference names a model (in ``repository`` or the zoo)."""
        from codedfarm.models.resolve import resolve_model

        for ref in self.preload:
            resolve_model(ref, repository)

    def argv(self) -> list[str]:
        """The command line that starts a worker process with these options."""
        args = [sys.executable, "-m", "codedfarm", "worker", "--engine", self.engine]
        for queue in self.queue_names:
            args += ["-Q", queue]
        if self.concurrency is not None:
            args += ["--concurrency", str(self.concurrency)]
        if self.pool is not None:
            args += ["--pool", self.pool]
        args += ["--device", self.device, "--slowdown", repr(self.slowdown),
                 "--straggle", self.straggle, "--torch-threads", str(self.torch_threads),
                 "--metrics-port", str(self.metrics_port), "--metrics-addr", self.metrics_addr,
                 "--loglevel", self.loglevel]  # fmt: skip
        for name in self.preload:
            args += ["--preload", name]
        if self.hostname:
            args += ["--hostname", self.hostname]
        if self.events:
            args.append("--events")
        if self.corruption.active:
            args += ["--corrupt", self.corrupt]
        return args

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerOptions:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerOptions:
        """For a worker started as ``celery -A codedfarm.worker.celery_engine worker``:
        ``CODEDFARM_DEVICE``, ``CODEDFARM_SLOWDOWN``, ``CODEDFARM_WORKER_STRAGGLE``,
        ``CODEDFARM_WORKER_CORRUPT``, ``CODEDFARM_TORCH_THREADS`` and
        ``CODEDFARM_PRELOAD`` (comma-separated)."""
        env = os.environ if environ is None else environ
        try:
            return cls(
                device=env.get("CODEDFARM_DEVICE", "cpu"),
                slowdown=float(env.get("CODEDFARM_SLOWDOWN", "1.0")),
                straggle=env.get("CODEDFARM_WORKER_STRAGGLE", "none"),
                corrupt=env.get("CODEDFARM_WORKER_CORRUPT", "none"),
                torch_threads=int(env.get("CODEDFARM_TORCH_THREADS", "1")),
                preload=tuple(p for p in env.get("CODEDFARM_PRELOAD", "").split(",") if p),
            )
        except ValueError as exc:
            raise ConfigError(f"bad worker setting in the environment: {exc}") from exc
