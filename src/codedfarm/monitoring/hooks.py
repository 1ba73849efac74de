"""What a collector lets an observer see: the interface its metrics plug into.

Metrics are a plugin (:class:`codedfarm.monitoring.metrics.CollectorMetrics` implements
these with Prometheus); the collector itself only calls the hooks.
"""

from __future__ import annotations

from codedfarm.protocol import BatchRecord, BatchRegistration

__all__ = ["CollectorHooks"]


class CollectorHooks:
    """Observer interface (metrics plug in here); every method is a no-op by default."""

    def batch_registered(self, reg: BatchRegistration) -> None: ...

    def batch_finished(self, record: BatchRecord) -> None: ...

    def result_dropped(self, reason: str) -> None: ...

    def open_batches(self, count: int) -> None: ...

    def queue_depths(self, depths: dict[str, int]) -> None: ...

    def fidelity(self, codec: str, model: str, mse: float) -> None: ...
