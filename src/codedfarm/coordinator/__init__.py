"""Coordinator: validate and encode a batch, dispatch it, collect and decode the results."""

from codedfarm.coordinator.client import BatchResult, FarmClient
from codedfarm.coordinator.collector import Collector
from codedfarm.coordinator.dispatch import BatchSpec, Dispatcher

__all__ = ["BatchResult", "BatchSpec", "Collector", "Dispatcher", "FarmClient"]
