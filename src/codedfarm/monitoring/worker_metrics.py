"""Worker metrics, correct under Celery's prefork pool.

``codedfarm worker --metrics-port P`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before the pool forks; every pool process then writes its samples to files
there, and the main process serves ``/metrics`` aggregated over all of them (children
that exit keep their counts). Without a port the metrics are ordinary in-process ones.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from codedfarm.monitoring.health import Readiness, serve_health_and_metrics

__all__ = ["WorkerMetrics", "serve_worker_metrics", "worker_metrics"]

TASK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                20.0, 30.0, 60.0)  # fmt: skip


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kwargs = {"registry": registry} if registry is not None else {}
        self.task_seconds = Histogram(
            "codedfarm_worker_task_seconds",
            "Task latency inside the worker: injected delay, input read, compute, report.",
            ["queue", "model"],
            buckets=TASK_BUCKETS,
            **kwargs,  # type: ignore[arg-type]
        )
        self.injected_delay = Histogram(
            "codedfarm_worker_injected_delay_seconds",
            "Straggler delay injected into tasks.",
            ["queue", "model"],
            buckets=(0.0, *TASK_BUCKETS),
            **kwargs,  # type: ignore[arg-type]
        )
        self.tasks = Counter(
            "codedfarm_worker_tasks_total",
            "Tasks by status: ok, error (model/data), failed (injected), skipped (batch gone), "
            "cancelled (batch finished while straggling).",
            ["queue", "model", "status"],
            **kwargs,  # type: ignore[arg-type]
        )
        self.messages_refused = Counter(
            "codedfarm_messages_refused_total",
            "Queue messages a worker dropped without running them, by reason: not_json, "
            "bad_envelope, serializer (pickle, yaml, ...), unknown_task, bad_body, expired.",
            ["reason"],
            **kwargs,  # type: ignore[arg-type]
        )

    def refused(self, reason: str) -> None:
        """A queue message dropped unrun (not JSON, not an envelope, pickle, unknown task)."""
        self.messages_refused.labels(reason).inc()

    def observe(self, queue: str, model: str, status: str, seconds: float, delay: float) -> None:
        queue = queue or "unknown"
        self.tasks.labels(queue, model, status).inc()
        self.task_seconds.labels(queue, model).observe(seconds)
        self.injected_delay.labels(queue, model).observe(delay)


_metrics: WorkerMetrics | None = None


def worker_metrics() -> WorkerMetrics:
    """This process's worker metrics (created on first use, after the fork)."""
    global _metrics
    if _metrics is None:
        _metrics = WorkerMetrics()
    return _metrics


def serve_worker_metrics(port: int, addr: str = "0.0.0.0", ready: Readiness | None = None) -> None:
    """Serve ``/metrics`` aggregated over every process writing to the multiprocess dir
    (which :func:`codedfarm.monitoring.multiproc.prepare_multiprocess_dir` made), with
    ``/livez`` and ``/readyz`` (``ready``; None: ready while the process serves)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    serve_health_and_metrics(port, addr, ready or (lambda: None), registry)
