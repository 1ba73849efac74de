"""Every batch on Prometheus: in-process collectors relay what they finish to the service.

A client that collects its own results (``submit`` without ``--collector``, the HTTP
server's farm clients) has no ``/metrics`` Prometheus could scrape for long: a CLI process
lives a second. So its collector's hooks are a :class:`RecordRelay`: each finished batch's
record and each fidelity sample is queued in memory and written with the client's
housekeeping, off the answer's path, in the same pipeline: RPUSH onto ``P:records``,
trimmed to the newest :data:`MAX_RECORDS` and with a TTL, so the list stays bounded when no
collector service runs. The ``codedfarm collector`` service pops them at every poll
(:func:`drain_records`) and hands them to its own hooks, its Prometheus metrics.

Chosen over a push gateway (one more service to run and secure) and over a metrics port
per client (short-lived processes, and ports to discover).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from codedfarm.monitoring.hooks import CollectorHooks
from codedfarm.protocol import BatchRecord

__all__ = ["MAX_RECORDS", "RecordDrain", "RecordRelay", "drain_records"]

log = logging.getLogger(__name__)

MAX_RECORDS = 5000
"""Records the relay list keeps when nobody drains it (the newest)."""
DRAIN_BATCH = 500
"""Records a collector service takes per read."""
DRAIN_EVERY_S = 0.5
"""Seconds between a collector service's reads of the relayed records."""


class RecordRelay(CollectorHooks):
    """Hooks of an in-process collector: queue what it finishes for the collector service."""

    def __init__(self, key: str, ttl: float) -> None:
        self.key = key
        self.ttl = max(1, int(ttl))
        # serialized at the flush, not here: this runs on the batch's answer path
        self.pending: list[dict[str, Any] | BatchRecord] = []

    def batch_finished(self, record: BatchRecord) -> None:
        self.pending.append(record)

    def fidelity(self, codec: str, model: str, mse: float) -> None:
        self.pending.append({"fidelity": [codec, model, mse]})

    def decoded_fidelity(self, codec: str, model: str, checked: int, agreed: int) -> None:
        self.pending.append({"decoded_rows": [codec, model, checked, agreed]})

    def flush_into(self, pipe: Any) -> None:
        """Queue the writes of what is pending on ``pipe`` (a Redis pipeline)."""
        if not self.pending:
            return
        entries, self.pending = self.pending, []
        items = [json.dumps({"record": e.to_dict()} if isinstance(e, BatchRecord) else e)
                 for e in entries]  # fmt: skip
        pipe.rpush(self.key, *items)
        pipe.ltrim(self.key, -MAX_RECORDS, -1)
        pipe.expire(self.key, self.ttl)


def drain_records(client: redis.Redis, key: str, hooks: CollectorHooks) -> int:
    """Hand the relayed records and fidelity samples waiting under ``key`` to ``hooks``;
    returns how many were taken. A malformed entry is logged and skipped."""
    raw = client.lpop(key, DRAIN_BATCH)
    if not raw:
        return 0
    items = raw if isinstance(raw, list) else [raw]
    for item in items:
        try:
            entry = json.loads(item)
            if "record" in entry:
                hooks.batch_finished(BatchRecord.from_dict(entry["record"]))
            elif "decoded_rows" in entry:
                codec, model, checked, agreed = entry["decoded_rows"]
                hooks.decoded_fidelity(str(codec), str(model), int(checked), int(agreed))
            else:
                codec, model, mse = entry["fidelity"]
                hooks.fidelity(str(codec), str(model), float(mse))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("dropping a malformed relayed record: %s", exc)
    return len(items)


class RecordDrain:
    """The collector service's side: :func:`drain_records` at most every
    :data:`DRAIN_EVERY_S` seconds (called from its poll loop)."""

    def __init__(self, client: redis.Redis, key: str, hooks: CollectorHooks) -> None:
        self.client, self.key, self.hooks = client, key, hooks
        self._next = 0.0

    def maybe(self, now: float) -> None:
        if now >= self._next:
            self._next = now + DRAIN_EVERY_S
            drain_records(self.client, self.key, self.hooks)
