"""Coordinator: validate and encode a batch, dispatch it, collect and decode the results."""

from codedfarm.coordinator.client import BatchResult, FarmClient
from codedfarm.coordinator.collector import Collector
from codedfarm.coordinator.dispatch import Dispatcher
from codedfarm.coordinator.resolution import (
    BatchDefaults,
    BatchSettings,
    BatchSpec,
    redundancy_workers,
    resolve_batch,
)

__all__ = [
    "BatchDefaults",
    "BatchResult",
    "BatchSettings",
    "BatchSpec",
    "Collector",
    "Dispatcher",
    "FarmClient",
    "redundancy_workers",
    "resolve_batch",
]
