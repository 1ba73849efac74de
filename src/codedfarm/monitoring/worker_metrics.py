"""Worker metrics: the Prometheus implementation of
:class:`~codedfarm.monitoring.hooks.WorkerHooks`, correct under Celery's prefork pool.

``codedfarm worker --metrics-port P`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before it imports this module (prometheus_client reads it once, on import), then
installs a :class:`WorkerMetrics` as the worker's hooks before anything forks. Every
process (the supervised engine, each pool process) inherits it and writes its samples to
its own files there (prometheus_client switches files when the pid changes), and the main
process serves ``/metrics`` aggregated over all of them (children that exit keep their
counts). Without a port no metrics are installed: the worker's hooks are no-ops.

The supervisor's own numbers (the engine's restarts, the age of its loop's last turn) live
in the main process, which serves ``/metrics``: :class:`EngineCollector` reads them there
at each scrape.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from codedfarm.monitoring.build_info import register_build_info
from codedfarm.monitoring.health import Readiness, serve_health_and_metrics
from codedfarm.monitoring.hooks import WorkerHooks

__all__ = ["EngineCollector", "SupervisedEngine", "WorkerMetrics", "serve_worker_metrics"]


REFUSAL_REASONS = ("not_json", "bad_envelope", "serializer", "unknown_task", "bad_body", "expired")
"""Why a worker drops a queue message unrun (``codedfarm_messages_refused_total{reason}``)."""


class SupervisedEngine(Protocol):
    """What the worker's supervisor knows of its engine
    (:class:`codedfarm.worker.liveness.EngineWatch`)."""

    def restart_counts(self) -> Mapping[str, int]:
        """Restarts so far by reason (``exited``, ``hung``)."""

    def loop_age(self) -> float | None:
        """Seconds since the engine's loop last turned (None: not started)."""

    def hung(self) -> dict[str, object] | None:
        """None while the engine is live, else why not (``/livez``'s JSON)."""

    def not_ready(self) -> str | None:
        """None unless the engine is hung, else why (``/readyz``'s reason)."""


class EngineCollector(Collector):
    """``codedfarm_worker_engine_restarts_total{reason}`` and
    ``codedfarm_worker_engine_loop_age_seconds``, read from the supervisor at each scrape."""

    def __init__(self, engine: SupervisedEngine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily(
            "codedfarm_worker_engine_restarts",
            "Restarts of the worker's engine by its supervisor: exited (it stopped unasked: "
            "an error exit or a signal) or hung (its loop stopped turning; killed).",
            labels=["reason"],
        )
        for reason, count in sorted(self.engine.restart_counts().items()):
            restarts.add_metric([reason], count)
        yield restarts
        age = self.engine.loop_age()
        if age is not None:
            yield GaugeMetricFamily(
                "codedfarm_worker_engine_loop_age_seconds",
                "Seconds since the worker's engine loop last turned (absent while it starts).",
                value=age,
            )


TASK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1,
                0.125, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0,
                30.0, 60.0)  # fmt: skip
"""Dense between 10 ms and 1 s, where a task's time lives."""


class WorkerMetrics(WorkerHooks):
    """Worker hooks as Prometheus metrics (in ``registry``; None: the default one). Every
    task metric carries the worker's ``engine`` (batch or celery; see
    :meth:`engine_started`)."""

    def __init__(self, registry: CollectorRegistry | None = None, engine: str = "") -> None:
        kwargs = {"registry": registry} if registry is not None else {}
        self.engine = engine
        self.task_seconds = Histogram(
            "codedfarm_worker_task_seconds",
            "Task latency inside the worker: injected delay, input read, compute, report.",
            ["queue", "model", "engine"],
            buckets=TASK_BUCKETS,
            **kwargs,  # type: ignore[arg-type]
        )
        self.work_seconds = Histogram(
            "codedfarm_worker_task_work_seconds",
            "Task latency without the injected delay: what a real straggler is slow in.",
            ["queue", "model", "engine"],
            buckets=TASK_BUCKETS,
            **kwargs,  # type: ignore[arg-type]
        )
        self.injected_delay = Histogram(
            "codedfarm_worker_injected_delay_seconds",
            "Straggler delay injected into tasks.",
            ["queue", "model", "engine"],
            buckets=(0.0, *TASK_BUCKETS),
            **kwargs,  # type: ignore[arg-type]
        )
        self.tasks = Counter(
            "codedfarm_worker_tasks_total",
            "Tasks by status: ok, error (model/data), failed (injected), skipped (batch gone), "
            "cancelled (batch finished while straggling).",
            ["queue", "model", "engine", "status"],
            **kwargs,  # type: ignore[arg-type]
        )
        self.messages_refused = Counter(
            "codedfarm_messages_refused_total",
            "Queue messages a worker dropped without running them, by reason: not_json, "
            "bad_envelope, serializer (pickle, yaml, ...), unknown_task, bad_body, expired.",
            ["reason"],
            **kwargs,  # type: ignore[arg-type]
        )
        for reason in REFUSAL_REASONS:  # at 0 from the start: an alert sees the first one
            self.messages_refused.labels(reason)

    def engine_started(self, engine: str) -> None:
        """The label of every task metric from now on (set before the pool forks)."""
        self.engine = engine

    def refused(self, reason: str) -> None:
        """A queue message dropped unrun (not JSON, not an envelope, pickle, unknown task)."""
        self.messages_refused.labels(reason).inc()

    def observe(self, queue: str, model: str, status: str, seconds: float, delay: float) -> None:
        """Counted by status; latency (``seconds``), work time (without the injected
        ``delay``) and the delay itself in seconds."""
        queue, engine = queue or "unknown", self.engine or "unknown"
        self.tasks.labels(queue, model, engine, status).inc()
        self.task_seconds.labels(queue, model, engine).observe(seconds)
        if status != "cancelled":  # a cancelled straggler did no work
            self.work_seconds.labels(queue, model, engine).observe(max(0.0, seconds - delay))
        self.injected_delay.labels(queue, model, engine).observe(delay)


def serve_worker_metrics(
    port: int,
    addr: str = "0.0.0.0",
    ready: Readiness | None = None,
    engine: SupervisedEngine | None = None,
) -> None:
    """Serve ``/metrics`` aggregated over every process writing to the multiprocess dir
    (which :func:`codedfarm.monitoring.multiproc.prepare_multiprocess_dir` made), with
    ``/livez`` and ``/readyz`` (``ready``; None: ready while the process serves). With the
    supervisor's ``engine``: ``/livez`` fails while the engine is hung, ``/readyz`` too, and
    ``/metrics`` has the engine's restarts and loop age."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    register_build_info("worker", registry)
    check = ready or (lambda: None)
    if engine is None:
        serve_health_and_metrics(port, addr, check, registry)
        return
    registry.register(EngineCollector(engine))
    watched = engine

    def ready_and_live() -> str | None:
        return watched.not_ready() or check()

    serve_health_and_metrics(port, addr, ready_and_live, registry, live=engine.hung)
