"""``codedfarm_build_info``: which codedfarm (and Python) a process runs, for every
process's ``/metrics`` (the Prometheus convention: a gauge of 1 whose labels are the facts).

A custom collector, not a ``Gauge``: it works the same in the workers' multiprocess
registry, where a plain gauge would need sample files.
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from functools import cache

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BuildInfo", "register_build_info"]


class BuildInfo(Collector):
    """Yields ``codedfarm_build_info{version, python, component} 1``."""

    def __init__(self, component: str) -> None:
        self.component = component

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "codedfarm_build_info",
            "The codedfarm version and Python this process runs (always 1).",
            labels=["version", "python", "component"],
        )
        family.add_metric([_version(), platform.python_version(), self.component], 1.0)
        yield family


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("codedfarm")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def register_build_info(component: str, registry: CollectorRegistry | None = None) -> None:
    """Add the build info of ``component`` (worker, collector, server) to ``registry``
    (None: the default one). Registering a component twice is a no-op."""
    target = registry or REGISTRY
    # already there: the default registry lives as long as the process
    with contextlib.suppress(ValueError):
        target.register(BuildInfo(component))
