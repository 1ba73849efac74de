"""The options of one worker, as one value object from the command line to the engines."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedfarm.corruption import CorruptionSpec, parse_corruption_spec
from codedfarm.errors import ConfigError
from codedfarm.logs import LOG_LEVELS
from codedfarm.settings import (
    check_float,
    check_int,
    check_queue_names,
    deprecation_message,
)
from codedfarm.stragglers import StragglerSpec, parse_straggler_spec
from codedfarm.worker.liveness import DEFAULT_TIMEOUT_S, MIN_TIMEOUT_S

__all__ = ["ENGINES", "ENV_PREFIX", "OLD_VARIABLES", "POOLS", "WorkerOptions", "queue_for_device"]

ENGINES = ("celery", "batch")
POOLS = ("prefork", "threads", "solo")
DEFAULT_SLOTS = {"celery": 1, "batch": 32}
ENV_PREFIX = "CODEDFARM_WORKER_"
"""Of the variables :meth:`WorkerOptions.from_env` reads: click's prefix of ``codedfarm worker``."""
OLD_VARIABLES = {
    "device": "CODEDFARM_DEVICE",
    "slowdown": "CODEDFARM_SLOWDOWN",
    "torch_threads": "CODEDFARM_TORCH_THREADS",
    "preload": "CODEDFARM_PRELOAD",
}
"""The names :meth:`WorkerOptions.from_env` read before 0.2 (until 0.3, with a warning)."""
_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


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
    loglevel: str | None = None  # this worker's log level (None: codedfarm --log-level's)
    liveness_timeout: float = DEFAULT_TIMEOUT_S  # seconds: the engine loop's bound (liveness.py)
    events: bool = False  # send task events (Celery's -E); worker heartbeats are always sent

    def __post_init__(self) -> None:
        """Checks every field (everything that needs neither torch nor the models): a bad
        value raises :class:`ConfigError` naming it. Lists become tuples (JSON round trips
        give lists)."""
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.pool is not None and self.engine != "celery":
            raise ConfigError("--pool is for --engine celery; the batch engine is one process")
        if self.pool is not None and self.pool not in POOLS:
            raise ConfigError(f"pool must be one of {', '.join(POOLS)}, got {self.pool!r}")
        device = self.device
        if not isinstance(device, str) or (device != "cpu" and (
            not device.startswith("cuda")
            or (device != "cuda" and not (device[:5] == "cuda:" and device[5:].isdigit()))
        )):  # fmt: skip
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
        queues, preload = (tuple(v) if isinstance(v, Iterable) and not isinstance(v, str) else v
                           for v in (self.queues, self.preload))  # fmt: skip
        object.__setattr__(self, "queues", () if queues == () else check_queue_names(queues))
        if not isinstance(preload, tuple) or any(not isinstance(m, str) or not m for m in preload):
            raise ConfigError(f"preload must be a list of model names, got {self.preload!r}")
        object.__setattr__(self, "preload", preload)
        if self.concurrency is not None:
            check_int(self.concurrency, "concurrency", minimum=1)
        object.__setattr__(self, "slowdown", check_float(self.slowdown, "slowdown", minimum=1))
        check_int(self.torch_threads, "torch_threads", minimum=1)
        check_int(self.metrics_port, "metrics_port", minimum=0, maximum=65535)
        object.__setattr__(
            self,
            "liveness_timeout",
            check_float(
                self.liveness_timeout, "liveness_timeout", minimum=MIN_TIMEOUT_S, unit="seconds"
            ),
        )
        for name in ("straggle", "corrupt", "metrics_addr"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.hostname is not None and not isinstance(self.hostname, str):
            raise ConfigError(f"hostname must be a string, got {self.hostname!r}")
        if self.loglevel is not None:
            if not isinstance(self.loglevel, str) or self.loglevel.lower() not in LOG_LEVELS:
                raise ConfigError(
                    f"loglevel must be one of {', '.join(LOG_LEVELS)}, got {self.loglevel!r}"
                )
            object.__setattr__(self, "loglevel", self.loglevel.lower())
        if not isinstance(self.events, bool):
            raise ConfigError(f"events must be True or False, got {self.events!r}")
        self.corruption  # noqa: B018 (parse: a bad spec fails here)
        if self.straggler_spec.per_batch:
            raise ConfigError(
                "--straggle fixed:... picks S tasks of a batch; give it per submit, not per worker"
            )

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
        """Returns self: the options are checked when they are built (kept for old callers)."""
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
                 "--liveness-timeout", repr(self.liveness_timeout)]  # fmt: skip
        if self.loglevel is not None:
            args += ["--loglevel", self.loglevel]
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
    def env_variables(cls) -> dict[str, str]:
        """The variable of each field: ``CODEDFARM_WORKER_<FIELD>``, the variable of the
        same option of ``codedfarm worker``."""
        return {f.name: f"{ENV_PREFIX}{f.name.upper()}" for f in dataclasses.fields(cls)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerOptions:
        """For a worker started as ``celery -A codedfarm.worker.celery_engine worker``: the
        variables of ``codedfarm worker``'s options, ``CODEDFARM_WORKER_<FIELD>``
        (:meth:`env_variables`; lists comma-separated, flags 1/0). Unset or empty: the
        default. The old names ``CODEDFARM_DEVICE``, ``CODEDFARM_SLOWDOWN``,
        ``CODEDFARM_TORCH_THREADS`` and ``CODEDFARM_PRELOAD`` still work until 0.3, with a
        ``DeprecationWarning`` (shown by default)."""
        env = os.environ if environ is None else environ
        kinds = {f.name: str(f.type) for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        read: list[str] = []
        for name, variable in cls.env_variables().items():
            raw = env.get(variable) or None
            old = OLD_VARIABLES.get(name)
            if old is not None and env.get(old):
                warnings.warn(deprecation_message(old, variable), DeprecationWarning,
                              stacklevel=2)  # fmt: skip
                raw = raw or env[old]
                variable = variable if env.get(variable) else old
            if raw is not None:
                values[name] = _parse_env(variable, kinds[name], raw)
                read.append(variable)
        try:
            return cls(**values)
        except ConfigError as exc:  # name the variables as well as the field
            raise ConfigError(f"{exc} (from {', '.join(read)})") from exc


def _parse_env(variable: str, kind: str, raw: str) -> object:
    """A variable's text as the field's type (as click parses ``codedfarm worker``'s)."""
    if kind.startswith("tuple"):
        return tuple(part for item in raw.split() for part in item.split(",") if part)
    if kind.startswith("bool"):
        value = raw.strip().lower()
        if value in _TRUE or value in _FALSE:
            return value in _TRUE
        raise ConfigError(f"{variable} must be 1 or 0 (true or false), got {raw!r}")
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError as exc:
        word = "an integer" if kind.startswith("int") else "a number"
        raise ConfigError(f"{variable} must be {word}, got {raw!r}") from exc
    return raw
