"""What a collector and a worker let an observer see: the interfaces their metrics plug into.

Metrics are a plugin (:class:`codedfarm.monitoring.metrics.CollectorMetrics` and
:class:`codedfarm.monitoring.worker_metrics.WorkerMetrics` implement these with Prometheus);
the collector and the worker engines themselves only call the hooks.
"""

from __future__ import annotations

from codedfarm.protocol import BatchRecord, BatchRegistration

__all__ = ["CollectorHooks", "WorkerHooks"]


class CollectorHooks:
    """Observer interface (metrics plug in here); every method is a no-op by default."""

    def batch_registered(self, reg: BatchRegistration) -> None: ...

    def batch_finished(self, record: BatchRecord) -> None: ...

    def result_dropped(self, reason: str) -> None: ...

    def open_batches(self, count: int) -> None: ...

    def queue_depths(self, depths: dict[str, int]) -> None: ...

    def fidelity(self, codec: str, model: str, mse: float) -> None: ...

    def decoded_fidelity(self, codec: str, model: str, checked: int, agreed: int) -> None:
        """Of ``checked`` decoded rows of a fidelity-sampled batch, ``agreed`` had the argmax
        of the model's own (uncoded) output."""


class WorkerHooks:
    """Observer interface of a worker (metrics plug in here); every method is a no-op by
    default. Called in the process that does the work: the batch engine's process, or a
    Celery pool process for tasks and Celery's main process for refused messages."""

    def engine_started(self, engine: str) -> None:
        """This worker serves with ``engine`` (``batch`` or ``celery``); called once, before
        its first task (and before the engine forks its pool)."""

    def observe(self, queue: str, model: str, status: str, seconds: float, delay: float) -> None:
        """A task from ``queue`` for ``model`` ended with ``status`` (``ok``; ``error``: the
        model or its input failed; ``failed``: injected failure; ``skipped``: its batch was
        gone; ``cancelled``: its batch finished while it straggled), ``seconds`` seconds
        after the worker received it, of which ``delay`` seconds were an injected straggler
        delay (0.0 without one)."""

    def refused(self, reason: str) -> None:
        """A queue message dropped without being run, by ``reason``: ``not_json``,
        ``bad_envelope``, ``serializer`` (pickle, yaml, ...), ``unknown_task``, ``bad_body``
        or ``expired``."""
