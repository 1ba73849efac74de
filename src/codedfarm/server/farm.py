"""The server's side of the farm: resolved models, coding queues and a pool of farm clients.

A coding group is a batch like any other: its settings are resolved once
(:func:`~codedfarm.coordinator.resolve_batch`: the model's ``config.json``, then the
server's flags, then the farm's), and it is submitted through a
:class:`~codedfarm.coordinator.FarmClient` (a pool of them, each in its own thread, since
submitting blocks on Redis) and decoded by that client's own collector.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import redis

from codedfarm.codecs import plan_codec
from codedfarm.coordinator import BatchDefaults, BatchSettings, BatchSpec, FarmClient
from codedfarm.coordinator.resolution import resolve_batch
from codedfarm.errors import BatchFailedError, BatchTimeoutError, ConfigError
from codedfarm.logs import trace
from codedfarm.models.resolve import ResolvedModel, resolve_model
from codedfarm.monitoring.server_metrics import ServerMetrics
from codedfarm.server.batcher import BatcherConfig, CodingQueue, RowsReceiver
from codedfarm.settings import Settings
from codedfarm.stragglers import parse_straggler_spec

__all__ = ["MODEL_CACHE_S", "SERVE_CODEC", "SERVE_REDUNDANCY", "Farm", "ServeConfig",
           "group_settings"]  # fmt: skip

log = logging.getLogger("codedfarm.serve")

MODEL_CACHE_S = 2.0  # how long a resolved model (config.json) is reused
SERVE_CODEC = "spline:systematic=true"
"""The server's codec when neither a model's config.json nor ``--codec`` names one and the
model has no parity model for its groups (then ``parm``, learned parity: its rebuilt rows
agree with the model more often, docs/results.md "Degraded mode"): systematic (each row is
answered from its own task, exactly, when it is in time; only a late row is decoded),
``space=auto`` (its default). Why: docs/serve.md, "The defaults"."""
SERVE_REDUNDANCY = 1.5
"""The server's redundancy budget when neither a model's config.json nor the flags set
``n`` or ``redundancy``: a group of r rows costs r + max(1, ceil(r / 2)) tasks."""


@dataclass(frozen=True)
class ServeConfig:
    """What ``codedfarm serve`` runs with. ``codec``, ``n``, ``s``, ``redundancy``,
    ``wait_for`` and ``deadline``: the defaults of a model whose ``config.json`` sets none
    (None: :data:`SERVE_CODEC` at :data:`SERVE_REDUNDANCY` unless ``n`` is given, the
    farm's deadline); ``n`` and ``s`` are a budget each codec fits itself into
    (:meth:`~codedfarm.codecs.CodecPlan.fit_workers`). Validated at construction."""

    host: str = "127.0.0.1"
    port: int = 8000
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    codec: str | None = None
    n: int | None = None
    s: int | None = None
    redundancy: float | None = None  # tasks per row, a budget instead of n (n wins)
    deadline: float | None = None
    queues: tuple[str, ...] = ()  # () -> CODEDFARM_QUEUES
    wait_for: int | None = None  # results to decode at (None: the codec's default)
    straggle: str | None = None  # inject stragglers into every group (experiments)
    straggle_seed: int | None = None  # group i draws its stragglers with seed + i
    hedge_after: float | None = None  # seconds: re-send a task not back by then (hedging)
    max_body_bytes: int = 64 << 20
    clients: int = 16  # farm clients (threads): groups in the farm at once, every model
    access_log: bool = False  # a line per HTTP request (server/access_log.py)

    def __post_init__(self) -> None:
        object.__setattr__(self, "queues", tuple(self.queues))
        if self.codec is not None:
            plan_codec(self.codec)
        if self.straggle is not None:
            parse_straggler_spec(self.straggle)
        for name in ("clients", "max_body_bytes", "port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.clients < 1 or self.max_body_bytes < 1:
            raise ConfigError(
                f"clients and max_body_bytes must be >= 1, got {self.clients} and "
                f"{self.max_body_bytes}"
            )
        for name in ("n", "wait_for"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value < 1):
                raise ConfigError(f"{name} must be >= 1, got {value!r}")
        if self.s is not None and self.s < 0:
            raise ConfigError(f"s must be >= 0, got {self.s}")
        if self.n is not None and self.n < self.batcher.group_size:
            raise ConfigError(
                f"n must be >= the group size (one task per row at least), got "
                f"n={self.n}, group size {self.batcher.group_size}"
            )
        if self.n is not None and self.s is not None and self.s >= self.n:
            raise ConfigError(f"s must be < n (some workers must answer), got n={self.n}, "
                              f"s={self.s}")  # fmt: skip
        if self.redundancy is not None and not self.redundancy >= 1:
            raise ConfigError(f"redundancy must be >= 1, got {self.redundancy}")
        if self.hedge_after is not None and not self.hedge_after > 0:
            raise ConfigError(f"hedge_after must be > 0 seconds, got {self.hedge_after}")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigError(f"deadline must be > 0 seconds, got {self.deadline}")

    def validate(self) -> ServeConfig:
        """Kept for callers of 0.2: the config validates itself at construction."""
        return self

    @property
    def batch_defaults(self) -> BatchDefaults:
        """The server-wide layer of a group's settings (under the model's config.json)."""
        redundancy = self.redundancy
        if redundancy is None and self.n is None:
            redundancy = SERVE_REDUNDANCY
        return BatchDefaults(codec=self.codec or SERVE_CODEC, n=self.n, s=self.s,
                             wait_for=self.wait_for, deadline=self.deadline,
                             queues=self.queues or None, straggle=self.straggle,
                             redundancy=redundancy, hedge_after=self.hedge_after,
                             parity_first=self.codec is None)  # fmt: skip


def group_settings(
    settings: Settings,
    config: ServeConfig,
    model: ResolvedModel,
    rows: int,
    seed: int | None = None,
) -> BatchSettings:
    """The settings of a coding group of ``rows`` rows of ``model``, resolved once: its
    ``config.json``, then the server's flags, then the farm's; a partial group is coded for
    its own size within the same worker budget. ``seed``: the group's straggler draw."""
    return resolve_batch(BatchSpec(model=model.ref, seed=seed), rows, settings, model=model,
                         defaults=config.batch_defaults, fit_workers=True)  # fmt: skip


