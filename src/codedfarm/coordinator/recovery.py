"""A collector service that restarts (or another one of the same name) finishes the batches
its predecessor left open: their registrations stay in Redis until their reply is written,
and the results workers stored for them are still in their output hashes."""

from __future__ import annotations

import logging

from codedfarm.coordinator.collector import Collector
from codedfarm.errors import ProtocolError
from codedfarm.protocol import BatchRegistration, as_bytes, parse_inbox_message

__all__ = ["recover_open_batches"]

log = logging.getLogger(__name__)


def recover_open_batches(collector: Collector) -> int:
    """Adopt every batch in the collector's hash of open batches; returns how many. Batches
    past their deadline are finished at the next poll (decoded from what is there, or a
    timeout), so every waiting client gets an answer."""
    if collector.durable_key is None:
        return 0
    client = collector.redis
    raw = client.hgetall(collector.durable_key)
    registrations = []
    for batch, data in raw.items():
        try:
            reg = parse_inbox_message(as_bytes(data))
        except ProtocolError as exc:
            log.warning("dropping an unreadable open batch %r: %s", batch, exc)
            client.hdel(collector.durable_key, batch)
            continue
        if isinstance(reg, BatchRegistration):
            registrations.append(reg)
    if not registrations:
        return 0
    with client.pipeline(transaction=False) as pipe:
        for reg in registrations:
            pipe.hkeys(reg.output_key)
        stored = pipe.execute()
    for reg, keys in zip(registrations, stored, strict=True):
        indices = sorted(int(k) for k in keys if as_bytes(k).isdigit())
        collector.adopt(reg, [i for i in indices if i < reg.n])
    log.warning("recovered %d open batch(es) from %s", len(registrations), collector.durable_key)
    return len(registrations)
