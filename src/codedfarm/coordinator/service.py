"""The long-lived collector service (``codedfarm collector``): one collector on a named
inbox, its Prometheus metrics, until told to stop."""

from __future__ import annotations

import logging
import threading

from codedfarm.coordinator.collector import Collector
from codedfarm.coordinator.recovery import recover_open_batches
from codedfarm.heartbeat import Heartbeat
from codedfarm.logs import LIFECYCLE
from codedfarm.protocol import Keys
from codedfarm.redis_conn import connect
from codedfarm.settings import Settings

lifecycle = logging.getLogger(LIFECYCLE)

__all__ = ["run_collector"]


def run_collector(
    settings: Settings,
    name: str,
    metrics_port: int,
    metrics_addr: str,
    stop: threading.Event,
) -> None:
    """Serve the inbox of collector ``name`` until ``stop`` is set (metrics on
    ``metrics_port``, 0: none). Raises :class:`~codedfarm.errors.RedisUnavailableError`."""
    from codedfarm.monitoring.build_info import register_build_info
    from codedfarm.monitoring.health import probe_redis, redis_ready, serve_health_and_metrics
    from codedfarm.monitoring.metrics import CollectorMetrics

    client = connect(settings)
    hooks = CollectorMetrics()
    register_build_info("collector")
    if metrics_port:  # with /livez and /readyz (Redis answers)
        serve_health_and_metrics(metrics_port, metrics_addr, redis_ready(probe_redis(settings)))
    keys = Keys(settings.key_prefix)
    inbox = keys.inbox(name)
    heartbeat = Heartbeat(lambda: client, [keys.live_collectors()], name).start()
    lifecycle.info("collector %r listening on %s; metrics on :%d", name, inbox, metrics_port)
    # it also exports the batches in-process collectors relay (record_relay.py)
    collector = Collector(client, inbox, hooks=hooks, durable_key=keys.open_batches(name),
                          records_key=keys.records())  # fmt: skip
    recovered = recover_open_batches(collector)
    if recovered:
        lifecycle.info("collector %r: finishing %d batch(es) left open by its predecessor",
                       name, recovered)  # fmt: skip
    try:
        collector.serve_forever(stop)
    finally:
        heartbeat.stop()