@dataclass
class _Coding:
    """A model's coding queue and the codec label of its groups (one resolution)."""

    queue: CodingQueue
    codec: str


class Farm:
    """The server's side of the farm: resolved models, coding queues, farm clients."""

    def __init__(self, settings: Settings, config: ServeConfig) -> None:
        self.settings = settings
        self.config = config
        self.queues = config.queues or settings.queues
        self._clients: queue.SimpleQueue[FarmClient] = queue.SimpleQueue()
        for _ in range(config.clients):
            self._clients.put(FarmClient(settings))
        self._probe = FarmClient(settings)
        self._threads = ThreadPoolExecutor(config.clients + 4, thread_name_prefix="farm")
        self._models: dict[str, tuple[float, ResolvedModel]] = {}
        # one coding queue per resolved model: a config.json change makes a new one, so
        # the codec used and the codec on the metrics change together
        self._coding: dict[ResolvedModel, _Coding] = {}
        self._closing: set[asyncio.Task[None]] = set()  # old coding queues being closed
        self._groups_sent = itertools.count()  # numbers the groups' straggler draws
        self._queue_turns = itertools.count()  # where each group's round-robin starts
        self.metrics = ServerMetrics()

    def group_settings(self, model: ResolvedModel, rows: int, seed: int | None = None) -> (
        BatchSettings
    ):  # fmt: skip
        """The settings of a coding group of ``rows`` rows of ``model`` (:func:`group_settings`)."""
        return group_settings(self.settings, self.config, model, rows, seed)

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    def model(self, name: str, version: str | None) -> ResolvedModel:
        """The model behind a URL (cached briefly). Raises
        :class:`~codedfarm.errors.UnknownModelError` (a bad version too) or
        :class:`~codedfarm.errors.ModelConfigError` (a broken config.json)."""
        ref = name if version is None else f"{name}@{version}"
        hit = self._models.get(ref)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        found = resolve_model(ref, self.settings.model_repository)
        self._models[ref] = (time.monotonic() + MODEL_CACHE_S, found)
        return found

    def versions(self, model: ResolvedModel) -> list[int]:
        from codedfarm.models.repository import ModelRepository

        if model.version is None or self.settings.model_repository is None:
            return []
        return ModelRepository(self.settings.model_repository).versions(model.name)

    def coding(self, model: ResolvedModel) -> _Coding:
        """``model``'s coding queue and codec label (made on first use)."""
        found = self._coding.get(model)
        if found is not None:
            return found
        label = self.group_settings(model, self.config.batcher.group_size).plan.spec

        async def run_group(
            x: np.ndarray, on_rows: RowsReceiver, request_ids: tuple[str, ...]
        ) -> np.ndarray:
            seed = self.config.straggle_seed
            if seed is not None:
                seed += next(self._groups_sent)
            loop = asyncio.get_running_loop()

            def early(rows: list[int], y: np.ndarray) -> None:  # on the farm client's thread
                loop.call_soon_threadsafe(on_rows, rows, y)

            result: np.ndarray = await self.blocking(self._submit, model, x, seed, early,
                                                     request_ids)  # fmt: skip
            return result

        def on_group(rows: int, delay: float) -> None:
            self.metrics.group(model.name, rows, delay)

        coding = CodingQueue(self.config.batcher, run_group, on_group=on_group)
        self._prune(model)
        found = self._coding[model] = _Coding(coding, label)
        return found

    def _prune(self, model: ResolvedModel) -> None:
        """Close the idle coding queues of an older config.json of the same model (one with
        rows still waiting or groups in the farm is left to finish them)."""
        for old in [m for m in self._coding if (m.name, m.version) == (model.name, model.version)]:
            if self._coding[old].queue.idle:
                closing = asyncio.get_running_loop().create_task(
                    self._coding.pop(old).queue.close()
                )
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    def _submit(
        self,
        model: ResolvedModel,
        x: np.ndarray,
        seed: int | None,
        on_rows: Callable[[list[int], np.ndarray], None] | None = None,
        request_ids: tuple[str, ...] = (),
    ) -> np.ndarray:
        settings = self.group_settings(model, len(x), seed)
        if len(settings.queues) > 1:
            # each group starts its round-robin one queue on: groups of one row would
            # otherwise all go to the first queue, its worker carrying every small group
            # while the others idle (docs/serve.md, "The defaults")
            turn = next(self._queue_turns) % len(settings.queues)
            settings = replace(settings, queues=settings.queues[turn:] + settings.queues[:turn])
        client = self._clients.get()
        try:
            result = client.submit(x, settings, on_rows=on_rows, request_ids=request_ids)
        except BaseException:
            self._clients.put(client)
            raise
        # the group's inputs are deleted at once, after the answer: its straggling tasks
        # then free their worker slots (a pooled client may wait long for its next poll)
        self._threads.submit(self._release, client)
        self.metrics.groups.labels(model.name, settings.plan.spec, result.outcome).inc()
        self.metrics.rows(model.name, result.record)
        if log.isEnabledFor(logging.DEBUG):
            record = result.record
            log.debug("group of %d rows of %s: batch %s %s (%d rows own, %d decoded)", len(x),
                      model.ref, record.batch, result.outcome, len(record.rows_own),
                      len(record.rows_decoded), extra=trace(record.batch, request_ids))  # fmt: skip
        if result.predictions is None:
            reason = result.record.error or "no decode"
            error = BatchTimeoutError if result.outcome == "timeout" else BatchFailedError
            raise error(f"batch {result.outcome}: {reason}")
        return result.predictions

    def _release(self, client: FarmClient) -> None:
        try:
            client.flush_cleanup()
        except redis.RedisError as exc:  # the keys expire with their TTL anyway
            log.warning("could not delete a finished group's keys: %s", exc)
        finally:
            self._clients.put(client)

    def check_ready(self) -> None:
        """Raise :class:`FarmUnavailableError` unless Redis answers and every queue of the
        server has a live worker."""
        self._probe.check_farm(self.queues)  # its own client: never waits for a busy one

    async def close(self) -> None:
        for coding in self._coding.values():
            await coding.queue.close()
        # the groups are answered; wait for their clients' cleanups (and any probe)
        await asyncio.get_running_loop().run_in_executor(None, self._threads.shutdown)
        self._probe.close()
        while not self._clients.empty():
            self._clients.get().close()
