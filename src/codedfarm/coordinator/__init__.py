"""Coordinator: validate and encode a batch, dispatch it, collect and decode the results."""

from codedfarm.coordinator.client import BatchResult, FarmClient
from codedfarm.coordinator.collector import Collector
from codedfarm.coordinator.records import BatchRecord

__all__ = ["BatchRecord", "BatchResult", "Collector", "FarmClient"]
